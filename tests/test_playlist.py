from __future__ import annotations

from decimal import Decimal

import m3u8
import pytest

from hls import playlist
from processing.encode import RENDITIONS
from processing.plan import plan_segments


@pytest.mark.parametrize("length", [1_323_000, 4_203_958, 44100 * 3600 + 17])
def test_extinf_values_add_up_to_the_track_duration(length: int) -> None:
    plan = plan_segments(length, 44100, 30.0)
    total = sum(Decimal(v) for v in playlist.extinf_values(plan))
    assert abs(total - Decimal(length) / 44100) <= Decimal(1) / 44100


@pytest.mark.parametrize(("rate", "expected"), [(44100, 30), (48000, 30)])
def test_target_duration_rounds_the_longest_segment(rate: int, expected: int) -> None:
    # 44.1 kHz: 30.0002 s segments; 48 kHz: 29.9947 s; both round to 30.
    assert playlist.target_duration(plan_segments(rate * 100, rate, 30.0)) == expected


def test_live_playlist_gains_only_segments_and_endlist() -> None:
    plan = plan_segments(4_203_958, 44100, 30.0)
    early = playlist.media_playlist(plan, 1, complete=False, live=True)
    final = playlist.media_playlist(plan, len(plan), complete=True, live=True)
    assert final.startswith(early)
    assert final.endswith("#EXT-X-ENDLIST\n")
    parsed = m3u8.loads(early)
    assert parsed.playlist_type == "event"
    assert parsed.start.time_offset == 0
    assert parsed.server_control.can_block_reload == "YES"
    assert [s.uri for s in m3u8.loads(final).segments] == [f"{i}.m4s" for i in range(len(plan))]
    assert len(plan) == 7  # 1, 2, 4, 8 s, then 30, 30 and 20.3 s


def test_vod_playlist_lists_every_segment_from_the_start() -> None:
    plan = plan_segments(4_203_958, 44100, 30.0)
    parsed = m3u8.loads(playlist.media_playlist(plan, 0, complete=False, live=False))
    assert parsed.is_endlist and parsed.playlist_type == "vod"
    assert len(parsed.segments) == len(plan) == 7
    assert parsed.segment_map[0].uri == "init.mp4"


def test_master_lists_each_rendition_with_codecs_and_bandwidths() -> None:
    variants = [playlist.Variant(r, f"{r.name}/index.m3u8", 2) for r in RENDITIONS.values()]
    parsed = m3u8.loads(playlist.master_playlist(variants))
    assert [p.uri for p in parsed.playlists] == [
        "aac/index.m3u8",
        "aac-lo/index.m3u8",
        "flac/index.m3u8",
    ]
    assert [p.stream_info.codecs for p in parsed.playlists] == ["mp4a.40.2", "mp4a.40.2", "fLaC"]
    for p in parsed.playlists:
        assert p.stream_info.bandwidth >= p.stream_info.average_bandwidth > 0
