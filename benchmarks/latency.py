"""Responsiveness under load: cached segments and playlists while 4 cold streams are produced.

Run: .venv/bin/python benchmarks/latency.py [--seconds 15]
Prints p50/p99/max latency of requests for an already produced stream while
four never-seen streams are being produced (target p99 under 50 ms).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import Server, http_get, put_track, start_server  # noqa: E402
from tests.helpers import parse_playlist  # noqa: E402

TRACKS = ["wesnoth-battle-epic.ogg", "drascula-track2.ogg", "wesnoth-love_theme.ogg"]


def follow(server: Server, base: str, stop: threading.Event) -> None:
    """A player on a cold stream: the playlist, then blocking reloads to the end."""
    status, _, body = http_get(f"{base}/index.m3u8", timeout=60)
    while status == 200 and b"#EXT-X-ENDLIST" not in body and not stop.is_set():
        msn = len(parse_playlist(body).segments)
        status, _, body = http_get(f"{base}/index.m3u8?_HLS_msn={msn}", timeout=60)


def measure(server: Server, seconds: float) -> list[float]:
    tracks = server.json("/api/tracks")["tracks"]
    hot = f"{server.url}/hls/{tracks[0]['id']}/gentle/1.00/aac"
    follow(server, hot, threading.Event())  # produce it whole first
    _, _, body = http_get(f"{hot}/index.m3u8")
    names = ["index.m3u8", "init.mp4"] + [s.uri for s in parse_playlist(body).segments]
    stop = threading.Event()
    cold = [
        f"{server.url}/hls/{t['id']}/{preset}/1.00/aac"
        for t, preset in zip(tracks[1:] * 2, ["punchy", "warm", "bright", "adaptive"], strict=False)
    ]
    players = [threading.Thread(target=follow, args=(server, base, stop)) for base in cold]
    for p in players:
        p.start()
    latencies = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        status, _, _ = http_get(f"{hot}/{names[i % len(names)]}")
        latencies.append(time.perf_counter() - started)
        assert status == 200
        i += 1
        time.sleep(0.01)
    stop.set()
    for p in players:
        p.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "library"
        for name in TRACKS:
            put_track(library, name, 120.0)
        server = start_server(cache_dir=Path(tmp) / "cache", library=library)
        try:
            latencies = sorted(measure(server, args.seconds))
        finally:
            server.stop()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"{len(latencies)} requests during 4 cold productions: p50 "
        f"{statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms (target p99 < 50 ms)"
    )


if __name__ == "__main__":
    main()
