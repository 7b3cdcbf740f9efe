"""`hls-origin package`: a complete static VOD HLS package of a track or a queue (SPEC §2).

The same segments the server streams, byte for byte (same plan, windows,
chain and encoders), written as files for any static web server or CDN:

    OUTDIR/master.m3u8 (AAC renditions), master-lossless.m3u8 (FLAC)
    OUTDIR/{rendition}/index.m3u8, init.mp4, 0.m4s, 1.m4s, …
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from hls import fmp4, jobs, playlist
from hls.settings import Settings
from hls.streams import QueueRef, SourceRef, StreamSpec, plan_for
from processing.renditions import RENDITIONS
from storage.catalog import fingerprint

DEFAULTS = Settings()  # the server's segment and window settings: the same bytes


def package(
    source: Path | Sequence[Path],
    outdir: Path,
    preset: str,
    intensity: str,
    renditions: list[str],
    progress: bool = True,
    crossfade: float = 0.0,
    gain: str = "track",
) -> Path:
    """Write the package; returns the path of its first multivariant playlist.

    Several sources are packaged as one queue (SPEC §10): one timeline joined
    with `crossfade` seconds, gain `track` or `album`, each track's start
    marked in the media playlists.
    """
    sources = [source] if isinstance(source, Path) else list(source)
    refs = []
    for path in sources:
        st = path.stat()
        refs.append(SourceRef(str(path), fingerprint(path, st.st_size, st.st_mtime_ns)))
    with tempfile.TemporaryDirectory(prefix="hls-package-") as scratch:
        ref: SourceRef | QueueRef = refs[0]
        if len(refs) > 1:
            names = tuple(path.name for path in sources)
            ref = QueueRef(names, tuple(refs), round(crossfade * 1000), gain)
        spec = StreamSpec(
            ref, preset, intensity, DEFAULTS.segment_seconds,
            DEFAULTS.context_seconds, DEFAULTS.overlap_seconds, scratch,
        )  # fmt: skip
        info = jobs.prepare(ref, scratch)
        plan = plan_for(spec, info.length, info.rate)
        markers: tuple[playlist.Marker, ...] = ()
        if len(refs) > 1:
            markers = tuple(
                playlist.Marker(path.name, path.stem, start, length)
                for path, start, length in zip(sources, info.starts, info.lengths, strict=True)
            )
        sizes: dict[str, dict[int, int]] = {}
        with tqdm(total=len(plan) * len(renditions), unit="segment", disable=not progress) as bar:
            for name in renditions:
                folder = outdir / name
                folder.mkdir(parents=True, exist_ok=True)
                rendition = RENDITIONS[name]
                init = fmp4.init_segment(rendition, info.rate, info.channels)
                (folder / "init.mp4").write_bytes(init)
                for unit in plan.encode_units(rendition.segments_per_encode):
                    bar.set_description(f"{name} {unit[0]}")
                    jobs.produce_segment(spec, name, unit[0])
                    for index in unit:
                        made = Path(scratch).joinpath(*spec.segment_key(name, index))
                        data = made.read_bytes()
                        (folder / f"{index}.m4s").write_bytes(data)
                        sizes.setdefault(name, {})[index] = len(data)
                        made.unlink()  # the package is the copy: scratch stays one encode unit
                    bar.update(len(unit))
                vod = playlist.media_playlist(
                    plan, len(plan), complete=True, live=False,
                    lead=rendition.lead_samples, markers=markers,
                )  # fmt: skip
                (folder / "index.m3u8").write_text(vod)
    masters = []
    for codec, master_name in playlist.MASTER_OF_CODEC.items():
        variants = [
            playlist.Variant(
                RENDITIONS[name],
                f"{name}/index.m3u8",
                info.channels,
                playlist.bandwidths(plan, sizes[name], RENDITIONS[name].lead_samples),
            )  # fmt: skip
            for name in renditions
            if RENDITIONS[name].codec == codec
        ]
        if variants:
            master = outdir / f"{master_name}.m3u8"
            master.write_text(playlist.master_playlist(variants))
            masters.append(master)
    return masters[0]
