"""The worker pool and the priority queue in front of it.

- One dispatcher per worker takes the most urgent job: work a listener waits
  for (priority ON_DEMAND) goes first, then work one will want soon (SOON),
  then background work (BACKGROUND).
- Single flight: concurrent callers of the same work share one job.
- A caller that goes away does not cancel work others wait for; work nobody
  waits for any more is dropped unless it has started.
- Background work gives its worker up when a listener's work waits for one
  (`hls.preemption`): at once, or after the unit in progress when a
  listener waits for that run too; its callers get Preempted, and may wait
  for `listeners_served` before they queue the rest again.

This module knows jobs only as functions and keys; what they make is
`hls.production`'s business.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import multiprocessing
import os
from collections.abc import Callable, Hashable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any

from hls.errors import Overloaded
from hls.preemption import AFTER_UNIT, NOW, new_flags, run_in_slot
from hls.workers import init_worker, run_job

ON_DEMAND = 0
PREPARE = 0
# Work a listener will want but does not wait for yet (the segments a blocking
# reload waits to see listed): it takes the next free worker before background
# work and, with none free, stops a lane's run after its unit in progress.
# Stopping the run at once, as for a listener, threw away the part of a unit
# made so far: 1.5 s of a worker's 9 s on a 5-minute track whose client
# reloads as hls.js does (benchmarks/corpus.py, orchestral).
SOON = 5
BACKGROUND = 10
MAX_PENDING = 32  # on-demand jobs waiting for a worker before new ones get 503
# A preempted lane resumes once no listener's work has waited for a worker this
# long (the first request of a track is two jobs, source then segment: not between them).
RESUME_SECONDS = 0.05

log = logging.getLogger("hls.workqueue")


@dataclass(order=True)
class _Job:
    priority: int
    sequence: int
    keys: tuple[Hashable, ...] = field(compare=False)  # the work it does (single flight)
    fn: Callable[..., Any] = field(compare=False)
    args: tuple = field(compare=False)
    future: asyncio.Future = field(compare=False)
    background: bool = field(compare=False)  # queued first as background work (a lane's run)


def _pool_context() -> multiprocessing.context.BaseContext:
    # Workers fork from a small server process that preloads the pipeline: no
    # fork of the threaded event-loop process, and shared pages between workers.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["hls.preload"])
    return ctx


class WorkQueue:
    """A pool of `workers` processes fed from one priority queue."""

    def __init__(self, workers: int, max_pending: int = MAX_PENDING) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self._context = _pool_context()
        self._stop_flags = new_flags(self._context, workers)  # one per dispatcher
        self._pool = self._new_pool()
        self._queue: asyncio.PriorityQueue[_Job] = asyncio.PriorityQueue()
        self._running: set[Hashable] = set()
        self._by_slot: dict[int, _Job] = {}  # the job each busy dispatcher runs
        self._queued_on_demand: set[asyncio.Future] = set()
        self._queued_soon: set[asyncio.Future] = set()  # SOON jobs waiting for a worker
        self._soon_stops: set[int] = set()  # slots asked to stop after their unit for them
        self._wanted: set[asyncio.Future] = set()  # jobs a listener waits for
        self._calm = asyncio.Event()  # set while no listener's job waits for a worker
        self._calm.set()
        self._waiters: dict[asyncio.Future, int] = {}
        self._sequence = itertools.count()
        self._inflight: dict[Hashable, _Job] = {}
        self._dispatchers: list[asyncio.Task[None]] = []
        self.preempted = 0  # background jobs asked to stop for a listener's work
        self.dropped = 0  # queued jobs dropped because every caller waiting for them left

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
        for task in self._dispatchers:
            task.cancel()
        await asyncio.gather(*self._dispatchers, return_exceptions=True)
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def running(self) -> int:
        """Jobs a worker runs now."""
        return len(self._by_slot)

    @property
    def waiting(self) -> int:
        """Jobs a listener waits for that wait for a worker."""
        return len(self._queued_on_demand)

    def in_flight(self, key: Hashable) -> bool:
        """Whether some job queued or running does the work named `key`."""
        return self._live(key) is not None

    def _live(self, key: Hashable) -> _Job | None:
        """The unfinished job doing the work named `key`, if any.

        A job's keys are forgotten by a callback of its future, which runs
        only once the loop has turned. A caller whose step runs in between
        (after the one that finished a preempted run) must not share the
        finished job: awaiting a finished future does not yield, so a
        listener retrying on Preempted spun the event loop forever and the
        origin stopped answering (seen under load behind nginx; the stack
        dump showed the spin; `tests/test_workqueue.py` has the case).
        """
        job = self._inflight.get(key)
        if job is not None and job.future.done():
            self._forget_job(job)
            return None
        return job

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
        """
        job = self._live(keys[0])
        if job is None:
            if any(self._live(key) is not None for key in keys):
                raise ValueError("part of this work is in flight in another job")
            if priority <= ON_DEMAND and len(self._queued_on_demand) >= self.max_pending:
                raise Overloaded(f"{len(self._queued_on_demand)} requests are waiting for work")
            future = asyncio.get_running_loop().create_future()
            job = _Job(priority, next(self._sequence), keys, fn, args, future, priority > ON_DEMAND)
            for key in keys:
                self._inflight[key] = job
            future.add_done_callback(functools.partial(self._forget_job, job))
            future.add_done_callback(consume_exception)
        future = job.future
        # Queued once per caller: at a higher priority it runs sooner, and
        # the dispatcher skips the copies of work done or running.
        self._queue.put_nowait(replace(job, priority=priority, sequence=next(self._sequence)))
        if priority <= ON_DEMAND:
            self._want(future)
            if not self._running.intersection(job.keys):
                self._queued_for_listener(future)
                self._preempt()
        elif priority < BACKGROUND and not self._running.intersection(job.keys):
            self._queued_soon_add(future)
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
                self.dropped += 1
            raise
        finally:
            self._waiters[future] -= 1
            if self._waiters[future] <= 0:
                del self._waiters[future]

    async def listeners_served(self) -> None:
        """Return once no listener's job has waited for a worker for RESUME_SECONDS."""
        while True:
            await self._calm.wait()
            await asyncio.sleep(RESUME_SECONDS)
            if self._calm.is_set():
                return

    def _forget_job(self, job: _Job, _future: asyncio.Future | None = None) -> None:
        """Drop a finished job's keys (those a newer job took over stay)."""
        for key in job.keys:
            if self._inflight.get(key) is job:
                del self._inflight[key]

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
            self._queued_soon.discard(future)
            self._stop_flags[slot] = 0
            self._soon_stops.discard(slot)
            self._by_slot[slot] = job
            self._withdraw_soon_stops()
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
        worker: those nobody waits for at once, the most recent first (they have
        done the least); those a listener waits for too after their unit in progress.
        Then lanes' runs for SOON jobs still without one, each after its unit in
        progress: nothing made so far is thrown away for work nobody waits for yet."""
        idle = self.workers - len(self._by_slot)
        flagged = {slot for slot in self._by_slot if self._stop_flags[slot]}
        for_listeners = flagged - self._soon_stops
        short = len(self._queued_on_demand) - idle - len(for_listeners)
        candidates = [  # a stop for SOON work may become one for a listener
            slot
            for slot, job in self._by_slot.items()
            if job.background and slot not in for_listeners
        ]

        def order(slot: int) -> tuple[bool, int]:
            job = self._by_slot[slot]
            return job.future in self._wanted, -job.sequence

        for slot in sorted(candidates, key=order)[: max(short, 0)]:
            wanted = self._by_slot[slot].future in self._wanted
            self._stop_flags[slot] = AFTER_UNIT if wanted else NOW
            if slot in self._soon_stops:
                self._soon_stops.discard(slot)  # asked already: now for a listener
            else:
                self.preempted += 1
        flagged = {slot for slot in self._by_slot if self._stop_flags[slot]}
        short = self._stops_short()
        runs = [
            slot
            for slot, job in self._by_slot.items()
            if job.priority >= BACKGROUND and slot not in flagged
        ]
        for slot in sorted(runs, key=order)[: max(short, 0)]:
            self._stop_flags[slot] = AFTER_UNIT
            self._soon_stops.add(slot)
            self.preempted += 1

    def _withdraw_soon_stops(self) -> None:
        """Take back the stops asked of lanes' runs for SOON work that found a worker
        meanwhile (one another job freed): the run goes on with its next unit.

        Left standing, the stop ended a lane's run after its unit for nothing,
        and the lane started again with a new ffmpeg and pre-roll (seen on a
        200 s track: the SOON unit got the worker the other lane freed, and
        this lane stopped 0.4 s later and restarted 0.05 s after that).
        """
        self._soon_stops.intersection_update(self._by_slot)  # those ended stopped already
        surplus = min(-self._stops_short(), len(self._soon_stops))
        for slot in sorted(self._soon_stops)[: max(surplus, 0)]:
            self._stop_flags[slot] = 0
            self._soon_stops.discard(slot)

    def _stops_short(self) -> int:
        """How many more running jobs must be asked to stop for the work waiting for a
        worker (listeners' and SOON); negative: how many asked are not needed."""
        idle = self.workers - len(self._by_slot)
        flagged = sum(1 for slot in self._by_slot if self._stop_flags[slot])
        return len(self._queued_on_demand) + len(self._queued_soon) - idle - flagged

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

    def _queued_soon_add(self, future: asyncio.Future) -> None:
        """A SOON job waits for a worker."""
        if future not in self._queued_soon:
            self._queued_soon.add(future)
            future.add_done_callback(self._queued_soon.discard)

    def _started_on_demand(self, future: asyncio.Future) -> None:
        """A job left the queue (it started, or nobody waits for it any more)."""
        self._queued_on_demand.discard(future)
        if not self._queued_on_demand:
            self._calm.set()


def consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception retrieved: its callers may all have gone."""
    if not future.cancelled():
        future.exception()
