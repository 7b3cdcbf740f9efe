"""What each worker of the pool sets up when it starts, how it runs a job, and how it ends.

A pool worker waits for jobs on a queue whose write end it holds itself, and
the forkserver it comes from lives as long as any of its children. So a
server that dies without shutting its pool down (SIGKILL, the OOM killer, a
crash) used to leave its workers, their forkserver and the resource tracker
running for good: 4 processes and 330 MB resident per dead server (a
benchmark whose servers were killed left 15 such sets behind, measured).
Each worker now watches the server's process and exits once it is gone;
the forkserver and the tracker follow when their last client has gone.

This module imports no numpy: the server process imports it too.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import MutableSequence
from typing import Any

from hls import preemption


def run_job(name: str, *args: Any) -> Any:
    """Worker entry point: call `hls.jobs.<name>(*args)` (imported in the worker only)."""
    from hls import jobs

    return getattr(jobs, name)(*args)


def init_worker(flags: MutableSequence[int], server_pid: int) -> None:
    """Pool initializer: keep the server's stop flags (`hls.preemption`), end with the server."""
    preemption.keep_flags(flags)
    exit_with(server_pid)


def exit_with(pid: int) -> None:
    """End this process (os._exit) as soon as process `pid` has ended.

    A daemon thread waits on a pidfd of `pid` (Linux 5.3+), readable once
    the process exits: no CPU while it waits. The encoders of a job in
    progress see their input end and stop too. Where no pidfd can be had,
    the worker is not watched (it ends with its pool, as before).
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(0)  # the server is gone already
    except (AttributeError, OSError):
        return

    def watch() -> None:
        select.select([fd], [], [])
        os._exit(0)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()
