"""A per-process thread pool for work that releases the GIL.

scipy's filters, numpy's array arithmetic and libsndfile's decoding run
without the GIL, so independent pieces of one job (excerpts of an analysis,
the windows of a segment) use both cores from a single worker process. The
pool is created on first use, in the process that uses it (never inherited
through a fork).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_owner = 0  # pid that created _pool


def cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def _executor() -> ThreadPoolExecutor:
    global _pool, _owner
    with _lock:
        if _pool is None or _owner != os.getpid():
            _pool = ThreadPoolExecutor(cores(), thread_name_prefix="dsp")
            _owner = os.getpid()
        return _pool


def parallel_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """[fn(x) for x in items], computed on the pool; results in order, first error raised."""
    items = list(items)
    if len(items) <= 1 or cores() == 1:
        return [fn(x) for x in items]
    return list(_executor().map(fn, items))
