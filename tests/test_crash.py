"""kill -9 while producing, restart, repeat: nothing truncated or mixed is ever served (SPEC §7)."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from tests.conftest import Server, kill_tree, process_tree, put_excerpt, put_track, start_server
from tests.edge import metric
from tests.helpers import parse_playlist


def test_kill_9_during_production_never_leaves_a_bad_segment(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    put_excerpt(lib, "drascula-track2.ogg", 80.0)  # 16 segments a rendition
    cache = tmp_path / "cache"
    rng = random.Random(7)
    for _ in range(4):
        server = start_server("--segment-seconds", "5", cache_dir=cache, library=lib)
        tid = server.track_id("drascula")
        for rendition in ("aac", "flac"):
            assert server.get(f"/hls/{tid}/punchy/1.00/{rendition}/index.m3u8")[0] == 200
        time.sleep(rng.uniform(0.3, 1.5))  # mid-production: workers and encoders busy
        kill_tree(server)
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
        print("segments the survivor made:", metric(survivor, "hls_origin_segments_produced"))
    finally:
        survivor.stop()
        clean.stop()


def _alive(pids: list[int]) -> list[int]:
    """The processes of `pids` still running (a zombie has ended)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _busy_tree(tmp_path: Path) -> tuple[Server, list[int]]:
    """A server producing a track in the background, and its processes (with encoders)."""
    lib = tmp_path / "lib"
    put_track(lib, "drascula-track2.ogg", 198.0)
    server = start_server(cache_dir=tmp_path / "cache", library=lib)
    tid = server.track_id("drascula")
    assert server.get(f"/hls/{tid}/punchy/1.00/aac/index.m3u8")[0] == 200
    time.sleep(0.5)  # mid-production: workers and encoders busy
    tree = process_tree(server.process.pid)
    assert len(tree) >= 4, tree  # server, resource tracker, forkserver, workers (+ ffmpeg)
    return server, tree


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


def _kill_all(pids: list[int]) -> None:
    for pid in _alive(pids):  # what a failed test left behind
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_killed_server_leaves_no_process_behind(tmp_path: Path) -> None:
    # SIGKILL (or the OOM killer) gives the server no chance to shut its pool
    # down: its workers see it gone and exit, and the rest follows them.
    server, tree = _busy_tree(tmp_path)
    try:
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        assert _gone_within(tree, 15.0) == []
    finally:
        _kill_all(tree)


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    server, tree = _busy_tree(tmp_path)
    try:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        assert _gone_within(tree, 15.0) == []
    finally:
        _kill_all(tree)
