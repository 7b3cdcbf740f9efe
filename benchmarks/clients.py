"""The conformance matrix on a long track: every client × every playlist, cold.

Run: .venv/bin/python benchmarks/clients.py [--seconds 95] [--clients hlsdemux2,ffmpeg]

The same cells as tests/test_clients.py (tests/clients.py), on an excerpt of
a real recording (synthesized when ../shared/music is absent) with the
default 30 s segments, so that real-time plays cross full-length seams and
several live reloads. Prints one line per cell: decoded length minus the
expected, per-segment lag, real-time stall.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import clients  # noqa: E402
from tests.conftest import music_file, start_server, synth_program  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=95.0)
    parser.add_argument("--clients", default=",".join(clients.CLIENTS))
    args = parser.parse_args()
    group = tuple(args.clients.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        lib, cache = Path(tmp) / "lib", Path(tmp) / "cache"
        lib.mkdir()
        real = music_file("wesnoth-battle-epic.ogg")
        if real is not None:
            audio, rate = sf.read(
                str(real), dtype="float32", start=333, frames=round(44100 * args.seconds)
            )
        else:
            audio, rate = synth_program(args.seconds, seed=16), 44100
        sf.write(lib / "long.flac", audio, rate, subtype="PCM_24")
        server = start_server("--workers", "2", cache_dir=cache, library=lib)
        try:
            stream = clients.Stream(server.track_id("long"), len(audio), rate, audio.shape[1])
            started = time.monotonic()
            cells = clients.run_matrix(server, stream, group)
        finally:
            server.stop()
    print(
        f"{len(audio) / rate:.1f} s track, {len(cells)} cells in {time.monotonic() - started:.0f} s"
    )
    print(clients.table(cells))
    known = [c for c in cells if (c.client, c.row) in clients.KNOWN_CLIENT_BUGS]
    failed = [c for c in cells if not c.ok and c not in known]
    print(
        f"{len(cells) - len(failed) - len(known)} ok, {len(known)} known client bugs, {len(failed)} failed"
    )


if __name__ == "__main__":
    main()
