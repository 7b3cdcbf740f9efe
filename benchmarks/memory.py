"""Memory of the whole server process tree (PSS) while it produces a 5-minute and a 60-minute track.

Run: .venv/bin/python benchmarks/memory.py [--minutes 5 60]
Synthesizes each track (written in blocks, never whole in memory), starts a
server, plays its live playlist to the end, and samples the summed
proportional set size of the server, its worker processes and encoders.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import PeakPss, http_get, start_server  # noqa: E402
from tests.helpers import parse_playlist  # noqa: E402

RATE = 44100
BLOCK_SECONDS = 60


def write_long_track(path: Path, minutes: float) -> None:
    rng = np.random.default_rng(11)
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_16", format="FLAC") as f:
        done = 0.0
        while done < minutes * 60:
            seconds = min(BLOCK_SECONDS, minutes * 60 - done)
            t = done + np.arange(round(seconds * RATE)) / RATE
            tone = 0.25 * np.sin(2 * np.pi * 220 * t) * np.exp(-(t % 0.5) * 5)
            block = np.stack([tone, tone], axis=1) + 0.02 * rng.standard_normal((len(t), 2))
            f.write(block.astype(np.float32))
            done += seconds


def measure(minutes: float, work: Path) -> tuple[float, float]:
    library = work / f"lib{minutes:g}"
    library.mkdir()
    write_long_track(library / "long.flac", minutes)
    server = start_server(cache_dir=work / f"cache{minutes:g}", library=library)
    started = time.perf_counter()
    try:
        # Forkserver and workers are children of the server; encoders of the workers.
        with PeakPss(server.process.pid, interval=0.1) as memory:
            tid = server.json("/api/tracks")["tracks"][0]["id"]
            base = f"{server.url}/hls/{tid}/punchy/1.00/aac"
            _, _, body = http_get(f"{base}/index.m3u8")
            while b"#EXT-X-ENDLIST" not in body:
                msn = len(parse_playlist(body).segments)
                _, _, body = http_get(f"{base}/index.m3u8?_HLS_msn={msn}")
            elapsed = time.perf_counter() - started
    finally:
        server.stop()
    return memory.peak, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 60.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for minutes in args.minutes:
            peak, elapsed = measure(minutes, Path(tmp))
            results[minutes] = peak
            print(
                f"{minutes:g}-minute track: peak PSS of the process tree {peak:.0f} MB "
                f"(produced in {elapsed:.1f} s)",
                flush=True,
            )
        if len(results) == 2:
            small, large = (results[m] for m in sorted(results))
            print(f"difference: {large - small:+.0f} MB (target: under 300 MB, within 30 MB)")


if __name__ == "__main__":
    main()
