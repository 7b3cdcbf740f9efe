"""Origins behind real nginx (nginx/): signed links checked at the edge, a fleet of
three origins with tracks hashed onto them, failover after SIGKILL while hls.js plays."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hls.signing import signature
from tests import clients
from tests.conftest import Server, kill_tree, put_track, start_server
from tests.edge import Edge, metric, play, sha256, start_edge
from tests.helpers import parse_playlist

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is installed by make test"
)
KEY = "fleet-signing-key_42"
TRACKS = {
    "wesnoth-battle-epic.ogg": 74.0,
    "wesnoth-love_theme.ogg": 95.0,
    "hyperrogue-tada-mono.ogg": 30.0,
    "drascula-track2.ogg": 198.0,
}


@pytest.fixture(scope="module")
def fleet_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("fleet-lib")
    for name, seconds in TRACKS.items():
        put_track(lib, name, seconds)
    return lib


def start_fleet(
    library: Path, tmp: Path, count: int, shared_cache: bool = False, **env: str
) -> list[Server]:
    """`count` origins started at once, each with its own cache directory or one shared."""

    def start(i: int) -> Server:
        cache = tmp / ("shared-cache" if shared_cache else f"cache-{i}")
        args = ("--segment-seconds", "10", "--workers", "1")
        return start_server(*args, cache_dir=cache, library=library, env=env)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if clients.CHROMIUM is None:
        pytest.skip("make test installs chromium")
    with clients.browser_context() as context:
        yield context


def test_signed_links_are_checked_by_nginx_before_the_origin_and_play(
    fleet_library: Path, tmp_path: Path, browser: object
) -> None:
    env = {"HLS_ORIGIN_SIGNING_KEY": KEY}
    (origin,) = start_fleet(fleet_library, tmp_path, 1, **env)
    edge = start_edge([origin], tmp_path / "nginx", env)
    try:
        track = next(t for t in edge_json(edge, "/api/tracks")["tracks"] if "battle" in t["path"])
        tid, base = track["id"], track["hls"]
        expires, sig = base.split("/")[2:4]
        past = int(time.time()) - 5
        refused = {
            "unsigned": f"/hls/{tid}/adaptive/1.00/master.m3u8",
            "unsigned status": f"/api/status/{tid}/adaptive/1.00",
            "tampered": f"/s/{expires}/{sig[:-3]}abc/hls/{tid}/adaptive/1.00/master.m3u8",
            "longer life": f"/s/{int(expires) + 60}/{sig}/hls/{tid}/adaptive/1.00/master.m3u8",
            "expired": f"/s/{past}/{signature(KEY, past, tid)}/hls/{tid}/adaptive/1.00/aac/0.m4s",
            "malformed": f"/s/{expires}/x/hls/{tid}/adaptive/1.00/master.m3u8",
        }
        for why, path in refused.items():
            status, headers, body = edge.get(path)
            assert status == 403, why
            assert json.loads(body)["error"] == "forbidden", why
            assert "(nginx)" in json.loads(body)["detail"], why  # answered by the edge
            assert headers["Cache-Control"] == "public, max-age=2", why
        asked = [r["path"] for r in edge.access_log() if r["upstream"] != "-"]
        assert not any(p in asked for p in refused.values()), asked
        # The origin refuses them too when asked directly.
        for why, path in refused.items():
            assert origin.get(path)[0] == 403, why
        # A signed link plays in hls.js through nginx (the player page too).
        log = play(browser, edge.url + "/", track["master"], until=5.0)
        print("signed link through nginx:", {k: v for k, v in log.items() if k != "frags"})
        assert not log["errors"] and log["playing"] is not None, log
        assert [s for s in log["stalls"] if s[1] > 0.5] == [], log
        assert len(log["buffered"]) == 1 and log["currentTime"] >= 5.0, log
        status, headers, _ = edge.get(f"{base}/adaptive/1.00/aac/0.m4s")
        assert status == 200 and headers["X-Cache-Status"] == "HIT"
    finally:
        edge.stop()
        origin.stop()


def edge_json(edge: Edge, path: str) -> dict:
    status, _, body = edge.get(path)
    assert status == 200, (path, status, body[:200])
    return dict(json.loads(body))


def test_each_track_is_made_by_exactly_one_origin_of_the_fleet(
    fleet_library: Path, tmp_path: Path
) -> None:
    fleet = start_fleet(fleet_library, tmp_path, 3)
    edge = start_edge(fleet, tmp_path / "nginx")
    try:
        owners = {}
        tracks = [t for t in edge_json(edge, "/api/tracks")["tracks"] if t["duration"] < 100]
        # A queue of them too: its id carries it, so whichever origin took the
        # POST, the one its id hashes to reads it from the URL.
        body = json.dumps({"tracks": [t["id"] for t in tracks], "gain": "album"}).encode()
        request = urllib.request.Request(edge.url + "/api/queues", data=body)
        with urllib.request.urlopen(request, timeout=60) as response:
            queue = json.loads(response.read())
        streams = [(t["path"], t["id"]) for t in tracks] + [("the queue", queue["id"])]
        for name, sid in streams:
            before = [metric(o, "hls_origin_segments_produced") for o in fleet]
            base = f"/hls/{sid}/adaptive/1.00/aac"
            status, _, body = edge.get(f"{base}/vod.m3u8")
            assert status == 200
            for uri in ["init.mp4"] + [s.uri for s in parse_playlist(body).segments]:
                status, headers, _ = edge.get(f"{base}/{uri}")
                assert status == 200 and headers["X-Cache-Status"] == "MISS", uri
            after = [metric(o, "hls_origin_segments_produced") for o in fleet]
            worked = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if a > b]
            print(name, "produced per origin:", [a - b for a, b in zip(after, before, strict=True)])
            assert len(worked) == 1, (name, before, after)
            owners[name] = worked[0]
        print("owners:", owners)
        # Every segment through the edge once: the origins served each once.
        total = sum(metric(o, "hls_origin_segments_served") for o in fleet)
        segments = sum(
            len(parse_playlist(edge.get(f"/hls/{sid}/adaptive/1.00/aac/vod.m3u8")[2]).segments)
            for _, sid in streams
        )
        assert total == segments, (total, segments)
    finally:
        edge.stop()
        for origin in fleet:
            origin.stop()


def test_playback_goes_on_when_its_origin_is_killed(
    fleet_library: Path, tmp_path: Path, browser: object
) -> None:
    # Origins with their own caches: the one taking over makes the stream
    # cold, and its segments must be the dead one's, byte for byte.
    fleet = start_fleet(fleet_library, tmp_path, 3)
    edge = start_edge(fleet, tmp_path / "nginx")
    killed: list[int] = []
    try:
        tid = next(
            t["id"] for t in edge_json(edge, "/api/tracks")["tracks"] if "drascula" in t["path"]
        )
        before = [metric(o, "hls_origin_segments_produced") for o in fleet]

        def kill_the_producer() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = [metric(o, "hls_origin_segments_produced") for o in fleet]
                busy = [i for i, (b, a) in enumerate(zip(before, now, strict=True)) if a > b]
                if busy:
                    time.sleep(3.0)  # a few seconds into playback, mid-production
                    killed.append(busy[0])
                    kill_tree(fleet[busy[0]])
                    return
                time.sleep(0.2)

        killer = threading.Thread(target=kill_the_producer)
        killer.start()
        url = f"/hls/{tid}/punchy/1.00/master.m3u8"
        log = play(browser, edge.url + "/", url, until=22.0)
        killer.join()
        stalls = log["stalls"]
        print(f"killed origin {killed}; stalls {stalls}; errors {log['errors']};"
              f" {len(log['frags'])} fragments, played to {log['currentTime']:.1f} s")  # fmt: skip
        assert killed, "no origin produced the stream"
        assert not log["errors"], log["errors"]
        assert log["currentTime"] >= 22.0 and len(log["buffered"]) == 1, log["buffered"]
        assert all(seconds < 2.0 for _, seconds in stalls), stalls
        survivors = [o for i, o in enumerate(fleet) if i not in killed]
        assert sum(metric(o, "hls_origin_segments_produced") for o in survivors) > 0
        # Every fragment received is byte-identical to a single origin's production
        # (with two workers, asked two at a time: the bytes do not depend on either).
        single = start_server(
            "--segment-seconds", "10", "--workers", "2",
            cache_dir=tmp_path / "single", library=fleet_library,
        )  # fmt: skip

        def fetched(frag: dict) -> tuple[str, int, str]:
            path = frag["url"].split(edge.url, 1)[1]
            status, _, data = single.get(path)
            return path, status, sha256(data)

        try:
            with ThreadPoolExecutor(2) as pool:
                for frag, (path, status, sha) in zip(
                    log["frags"], pool.map(fetched, log["frags"]), strict=True
                ):
                    assert status == 200 and sha == frag["sha"], path
        finally:
            single.stop()
        assert len(log["frags"]) >= 5
    finally:
        edge.stop()
        for i, origin in enumerate(fleet):
            if i not in killed:
                origin.stop()
