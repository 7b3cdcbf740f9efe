"""Background lanes (hls.lanes.Lanes): how the units of a stream are shared out."""

from __future__ import annotations

from collections import deque

from hls.lanes import MAX_RUN_UNITS, Lanes

SECOND = 44100
UNIT = 60 * SECOND  # a pair of 30 s segments


def units(*starts: int) -> list[range]:
    return [range(i, i + 2) for i in starts]


def test_runs_are_contiguous_halves_of_the_audio() -> None:
    lanes = Lanes.split(units(4, 6, 8, 10, 12, 14), 2, lambda u: UNIT)
    assert [list(q) for q in lanes.queues] == [units(4, 6, 8), units(10, 12, 14)]


def test_a_lane_takes_its_run_but_the_last_unit_at_once_up_to_a_limit() -> None:
    starts = range(4, 4 + 2 * (MAX_RUN_UNITS + 2), 2)
    lanes = Lanes([deque(units(*starts)), deque()], lambda u: UNIT)
    assert lanes.take(0, 0.0) == units(*starts[:MAX_RUN_UNITS])
    assert lanes.take(0, 1.0) == units(starts[MAX_RUN_UNITS])  # kept back: the last unit
    assert lanes.take(0, 2.0) == units(starts[MAX_RUN_UNITS + 1])
    assert lanes.take(0, 3.0) == [] and lanes.take(1, 3.0) == []


def test_each_lane_goes_forward_then_takes_the_back_half_of_the_longest_run() -> None:
    run = range(6, 6 + 2 * (MAX_RUN_UNITS + 1), 2)
    lanes = Lanes([deque([range(4, 6)]), deque(units(*run))], lambda u: UNIT)
    assert lanes.take(0, 0.0) == units(4)
    assert lanes.take(1, 0.0) == units(*run[:-1])
    assert lanes.take(0, 1.0) == units(run[-1])  # stolen: the back half of the one left
    assert lanes.take(0, 2.0) == [] and lanes.take(1, 2.0) == []
    lanes = Lanes([deque([range(4, 6)]), deque(units(6, 8, 10, 12, 14))], lambda u: UNIT)
    assert lanes.take(0, 0.0) == units(4)
    assert lanes.take(0, 1.0) == units(12)  # stolen: the back half of [6, 8, 10, 12, 14] ...
    assert lanes.take(0, 2.0) == units(14)  # ... run in order, the last unit alone
    assert lanes.take(1, 2.0) == units(6, 8)
    assert lanes.take(1, 3.0) == units(10)
    assert lanes.take(0, 4.0) == [] and lanes.take(1, 4.0) == []


def test_a_fast_lane_takes_the_slow_lanes_last_unit_so_that_both_end_together() -> None:
    # Measured so far: lane 0's content costs 1.6 s a unit, lane 1's 1.15 s.
    # Lane 1 is down to its last unit (45 s of audio) while lane 0, busy
    # since 2.29 s, still has a full unit queued: lane 1 takes that one and
    # leaves its own to lane 0.
    short = range(16, 18)
    sizes = {range(6, 8): UNIT, range(8, 10): UNIT, range(14, 16): UNIT, short: 45 * SECOND}
    lanes = Lanes([deque([range(8, 10)]), deque([short])], sizes.__getitem__)
    lanes.record(0, units(6), 1.6)
    lanes.record(1, units(14), 1.15)
    lanes.busy[0] = (units(6), 2.29)
    assert lanes.take(1, 3.63) == units(8)
    lanes.busy[0] = None
    assert lanes.take(0, 3.89) == [short]
    assert lanes.take(0, 5.0) == [] and lanes.take(1, 5.3) == []


def test_lanes_at_the_same_pace_keep_their_own_units() -> None:
    lanes = Lanes([deque(units(8)), deque(units(16))], lambda u: UNIT)
    lanes.record(0, units(6), 1.2)
    lanes.record(1, units(14), 1.2)
    lanes.busy[0] = (units(6), 3.0)
    assert lanes.take(1, 3.6) == units(16)  # swapping would gain nothing
    assert lanes.take(1, 4.8) == units(8)  # ... and an idle lane still steals


def test_a_lane_busy_with_its_first_job_is_judged_by_what_it_has_made() -> None:
    # Lane 0 is still in its first job (no pace recorded): two of its three
    # units were made by 2.0 s, at 27 ms per second of audio. Lane 1, at 18
    # ms, is down to its last unit (45 s) at 3.43 s: it takes lane 0's last
    # unit (60 s), and leaves its own to lane 0.
    ramp, short = range(1, 4), range(16, 18)
    sizes = {ramp: 14 * SECOND, short: 45 * SECOND} | {u: UNIT for u in units(4, 6, 8, 10, 12, 14)}
    job = [ramp, *units(4, 6)]
    lanes = Lanes(
        [deque(units(8)), deque([short])],
        sizes.__getitem__,
        lambda us: (74 * SECOND, 0.18 + 74 * 0.027) if us == job else None,
    )
    lanes.busy[0] = (job, 0.18)
    lanes.record(1, units(10, 12, 14), 3.25)
    assert lanes.take(1, 3.43) == units(8)
    lanes.busy[0] = None
    assert lanes.take(0, 3.6) == [short]
    blind = Lanes([deque(units(8)), deque([short])], sizes.__getitem__)  # nothing made known
    blind.busy[0] = (job, 0.18)
    blind.record(1, units(10, 12, 14), 3.25)
    assert blind.take(1, 3.43) == [short]


def test_an_idle_lane_shares_a_running_job_from_its_end_never_its_unit_in_progress() -> None:
    # Nothing is queued; lane 0 runs a job of three units and is in its first.
    job = units(8, 10, 12)
    made: set[range] = set()
    lanes = Lanes([deque(), deque()], lambda u: UNIT, stored=made.__contains__)
    lanes.busy[0] = (job, 0.0)
    assert lanes.take(1, 0.5) == units(12)  # the job's last unit, made alongside it
    assert lanes.take(1, 1.0) == units(10)  # then the one before it
    assert lanes.take(1, 1.5) == []  # only the unit in progress is left
    assert lanes.shared == set(units(10, 12))
    # A job whose first unit is made has its second in progress.
    lanes = Lanes([deque(), deque()], lambda u: UNIT, stored=made.__contains__)
    made.add(job[0])
    lanes.busy[0] = (job, 0.0)
    assert lanes.take(1, 0.5) == units(12)
    assert lanes.take(1, 1.0) == []
