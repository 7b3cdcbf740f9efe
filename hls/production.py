"""What is produced, for which stream, and when: segments on demand, streams in the background.

- A stream (track, preset, intensity, rendition) is produced in order in the
  background once its live playlist is requested, in one lane per worker
  (`hls.lanes`); its state tells playlists how many segments are listed and
  wakes blocking reloads.
- A listener's segment is produced at once (ON_DEMAND) with the rest of its
  encode unit, and answered as soon as it is stored.
- Background work stopped for a listener (`hls.workqueue`) goes back to its
  lane, which resumes once listeners' work is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from hls import playlist
from hls.lanes import Lanes
from hls.preemption import Preempted
from hls.streams import PreparedSource, QueueRef, SourceRef, StreamSpec
from hls.workers import run_job
from hls.workqueue import (
    BACKGROUND,
    MAX_PENDING,
    ON_DEMAND,
    PREPARE,
    SOON,
    WorkQueue,
    consume_exception,
)
from processing.plan import SegmentPlan
from processing.renditions import RENDITIONS
from storage.cache import DiskCache
from storage.eviction import LruIndex

IDLE_SECONDS = 120.0  # background work of a stream nobody asked for pauses after this
MAX_STREAMS = 512  # stream states kept; idle ones past this are forgotten (rebuilt when asked)
EARLY_POLL_SECONDS = 0.02  # how often a listener's segment is looked for while its unit encodes

log = logging.getLogger("hls.production")


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


class Production:
    """The state of every stream, and the work that makes their segments (`work`)."""

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
        self.cache = cache
        self.index = index
        self.workers = workers
        self.idle_seconds = idle_seconds
        self.work = WorkQueue(workers, max_pending)
        self._streams: dict[tuple[StreamSpec, str], StreamState] = {}
        self._prepared: dict[str, PreparedSource] = {}
        self.produced = 0  # segments produced by this process (for metrics and tests)
        self.on_segment: Callable[[str, float], None] | None = None

    async def start(self) -> None:
        await self.work.start()

    async def close(self) -> None:
        for state in self._streams.values():
            if state.background is not None:
                state.background.cancel()
        await self.work.close()

    async def prepare(self, source: SourceRef | QueueRef, cache_dir: str) -> PreparedSource:
        """Exact rate, channels and length of a source (converted once if needed)."""
        known = self._prepared.get(source.key)
        if known is None:
            known = await self.work.run(
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
                lead = RENDITIONS[state.rendition].lead_samples
                state.bit_rates = playlist.bandwidths(state.plan, sizes, lead)
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

    def _unit_key(self, state: StreamState, unit: range, alongside: bool = False) -> Hashable:
        """The work queue's name for producing `unit`; made alongside a running job
        that holds it (`Lanes.shared`), the work has a name of its own."""
        kind = "alongside" if alongside else "unit"
        return (kind, *state.spec.segment_key(state.rendition, unit[0]))

    async def segment(self, state: StreamState, index: int, priority: int = ON_DEMAND) -> int:
        """Make sure one segment is in the cache (producing it if missing); returns its size.

        Segments are produced by encode unit (`SegmentPlan.encode_units`): the
        unit's other segments are made and listed with it. A unit in a lane's
        run that is on its way is waited for, not produced again. A listener
        whose unit was in a background run that stopped for other listeners
        has it made again; background callers get Preempted.
        """
        while True:
            path = self.cache.get(*state.spec.segment_key(state.rendition, index))
            if path is not None:
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    pass  # evicted just now: produce it again
                else:
                    await self._stored_sizes(state, {index: size})
                    return size
            try:
                sizes = await self._produce(state, [state.unit_of(index)], priority)
            except Preempted:
                if priority > ON_DEMAND:
                    raise
                continue  # queued again, at the listener's priority: never stopped
            if index in sizes:
                return int(sizes[index])
            # The job stopped at a unit another producer made or is making (a lane
            # alongside it, another origin on the cache): found, or waited for, next.

    async def _produce(
        self, state: StreamState, units: list[range], priority: int, alongside: bool = False
    ) -> dict[int, int]:
        """Produce `units` (in one job: one ffmpeg, `hls.jobs.produce_units`); the sizes
        of the segments made or found."""
        keys = tuple(self._unit_key(state, unit, alongside) for unit in units)
        started = time.monotonic()
        first_caller = not self.work.in_flight(keys[0])  # the one that counts the production
        try:
            sizes, made = await self.work.run(
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
                    production.add_done_callback(consume_exception)
                    return
        except asyncio.CancelledError:
            production.cancel()  # as if awaited: work nobody waits for is dropped
            raise
        production.result()

    def request_soon(self, state: StreamState, index: int) -> None:
        """Produce a segment soon (SOON: before background work, which it stops only
        between units), without waiting for it."""
        if index not in state.done:
            task = asyncio.create_task(self.segment(state, index, SOON))
            task.add_done_callback(consume_exception)

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

        def stored(unit: range) -> bool:
            return self.cache.get(*state.spec.segment_key(state.rendition, unit[-1])) is not None

        lanes = Lanes.split(units, self.workers, samples, made, stored)
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
            # One taken from another lane's running job is made alongside it.
            alongside = units[0] in lanes.shared
            asked = [
                unit
                for unit in missing
                if not alongside and self.work.in_flight(self._unit_key(state, unit))
            ]
            own = [unit for unit in missing if unit not in asked]
            started = time.monotonic()
            lanes.busy[lane] = (missing, started)
            try:
                if own:
                    await self._produce(state, own, BACKGROUND, alongside)
                    lanes.record(lane, own, time.monotonic() - started)  # its own pace only
                for unit in [*asked, *own]:
                    if not any(i not in state.done for i in unit):
                        continue
                    # Left out by another producer: a lane making it alongside is
                    # waited for without a worker; otherwise it is made (or found).
                    if unit in lanes.shared and self.work.in_flight(
                        self._unit_key(state, unit, alongside=True)
                    ):
                        await self._produce(state, [unit], BACKGROUND, alongside=True)
                    else:
                        await self.segment(state, unit[0], BACKGROUND)
            except Preempted:  # a listener needed the worker: the rest waits, in order
                undone = [unit for unit in missing if any(i not in state.done for i in unit)]
                lanes.queues[lane].extendleft(reversed(undone))
                lanes.busy[lane] = None  # idle while it waits (the other lanes judge it so)
                await self.work.listeners_served()
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
