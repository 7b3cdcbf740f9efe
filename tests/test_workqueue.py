"""The work queue's priorities and stops, with real worker processes and a job that
keeps to the stop protocol as `hls.jobs.produce_units` does (`hls.preemption`)."""

from __future__ import annotations

import asyncio
import time

import pytest

from hls import preemption
from hls.preemption import Preempted
from hls.workqueue import BACKGROUND, ON_DEMAND, SOON, WorkQueue

UNIT_SECONDS = 0.4


def units_job(units: int, seconds: float) -> int:
    """`units` units of `seconds` each; stops as a run of encode units does: within a
    unit when asked to stop at once, between units when asked to stop after one."""
    done = 0
    for _ in range(units):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if preemption.requested():
                raise Preempted({}, done)
            time.sleep(0.005)
        done += 1
        if done < units and preemption.requested_between_units():
            raise Preempted({}, done)
    return done


async def started(queue: WorkQueue, key: str) -> None:
    """Wait until the job named `key` runs in a worker."""
    while key not in queue._running:
        await asyncio.sleep(0.005)


@pytest.fixture
async def queue():
    work = WorkQueue(1)
    await work.start()
    yield work
    await work.close()


async def test_soon_work_stops_a_background_run_after_its_unit_not_at_once(
    queue: WorkQueue,
) -> None:
    run = asyncio.create_task(queue.run(("run",), BACKGROUND, units_job, 3, UNIT_SECONDS))
    await started(queue, "run")
    began = time.monotonic()
    soon = asyncio.create_task(queue.run(("soon",), SOON, units_job, 1, 0.05))
    with pytest.raises(Preempted) as stopped:
        await run
    assert stopped.value.made == 1  # the unit in progress was finished, nothing thrown away
    assert await soon == 1
    assert time.monotonic() - began > UNIT_SECONDS / 2
    assert queue.preempted == 1


async def test_a_run_asked_to_stop_for_soon_work_goes_on_once_that_work_has_a_worker() -> None:
    work = WorkQueue(2)
    await work.start()
    try:
        short = asyncio.create_task(work.run(("short",), BACKGROUND, units_job, 1, 0.15))
        await started(work, "short")
        run = asyncio.create_task(work.run(("run",), BACKGROUND, units_job, 3, UNIT_SECONDS))
        await started(work, "run")
        soon = asyncio.create_task(work.run(("soon",), SOON, units_job, 1, 0.05))
        await asyncio.sleep(0.05)
        assert len(work._soon_stops) == 1  # no worker is free: a run is asked to stop
        assert await short == 1  # its worker takes the SOON job: no run need stop now
        assert await soon == 1
        assert await run == 3  # it went on past its first unit
        assert not work._soon_stops
    finally:
        await work.close()


async def test_a_listener_stops_a_background_run_at_once_even_when_soon_work_asked_first(
    queue: WorkQueue,
) -> None:
    finished: list[str] = []

    async def job(key: str, priority: int, units: int) -> int:
        result = await queue.run((key,), priority, units_job, units, 0.05)
        finished.append(key)
        return result

    run = asyncio.create_task(queue.run(("run",), BACKGROUND, units_job, 3, UNIT_SECONDS))
    await started(queue, "run")
    soon = asyncio.create_task(job("soon", SOON, 1))
    await asyncio.sleep(0.05)  # the run is asked to stop after its unit: not yet stopped
    assert not run.done()
    began = time.monotonic()
    listener = asyncio.create_task(job("listener", ON_DEMAND, 1))
    with pytest.raises(Preempted) as stopped:
        await run
    assert stopped.value.made == 0  # stopped at once for the listener
    assert time.monotonic() - began < UNIT_SECONDS / 2
    await asyncio.gather(soon, listener)
    assert finished == ["listener", "soon"]


async def test_soon_work_waits_for_a_free_worker_before_background_work(
    queue: WorkQueue,
) -> None:
    first = asyncio.create_task(queue.run(("first",), ON_DEMAND, units_job, 1, 0.2))
    await started(queue, "first")
    order: list[str] = []

    async def job(key: str, priority: int) -> None:
        await queue.run((key,), priority, units_job, 1, 0.02)
        order.append(key)

    queued = [asyncio.create_task(job("background", BACKGROUND))]
    await asyncio.sleep(0.01)
    queued.append(asyncio.create_task(job("soon", SOON)))
    assert await first == 1  # a listener's job is never stopped for soon work
    await asyncio.gather(*queued)
    assert order == ["soon", "background"]
    assert queue.preempted == 0


async def test_work_asked_for_as_its_job_stops_gets_a_new_job_not_the_stopped_one(
    queue: WorkQueue,
) -> None:
    """A listener asking for a background run's work on the loop step that stopped
    the run (before the loop turns): it must get a job of its own. Sharing the
    stopped one raised Preempted without yielding, and the listener's retry spun
    the event loop forever (an origin under load stopped answering)."""
    run = asyncio.create_task(queue.run(("run",), BACKGROUND, units_job, 3, UNIT_SECONDS))
    await started(queue, "run")
    stopped = queue._inflight["run"].future
    listener = asyncio.create_task(queue.run(("other",), ON_DEMAND, units_job, 1, 0.05))
    while not stopped.done():  # each turn of the loop: this step comes right after the
        await asyncio.sleep(0)  # dispatcher's, before the callbacks of the future it set
    assert "run" in queue._inflight  # the window: its keys are not forgotten yet
    # Awaited here, not in a task of its own (a task would start after the callbacks).
    assert await queue.run(("run",), ON_DEMAND, units_job, 1, 0.05) == 1
    with pytest.raises(Preempted):
        await run
    assert await listener == 1
