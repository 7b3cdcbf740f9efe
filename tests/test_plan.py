from __future__ import annotations

import pytest

from processing.plan import FRAME_SAMPLES, TAIL_SINGLE_SEGMENTS, plan_segments


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("length", [1, 1023, 1024, 1025, 1_323_000, 1_323_009, 4_203_958, 10**8])
def test_segments_tile_the_track_on_the_frame_grid(rate: int, length: int) -> None:
    plan = plan_segments(length, rate, 30.0)
    assert plan.segments[0].start == 0
    assert plan.segments[-1].end == length
    for a, b in zip(plan.segments, plan.segments[1:], strict=False):
        assert a.end == b.start
        assert a.end % FRAME_SAMPLES == 0
        assert a.end_frame == b.first_frame
    assert plan.segments[-1].end_frame == plan.total_frames


def test_thirty_second_segments_are_whole_frames_nearest_thirty_seconds() -> None:
    assert plan_segments(10**7, 44100, 30.0).frames_per_segment == 1292  # 30.0002 s
    assert plan_segments(10**7, 48000, 30.0).frames_per_segment == 1406  # 29.9947 s


def test_the_first_segments_ramp_up_then_stay_at_thirty_seconds() -> None:
    plan = plan_segments(44100 * 200, 44100, 30.0)
    # 1 s, a third of a segment, then whole segments.
    assert [s.end_frame - s.first_frame for s in plan.segments[:4]] == [43, 431, 1292, 1292]
    assert [s.samples for s in plan_segments(44100 * 200, 44100, 10.0).segments[:4]] == [
        43 * 1024, 144 * 1024, 431 * 1024, 431 * 1024,
    ]  # fmt: skip
    uniform = plan_segments(44100 * 200, 44100, 30.0, ramp=())
    assert uniform.segments[0].samples == 1292 * 1024


@pytest.mark.parametrize("length", [1, 44100 * 3, 44100 * 16, 44100 * 200, 44100 * 420])
def test_encode_units_tile_the_segments_in_order(length: int) -> None:
    plan = plan_segments(length, 44100, 30.0)
    units = plan.encode_units(2)
    assert [i for unit in units for i in unit] == list(range(len(plan)))
    assert units[0] == range(0, 1)  # a listener waits for segment 0: alone
    for index in range(len(plan)):
        assert index in plan.unit_of(index, 2)
    assert plan.encode_units(1) == tuple(range(i, i + 1) for i in range(len(plan)))


def test_the_ramp_is_one_unit_then_full_segments_go_in_pairs_but_the_last_alone() -> None:
    plan = plan_segments(44100 * 420, 44100, 30.0)  # 1, 10 s, then 30 s
    assert TAIL_SINGLE_SEGMENTS == 4
    assert [(u.start, u.stop) for u in plan.encode_units(2)] == [
        (0, 1), (1, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12),
        (12, 13), (13, 14), (14, 15), (15, 16),
    ]  # fmt: skip
    assert plan.unit_of(9, 2) == range(8, 10)
    assert plan.unit_of(13, 2) == range(13, 14)
    odd = plan_segments(44100 * 200, 44100, 30.0)  # the pairs end one short of the tail
    assert [(u.start, u.stop) for u in odd.encode_units(2)] == [
        (0, 1), (1, 2), (2, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9),
    ]  # fmt: skip
    short = plan_segments(44100 * 60, 44100, 30.0)  # all of it past the ramp is tail
    assert [(u.start, u.stop) for u in short.encode_units(2)] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(IndexError):
        plan.unit_of(16, 2)


def test_one_sample_past_a_full_segment_is_a_segment_of_one_sample() -> None:
    full = plan_segments(10**7, 44100, 30.0).segments[5].end
    assert plan_segments(full, 44100, 30.0).segments[-1].end == full
    plan = plan_segments(full + 1, 44100, 30.0)
    assert plan.segments[-1].samples == 1 and plan.segments[-2].end == full


def test_index_at_finds_the_segment_of_a_sample() -> None:
    plan = plan_segments(10**7, 44100, 30.0)
    for seg in plan.segments:
        assert plan.index_at(seg.start) == plan.index_at(seg.end - 1) == seg.index


@pytest.mark.parametrize(
    "args", [(0, 44100, 30.0), (100, 0, 30.0), (100, 44100, 0.1), (100, 44100, 1e9)]
)
def test_absurd_parameters_are_rejected(args: tuple[int, int, float]) -> None:
    with pytest.raises(ValueError):
        plan_segments(*args)
