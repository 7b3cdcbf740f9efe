"""`hls-origin package`: a complete static VOD HLS package of one track (SPEC §2).

The same segments the server streams, byte for byte (same plan, windows,
chain and encoders), written as files for any static web server or CDN:

    OUTDIR/master.m3u8 (AAC renditions), master-lossless.m3u8 (FLAC)
    OUTDIR/{rendition}/index.m3u8, init.mp4, 0.m4s, 1.m4s, …
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tqdm import tqdm

from hls import fmp4, jobs, playlist
from hls.settings import Settings
from hls.streams import SourceRef, StreamSpec, plan_for
from processing.renditions import RENDITIONS
from storage.catalog import fingerprint

DEFAULTS = Settings()  # the server's segment and window settings: the same bytes


def package(
    source: Path,
    outdir: Path,
    preset: str,
    intensity: str,
    renditions: list[str],
    progress: bool = True,
) -> Path:
    """Write the package; returns the path of its first multivariant playlist."""
    st = source.stat()
    with tempfile.TemporaryDirectory(prefix="hls-package-") as scratch:
        ref = SourceRef(str(source), fingerprint(source, st.st_size, st.st_mtime_ns))
        spec = StreamSpec(
            ref, preset, intensity, DEFAULTS.segment_seconds,
            DEFAULTS.context_seconds, DEFAULTS.overlap_seconds, scratch,
        )  # fmt: skip
        info = jobs.prepare(ref, scratch)
        plan = plan_for(spec, info.length, info.rate)
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
                    plan, len(plan), complete=True, live=False, lead=rendition.lead_samples
                )
                (folder / "index.m3u8").write_text(vod)
    masters = []
    for codec, master_name in playlist.MASTER_OF_CODEC.items():
        variants = [
            playlist.Variant(
                RENDITIONS[name],
                f"{name}/index.m3u8",
                info.channels,
                playlist.bandwidths(plan, sizes[name]),
            )  # fmt: skip
            for name in renditions
            if RENDITIONS[name].codec == codec
        ]
        if variants:
            master = outdir / f"{master_name}.m3u8"
            master.write_text(playlist.master_playlist(variants))
            masters.append(master)
    return masters[0]
