"""The benchmark corpus (SPEC §8): cold first segment, whole track and memory on
sources of different character, each against the peer with its equivalent chain.

Run: .venv/bin/python benchmarks/corpus.py [--runs 2] [--only NAME,...] [--long-minutes 60]

Sources (from ../shared/music, concatenated; synthesized with program-like
spectra where a character is missing or the music is absent):
  dense      loud, dense, transients (battle-epic, looped)        punchy
  orchestral quiet to loud (love theme, drascula)                   adaptive
  mono       one channel (tada, looped)                             gentle
  48k        48 kHz (drascula, resampled)                           warm
  wide       wide stereo, bright: decorrelated channels, hiss       bright
  sparse     notes over silence                                     original
  long       7 minutes of the real tracks (peer.py's source)        adaptive
and, for memory only, a 60-minute concatenation (adaptive; its peer run
too with --long-peer). For each: runs alternate peer / ours (a fresh server
and empty cache each time); the table prints medians, the ratios ours /
peer and the peak PSS of our process tree, and the integrated loudness
(against the preset's target) and true peak of the stream as served (the
default rendition decoded through ffmpeg's HLS demuxer, first run); then
the median and the worst of each column.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chain import MUSIC, seven_minute_track  # noqa: E402
from benchmarks.peer import (  # noqa: E402
    PEER_FILTER,
    add_peer_encoder_argument,
    run_ours,
    run_peer,
)
from processing import dsp, loudness  # noqa: E402
from processing.chain import PRESETS as CHAIN_PRESETS  # noqa: E402
from tests.conftest import Server  # noqa: E402
from tests.helpers import decode  # noqa: E402

RATE = 44100
LIMITER = "alimiter=limit=0.89:attack=5:release=50"
# Each preset's chain as ffmpeg filters (EQ, compressor, a static gain toward
# its loudness target, a limiter): what a player that renders the whole file
# first would run. The peer gets no analysis pass (a fixed gain), which
# favours it.
PEER_CHAINS = {
    "original": "anull",
    "adaptive": "highshelf=f=4000:g=1,acompressor=threshold=0.063:ratio=2:knee=2.5:"
    f"attack=10:release=80,volume=4dB,{LIMITER}",
    "gentle": "equalizer=f=3000:t=q:w=0.8:g=1,acompressor=threshold=0.1:ratio=1.5:knee=3.2:"
    f"attack=10:release=80,volume=2dB,{LIMITER}",
    "warm": "equalizer=f=250:t=q:w=0.8:g=2.5,highshelf=f=7000:g=-2.5,"
    f"acompressor=threshold=0.063:ratio=2:attack=10:release=80,volume=4dB,{LIMITER}",
    "bright": "highshelf=f=6000:g=3,equalizer=f=3500:t=q:w=1:g=2,"
    f"acompressor=threshold=0.063:ratio=2:attack=10:release=80,volume=4dB,{LIMITER}",
    "punchy": PEER_FILTER,
}


def _music(name: str) -> np.ndarray | None:
    path = MUSIC / name
    return sf.read(path, dtype="float32", always_2d=True)[0] if path.is_file() else None


def _synth(seconds: float, seed: int, channels: int = 2) -> np.ndarray:
    """Program-like material: chords on a beat with a decaying envelope, pink-ish noise."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    env = np.exp(-(t % 0.5) * 5)
    tone = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((110, 220, 277, 330, 440)))
    noise = np.cumsum(rng.standard_normal((n, channels)), axis=0)
    noise -= np.convolve(noise[:, 0], np.ones(64) / 64, mode="same")[:, None]
    out = 0.3 * (tone * env)[:, None] + 0.02 * noise / (np.abs(noise).max() + 1e-9)
    return (0.6 * out / np.abs(out).max()).astype(np.float32)


def _loop(audio: np.ndarray, seconds: float) -> np.ndarray:
    n = round(seconds * RATE)
    return np.concatenate([audio] * (n // len(audio) + 1))[:n]


def dense(seconds: float) -> np.ndarray:
    real = _music("wesnoth-battle-epic.ogg")
    return _loop(real if real is not None else _synth(74, 1), seconds)


def orchestral(seconds: float) -> np.ndarray:
    parts = [
        p
        for p in (_music("wesnoth-love_theme.ogg"), _music("drascula-track2.ogg"))
        if p is not None
    ]
    return _loop(np.concatenate(parts) if parts else _synth(120, 2), seconds)


def mono(seconds: float) -> np.ndarray:
    real = _music("hyperrogue-tada-mono.ogg")
    return _loop(real if real is not None else _synth(30, 3, channels=1), seconds)


def wide(seconds: float) -> np.ndarray:
    """Decorrelated channels and broadband hiss: the encoder's hardest case."""
    rng = np.random.default_rng(4)
    base = _synth(seconds, 4)
    hiss = rng.standard_normal(base.shape).astype(np.float32) * 0.05
    left_right = np.stack([base[:, 0], -np.roll(base[:, 1], 331)], axis=1)
    return (0.8 * (left_right + hiss)).astype(np.float32)


def sparse(seconds: float) -> np.ndarray:
    """Single notes with seconds of silence between them."""
    n = round(seconds * RATE)
    out = np.zeros((n, 2), np.float32)
    t = np.arange(round(1.5 * RATE)) / RATE
    note = (0.4 * np.sin(2 * np.pi * 523.25 * t) * np.exp(-t * 3)).astype(np.float32)
    for start in range(0, n - len(note), 4 * RATE):
        out[start : start + len(note)] += note[:, None]
    return out


@dataclass
class Source:
    name: str
    preset: str
    make: Callable[[Path], Path]
    peer: bool = True
    firsts: list[tuple[float, float]] = field(default_factory=list)  # (peer, ours)
    wholes: list[tuple[float, float]] = field(default_factory=list)
    pss: list[float] = field(default_factory=list)
    served: tuple[float, float] | None = None  # LUFS and dBTP of the stream (original: none)


def _written(
    audio: Callable[[float], np.ndarray], seconds: float, name: str
) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        path = directory / f"{name}.flac"
        sf.write(path, audio(seconds), RATE, subtype="PCM_24")
        return path

    return make


def _resampled_48k(directory: Path) -> Path:
    flac = _written(orchestral, 200, "orchestral-44k")(directory)
    path = directory / "orchestral-48k.flac"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(flac), "-ar", "48000",
         "-c:a", "flac", "-sample_fmt", "s32", str(path)],
        check=True,
    )  # fmt: skip
    flac.unlink()
    return path


def corpus(long_minutes: float, long_peer: bool) -> list[Source]:
    return [
        Source("dense", "punchy", _written(dense, 240, "dense")),
        Source("orchestral", "adaptive", _written(orchestral, 293, "orchestral")),
        Source("mono", "gentle", _written(mono, 240, "mono")),
        Source("48k", "warm", _resampled_48k),
        Source("wide", "bright", _written(wide, 240, "wide")),
        Source("sparse", "original", _written(sparse, 240, "sparse")),
        Source("long", "adaptive", seven_minute_track),
        Source(
            f"{long_minutes:g}-minute",
            "adaptive",
            _written(orchestral, long_minutes * 60, "hour"),
            peer=long_peer,
        ),  # fmt: skip
    ]


def chosen(sources: list[Source], only: str) -> list[Source]:
    """The sources named in `only` (comma-separated; all when empty)."""
    return [s for s in sources if s.name in only.split(",")] if only else sources


def written(source: Source, work: Path) -> tuple[Path, Path]:
    """The source written as the only track of a library under `work`: library, file."""
    library = work / source.name / "library"
    library.mkdir(parents=True)
    return library, source.make(library)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated source names")
    parser.add_argument("--long-minutes", type=float, default=60.0)
    parser.add_argument("--long-peer", action="store_true", help="time the peer on it too")
    add_peer_encoder_argument(parser)
    args = parser.parse_args()
    sources = chosen(corpus(args.long_minutes, args.long_peer), args.only)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for source in sources:
            library, path = written(source, work)
            info = sf.info(str(path))
            runs = args.runs if source.peer else 1
            for run in range(runs):
                peer = (
                    run_peer(
                        path,
                        work / source.name / f"peer{run}",
                        PEER_CHAINS[source.preset],
                        args.peer_encoder,
                    )  # fmt: skip
                    if source.peer
                    else (float("nan"), float("nan"))
                )
                measured = run == 0 and source.peer and source.preset != "original"
                measure = served_loudness(source) if measured else None
                ours = run_ours(
                    library, work / source.name / f"cache{run}", source.preset, source.pss, measure
                )
                shutil.rmtree(work / source.name / f"peer{run}", ignore_errors=True)
                shutil.rmtree(work / source.name / f"cache{run}", ignore_errors=True)
                source.firsts.append((peer[0], ours[0]))
                source.wholes.append((peer[1], ours[1]))
                print(
                    f"{source.name} ({info.duration:.0f} s, {info.samplerate} Hz, "
                    f"{info.channels} ch, {source.preset}) run {run}: peer first {peer[0]:.3f} s "
                    f"whole {peer[1]:.2f} s | ours first {ours[0]:.3f} s whole {ours[1]:.2f} s "
                    f"PSS {source.pss[-1]:.0f} MB",
                    flush=True,
                )
            shutil.rmtree(work / source.name)
        print_table(sources)


def served_loudness(source: Source) -> Callable[[Server], None]:
    """Measure the integrated loudness and true peak of the complete stream."""

    def measure(server: Server) -> None:
        info = server.json("/api/tracks")["tracks"][0]
        url = f"{server.url}/hls/{info['id']}/{source.preset}/1.00/aac/index.m3u8"
        audio = decode(url, info["channels"])
        peak = float(dsp.true_peak_envelope(audio).max(initial=1e-10))
        source.served = (loudness.integrated_loudness(audio, info["sample_rate"]),
                         20 * np.log10(peak))  # fmt: skip

    return measure


def _ratio(pairs: list[tuple[float, float]]) -> float:
    """The median of each run's ours / its own peer (alternating runs)."""
    return statistics.median(o / p for p, o in pairs)


def print_table(sources: list[Source]) -> None:
    print()
    print(f"{'source':12s} {'preset':9s} {'first peer':>10s} {'ours':>7s} {'ratio':>6s}"
          f" {'whole peer':>10s} {'ours':>7s} {'ratio':>6s} {'peak PSS':>9s}"
          f" {'loudness':>9s} {'true peak':>10s}")  # fmt: skip
    firsts, wholes, memory = [], [], []
    errors, peaks = [], []
    for s in sources:
        fp, fo = (statistics.median(x[i] for x in s.firsts) for i in (0, 1))
        wp, wo = (statistics.median(x[i] for x in s.wholes) for i in (0, 1))
        fr, wr = (_ratio(s.firsts), _ratio(s.wholes)) if s.peer else (float("nan"),) * 2
        peak = max(s.pss)
        memory.append(peak)
        if s.peer:
            firsts.append(fr)
            wholes.append(wr)
        served = ""
        if s.served is not None:
            off = s.served[0] - CHAIN_PRESETS[s.preset].target_lufs
            errors.append(abs(off))
            peaks.append(s.served[1])
            served = f" {off:+6.2f} LU {s.served[1]:+6.2f} dBTP"
        print(f"{s.name:12s} {s.preset:9s} {fp:10.3f} {fo:7.3f} {fr:6.2f}"
              f" {wp:10.2f} {wo:7.2f} {wr:6.3f} {peak:7.0f} MB{served}")  # fmt: skip
    print(
        f"median: first {statistics.median(firsts):.2f}, whole {statistics.median(wholes):.3f}, "
        f"PSS {statistics.median(memory):.0f} MB | worst: first {max(firsts):.2f} (target 0.25), "
        f"whole {max(wholes):.3f} (target 0.60), PSS {max(memory):.0f} MB (target 300, margin "
        f"{300 - max(memory):.0f} MB)"
    )
    if errors:
        print(f"loudness: worst {max(errors):.2f} LU from the target (target 1.00), "
              f"highest true peak {max(peaks):+.2f} dBTP (target -1.00)")  # fmt: skip


if __name__ == "__main__":
    main()
