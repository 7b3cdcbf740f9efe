"""Seam figures for the note: every track of ../shared/music, original preset, both AAC renditions.

Run: .venv/bin/python benchmarks/seams.py [--preroll FRAMES] [--renditions aac aac-lo]
(--preroll measures another pre-roll than the one the server uses.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processing import render  # noqa: E402
from processing.encode import RENDITIONS  # noqa: E402
from tests.conftest import MUSIC  # noqa: E402
from tests.seams import check  # noqa: E402
from tests.test_seams import (
    RATE,  # noqa: E402
    write_stream,  # noqa: E402
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preroll", type=int, default=render.PREROLL_FRAMES)
    parser.add_argument("--renditions", nargs="+", default=["aac", "aac-lo"])
    args = parser.parse_args()
    render.PREROLL_FRAMES = args.preroll
    print(f"pre-roll {args.preroll} frames")
    files = sorted(MUSIC.glob("*.ogg"))
    if not files:
        raise SystemExit(f"no music in {MUSIC}")
    for rendition in args.renditions:
        for src in files:
            with tempfile.TemporaryDirectory() as tmp:
                reference, boundaries = write_stream(src, Path(tmp), rendition)
                report = check(
                    Path(tmp) / rendition / "index.m3u8", reference, RATE,
                    boundaries, RENDITIONS[rendition].nominal_bitrate(reference.shape[1]),
                )  # fmt: skip
            print(f"{rendition:7s} {src.name:30s} {report}")


if __name__ == "__main__":
    main()
