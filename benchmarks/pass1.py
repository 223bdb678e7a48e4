"""Benchmark: pass 1 of `trialsieve cohort` over NDJSON (`partition_ndjson`) on its own.

    .venv/bin/python benchmarks/pass1.py [--data DIR] [--criteria FILE] [--workers N ...]
                                         [--repeat N] [--files]

Splits the export into 16 partitions by patient, keeping the types a run over `--criteria`
keeps (default DAPA-CKD), in this process (`--workers 1`) or in worker processes, and prints
per run the wall time and the CPU seconds of this process and of the pass's workers (pass 1
is the part of a run no evaluation can start before, so both count), best and median of
`--repeat` (default 3) runs, each into a new temporary work folder. `--files`: also each
file as one range in this process (CPU ms, best of `--repeat`). On a machine others use,
compare figures of runs made in the same minute only (docs/cohort-performance.md, How it
works: Partitioning).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from shared_data import require, synthea

from engine.cohort.ndjson_partitions import _RangeTask, _split_range, partition_ndjson
from engine.cohort.runner import kept_types
from engine.sources.ndjson import ndjson_files
from engine.trial import load_trial

CHECKOUT = Path(__file__).resolve().parents[1]
PARTITIONS = 16


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _one_pass(data: Path, kept: frozenset[str], workers: int) -> tuple[float, float, float]:
    """Wall, this process's CPU and the workers' CPU (s) of one pass into a new folder."""
    with tempfile.TemporaryDirectory(prefix="pass1-") as work:
        children = _children_cpu()
        started, cpu = time.perf_counter(), time.process_time()
        partition_ndjson(data, work, PARTITIONS, lambda _problem: None, kept, workers)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        return wall, cpu, _children_cpu() - children


def _one_file(path: Path, kept: frozenset[str], repeat: int) -> float:
    """CPU ms of pass 1 over one file as one range in this process, best of `repeat`."""
    kept_names = frozenset(name.encode() for name in kept)
    best = float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="pass1-") as work:
            task = _RangeTask(0, 0, str(path), 0, None, work, PARTITIONS, kept_names)
            started = time.process_time()
            _split_range(task)
            best = min(best, time.process_time() - started)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=synthea("ndjson"))
    parser.add_argument("--criteria", type=Path, default=CHECKOUT / "criteria/NCT03036150.yaml")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files", action="store_true")
    arguments = parser.parse_args()
    require(arguments.data)
    kept = kept_types(load_trial(arguments.criteria))
    files = ndjson_files(arguments.data)
    size = sum(path.stat().st_size for path in files)
    print(f"data      {arguments.data}: {len(files)} files, {size / 1e6:,.0f} MB")
    print(f"criteria  {arguments.criteria.name}; kept types {', '.join(sorted(kept))}")
    print(f"{'workers':>7}  {'wall s':>13}  {'CPU s (this + workers)':>24}   best / median")
    for workers in arguments.workers:
        runs = [_one_pass(arguments.data, kept, workers) for _ in range(arguments.repeat)]
        walls = [wall for wall, _cpu, _children in runs]
        cpus = [cpu + children for _wall, cpu, children in runs]
        print(
            f"{workers:>7}  {min(walls):6.2f} {statistics.median(walls):6.2f}  "
            f"{min(cpus):11.2f} {statistics.median(cpus):12.2f}"
        )
    if arguments.files:
        print(f"{'file':40} {'MB':>6} {'CPU ms':>8}  (one range, best of {arguments.repeat})")
        for path in files:
            megabytes = path.stat().st_size / 1e6
            cost = _one_file(path, kept, arguments.repeat)
            print(f"{path.name:40} {megabytes:6.1f} {cost:8.1f}")


if __name__ == "__main__":
    main()
