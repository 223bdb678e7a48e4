"""Benchmark: the Dask engine's own cost, apart from any input: start its cluster, call a
function on every worker a few times, close it.

    .venv/bin/python benchmarks/dask_start.py [--workers N] [--calls N] [--repeat N]

Each round runs, each in a fresh process (spawned, as a `trialsieve cohort` command starts),
interleaved: the cluster a run starts for itself (`DaskStart`: on Linux a process forked
from the command's holds it, importing distributed once and forking the workers from
itself) and the same with another thread running in the process, where the command's
process imports distributed and the workers come from a forkserver that imports distributed
and trialsieve again (what every run did until 2026-11-30, with a nanny per worker). Each
prints the CPU seconds of the whole process tree (the command's process, its children,
their children: distributed's import included, trialsieve's not: the command has imported
it anyway), and the seconds until the workers are up (the first call answered), until the
calls are done and until the cluster is closed. A cohort run's Dask/local CPU difference
(`benchmarks/cohort.py`) is about this cost, whatever the input size.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import cpu_seconds_of_this_process_tree


def _square(number: int) -> int:
    return number * number


def _start_run_close(workers: int, calls: int, with_a_thread: bool) -> tuple[float, ...]:
    """In a fresh process: CPU seconds, and seconds to ready, to done, to closed."""
    import engine.cohort.runner  # noqa: F401  # what a cohort command has imported
    from engine.cohort.engines import DaskStart, EngineSettings

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    if with_a_thread:
        other.start()
    cpu = cpu_seconds_of_this_process_tree()
    started = time.perf_counter()
    try:
        start = DaskStart(EngineSettings(workers))
    finally:
        stop.set()
        if with_a_thread:
            other.join()
    start.begin()
    try:
        assert len(start.run_on_workers(_square, 0)) == workers
        ready = time.perf_counter() - started
        for number in range(1, calls):
            answers = start.run_on_workers(_square, number)
            assert list(answers.values()) == [number * number] * workers
        done = time.perf_counter() - started
    finally:
        start.close()
    closed = time.perf_counter() - started
    return cpu_seconds_of_this_process_tree() - cpu, ready, done, closed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    names = {False: "hosted, workers forked", True: "forkserver (another thread ran)"}
    figures: dict[bool, list[tuple[float, ...]]] = {False: [], True: []}
    context = multiprocessing.get_context("spawn")
    for _round in range(arguments.repeat):
        for with_a_thread in (False, True):
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                figures[with_a_thread].append(
                    pool.submit(
                        _start_run_close, arguments.workers, arguments.calls, with_a_thread
                    ).result()
                )
    print(f"{arguments.workers} workers, {arguments.calls} calls, {arguments.repeat} rounds:")
    for with_a_thread, rounds in figures.items():
        cpu = sorted(round_[0] for round_ in rounds)
        best = min(rounds, key=lambda round_: round_[3])
        print(
            f"  {names[with_a_thread]:32} CPU {cpu[0]:.2f}-{cpu[-1]:.2f} s; best round: "
            f"workers up {best[1]:.2f} s, calls done {best[2]:.2f} s, closed {best[3]:.2f} s"
        )


if __name__ == "__main__":
    main()
