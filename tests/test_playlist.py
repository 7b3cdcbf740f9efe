from __future__ import annotations

from decimal import Decimal

import m3u8
import pytest

from hls import playlist
from processing.encode import RENDITIONS
from processing.plan import plan_segments


@pytest.mark.parametrize("length", [1_323_000, 4_203_958, 44100 * 3600 + 17])
@pytest.mark.parametrize("lead", [0, 1024])
def test_extinf_values_add_up_to_the_duration_of_the_media(length: int, lead: int) -> None:
    plan = plan_segments(length, 44100, 30.0)
    values = [Decimal(v) for v in playlist.extinf_values(plan, lead)]
    assert abs(sum(values) - Decimal(length + lead) / 44100) <= Decimal(1) / 44100
    # The lead (AAC's priming packet) is all in segment 0: every later segment
    # starts in the playlist where its media starts (its tfdt, start + lead).
    assert abs(values[0] - Decimal(plan[0].samples + lead) / 44100) <= Decimal(1) / 10**6
    for seg, value in zip(plan.segments[1:], values[1:], strict=True):
        assert abs(value - Decimal(seg.samples) / 44100) <= Decimal(1) / 10**6
        start = sum(values[: seg.index])
        assert abs(start - Decimal(seg.start + lead) / 44100) <= Decimal(1) / 10**6


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
    assert len(plan) == 5  # 1, 10 s, then 30, 30 and 24.3 s


def test_vod_playlist_lists_every_segment_from_the_start() -> None:
    plan = plan_segments(4_203_958, 44100, 30.0)
    parsed = m3u8.loads(playlist.media_playlist(plan, 0, complete=False, live=False))
    assert parsed.is_endlist and parsed.playlist_type == "vod"
    assert len(parsed.segments) == len(plan) == 5
    assert parsed.segment_map[0].uri == "init.mp4"


def test_master_lists_each_rendition_of_one_codec_with_codecs_and_bandwidths() -> None:
    variants = [playlist.Variant(RENDITIONS[n], f"{n}/index.m3u8", 2) for n in ("aac", "aac-lo")]
    parsed = m3u8.loads(playlist.master_playlist(variants))
    assert [p.uri for p in parsed.playlists] == ["aac/index.m3u8", "aac-lo/index.m3u8"]
    assert [p.stream_info.codecs for p in parsed.playlists] == ["mp4a.40.2", "mp4a.40.2"]
    for p in parsed.playlists:
        assert p.stream_info.bandwidth >= p.stream_info.average_bandwidth > 0


def test_master_refuses_variants_of_two_codecs() -> None:
    variants = [playlist.Variant(RENDITIONS[n], f"{n}/index.m3u8", 2) for n in ("aac", "flac")]
    with pytest.raises(ValueError, match="must share a codec"):
        playlist.master_playlist(variants)


def test_bandwidths_are_the_peak_and_mean_segment_bit_rates() -> None:
    plan = plan_segments(44100 * 100, 44100, 30.0)
    # 1 s segment of 40 kB (320 kb/s), the rest at 32 kB/s (256 kb/s).
    sizes = {seg.index: 32_000 * seg.samples // 44100 for seg in plan.segments}
    sizes[0] = 40_000 * plan[0].samples // 44100
    peak, average = playlist.bandwidths(plan, sizes)
    assert 319_000 <= peak <= 320_000
    total = sum(sizes.values()) * 8 / (plan.length / 44100)
    assert abs(average - total) <= 1
    measured = playlist.Variant(RENDITIONS["aac"], "aac/index.m3u8", 2, (peak, average))
    line = playlist.master_playlist([measured]).splitlines()[3]
    assert (
        line == f'#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},CODECS="mp4a.40.2"'
    )
    assert playlist.bandwidths(plan, {}) is None
    # With AAC's lead, segment 0's EXTINF holds the lead too, and so does the
    # duration its bit rate is measured over, as a client measures it.
    lead = RENDITIONS["aac"].lead_samples
    peak, _ = playlist.bandwidths(plan, sizes, lead)
    extinf = float(playlist.extinf_values(plan, lead)[0])
    assert peak == pytest.approx(8 * sizes[0] / extinf, abs=1)


@pytest.mark.parametrize("segment_seconds", [10.0, 30.0])
def test_live_listing_reaches_two_target_durations_past_the_live_clock(
    segment_seconds: float,
) -> None:
    plan = plan_segments(44100 * 600, 44100, segment_seconds)
    target = playlist.target_duration(plan)
    for live_seconds in (0.0, 1.0, 29.0, 31.0, 200.0):
        count = playlist.live_listed(plan, 1, live_seconds)
        listed_end = plan[count - 1].end / 44100
        # A client reloading one target duration after this answer still has
        # a third of one listed ahead of its position.
        assert listed_end >= live_seconds + 4 / 3 * target
        assert plan[count - 1].start / 44100 < live_seconds + 4 / 3 * target
        if live_seconds == 0.0:
            # Three segments: ffmpeg starts a live playlist 3 segments before
            # its end, GStreamer 4; both start at the beginning.
            assert count == 3
    # Production ahead of the clock lists what is made.
    assert playlist.live_listed(plan, len(plan), 0.0) == len(plan)
    assert playlist.live_listed(plan, 1, 10_000.0) == len(plan)
