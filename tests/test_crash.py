"""kill -9 while producing, restart, repeat: nothing truncated or mixed is ever served (SPEC §7)."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from tests.conftest import process_tree, put_track, start_server
from tests.helpers import parse_playlist


def test_kill_9_during_production_never_leaves_a_bad_segment(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    put_track(lib, "drascula-track2.ogg", 198.0)
    cache = tmp_path / "cache"
    rng = random.Random(7)
    for _ in range(4):
        server = start_server("--segment-seconds", "5", cache_dir=cache, library=lib)
        tid = server.track_id("drascula")
        for rendition in ("aac", "flac"):
            assert server.get(f"/hls/{tid}/punchy/1.00/{rendition}/index.m3u8")[0] == 200
        time.sleep(rng.uniform(0.3, 1.5))  # mid-production: workers and encoders busy
        for pid in process_tree(server.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.process.wait(10)
    survivor = start_server("--segment-seconds", "5", cache_dir=cache, library=lib)
    clean = start_server("--segment-seconds", "5", cache_dir=tmp_path / "clean", library=lib)
    try:
        tid = survivor.track_id("drascula")
        for rendition in ("aac", "flac"):
            base = f"/hls/{tid}/punchy/1.00/{rendition}"
            count = len(parse_playlist(survivor.get(f"{base}/vod.m3u8")[2]).segments)
            for i in range(count):
                status, _, body = survivor.get(f"{base}/{i}.m4s")
                assert status == 200 and body == clean.get(f"{base}/{i}.m4s")[2], (rendition, i)
    finally:
        survivor.stop()
        clean.stop()
