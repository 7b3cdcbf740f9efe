"""Seam figures for the note: every track of ../shared/music, original preset, both AAC renditions.

Run: .venv/bin/python benchmarks/seams.py [--preroll FRAMES] [--renditions aac aac-lo]
(--preroll measures another pre-roll than the one the server uses.)
Then each track again as a queue (SPEC §10): cut in three at sample positions
off the 1024-sample grid and packaged as one timeline; the seam figures at
the segment boundaries and, apart, at the track joins.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hls.package import package  # noqa: E402
from processing import render  # noqa: E402
from processing.decode import AudioSource  # noqa: E402
from processing.encode import RENDITIONS  # noqa: E402
from processing.plan import plan_segments  # noqa: E402
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
                    boundaries, RENDITIONS[rendition].aac_quality,
                )  # fmt: skip
            print(f"{rendition:7s} {src.name:30s} {report}")
    for rendition in args.renditions:
        for src in files:
            with tempfile.TemporaryDirectory() as tmp:
                segments, joins = queue_reports(src, Path(tmp), rendition)
            print(f"{rendition:7s} {src.name:30s} as a queue, segment seams: {segments}")
            print(f"{rendition:7s} {src.name:30s} as a queue, track joins:   {joins}")


def queue_reports(src: Path, out: Path, rendition: str) -> tuple[object, object]:
    """Seam reports of `src` cut in three tracks and packaged as one queue."""
    whole = AudioSource(src, out / "scratch", "whole")
    reference = whole.read(0, whole.length)
    cuts = [round(len(reference) * 0.37) // 1024 * 1024 + 17,
            round(len(reference) * 0.71) // 1024 * 1024 + 333]  # fmt: skip
    pieces = []
    for i, piece in enumerate(np.split(reference, cuts)):
        pieces.append(out / f"{i}.wav")
        sf.write(pieces[-1], piece, RATE, subtype="FLOAT")  # exact: the joins are the test
    package(pieces, out, "original", "1.00", [rendition], progress=False)
    plan = plan_segments(len(reference), RATE, 30.0)
    quality = RENDITIONS[rendition].aac_quality
    playlist = out / rendition / "index.m3u8"
    segments = check(playlist, reference, RATE, [seg.start for seg in plan.segments[1:]], quality)
    joins = check(playlist, reference, RATE, cuts, quality)
    return segments, joins


if __name__ == "__main__":
    main()
