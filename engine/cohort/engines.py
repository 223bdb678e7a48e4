"""Engines: how a cohort run's partitions get evaluated.

An engine takes the partitions still to do and calls `on_done` as each one's result file
(`partitions/NNNN.ndjson`, ending with its `complete` line) is written; both engines write
the same files, so a run resumes with either.

- `local`: `workers` processes of this machine (this process alone when 1), criteria compiled
  once per process (inherited through fork); each worker reads and writes its partitions.
- `dask`: a Dask distributed cluster, a `LocalCluster` of `workers` single-threaded processes
  unless `scheduler` names a running one. One task per partition carries the partition
  itself (`PartitionPayload`: an NDJSON partition's lines), the compiled criteria are built
  once per worker from the criteria and mapping files sent along (`CriteriaFiles`, cached by
  digest), and the result comes back to this process, which writes the result file: workers
  need no shared filesystem (Bundle partitions travel as paths, though).
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import resource
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import Any

from engine.attestations import Attestations
from engine.cohort.inputs import PartitionPayload
from engine.cohort.partition import (
    CriteriaFiles,
    PartitionEvaluator,
    PartitionOutcome,
    PartitionResult,
    WorkerSetup,
    evaluate_in_worker,
    start_worker,
    write_result,
)
from engine.errors import TrialsieveError
from engine.evaluate import CompiledCriteria
from engine.trial import load_trial


class CohortError(TrialsieveError):
    """A cohort run cannot start: the output folder holds another run, an unknown engine."""


@dataclass(frozen=True)
class EngineSettings:
    """How many workers (local processes, or the size of a Dask LocalCluster), which cluster."""

    workers: int
    scheduler: str | None = None


Engine = Callable[
    [
        WorkerSetup,
        list[int],
        EngineSettings,
        Callable[[], None],
        Callable[[PartitionOutcome], None],
    ],
    int | None,
]
"""Evaluates partitions: (setup, partition indexes, settings, on_started, on_done); returns
the largest peak resident memory of a worker, in bytes, when known."""


def peak_memory() -> int:
    """This process's peak resident memory in bytes."""
    return _kilobytes_or_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _kilobytes_or_bytes(maxrss: int) -> int:
    return maxrss if sys.platform == "darwin" else maxrss * 1024


# --------------------------------------------------------------------------- local


def run_local(
    setup: WorkerSetup,
    indexes: list[int],
    settings: EngineSettings,
    on_started: Callable[[], None],
    on_done: Callable[[PartitionOutcome], None],
) -> int | None:
    """The local engine: `settings.workers` processes, whole partitions each."""
    if settings.workers <= 1 or len(indexes) <= 1:
        criteria = setup.criteria or load_trial(setup.criteria_path)
        evaluator = PartitionEvaluator(criteria, setup.as_of, setup.attestations)
        on_started()
        for index in indexes:
            result = evaluator.evaluate(setup.partitions.payload(index))
            write_result(setup.results_folder, result)
            on_done(result.outcome)
        return None
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    if context.get_start_method() != "fork":
        setup = replace(setup, criteria=None)  # compiled criteria do not pickle: recompile
    with ProcessPoolExecutor(
        max_workers=min(settings.workers, len(indexes)),
        mp_context=context,
        initializer=start_worker,
        initargs=(setup,),
    ) as pool:
        futures = [pool.submit(evaluate_in_worker, index) for index in indexes]
        on_started()  # after the workers are forked: no progress thread is copied into them
        for future in as_completed(futures):
            on_done(future.result())
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return _kilobytes_or_bytes(children)


# --------------------------------------------------------------------------- dask


@dataclass(frozen=True)
class DaskJob:
    """What every Dask task of a run shares: sent to each worker once."""

    criteria: CriteriaFiles
    as_of: dt.date
    attestations: Attestations


_compiled: tuple[str, CompiledCriteria] | None = None
"""The criteria this worker process compiled last, by digest."""


def _compiled_criteria(files: CriteriaFiles) -> CompiledCriteria:
    global _compiled
    if _compiled is None or _compiled[0] != files.digest:
        _compiled = (files.digest, files.load())
    return _compiled[1]


def evaluate_on_dask_worker(job: DaskJob, payload: PartitionPayload) -> PartitionResult:
    """Dask task: evaluate one partition; the criteria are compiled once per worker."""
    evaluator = PartitionEvaluator(_compiled_criteria(job.criteria), job.as_of, job.attestations)
    return evaluator.evaluate(payload)


def _worker_peak_memory() -> int:
    return peak_memory()


def run_dask(
    setup: WorkerSetup,
    indexes: list[int],
    settings: EngineSettings,
    on_started: Callable[[], None],
    on_done: Callable[[PartitionOutcome], None],
) -> int | None:
    """The Dask engine: one task per partition on a LocalCluster or the cluster at `scheduler`.

    At most two tasks per worker are in flight, so this process holds only a few partitions
    at a time whatever the input size.
    """
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as as_finished
    except ImportError as error:
        raise CohortError(
            "the dask engine needs dask.distributed: pip install 'trialsieve[dask]'"
        ) from error
    criteria = setup.criteria or load_trial(setup.criteria_path)
    job = DaskJob(CriteriaFiles.collect(criteria), setup.as_of, setup.attestations)
    cluster: Any = None
    if settings.scheduler is None:
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=settings.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # a free port: several clusters may run side by side
            silence_logs=logging.WARNING,
        )
    try:
        address = cluster if cluster is not None else settings.scheduler
        with Client(address) as client:  # type: ignore[no-untyped-call]
            worker_count = max(1, len(client.scheduler_info()["workers"]))
            shared_job = client.scatter(job, broadcast=True, hash=False)
            waiting = iter(indexes)
            running = as_finished()  # type: ignore[no-untyped-call]

            def submit_next() -> None:
                index = next(waiting, None)
                if index is None:
                    return
                payload = client.scatter(setup.partitions.payload(index), hash=False)
                running.add(  # type: ignore[no-untyped-call]
                    client.submit(
                        evaluate_on_dask_worker,
                        shared_job,
                        payload,
                        key=f"trialsieve-partition-{index}-{job.criteria.digest[:12]}",
                        pure=False,
                        retries=1,
                    )
                )

            for _slot in range(2 * worker_count):
                submit_next()
            on_started()
            for future in running:
                result: PartitionResult = future.result()
                future.release()
                write_result(setup.results_folder, result)
                on_done(result.outcome)
                submit_next()
            peaks: dict[str, int] = client.run(_worker_peak_memory)
            return max(peaks.values(), default=None)
    finally:
        if cluster is not None:
            cluster.close()
