"""Background jobs give their worker up at once when a listener's work waits for one.

Background runs hold a worker for seconds (several encode units through one
ffmpeg). Without preemption, a listener who clicks a new track while another
track is produced in the background waited for a run to end: 2.1 s for the
first segment (median of 4, 2 workers) instead of 0.18 s.

The server keeps one stop flag per dispatcher, a byte in shared memory that
every worker inherits when it starts (`new_flags`, `keep_flags`). A job runs
under its dispatcher's slot (`run_in_slot`); a background job asks
`requested()` before each encode unit and between the blocks of audio it
feeds its encoder (each about 30 ms of encoding), and when the server has
raised its flag it stops: its ffmpeg is killed, the units it finished stay
in the cache, and `Preempted` tells the server what it made. The unit it was
encoding is made again later, with the same bytes.

A background run that a listener waits for (one at the live edge asked for
the unit in progress) is asked to stop after that unit instead
(`AFTER_UNIT`, `requested_between_units`): the listener gets its segment,
and another track's listener waits for one unit, not for the whole run
(seconds of encoding under load).

This module imports no numpy: the server process imports it too.
"""

from __future__ import annotations

import multiprocessing.context
from collections.abc import Callable, MutableSequence
from typing import Any

NOW = 1  # a stop flag's values: stop at once
AFTER_UNIT = 2  # finish the unit in progress (a listener waits for it), then stop

_flags: MutableSequence[int] | None = None  # this worker's view of the server's flags
_slot: int | None = None  # the slot of the job running in this worker


class Preempted(Exception):
    """A background job stopped early for a listener's work; what it made is in the cache."""

    def __init__(self, sizes: dict[int, int], made: int) -> None:
        super().__init__(sizes, made)  # picklable: it crosses from the worker to the server
        self.sizes = sizes  # bytes of each segment made or found before it stopped
        self.made = made  # segments it made itself


def new_flags(ctx: multiprocessing.context.BaseContext, slots: int) -> MutableSequence[int]:
    """One stop flag per slot, zero, in memory shared with the workers started after."""
    flags: MutableSequence[int] = ctx.RawArray("b", slots)
    return flags


def keep_flags(flags: MutableSequence[int]) -> None:
    """In a worker as it starts (`hls.workers.init_worker`): keep the server's flags."""
    global _flags
    _flags = flags


def run_in_slot(slot: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a worker as the job of `slot` (the flag it watches)."""
    global _slot
    _slot = slot
    try:
        return fn(*args)
    finally:
        _slot = None


def requested() -> bool:
    """Whether the server asks the job running in this worker to stop at once."""
    return _flags is not None and _slot is not None and _flags[_slot] == NOW


def requested_between_units() -> bool:
    """Whether the server asks the job running in this worker to stop before its next unit."""
    return _flags is not None and _slot is not None and _flags[_slot] != 0
