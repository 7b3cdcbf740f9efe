"""Queues (SPEC §10): the cold first segment of a never-seen queue against a single
track's, and the memory of producing a 60-minute queue against a 60-minute track.

Run: .venv/bin/python benchmarks/queues.py [--runs 5] [--minutes 60]
Cold start: each run starts a server on an empty cache and asks for the live
playlist (answered once segment 0 is made) of the first track alone, then on
another empty cache of a queue of three tracks that starts with it (POST
/api/queues, then the playlist), alternating; the medians and their ratio.
Memory: a server produces the whole of a 60-minute track, then of a queue of
six 10-minute tracks; the peak PSS of each process tree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.memory import write_long_track  # noqa: E402
from tests.conftest import MUSIC, PeakPss, Server, http_get, start_server  # noqa: E402
from tests.helpers import parse_playlist  # noqa: E402

TRACKS = ("wesnoth-battle-epic.ogg", "wesnoth-love_theme.ogg", "drascula-track2.ogg")


def post_queue(server: Server, ids: list[str], gain: str) -> dict:
    body = json.dumps({"tracks": ids, "gain": gain}).encode()
    request = urllib.request.Request(server.url + "/api/queues", data=body)
    with urllib.request.urlopen(request, timeout=120) as response:
        return dict(json.loads(response.read()))


def cold_start(library: Path, work: Path, run: int, what: str) -> tuple[float, float]:
    """Seconds until the live playlist of a cold stream answers, and the POST's part."""
    server = start_server(cache_dir=work / f"cache-{what}-{run}", library=library)
    try:
        ids = {Path(t["path"]).name: t["id"] for t in server.json("/api/tracks")["tracks"]}
        started = time.perf_counter()
        posted = 0.0
        if what == "single":
            sid = ids[TRACKS[0]]
        else:
            sid = post_queue(server, [ids[name] for name in TRACKS], what)["id"]
            posted = time.perf_counter() - started
        status, _, _ = http_get(f"{server.url}/hls/{sid}/adaptive/1.00/aac/index.m3u8")
        assert status == 200
        return time.perf_counter() - started, posted
    finally:
        server.stop()


def produce_all(server: Server, sid: str) -> None:
    base = f"{server.url}/hls/{sid}/punchy/1.00/aac"
    _, _, body = http_get(f"{base}/index.m3u8")
    while b"#EXT-X-ENDLIST" not in body:
        msn = len(parse_playlist(body).segments)
        _, _, body = http_get(f"{base}/index.m3u8?_HLS_msn={msn}")


def memory(work: Path, minutes: float) -> dict[str, float]:
    peaks = {}
    single = work / "single"
    single.mkdir()
    write_long_track(single / "long.flac", minutes)
    parts = work / "parts"
    parts.mkdir()
    for i in range(6):
        write_long_track(parts / f"part{i}.flac", minutes / 6)
    for what, library in (("track", single), ("queue", parts)):
        server = start_server(cache_dir=work / f"mem-{what}", library=library)
        try:
            with PeakPss(server.process.pid, interval=0.1) as pss:
                ids = [t["id"] for t in server.json("/api/tracks")["tracks"]]
                sid = ids[0] if what == "track" else post_queue(server, ids, "track")["id"]
                produce_all(server, sid)
            peaks[what] = pss.peak
        finally:
            server.stop()
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        library = work / "library"
        library.mkdir()
        for name in TRACKS:
            (library / name).write_bytes((MUSIC / name).read_bytes())
        times: dict[str, list[float]] = {"track": [], "track-queue": [], "album-queue": []}
        posts: dict[str, list[float]] = {"track-queue": [], "album-queue": []}
        for run in range(0 if args.skip_cold else args.runs):
            for key in times:  # alternating
                what = key.removesuffix("-queue") if key != "track" else "single"
                seconds, posted = cold_start(library, work, run, what)
                times[key].append(seconds)
                if key in posts:
                    posts[key].append(posted)
        base = statistics.median(times["track"]) if times["track"] else 0.0
        if base:
            print(f"cold first segment, median of {args.runs} alternating runs:")
            print(f"  single track        {base:.3f} s")
        for key in ("track-queue", "album-queue") if base else ():
            median = statistics.median(times[key])
            print(
                f"  queue of 3, gain {key.split('-')[0]:5s} {median:.3f} s "
                f"(POST {statistics.median(posts[key]):.3f} s): ratio {median / base:.3f}"
            )
        if not args.skip_memory:
            peaks = memory(work, args.minutes)
            print(
                f"{args.minutes:g} minutes, peak PSS of the process tree: track "
                f"{peaks['track']:.0f} MB, queue of 6 {peaks['queue']:.0f} MB "
                f"(target under 300 MB)"
            )


if __name__ == "__main__":
    main()
