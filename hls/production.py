"""Scheduling of production work on a pool of worker processes.

- A priority queue feeds one dispatcher per worker: segments a client waits
  for (priority ON_DEMAND) go before background work (BACKGROUND).
- Single flight: concurrent requests for the same missing segment share one
  production.
- A stream (track, preset, intensity, rendition) is produced in order in the
  background once its live playlist is requested; its state tells playlists
  how many segments are listed and wakes blocking reloads.
- A client that disconnects does not cancel work that is queued or running.
- Background work gives its worker up when a listener's work waits for one
  (`hls.preemption`): the stopped run goes back to its lane, which resumes
  once listeners' work is done.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any

from hls import playlist
from hls.errors import Overloaded
from hls.preemption import Preempted, new_flags, run_in_slot
from hls.streams import PreparedSource, SourceRef, StreamSpec, run_job
from hls.workers import init_worker
from processing.plan import SegmentPlan
from processing.renditions import RENDITIONS
from storage.cache import DiskCache
from storage.eviction import LruIndex

ON_DEMAND = 0
PREPARE = 0
BACKGROUND = 10
MAX_PENDING = 32  # on-demand jobs waiting for a worker before new ones get 503
IDLE_SECONDS = 120.0  # background work of a stream nobody asked for pauses after this
MAX_STREAMS = 512  # stream states kept; idle ones past this are forgotten (rebuilt when asked)
EARLY_POLL_SECONDS = 0.02  # how often a listener's segment is looked for while its unit encodes
# A preempted lane resumes once no listener's work has waited for a worker this
# long (the first request of a track is two jobs, source then segment: not between them).
RESUME_SECONDS = 0.05

log = logging.getLogger("hls.production")


@dataclass(order=True)
class _Job:
    priority: int
    sequence: int
    keys: tuple[Hashable, ...] = field(compare=False)  # the work it does (single flight)
    fn: Callable[..., Any] = field(compare=False)
    args: tuple = field(compare=False)
    future: asyncio.Future = field(compare=False)


@dataclass
class StreamState:
    """Progress of one rendition of one stream."""

    spec: StreamSpec
    rendition: str
    plan: SegmentPlan
    done: set[int] = field(default_factory=set)
    background: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None
    last_access: float = field(default_factory=time.monotonic)
    live_since: float | None = None  # when its live playlist was first answered (monotonic)
    bit_rates: tuple[int, int] | None = None  # measured peak and mean, once complete
    claimed: int = 0  # segments a client saw listed elsewhere (a stream taken over)

    def touch(self) -> None:
        """A client asked for this stream: keep (or restart) its background work."""
        self.last_access = time.monotonic()

    @property
    def listed(self) -> int:
        """Segments listed as made: the contiguous prefix of produced segments,
        where those `claimed` count as made (they are, elsewhere or when asked)."""
        count = 0
        while count < self.claimed or count in self.done:
            count += 1
        return count

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.plan)

    @property
    def state(self) -> str:
        if self.complete:
            return "complete"
        if self.error is not None and (self.background is None or self.background.done()):
            return "failed"
        if self.background is not None and not self.background.done():
            return "producing"
        return "idle"

    @property
    def units(self) -> tuple[range, ...]:
        """The stream's encode units: segments produced together."""
        return self.plan.encode_units(RENDITIONS[self.rendition].segments_per_encode)

    def unit_of(self, index: int) -> range:
        """The segments produced together with segment `index`."""
        return self.plan.unit_of(index, RENDITIONS[self.rendition].segments_per_encode)

    def mark_done(self, index: int) -> None:
        self.done.add(index)
        self.changed.set()
        self.changed = asyncio.Event()


def _pool_context() -> multiprocessing.context.BaseContext:
    # Workers fork from a small server process that preloads the pipeline: no
    # fork of the threaded event-loop process, and shared pages between workers.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["hls.preload"])
    return ctx


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
    (the other lane takes the unit left behind).
    """

    queues: list[deque[range]]
    samples: Callable[[range], int]
    # Of a job's units, the samples already made and when the last was (time.monotonic).
    made: Callable[[list[range]], tuple[int, float] | None] = lambda units: None
    pace: list[float | None] = field(init=False)  # seconds per sample, measured per lane
    busy: list[tuple[list[range], float] | None] = field(init=False)  # units in progress, start
    _measured: list[tuple[float, int]] = field(init=False)  # seconds and samples so far

    def __post_init__(self) -> None:
        self.pace = [None] * len(self.queues)
        self.busy = [None] * len(self.queues)
        self._measured = [(0.0, 0)] * len(self.queues)

    @classmethod
    def split(
        cls,
        units: list[range],
        lanes: int,
        samples: Callable[[range], int],
        made: Callable[[list[range]], tuple[int, float] | None] = lambda units: None,
    ) -> Lanes:
        """Contiguous runs of about equal audio (not counts: the ramp's segments are short)."""
        total = sum(samples(unit) for unit in units)
        runs: list[deque[range]] = [deque() for _ in range(lanes)]
        done = 0
        for unit in units:  # a unit goes to the lane that holds its middle
            middle = done + samples(unit) // 2
            runs[min(middle * lanes // max(total, 1), lanes - 1)].append(unit)
            done += samples(unit)
        return cls(runs, samples, made)

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
                return []
            stolen = [longest.pop() for _ in range(max(len(longest) // 2, 1))]
            own.extend(reversed(stolen))
        count = min(max(len(own) - 1, 1), MAX_RUN_UNITS)
        return [own.popleft() for _ in range(count)]

    def _finish(self, lane: int, now: float, pace: float) -> float:
        """When `lane` would be done with its units in progress and its queue."""
        left = sum(self.samples(unit) for unit in self.queues[lane]) * pace
        busy = self.busy[lane]
        if busy is not None:
            units, started = busy
            left += max(sum(self.samples(u) for u in units) * pace - (now - started), 0.0)
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


class Production:
    """The worker pool, its priority queue and the state of every stream."""

    def __init__(
        self,
        cache: DiskCache,
        index: LruIndex,
        workers: int,
        idle_seconds: float = IDLE_SECONDS,
        max_pending: int = MAX_PENDING,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.max_streams = max_streams
        self.max_pending = max_pending
        self.cache = cache
        self.index = index
        self.workers = workers
        self.idle_seconds = idle_seconds
        self._context = _pool_context()
        self._stop_flags = new_flags(self._context, workers)  # one per dispatcher
        self._pool = self._new_pool()
        self._queue: asyncio.PriorityQueue[_Job] = asyncio.PriorityQueue()
        self._running: set[Hashable] = set()
        self._by_slot: dict[int, _Job] = {}  # the job each busy dispatcher runs
        self._queued_on_demand: set[asyncio.Future] = set()
        self._wanted: set[asyncio.Future] = set()  # jobs a listener waits for
        self._calm = asyncio.Event()  # set while no listener's job waits for a worker
        self._calm.set()
        self._waiters: dict[asyncio.Future, int] = {}
        self._sequence = itertools.count()
        self._inflight: dict[Hashable, _Job] = {}
        self._streams: dict[tuple[StreamSpec, str], StreamState] = {}
        self._prepared: dict[str, PreparedSource] = {}
        self._dispatchers: list[asyncio.Task[None]] = []
        self.produced = 0  # segments produced by this process (for metrics and tests)
        self.preempted = 0  # background jobs asked to stop for a listener's work
        self.on_segment: Callable[[str, float], None] | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.workers, mp_context=self._context,
            initializer=init_worker, initargs=(self._stop_flags, os.getpid()),
        )  # fmt: skip

    async def start(self) -> None:
        self._dispatchers = [
            asyncio.create_task(self._dispatch(slot)) for slot in range(self.workers)
        ]
        # Start every worker now (fork, imports), not on the first listener's click.
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, run_job, "warm_up") for _ in range(self.workers))
        )

    async def call(self, name: str, *args: Any) -> Any:
        """Run `hls.jobs.<name>(*args)` on the pool now, outside the queue (start-up work)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, run_job, name, *args)

    async def close(self) -> None:
        for state in self._streams.values():
            if state.background is not None:
                state.background.cancel()
        for task in self._dispatchers:
            task.cancel()
        await asyncio.gather(*self._dispatchers, return_exceptions=True)
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def _dispatch(self, slot: int) -> None:
        """Run queued jobs one at a time, each watching stop flag `slot`."""
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            keys, fn, args, future = job.keys, job.fn, job.args, job.future
            if future.done() or self._running.intersection(keys):
                continue  # the same work queued again at another priority, or dropped
            self._running.update(keys)
            self._started_on_demand(future)
            self._stop_flags[slot] = 0
            self._by_slot[slot] = job
            try:
                result = await loop.run_in_executor(self._pool, run_in_slot, slot, fn, *args)
            except BrokenProcessPool as exc:
                log.error("worker pool broke; starting a new one")
                self._pool = self._new_pool()
                if not future.done():
                    future.set_exception(exc)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)
            finally:
                self._running.difference_update(keys)
                del self._by_slot[slot]

    def _preempt(self) -> None:
        """Stop background jobs so that every listener's job waiting in the queue has a
        worker: the most recent first (they have done the least), none that a
        listener waits for."""
        idle = self.workers - len(self._by_slot)
        stopping = sum(1 for slot in self._by_slot if self._stop_flags[slot])
        short = len(self._queued_on_demand) - idle - stopping
        candidates = [
            slot
            for slot, job in self._by_slot.items()
            if job.priority > ON_DEMAND
            and job.future not in self._wanted
            and not self._stop_flags[slot]
        ]
        for slot in sorted(candidates, key=lambda s: self._by_slot[s].sequence, reverse=True)[
            : max(short, 0)
        ]:
            self._stop_flags[slot] = 1
            self.preempted += 1

    def _want(self, future: asyncio.Future) -> None:
        """A listener waits for this job: it is never stopped."""
        if future not in self._wanted:
            self._wanted.add(future)
            future.add_done_callback(self._wanted.discard)

    def _queued_for_listener(self, future: asyncio.Future) -> None:
        """A listener's job waits for a worker (preempted lanes wait for it to start)."""
        if future not in self._queued_on_demand:
            self._queued_on_demand.add(future)
            self._calm.clear()
            future.add_done_callback(self._started_on_demand)

    def _started_on_demand(self, future: asyncio.Future) -> None:
        """A job left the queue (it started, or nobody waits for it any more)."""
        self._queued_on_demand.discard(future)
        if not self._queued_on_demand:
            self._calm.set()

    async def _listeners_served(self) -> None:
        """Return once no listener's job has waited for a worker for RESUME_SECONDS."""
        while True:
            await self._calm.wait()
            await asyncio.sleep(RESUME_SECONDS)
            if self._calm.is_set():
                return

    async def run(
        self, keys: tuple[Hashable, ...], priority: int, fn: Callable[..., Any], *args: Any
    ) -> Any:
        """Run fn(*args) in a worker once per key; concurrent callers share the result.

        `keys` name the work the job does (a job may do several pieces of
        it, as a lane's run of units does): a caller whose first key is in
        flight shares that job, and raises its priority if need be; none of
        the other keys may be in flight then. New on-demand work beyond
        `max_pending` queued jobs is refused with 503 (Overloaded) at once;
        on-demand work that finds no idle worker stops a background job
        (which raises Preempted to its callers).
        A caller that goes away does not cancel work others wait for; work
        nobody waits for any more is dropped unless it has started.
        """
        job = self._inflight.get(keys[0])
        if job is None:
            if any(key in self._inflight for key in keys):
                raise ValueError("part of this work is in flight in another job")
            if priority <= ON_DEMAND and len(self._queued_on_demand) >= self.max_pending:
                raise Overloaded(f"{len(self._queued_on_demand)} requests are waiting for work")
            future = asyncio.get_running_loop().create_future()
            job = _Job(priority, next(self._sequence), keys, fn, args, future)
            for key in keys:
                self._inflight[key] = job
            future.add_done_callback(lambda _f: self._forget(keys))
            future.add_done_callback(_consume_exception)
        future = job.future
        # Queued once per caller: at a higher priority it runs sooner, and
        # the dispatcher skips the copies of work done or running.
        self._queue.put_nowait(replace(job, priority=priority, sequence=next(self._sequence)))
        if priority <= ON_DEMAND:
            self._want(future)
            if not self._running.intersection(job.keys):
                self._queued_for_listener(future)
                self._preempt()
        self._waiters[future] = self._waiters.get(future, 0) + 1
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if (
                not future.done()
                and self._waiters.get(future, 0) <= 1
                and not self._running.intersection(job.keys)
            ):
                future.cancel()  # nobody waits for it and it has not started: drop it
            raise
        finally:
            self._waiters[future] -= 1
            if self._waiters[future] <= 0:
                del self._waiters[future]

    def _forget(self, keys: tuple[Hashable, ...]) -> None:
        for key in keys:
            self._inflight.pop(key, None)

    async def prepare(self, source: SourceRef, cache_dir: str) -> PreparedSource:
        """Exact rate, channels and length of a source (converted once if needed)."""
        known = self._prepared.get(source.key)
        if known is None:
            known = await self.run(
                (("prepare", source.key),), PREPARE, run_job, "prepare", source, cache_dir
            )
            self._prepared[source.key] = known
        return known

    def stream(self, spec: StreamSpec, rendition: str, plan: SegmentPlan) -> StreamState:
        key = (spec, rendition)
        state = self._streams.get(key)
        if state is None:
            self._forget_idle_streams()
            state = StreamState(spec, rendition, plan)
            for index in range(len(plan)):
                if self.cache.get(*spec.segment_key(rendition, index)) is not None:
                    state.done.add(index)
            self._streams[key] = state
        return state

    def live_seconds(self, state: StreamState) -> float:
        """How long the stream (any rendition of it) has had a live playlist.

        One clock for all renditions of a stream, so that they list the same
        segments and a client switching between them finds its position
        listed in the other (`playlist.live_listed`).
        """
        now = time.monotonic()
        if state.live_since is None:
            others = (self._streams.get((state.spec, name)) for name in RENDITIONS)
            known = [o.live_since for o in others if o is not None and o.live_since is not None]
            state.live_since = min(known, default=now)
        return now - state.live_since

    async def bit_rates(self, state: StreamState) -> tuple[int, int] | None:
        """Peak and mean segment bit rate of a complete stream, measured from its
        cached segments once (None while incomplete or if one was evicted)."""
        if state.bit_rates is None and state.complete:
            sizes = await self.segment_sizes(state)
            if len(sizes) == len(state.plan):
                state.bit_rates = playlist.bandwidths(state.plan, sizes)
        return state.bit_rates

    async def segment_sizes(self, state: StreamState) -> dict[int, int]:
        """Sizes of the stream's segments in the cache (those evicted are missing)."""

        def sizes() -> dict[int, int]:
            out = {}
            for index in range(len(state.plan)):
                key = state.spec.segment_key(state.rendition, index)
                try:
                    out[index] = self.cache.path(*key).stat().st_size
                except FileNotFoundError:
                    pass
            return out

        return await asyncio.to_thread(sizes)

    def _forget_idle_streams(self) -> None:
        """Make room for a new stream state past `max_streams`: forget the states idle
        longest (no background work, nobody asking for `idle_seconds`). A forgotten
        stream is rebuilt from the cache when it is asked for again."""
        excess = len(self._streams) + 1 - self.max_streams
        if excess <= 0:
            return
        now = time.monotonic()
        idle = [
            (state.last_access, key)
            for key, state in self._streams.items()
            if (state.background is None or state.background.done())
            and now - state.last_access > self.idle_seconds
        ]
        for _, key in sorted(idle, key=lambda item: item[0])[:excess]:
            del self._streams[key]

    def _unit_key(self, state: StreamState, unit: range) -> Hashable:
        return ("unit", *state.spec.segment_key(state.rendition, unit[0]))

    async def segment(self, state: StreamState, index: int, priority: int = ON_DEMAND) -> int:
        """Make sure one segment is in the cache (producing it if missing); returns its size.

        Segments are produced by encode unit (`SegmentPlan.encode_units`): the
        unit's other segments are made and listed with it. A unit in a lane's
        run that is on its way is waited for, not produced again. A listener
        whose unit was in a background run that stopped for other listeners
        has it made again; background callers get Preempted.
        """
        path = self.cache.get(*state.spec.segment_key(state.rendition, index))
        if path is not None:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                pass  # evicted just now: produce it again
            else:
                await self._stored_sizes(state, {index: size})
                return size
        while True:
            try:
                sizes = await self._produce(state, [state.unit_of(index)], priority)
            except Preempted:
                if priority > ON_DEMAND:
                    raise
                continue  # queued again, at the listener's priority: never stopped
            return int(sizes[index])

    async def _produce(
        self, state: StreamState, units: list[range], priority: int
    ) -> dict[int, int]:
        """Produce `units` (in one job: one ffmpeg, `hls.jobs.produce_units`); the sizes
        of the segments made or found."""
        keys = tuple(self._unit_key(state, unit) for unit in units)
        started = time.monotonic()
        first_caller = keys[0] not in self._inflight  # the one that counts the production
        try:
            sizes, made = await self.run(
                keys, priority, run_job, "produce_units",
                state.spec, state.rendition, [unit[0] for unit in units], priority <= ON_DEMAND,
            )  # fmt: skip
        except Preempted as stopped:  # what it made before it stopped is in the cache
            if first_caller:
                self.produced += stopped.made
            await self._stored_sizes(state, stopped.sizes)
            raise
        if first_caller:  # only what was made here (another process may have made some)
            self.produced += made
            if self.on_segment is not None:  # each segment of the job took this long
                for _ in range(made):
                    self.on_segment(state.rendition, time.monotonic() - started)
        await self._stored_sizes(state, sizes)
        return dict(sizes)

    async def _stored_sizes(self, state: StreamState, sizes: dict[int, int]) -> None:
        """Segments are in the cache: list them, count them for the LRU."""
        for made, size in sizes.items():
            self.index.touch(state.spec.segment_key(state.rendition, made), size)
            if made not in state.done:
                state.mark_done(made)
        if self.index.total_bytes > self.index.max_bytes:
            await asyncio.to_thread(self.index.evict)

    async def segment_bytes(self, state: StreamState, index: int) -> tuple[bytes, bool]:
        """The bytes of one segment, produced first if missing (again if evicted
        meanwhile), and whether they were in the cache when asked for."""
        key = state.spec.segment_key(state.rendition, index)
        found = self.cache.get(*key) is not None
        for _ in range(3):
            await self._stored(state, index)
            try:
                return await asyncio.to_thread(self.cache.path(*key).read_bytes), found
            except FileNotFoundError:
                self.index.forget(key)  # evicted between production and reading
                found = False
        raise FileNotFoundError(f"segment {index} keeps vanishing from the cache")

    async def _stored(self, state: StreamState, index: int) -> None:
        """Return once segment `index` is in the cache, producing its unit if needed.

        A segment is stored as soon as it is encoded, while its job goes on
        with the rest of its unit or run: a listener waiting for it is
        answered then (the cache is looked at every `EARLY_POLL_SECONDS`),
        and the job finishes on its own.
        """
        production = asyncio.ensure_future(self.segment(state, index, ON_DEMAND))
        try:
            while not (await asyncio.wait({production}, timeout=EARLY_POLL_SECONDS))[0]:
                if self._notice_stored(state, index):
                    production.add_done_callback(_consume_exception)
                    return
        except asyncio.CancelledError:
            production.cancel()  # as if awaited: work nobody waits for is dropped
            raise
        production.result()

    def request_soon(self, state: StreamState, index: int) -> None:
        """Produce a segment at on-demand priority without waiting for it."""
        if index not in state.done:
            task = asyncio.create_task(self.segment(state, index, ON_DEMAND))
            task.add_done_callback(_consume_exception)

    def ensure_background(self, state: StreamState) -> None:
        """Produce the rest of the stream in order, unless that is running or done."""
        if state.complete or (state.background is not None and not state.background.done()):
            return
        state.background = asyncio.create_task(self._background(state))

    async def _background(self, state: StreamState) -> None:
        """Produce missing segments while someone listens, one lane per worker.

        The encode units with a missing segment are cut into `workers`
        contiguous runs, each produced in order by its own lane (`Lanes`).
        A lane submits its next units when its last job is done, so the
        worker that just finished (and still holds the previous window's
        rendering) takes them: each window is rendered about once.
        """
        units = [unit for unit in state.units if any(i not in state.done for i in unit)]

        def samples(unit: range) -> int:
            return state.plan[unit[-1]].end - state.plan[unit[0]].start

        def made(units: list[range]) -> tuple[int, float] | None:
            """Samples of `units` in the cache, and when the last was stored (monotonic)."""
            count, last = 0, None
            for unit in units:  # a unit's segments are stored in order: its last tells
                key = state.spec.segment_key(state.rendition, unit[-1])
                try:
                    stored = self.cache.path(*key).stat().st_mtime
                except FileNotFoundError:
                    continue
                count, last = count + samples(unit), max(stored, last or stored)
            return None if last is None else (count, time.monotonic() - (time.time() - last))

        lanes = Lanes.split(units, self.workers, samples, made)
        await asyncio.gather(*(self._lane(state, lanes, lane) for lane in range(self.workers)))

    async def _lane(self, state: StreamState, lanes: Lanes, lane: int) -> None:
        while units := lanes.take(lane, time.monotonic()):
            if state.error is not None:
                return
            if time.monotonic() - state.last_access > self.idle_seconds:
                return  # nobody has asked for a while: resume on the next request
            missing = [unit for unit in units if any(i not in state.done for i in unit)]
            if not missing:
                continue
            # A unit some listener has asked for is already on its way: waited for after.
            asked = [unit for unit in missing if self._unit_key(state, unit) in self._inflight]
            own = [unit for unit in missing if unit not in asked]
            started = time.monotonic()
            lanes.busy[lane] = (missing, started)
            try:
                if own:
                    await self._produce(state, own, BACKGROUND)
                    lanes.record(lane, own, time.monotonic() - started)  # its own pace only
                for unit in [*asked, *own]:
                    if any(i not in state.done for i in unit):  # left out by another producer
                        await self.segment(state, unit[0], BACKGROUND)
            except Preempted:  # a listener needed the worker: the rest waits, in order
                undone = [unit for unit in missing if any(i not in state.done for i in unit)]
                lanes.queues[lane].extendleft(reversed(undone))
                lanes.busy[lane] = None  # idle while it waits (the other lanes judge it so)
                await self._listeners_served()
            except Exception as exc:
                log.warning(
                    "background production of %s/%s stopped at segment %d: %s",
                    state.spec.source.key, state.rendition, missing[0][0], exc,
                )  # fmt: skip
                state.error = exc
                state.changed.set()
                return
            finally:
                lanes.busy[lane] = None

    async def wait_listed(self, state: StreamState, count: int, timeout: float) -> None:
        """Return once `count` segments are listed, the stream is complete, or `timeout` passes."""
        deadline = asyncio.get_running_loop().time() + timeout
        while state.listed < count and not state.complete:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or (state.error is not None and state.state == "failed"):
                return
            try:  # looking at the cache now and then: a unit stores its first segment early
                await asyncio.wait_for(state.changed.wait(), min(remaining, EARLY_POLL_SECONDS))
            except TimeoutError:
                self._notice_stored(state, state.listed)

    def _notice_stored(self, state: StreamState, index: int) -> bool:
        """Whether segment `index` is in the cache (its unit's encode may store it before
        the unit is done); lists it if so."""
        key = state.spec.segment_key(state.rendition, index)
        try:
            size = self.cache.path(*key).stat().st_size
        except FileNotFoundError:
            return False
        self.index.touch(key, size)
        if index not in state.done:
            state.mark_done(index)
        return True


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # mark retrieved: callers may all have gone
