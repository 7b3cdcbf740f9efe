"""A listener's work never waits behind background production (hls.preemption)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hls.package import package
from tests.conftest import put_track, start_server
from tests.helpers import parse_playlist


def test_a_new_track_starts_at_once_while_another_is_produced_in_the_background(
    tmp_path: Path,
) -> None:
    # One worker, busy with a run of several units of track A (seconds of
    # encoding): the first segment of track B takes it over at once, and A's
    # background resumes after it, to the bytes of a production never stopped.
    lib = tmp_path / "lib"
    long = put_track(lib, "drascula-track2.ogg", 198.0)
    put_track(lib, "wesnoth-battle-epic.ogg", 74.0)
    server = start_server("--workers", "1", cache_dir=tmp_path / "cache", library=lib)
    try:
        a = f"/hls/{server.track_id('drascula')}/punchy/1.00/aac"
        b = f"/hls/{server.track_id('battle')}/punchy/1.00/aac"
        assert server.get(f"{a}/index.m3u8")[0] == 200  # segment 0; A's background starts
        time.sleep(0.5)  # its first run has the worker
        started = time.perf_counter()
        assert server.get(f"{b}/index.m3u8")[0] == 200
        assert server.get(f"{b}/0.m4s")[0] == 200
        seconds = time.perf_counter() - started
        metrics = server.get("/metrics")[2].decode()
        preemptions = float(re.search(r"^hls_origin_preemptions (\S+)$", metrics, re.M)[1])
        print(f"first segment of B while A is produced: {seconds:.2f} s")
        # Waiting for A's run (three 60 s units) took 2-5 s; B's own work is ~0.2 s.
        assert preemptions >= 1 and seconds < 1.5, (preemptions, seconds)
        with ThreadPoolExecutor(1) as pool:  # the reference, on the core the server leaves
            packaging = pool.submit(
                package, long, tmp_path / "package", "punchy", "1.00", ["aac"], progress=False
            )
            body = server.get(f"{a}/index.m3u8")[2]
            deadline = time.monotonic() + 120
            while b"#EXT-X-ENDLIST" not in body and time.monotonic() < deadline:
                msn = len(parse_playlist(body).segments)
                body = server.get(f"{a}/index.m3u8?_HLS_msn={msn}")[2]
            packaging.result()
        segments = parse_playlist(body).segments
        packaged = list((tmp_path / "package" / "aac").glob("*.m4s"))
        assert b"#EXT-X-ENDLIST" in body and len(segments) == len(packaged) > 5
        for segment in segments:
            served = server.get(f"{a}/{segment.uri}")[2]
            assert served == (tmp_path / "package" / "aac" / segment.uri).read_bytes(), segment
    finally:
        server.stop()


def test_a_run_a_listener_waits_for_stops_after_its_unit_for_another_track(
    tmp_path: Path,
) -> None:
    # One worker runs A's first background run, units [1], [2, 3], [4, 5]
    # (130 s of audio), and a listener at A's live edge waits for segment 2.
    # B's first listener then waits for A's unit in progress only, not for
    # the whole run: when B is answered, A has made its segments 0-3 at most,
    # and A's listener has its segment. (Waiting for the whole run, as when a
    # run a listener waited for was never stopped, is how a cold segment 1
    # came 3 s late in the load test.)
    lib = tmp_path / "lib"
    put_track(lib, "drascula-track2.ogg", 198.0)
    put_track(lib, "wesnoth-battle-epic.ogg", 74.0)
    server = start_server("--workers", "1", cache_dir=tmp_path / "cache", library=lib)
    try:
        a_id = server.track_id("drascula")
        a, b = (f"/hls/{a_id}/punchy/1.00", f"/hls/{server.track_id('battle')}/punchy/1.00")
        assert server.get(f"{a}/aac/index.m3u8")[0] == 200  # segment 0; A's background starts
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(server.get, f"{a}/aac/2.m4s")
            time.sleep(0.1)  # asked while A's run is in its first or second unit
            assert server.get(f"{b}/aac/index.m3u8")[0] == 200
            done = server.json(f"/api/status/{a_id}/punchy/1.00")["renditions"]["aac"]["done"]
            assert waiting.result()[0] == 200
        preemptions = float(
            re.search(r"^hls_origin_preemptions (\S+)$", server.get("/metrics")[2].decode(), re.M)[
                1
            ]
        )
        print(f"A's segments made when B's first is answered: {done}")
        assert preemptions >= 1 and done <= 4, (preemptions, done)
    finally:
        server.stop()
