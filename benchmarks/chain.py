"""Speed of the enhancement chain (times real time, one core) and of the per-track analysis.

Run: .venv/bin/python benchmarks/chain.py
Prints, per preset, the best of 5 renderings of a 41 s window (a 30 s segment
with its context and overlap), then the analysis time of a 7-minute track.
"""

from __future__ import annotations

import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processing import chain  # noqa: E402
from processing.analysis import analyze  # noqa: E402
from processing.decode import AudioSource  # noqa: E402

MUSIC = Path(__file__).resolve().parent.parent.parent / "shared" / "music"
RATE = 44100
WINDOW_SECONDS = 41.0
RUNS = 5


def seven_minute_track(directory: Path) -> Path:
    """Real tracks concatenated to about 7 minutes (synthesized when none are present)."""
    parts = []
    for name in (
        "drascula-track2.ogg",
        "wesnoth-love_theme.ogg",
        "wesnoth-battle-epic.ogg",
        "hyperrogue-savino-ivory.ogg",
    ):
        if (MUSIC / name).is_file():
            parts.append(sf.read(MUSIC / name, dtype="float32", always_2d=True)[0])
    if not parts:
        t = np.arange(RATE * 420) / RATE
        parts = [
            np.stack([np.sin(2 * np.pi * 220 * t) * np.exp(-(t % 0.5) * 4)] * 2, axis=1).astype(
                np.float32
            )
            * 0.5
        ]
    audio = np.concatenate(parts)[: RATE * 420]
    path = directory / "seven-minutes.flac"
    sf.write(path, audio, RATE, subtype="PCM_24")
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = seven_minute_track(Path(tmp))
        source = AudioSource(path, Path(tmp) / "scratch", "bench")
        window = source.read(60 * RATE, round((60 + WINDOW_SECONDS) * RATE))
        print(f"chain on a {WINDOW_SECONDS:.0f} s window, best of {RUNS} (one core):")
        for preset in chain.PRESET_NAMES[1:]:
            params = analyze(source, preset).params
            best = min(
                _timed(partial(chain.process, window, RATE, params, 1.0)) for _ in range(RUNS)
            )
            print(f"  {preset:9s} {best * 1000:7.1f} ms  {WINDOW_SECONDS / best:6.0f}x real time")
        print(f"analysis of a {source.length / RATE:.0f} s track:")
        for preset in ("adaptive", "punchy"):
            best = min(_timed(partial(analyze, source, preset)) for _ in range(3))
            print(f"  {preset:9s} {best:6.2f} s")


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
