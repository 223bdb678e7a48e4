"""The processes a cohort run forks: whether this process may fork now, pool workers that
end with the run (a worker whose parent was killed exits too) and leave Ctrl-C to it."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


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


def leave_interrupts_to_the_parent() -> None:
    """In a worker process: ignore SIGINT. Ctrl-C reaches every process of the terminal's
    process group; the command's process stops the run and its workers (a pool's, a Dask
    cluster's), so a worker has nothing to do with it (a pool worker waiting for its next
    task would otherwise end with a KeyboardInterrupt traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_pool_worker() -> None:
    """Process pool initializer: `leave_interrupts_to_the_parent`, `exit_when_orphaned`."""
    leave_interrupts_to_the_parent()
    exit_when_orphaned()
