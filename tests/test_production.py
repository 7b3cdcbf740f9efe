"""Production bookkeeping without a server: stream states are bounded."""

from __future__ import annotations

import time
from pathlib import Path

from hls.production import Production
from hls.streams import SourceRef, StreamSpec
from processing.plan import plan_segments
from storage.cache import DiskCache
from storage.eviction import LruIndex


def test_idle_stream_states_are_forgotten_past_the_limit(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "cache")
    production = Production(cache, LruIndex(cache, 1 << 30), 1, idle_seconds=0.0, max_streams=3)
    plan = plan_segments(44100 * 60, 44100, 30.0)
    specs = [
        StreamSpec(SourceRef(f"/music/{n}.flac", f"key{n}"), "gentle", "1.00", 30.0, 5.0, 1.0, "")
        for n in range(6)
    ]
    states = []
    for spec in specs:
        states.append(production.stream(spec, "aac", plan))
        time.sleep(0.001)
    assert production.stream(specs[-1], "aac", plan) is states[-1]  # known: the same state
    assert len(production._streams) == 3  # the three idle longest were forgotten
    assert production.stream(specs[0], "aac", plan) is not states[0]  # rebuilt when asked
    busy = Production(cache, LruIndex(cache, 1 << 30), 1, idle_seconds=3600.0, max_streams=3)
    for spec in specs:
        busy.stream(spec, "aac", plan)
    assert len(busy._streams) == 6  # nothing idle long enough to forget
