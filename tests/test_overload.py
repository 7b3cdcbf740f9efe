"""Overload: past the bounded queue, new cold work gets 503 + Retry-After at once (SPEC §3)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PeakPss, put_track, start_server, tree_pss_mb
from tests.edge import metric
from tests.helpers import parse_playlist


def test_a_saturated_pool_refuses_new_cold_work_quickly_and_finishes_what_it_accepted(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "lib"
    put_track(lib, "drascula-track2.ogg", 198.0)
    server = start_server(
        "--workers", "1", "--max-pending", "2", cache_dir=tmp_path / "cache", library=lib
    )
    try:
        tid = server.track_id("drascula")
        server.get(f"/hls/{tid}/original/1.00/aac/index.m3u8")  # the source is prepared
        results: dict[int, tuple[int, dict, bytes, float]] = {}

        def cold(i: int) -> None:
            started = time.perf_counter()
            status, headers, body = server.get(
                f"/hls/{tid}/punchy/{i * 0.05 + 0.05:.2f}/aac/index.m3u8"
            )
            results[i] = (status, headers, body, time.perf_counter() - started)

        baseline = tree_pss_mb(server.process.pid)
        with PeakPss(server.process.pid) as memory:
            threads = [threading.Thread(target=cold, args=(i,)) for i in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        # One worker: refused work costs nothing, accepted work one window at a time.
        assert memory.peak - baseline < 150, (baseline, memory.peak)
        statuses = [r[0] for r in results.values()]
        assert 503 in statuses and 200 in statuses, statuses
        for status, headers, body, seconds in results.values():
            if status == 503:
                assert headers["Retry-After"] and seconds < 1.0, seconds
            else:
                assert status == 200 and parse_playlist(body).segments
        assert server.get("/healthz")[0] == 200
        # Refused streams work once the load is gone.
        for i, (status, *_rest) in results.items():
            if status == 503:
                again = server.get(f"/hls/{tid}/punchy/{i * 0.05 + 0.05:.2f}/aac/index.m3u8")
                assert again[0] == 200
    finally:
        server.stop()


def test_a_client_that_disconnects_does_not_cancel_work_another_waits_for(tmp_path: Path) -> None:
    import socket
    from urllib.parse import urlsplit

    lib = tmp_path / "lib"
    put_track(lib, "wesnoth-battle-epic.ogg", 74.0)
    server = start_server("--segment-seconds", "10", cache_dir=tmp_path / "cache", library=lib)
    try:
        tid = server.track_id("battle")
        path = f"/hls/{tid}/bright/0.80/aac/6.m4s"
        parts = urlsplit(server.url)
        quitter = socket.create_connection((parts.hostname, parts.port))
        quitter.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.05)
        quitter.close()  # gone before the segment exists
        status, _, body = server.get(path)
        assert status == 200 and body[4:8] == b"styp"
        assert server.get("/healthz")[0] == 200
    finally:
        server.stop()


def until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Wait for `condition`, polled; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_queued_work_whose_only_client_left_is_dropped(tmp_path: Path) -> None:
    import socket
    from urllib.parse import urlsplit

    lib = tmp_path / "lib"
    put_track(lib, "drascula-track2.ogg", 198.0)
    cache = tmp_path / "cache"
    server = start_server(
        "--workers", "1", "--segment-seconds", "10", "--idle-seconds", "0.5",
        cache_dir=cache, library=lib,
    )  # fmt: skip
    try:
        tid = server.track_id("drascula")
        # Listeners' work ahead of the quitter's in the only worker's queue:
        # four segments, each after its preset's analysis. Once three jobs
        # wait, the quitter's waits behind them whatever this machine's speed.
        busy = [
            threading.Thread(target=server.get, args=(f"/hls/{tid}/{preset}/1.00/flac/12.m4s",))
            for preset in ("punchy", "gentle", "bright", "adaptive")
        ]
        for thread in busy:
            thread.start()
        until(lambda: metric(server, "hls_origin_jobs_waiting") >= 3, "the busy work queued")
        parts = urlsplit(server.url)
        quitter = socket.create_connection((parts.hostname, parts.port))
        quitter.sendall(f"GET /hls/{tid}/warm/1.00/aac/15.m4s HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.2)  # for the origin to read the request (the work ahead takes seconds)
        quitter.close()  # leaves while its segment is still queued
        until(lambda: metric(server, "hls_origin_jobs_dropped") >= 1, "the quitter's work dropped")
        for thread in busy:
            thread.join()
        until(lambda: metric(server, "hls_origin_jobs_running") == 0, "the worker idle")
        assert not list(cache.rglob("warm/1.00/aac/15.m4s"))  # dropped work never ran
        assert server.get(f"/hls/{tid}/warm/1.00/aac/15.m4s")[0] == 200  # asked again: made
    finally:
        server.stop()
