"""How the background work of one stream is shared out among the workers.

Pure bookkeeping (no processes, no event loop): `hls.production` asks a
`Lanes` what each lane does next and tells it how long each job took.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

SWAP_MARGIN_SECONDS = 0.1  # a lane jumps to another's last unit only to gain more than this
MAX_RUN_UNITS = 3  # units per ffmpeg (each adds an encoder, ~1.7 MB of PSS)


@dataclass
class Lanes:
    """The background runs of one stream, one per worker, and how fast each goes.

    Each lane produces its own run front to back (a worker renders each
    window once when it moves forward: the previous one is in its memory),
    several units per job through one ffmpeg (`take`). A lane left with
    nothing takes the back half of the longest run. A lane down to its
    last unit takes another lane's last unit instead when that lane, at
    the pace measured on it so far, would finish well after it: the cost
    of a unit depends on its content, and the lanes should end together
    (the other lane takes the unit left behind). With nothing queued
    anywhere, an idle lane shares another lane's job: it makes the job's
    last unit not started yet (`shared`), and the job stops when it gets
    to that unit made or being made (`hls.jobs.produce_units`). Without
    that, one core was idle for the last 1.5 s of a 293 s track.
    """

    queues: list[deque[range]]
    samples: Callable[[range], int]
    # Of a job's units, the samples already made and when the last was (time.monotonic).
    made: Callable[[list[range]], tuple[int, float] | None] = lambda units: None
    stored: Callable[[range], bool] = lambda unit: False  # whether a unit is in the cache
    pace: list[float | None] = field(init=False)  # seconds per sample, measured per lane
    busy: list[tuple[list[range], float] | None] = field(init=False)  # units in progress, start
    shared: set[range] = field(init=False)  # units of a running job another lane took
    _measured: list[tuple[float, int]] = field(init=False)  # seconds and samples so far

    def __post_init__(self) -> None:
        self.pace = [None] * len(self.queues)
        self.busy = [None] * len(self.queues)
        self.shared = set()
        self._measured = [(0.0, 0)] * len(self.queues)

    @classmethod
    def split(
        cls,
        units: list[range],
        lanes: int,
        samples: Callable[[range], int],
        made: Callable[[list[range]], tuple[int, float] | None] = lambda units: None,
        stored: Callable[[range], bool] = lambda unit: False,
    ) -> Lanes:
        """Contiguous runs of about equal audio (not counts: the ramp's segments are short)."""
        total = sum(samples(unit) for unit in units)
        runs: list[deque[range]] = [deque() for _ in range(lanes)]
        done = 0
        for unit in units:  # a unit goes to the lane that holds its middle
            middle = done + samples(unit) // 2
            runs[min(middle * lanes // max(total, 1), lanes - 1)].append(unit)
            done += samples(unit)
        return cls(runs, samples, made, stored)

    def record(self, lane: int, units: list[range], seconds: float) -> None:
        """`lane` produced `units` in `seconds`."""
        total, samples = self._measured[lane]
        total, samples = total + seconds, samples + sum(self.samples(u) for u in units)
        self._measured[lane] = (total, samples)
        self.pace[lane] = total / max(samples, 1)

    def take(self, lane: int, now: float) -> list[range]:
        """The next units for `lane` (empty when there is nothing left).

        Its run but its last unit, up to MAX_RUN_UNITS (one ffmpeg start-up
        for all); the last unit alone, so that the lanes can still even out
        at the end, at the pace measured on each (the content of a run sets
        its pace: 20 and 27 ms per second of audio on the two halves of the
        peer benchmark's track).
        """
        own = self.queues[lane]
        if len(own) == 1:
            other = self._slower_than(lane, now)
            if other is not None:
                return [self.queues[other].pop()]
        if not own:
            longest = max(self.queues, key=len)
            if not longest:
                return self._share(lane)
            stolen = [longest.pop() for _ in range(max(len(longest) // 2, 1))]
            own.extend(reversed(stolen))
        count = min(max(len(own) - 1, 1), MAX_RUN_UNITS)
        return [own.popleft() for _ in range(count)]

    def _share(self, lane: int) -> list[range]:
        """For an idle `lane` with nothing queued anywhere: the last unit not started
        of the running job with the most left.

        Not judged by pace: the pace measured on one lane misjudged another's
        unit in progress by a fifth (another part of the track), and a wrong
        guess costs little. If the job gets to the unit first, this lane
        waits for it and finds it made (it had nothing else to do); if this
        lane gets there first, the job stops before it, and only the unit's
        pre-roll is done twice.
        """
        best, most = None, 1
        for other, busy in enumerate(self.busy):
            if other == lane or busy is None:
                continue
            left = [u for u in busy[0] if u not in self.shared and not self.stored(u)]
            if len(left) > most:  # the first unit left is in progress
                best, most = left[-1], len(left)
        if best is None:
            return []
        self.shared.add(best)
        return [best]

    def _finish(self, lane: int, now: float, pace: float) -> float:
        """When `lane` would be done with its units in progress and its queue."""
        left = sum(self.samples(unit) for unit in self.queues[lane]) * pace
        busy = self.busy[lane]
        if busy is not None:
            units, started = busy
            doing = sum(self.samples(u) for u in units if u not in self.shared)
            left += max(doing * pace - (now - started), 0.0)
        return now + left

    def _pace(self, lane: int) -> float | None:
        """Seconds per sample of `lane`: from its jobs done, else from the part of its
        first job already made."""
        busy = self.busy[lane]
        if self.pace[lane] is not None or busy is None:
            return self.pace[lane]
        units, started = busy
        made = self.made(units)
        if made is None or made[0] <= 0:
            return None
        return max(made[1] - started, 0.0) / made[0]

    def _slower_than(self, lane: int, now: float) -> int | None:
        """A lane whose last unit `lane` should take rather than its own last one."""
        best, best_end = None, None
        own = self.queues[lane][0]
        for other, queue in enumerate(self.queues):
            mine, theirs = self._pace(lane), self._pace(other)
            if other == lane or not queue or mine is None or theirs is None:
                continue
            finish = self._finish(other, now, theirs)
            own_cost, back_cost = self.samples(own) * mine, self.samples(queue[-1]) * theirs
            keep = max(now + own_cost, finish)
            swap = max(now + back_cost, finish - back_cost + own_cost)
            if swap + SWAP_MARGIN_SECONDS < keep and (best_end is None or swap < best_end):
                best, best_end = other, swap
        return best
