"""The processes a cohort run forks: whether this process may fork now, pool workers that
end with the run (a worker whose parent was killed exits too) and leave Ctrl-C to it."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType


def fork_is_safe() -> bool:
    """Whether fork exists and is safe here: not Windows, not macOS (whose system libraries
    are not fork-safe), and no other thread running (a fork copies only the calling thread:
    a lock another thread held would stay held in the child)."""
    return hasattr(os, "fork") and sys.platform != "darwin" and threading.active_count() == 1


def exit_when_orphaned(interval: float = 0.5) -> None:
    """Process pool initializer: end this worker when the process that started it is gone.

    A pool worker waits on a pipe whose write end it shares with its siblings, so it never
    sees the parent die (kill -9): it would wait forever. A daemon thread compares the parent
    pid with the one at start and exits the worker when it changes.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="trialsieve-orphan-watch", daemon=True).start()


def leave_interrupts_to_the_parent(before_ending: Callable[[], None] | None = None) -> None:
    """In a worker process: ignore SIGINT, and end on SIGTERM. Ctrl-C reaches every process
    of the terminal's process group; the command's process stops the run and its workers
    (a pool's, a Dask cluster's), so a worker has nothing to do with it (a pool worker
    waiting for its next task would otherwise end with a KeyboardInterrupt traceback).
    SIGTERM (a batch system stopping the whole group, or a pool terminating its workers)
    ends the worker at once, quietly, once `before_ending` has returned (a worker's result
    file being written is finished: what the worker evaluated is kept); not through the
    handler the command set for itself (`engine.cli.cohort`), which a fork copies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if before_ending is None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return

    def end(signal_number: int, _frame: FrameType | None) -> None:
        try:
            with contextlib.suppress(BaseException):  # ending anyway: evaluated again
                before_ending()
        finally:
            os._exit(128 + signal_number)

    signal.signal(signal.SIGTERM, end)


def start_pool_worker() -> None:
    """Process pool initializer: `leave_interrupts_to_the_parent`, `exit_when_orphaned`."""
    leave_interrupts_to_the_parent()
    exit_when_orphaned()
