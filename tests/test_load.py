"""A bounded load test through real nginx in front of a fleet of three origins.

200 simulated listeners on loopback, each playing a track in real time for
the two minutes of the test (the way a player fetches: master, media
playlist, init, then each segment when its buffer of 10 s ahead allows,
reloading the playlist while it is live, half of them with blocking
reloads and half every target duration as RFC 8216 clients do). The three
origins share one cache directory (the other set-up of SPEC §9; the
failover test uses a cache each).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import tree_pss_mb
from tests.edge import metric, start_edge
from tests.helpers import parse_playlist
from tests.test_fleet import TRACKS, fleet_library, start_fleet  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is installed by make test"
)
LISTENERS = 200
SECONDS = 120.0
RAMP_SECONDS = 60.0  # listeners arrive over the first minute
BUFFER_AHEAD = 10.0
BAD = ("502", "504")  # an origin's connection failed, or it did not answer in time


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # non-blocking requests, seconds
    blocking: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cache: Counter = field(default_factory=Counter)  # segments' X-Cache-Status
    segments: set[str] = field(default_factory=set)
    # per wait of a play head: seconds waited, the segment, how long its request took,
    # and seconds since the test began (tells a slow origin from a late client)
    stalls: list[tuple[float, str, float, float]] = field(default_factory=list)
    stalled: list[float] = field(default_factory=list)  # per listener, seconds waited in all
    began: float = field(default_factory=time.monotonic)


async def fetch(
    session: aiohttp.ClientSession, url: str, stats: Stats, blocking: bool = False
) -> tuple[bytes, dict[str, str]] | None:
    started = time.monotonic()
    try:
        async with session.get(url) as response:
            body = await response.read()
            if response.status != 200:
                stats.errors.append(f"{response.status} {url}")
                return None
            headers = dict(response.headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.errors.append(f"{type(exc).__name__} {url}")
        return None
    (stats.blocking if blocking else stats.latencies).append(time.monotonic() - started)
    return body, headers


async def listener(
    session: aiohttp.ClientSession, edge: str, track: str, start: float, end: float,
    blocking: bool, stats: Stats,
) -> None:  # fmt: skip
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    base = f"{edge}/hls/{track}/adaptive/1.00"
    if await fetch(session, f"{base}/master.m3u8", stats) is None:
        return
    got = await fetch(session, f"{base}/aac/index.m3u8", stats)
    if got is None or await fetch(session, f"{base}/aac/init.mp4", stats) is None:
        return
    playlist = parse_playlist(got[0])
    head = time.monotonic()  # the play head's origin: playback starts with the first segment
    position, index, waited = 0.0, 0, 0.0
    while time.monotonic() < end:
        if index >= len(playlist.segments):
            if playlist.is_endlist:
                break
            if blocking:
                url = f"{base}/aac/index.m3u8?_HLS_msn={index}"
            else:  # RFC 8216 §6.3.4: reload one target duration after a change
                await asyncio.sleep(min(playlist.target_duration / 2, end - time.monotonic()))
                url = f"{base}/aac/index.m3u8"
            got = await fetch(session, url, stats, blocking=blocking)
            if got is None:
                break
            playlist = parse_playlist(got[0])
            continue
        segment = playlist.segments[index]
        # Fetched once the buffer ahead of the play head has room for it.
        due = min(head + position - BUFFER_AHEAD, end)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if time.monotonic() >= end:
            break
        asked = time.monotonic()
        got = await fetch(session, f"{base}/aac/{segment.uri}", stats)
        if got is None:
            break
        late = time.monotonic() - (head + position)
        if index > 0 and late > 0:  # the play head waited for it, and then goes on from here
            took = time.monotonic() - asked
            stats.stalls.append((late, f"{track[:8]}/{segment.uri}", took, asked - stats.began))
            waited += late
            head += late
        stats.cache[got[1].get("X-Cache-Status", "?")] += 1
        stats.segments.add(f"{track}/{segment.uri}")
        position += segment.duration
        index += 1
    stats.stalled.append(waited)


async def run_load(edge: str, tracks: list[str]) -> Stats:
    stats = Stats()
    rng = random.Random(7)
    now = time.monotonic()
    end = now + SECONDS
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(
            *(
                listener(
                    session,
                    edge,
                    tracks[i % len(tracks)],
                    now + rng.uniform(0, RAMP_SECONDS),
                    end,
                    i % 2 == 0,
                    stats,
                )  # fmt: skip
                for i in range(LISTENERS)
            )
        )
    return stats


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def test_two_hundred_listeners_through_nginx_for_two_minutes(
    fleet_library: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    fleet = start_fleet(fleet_library, tmp_path, 3, shared_cache=True)
    edge = start_edge(fleet, tmp_path / "nginx")
    try:
        tracks = [t["id"] for t in fleet[0].json("/api/tracks")["tracks"]]
        assert len(tracks) == len(TRACKS)
        streams = sum(
            len(parse_playlist(edge.get(f"/hls/{t}/adaptive/1.00/aac/vod.m3u8")[2]).segments)
            for t in tracks
        )
        pss_start = [tree_pss_mb(o.process.pid) for o in fleet]
        pss_mid: list[float] = []  # warmed up: every worker has decoded and encoded
        sampler = threading.Timer(
            SECONDS / 3, lambda: pss_mid.extend(tree_pss_mb(o.process.pid) for o in fleet)
        )
        sampler.start()
        started = time.monotonic()
        stats = asyncio.run(run_load(edge.url, tracks))
        wall = time.monotonic() - started
        sampler.join()
        pss_end = [tree_pss_mb(o.process.pid) for o in fleet]
        # An origin that stopped answering is hidden from the listeners by nginx's
        # failover (to the next origin, after proxy_read_timeout): look for it.
        failed_over = [
            r for r in edge.access_log() if r.get("upstream_status", "").rstrip(",") in BAD
        ]
        if failed_over:
            stacks = "\n".join(o.diagnose()[-6000:] for o in fleet)
            raise AssertionError(f"origins failed: {failed_over[:5]}\n{stacks}")
        served = sum(metric(o, "hls_origin_segments_served") for o in fleet)
        produced = sum(metric(o, "hls_origin_segments_produced") for o in fleet)
        fetched = sum(stats.cache.values())
        hits = stats.cache["HIT"]
        lat = stats.latencies
        print(
            f"{LISTENERS} listeners, {wall:.0f} s: {len(lat) + len(stats.blocking)} requests,"
            f" {len(stats.errors)} errors; segments fetched {fetched}, distinct"
            f" {len(stats.segments)}, edge cache {dict(stats.cache)} (hit ratio"
            f" {hits / fetched:.3f}); origin requests per segment"
            f" {served / len(stats.segments):.3f}, produced {produced:.0f};"
            f" latency p50 {percentile(lat, 50) * 1000:.1f} ms p99"
            f" {percentile(lat, 99) * 1000:.1f} ms (blocking reloads p50"
            f" {percentile(stats.blocking, 50):.2f} s); stalls {len(stats.stalls)}"
            f" (longest listener total {max(stats.stalled, default=0):.2f} s);"
            f" origin PSS MB start {[round(p) for p in pss_start]}"
            f" at {SECONDS / 3:.0f} s {[round(p) for p in pss_mid]}"
            f" end {[round(p) for p in pss_end]}"
        )
        assert wall >= SECONDS
        assert stats.errors == [], stats.errors[:10]
        assert fetched > 1500  # the listeners did listen
        # Collapsing: each segment asked of the origins about once, whatever the audience.
        assert served <= 1.1 * len(stats.segments), (served, len(stats.segments))
        # Each track on one origin: each segment made once across the fleet.
        assert produced <= streams, (produced, streams)
        assert hits / fetched > 0.9
        assert percentile(lat, 99) < 1.0
        # As the client matrix holds one player: under 2 s of stall in all, per listener.
        assert max(stats.stalled, default=0) < 2.0, sorted(stats.stalls, reverse=True)[:10]
        for mid, after in zip(pss_mid, pss_end, strict=True):
            assert after < 300 and after < mid + 40, (pss_start, pss_mid, pss_end)
    finally:
        edge.stop()
        for origin in fleet:
            origin.stop()
