"""Cache behaviour through real server processes: single flight, shared caches, the size cap (SPEC §7)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.cache import DiskCache
from storage.eviction import LruIndex
from tests.conftest import Server, put_track, start_server
from tests.edge import metric
from tests.helpers import lock_held_elsewhere, parse_playlist


def produced(server: Server, rendition: str = "aac") -> int:
    _, _, body = server.get("/metrics")
    match = re.search(
        rf'hls_origin_segment_production_seconds_count{{rendition="{rendition}"}} (\S+)',
        body.decode(),
    )
    return int(float(match.group(1))) if match else 0


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    put_track(lib, "wesnoth-battle-epic.ogg", 74.0)
    return lib


def wait_complete(server: Server, tid: str, preset: str, timeout: float = 60.0) -> int:
    """Wait until the aac rendition is fully produced; returns its segment count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        aac = server.json(f"/api/status/{tid}/{preset}/1.00")["renditions"]["aac"]
        if aac["done"] == aac["total"]:
            return int(aac["total"])
        time.sleep(0.2)
    raise AssertionError("production did not complete")


def fetch_all(server: Server, paths: list[str]) -> list[tuple[int, bytes]]:
    results: list[tuple[int, bytes]] = [(0, b"")] * len(paths)

    def one(i: int) -> None:
        status, _, body = server.get(paths[i])
        results[i] = (status, body)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_twenty_concurrent_requests_for_one_missing_segment_produce_it_once(
    library: Path, tmp_path: Path
) -> None:
    server = start_server("--segment-seconds", "10", cache_dir=tmp_path / "cache", library=library)
    try:
        tid = server.track_id("battle")
        results = fetch_all(server, [f"/hls/{tid}/warm/1.00/aac/5.m4s"] * 20)
        assert {status for status, _ in results} == {200}
        assert len({body for _, body in results}) == 1
        # The request also starts background production of the rest: once it is
        # done, every segment must have been produced exactly once.
        total = wait_complete(server, tid, "warm")
        assert produced(server) == total
    finally:
        server.stop()


def test_two_servers_sharing_a_cache_produce_each_segment_once(
    library: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "shared-cache"
    a = start_server("--segment-seconds", "10", "--workers", "1", cache_dir=cache, library=library)
    b = start_server("--segment-seconds", "10", "--workers", "1", cache_dir=cache, library=library)
    try:
        tid = a.track_id("battle")
        base = f"/hls/{tid}/bright/1.00/aac"
        count = len(parse_playlist(a.get(f"{base}/vod.m3u8")[2]).segments)
        paths = [f"{base}/{i}.m4s" for i in range(count)]
        results_a: list = []
        thread = threading.Thread(target=lambda: results_a.extend(fetch_all(a, paths)))
        thread.start()
        results_b = fetch_all(b, paths)
        thread.join()
        assert [body for _, body in results_a] == [body for _, body in results_b]
        wait_complete(a, tid, "bright")
        wait_complete(b, tid, "bright")
        assert produced(a) + produced(b) == count, (produced(a), produced(b))
    finally:
        a.stop()
        b.stop()


def test_the_size_cap_holds_keeps_segment_zero_and_evicted_segments_return_identical(
    library: Path, tmp_path: Path
) -> None:
    cap = 800_000
    server = start_server(
        "--segment-seconds",
        "10",
        "--cache-max-bytes",
        str(cap),
        cache_dir=tmp_path / "cache",
        library=library,
    )
    try:
        tid = server.track_id("battle")
        base = f"/hls/{tid}/punchy/1.00/aac"
        count = len(parse_playlist(server.get(f"{base}/vod.m3u8")[2]).segments)
        first = {i: server.get(f"{base}/{i}.m4s")[2] for i in range(count)}
        assert sum(len(b) for b in first.values()) > 2 * cap  # the cap must bite
        wait_complete(server, tid, "punchy")
        server.get(f"{base}/{count - 1}.m4s")  # the most recently used entry
        on_disk = sum(p.stat().st_size for p in (tmp_path / "cache" / "segments").rglob("*.m4s"))
        assert on_disk <= cap and metric(server, "hls_origin_cache_bytes") <= cap
        assert metric(server, "hls_origin_cache_evictions") > 0
        assert list((tmp_path / "cache" / "segments").rglob("0.m4s"))  # pinned
        # Hot entries stay: the last one served is still there.
        assert list((tmp_path / "cache" / "segments").rglob(f"{count - 1}.m4s"))
        again = {i: server.get(f"{base}/{i}.m4s")[2] for i in range(count)}
        assert again == first
    finally:
        server.stop()


def test_lru_index_survives_a_restart_in_recency_order(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    keys = [("segments", "t", f"{i}.m4s") for i in range(5)]
    index = LruIndex(cache, 10_000)
    for key in keys:
        cache.write(key, b"x" * 1000)
        index.touch(key, 1000)
        time.sleep(0.02)  # file times are coarser than the loop
    index.touch(keys[1], 1000)  # used again: now the most recent
    reloaded = LruIndex(cache, 2500)
    reloaded.load()
    assert reloaded.total_bytes == 5000
    removed = reloaded.evict()
    assert removed == ["t/2.m4s", "t/3.m4s", "t/4.m4s"]  # 0 is pinned, 1 was used last
    assert reloaded.total_bytes == 2000


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1.2 MB tmpfs (needs root, as in CI); skipped where mounting is not allowed."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_clear_503_and_never_a_truncated_segment(
    library: Path, tiny_disk: Path
) -> None:
    server = start_server(
        "--segment-seconds",
        "10",
        "--workers",
        "1",
        "--idle-seconds",
        "600",
        cache_dir=tiny_disk,
        library=library,
    )
    try:
        tid = server.track_id("battle")
        base = f"/hls/{tid}/punchy/1.00/flac"  # ~1 MB per 10 s: the disk fills at once
        count = len(parse_playlist(server.get(f"{base}/vod.m3u8")[2]).segments)
        statuses, served = [], {}
        for i in range(count):
            status, headers, body = server.get(f"{base}/{i}.m4s")
            statuses.append(status)
            if status == 200:
                served[f"{i}.m4s"] = body
            if status == 503:
                assert headers["Retry-After"] and json.loads(body)["error"] == "cache unavailable"
        assert 503 in statuses, statuses
        assert server.get("/healthz")[0] == 200
        for path in tiny_disk.rglob("*.m4s"):  # whatever was stored is whole
            if path.name in served:
                assert path.read_bytes() == served[path.name]
        assert not [p for p in tiny_disk.rglob("*.part")]
    finally:
        server.stop()


def test_a_changed_source_never_serves_old_segments(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    import soundfile as sf

    from tests.conftest import synth_program

    sf.write(lib / "song.wav", synth_program(12.0, seed=1), 44100)
    server = start_server("--segment-seconds", "4", cache_dir=tmp_path / "cache", library=lib)
    try:
        tid = server.track_id("song")
        base = f"/hls/{tid}/original/1.00/flac"
        before = server.get(f"{base}/1.m4s")[2]
        sf.write(lib / "song.wav", synth_program(12.0, seed=2), 44100)  # same name, size and length
        after = server.get(f"{base}/1.m4s")[2]
        assert after != before
        fresh = start_server("--segment-seconds", "4", cache_dir=tmp_path / "fresh", library=lib)
        try:
            assert fresh.get(f"{base}/1.m4s")[2] == after
        finally:
            fresh.stop()
    finally:
        server.stop()


def test_a_cache_lock_taken_inside_another_is_refused_not_a_hang(tmp_path: Path) -> None:
    # Two threads taking two locks in opposite orders would wait for each other forever.
    cache = DiskCache(tmp_path)
    with cache.lock("segments", "a", "0.m4s"):
        with pytest.raises(RuntimeError, match="taken inside"):
            with cache.lock("analysis", "a", "punchy.json"):
                pass
    with cache.lock("analysis", "a", "punchy.json"):  # released: free again
        pass


def test_a_cache_lock_not_waited_for_tells_whether_it_is_held(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    with lock_held_elsewhere(cache, "segments", "busy", "3.m4s"):
        started = time.monotonic()
        with cache.lock("segments", "busy", "3.m4s", wait=False) as got:
            assert not got  # another holds it: told at once
        assert time.monotonic() - started < 1
        with cache.lock("segments", "busy", "4.m4s", wait=False) as got:
            assert got
    with cache.lock("segments", "busy", "3.m4s", wait=False) as got:
        assert got  # let go: free again
    assert list((tmp_path / "locks").iterdir()) == []


def test_cache_locks_of_different_entries_never_wait_for_each_other(tmp_path: Path) -> None:
    # Lock files shared by hash (256 of them) made a lane wait for an unrelated
    # unit: with one entry locked, 3000 others would have hit its file ~12 times.
    cache = DiskCache(tmp_path)
    with lock_held_elsewhere(cache, "segments", "busy", "0.m4s"):
        started = time.monotonic()
        for n in range(3000):
            with cache.lock("segments", "other", f"{n}.m4s"):
                pass
        assert time.monotonic() - started < 10  # none waited for the holder
    assert list((tmp_path / "locks").iterdir()) == []  # lock files go with their locks


def test_a_cache_lock_excludes_every_other_holder_while_its_files_come_and_go(
    tmp_path: Path,
) -> None:
    # Each release removes the lock file, and waiters holding the removed one
    # must try again: never two holders at once.
    cache = DiskCache(tmp_path)
    inside, overlaps, entries = [0], [0], [0]

    def contend() -> None:
        for _ in range(40):
            with cache.lock("segments", "shared", "0.m4s"):
                inside[0] += 1
                overlaps[0] += inside[0] > 1
                entries[0] += 1
                time.sleep(0.0005)
                inside[0] -= 1

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert entries[0] == 8 * 40 and overlaps[0] == 0
    assert list((tmp_path / "locks").iterdir()) == []
