"""Engines: how a cohort run's partitions get evaluated.

An engine takes the partitions still to do and calls `on_done` with each one's index as its
result file (`partitions/NNNN.ndjson`, ending with its `complete` line) is written; both
engines write the same files, so a run resumes with either.

- `local`: `workers` processes of this machine (this process alone when 1), criteria compiled
  once per process (inherited through fork); each worker reads and writes its partitions.
- `dask`: a Dask distributed cluster, a local one of `workers` single-threaded worker
  processes unless `scheduler` names a running one (where forking is safe, the local one
  lives in a process forked from this one, which imports distributed and forks the workers
  from itself; this process then never imports distributed); the criteria are compiled once
  per worker from the criteria and mapping files sent along (`CriteriaFiles`, cached by
  digest). With a shared filesystem (always for a LocalCluster; `shared_filesystem` for a
  remote cluster) a task carries only where its partitions are (`PartitionOnDisk`: up to
  `PARTITIONS_PER_TASK` of them, `task_groups`) and the worker writes the result files
  itself; without one a task carries one partition
  (`PartitionPayload`: an NDJSON partition's lines) and the result comes back to the
  client's process, which writes the file. `DaskStart`, made before pass 1 forks, starts
  the local cluster while pass 1 runs.

`ENGINES` is the one place that knows the engines: by name, how each evaluates partitions
and what the runner does for it (`EngineKind`); `engine_kind(name)` looks one up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import importlib.util
import logging
import multiprocessing
import multiprocessing.util
import os
import pickle
import platform
import re
import resource
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier, Event
from typing import Any, Protocol

from engine.attestations import Attestations
from engine.cohort.inputs import PartitionedInput, PartitionPayload
from engine.cohort.line_screen import LineScreen
from engine.cohort.orphans import exit_when_orphaned, fork_is_safe, leave_interrupts_to_the_parent
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
from engine.compiled_cache import code_digest, load_conversions
from engine.errors import CohortError, WorkerLostError
from engine.evaluate import CompiledCriteria
from engine.normalise import units
from engine.normalise.units import UNIT_REGISTRY_MODULE, prepare_unit_conversions
from engine.sources import PatientResources
from engine.sources.ndjson import ProblemHandler


@dataclass(frozen=True)
class EngineSettings:
    """How many workers (local processes, or the size of a Dask LocalCluster), which cluster.

    `shared_filesystem`: whether the Dask workers see the input and `--out` at the same paths
    as this process (None: yes for a LocalCluster, no for a `scheduler`). `started`: the
    engine's workers, already starting (`EngineKind.start`; for the Dask engine a `DaskStart`).
    """

    workers: int
    scheduler: str | None = None
    shared_filesystem: bool | None = None
    started: EngineStart | None = None

    @property
    def filesystem_is_shared(self) -> bool:
        if self.shared_filesystem is not None:
            return self.shared_filesystem
        return self.scheduler is None


Engine = Callable[
    [
        WorkerSetup,
        list[int],
        EngineSettings,
        Callable[[], None],
        Callable[[int], None],
    ],
    int | None,
]
"""Evaluates partitions: (setup, partition indexes, settings, on_started, on_done: called
with each partition's index as it is done); returns the largest peak resident memory of a
worker, in bytes, when known."""


class EngineStart(Protocol):
    """An engine's workers, started ahead of the run (while pass 1 splits the input).

    Made before pass 1 forks its processes (it may fork its own workers then, while this
    process runs no other thread); `begin` starts its threads once those forks are done.
    """

    def begin(self) -> None:
        """Start bringing the workers up in a thread (no more forks of this process)."""

    def cores_taken(self, input_bytes: int) -> int:
        """How many cores the start keeps busy while pass 1 splits `input_bytes` of input
        (pass 1 then runs in as many processes fewer)."""

    def criteria_loaded(self, criteria: CompiledCriteria) -> None:
        """The run's criteria, just compiled (called in the thread that compiled them, while
        pass 1 runs): what the workers may be given before the run."""

    def warm_up(self, criteria: CompiledCriteria | None) -> None:
        """Have the workers load these criteria as soon as they are up (None: nothing)."""

    def stop(self) -> None:
        """Have the workers begin to end, without waiting (the run's last task is done)."""

    def close(self) -> None:
        """Stop the workers and wait for them (waiting for the start to end first)."""


def peak_memory() -> int:
    """This process's peak resident memory in bytes."""
    return _kilobytes_or_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _kilobytes_or_bytes(maxrss: int) -> int:
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def _lost_worker(engine: str, error: BaseException) -> WorkerLostError:
    """The error of a run whose worker process ended abruptly (killed, out of memory)."""
    return WorkerLostError(
        f"a {engine} worker process ended abruptly (killed, or out of memory?) before every "
        f"partition was evaluated and written ({type(error).__name__}: {error}); the "
        "partitions written so far are kept: run the same command again to resume"
    )


# --------------------------------------------------------------------------- local


def run_local(
    setup: WorkerSetup,
    indexes: list[int],
    settings: EngineSettings,
    on_started: Callable[[], None],
    on_done: Callable[[int], None],
) -> int | None:
    """The local engine: `settings.workers` processes, whole partitions each (this process
    alone when 1, its writes in a thread as a worker's, below).

    `on_started` is called once the workers are forked, and they write nothing before it
    has returned (they evaluate meanwhile; should it raise, they write nothing at all).
    Each worker writes a partition's files in a thread of its own (`_BackgroundWriter`)
    while it evaluates its next partition, so that it does not wait for the records file's
    fsync (`write_result`); a partition's outcome is reported once it is evaluated. Once
    every partition is evaluated, each worker finishes its last write (`_finish_writing`:
    one such task per worker, held at a barrier until every worker has taken one), so every
    result file is written when this returns. The workers are then told to end, and the run
    goes on without waiting for them (`wait_for_ended_workers` does, after the outputs are
    assembled): a worker's exit takes 0.01-0.02 s, during which the other core would idle.
    """
    if settings.workers <= 1 or len(indexes) <= 1:
        evaluator = setup.partition_evaluator()
        on_started()
        writer = _BackgroundWriter()  # as a worker's: the next partition hides the fsync
        try:
            for index in indexes:
                result = evaluator.evaluate(setup.partitions.payload(index))
                writer.write(setup.results_folder, result)
                on_done(index)
        except BaseException:
            with contextlib.suppress(Exception):
                writer.wait()  # the error raised is the evaluation's
            raise
        writer.wait()
        return None
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    if context.get_start_method() != "fork":
        setup = replace(setup, criteria=None)  # compiled criteria do not pickle: recompile
    size = min(settings.workers, len(indexes))
    started = _Started(context.Event(), context.Event())
    pool = ProcessPoolExecutor(
        max_workers=size,
        mp_context=context,
        initializer=_start_local_worker,
        initargs=(setup, context.Barrier(size), started),
    )
    # the largest peak of the workers that ended before (pass 1's), and of these workers
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    try:
        futures = [pool.submit(_evaluate_in_worker_measured, index) for index in indexes]
        try:
            on_started()  # after the workers are forked: no thread of it is copied into them
        except BaseException:
            started.failed.set()
            raise
        finally:
            started.returned.set()
        try:
            for future in as_completed(futures):
                outcome, worker_peak = future.result()
                peak = max(peak, worker_peak)
                on_done(outcome.index)
            finishing = [pool.submit(_finish_writing) for _ in range(size)]
            peak = max(peak, *(ended.result() for ended in finishing))
        except BrokenProcessPool as error:
            raise _lost_worker("local", error) from error
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    # `shutdown(wait=False)` would forget the threads and processes it leaves running: one
    # thread asks the pool to shut down and waits, and the run waits for that thread
    ending = threading.Thread(target=pool.shutdown, name="trialsieve-local-workers-ending")
    ending.start()
    _ending.append(ending)
    return _kilobytes_or_bytes(peak)


class _BackgroundWriter:
    """A local worker's partition files (or this process's, evaluating alone), written in a
    thread while it evaluates its next partition (the records file's fsync is a wait for
    the disk, 2-20 ms each: 8 per worker at 10x with two workers, 16 alone). Writes stay in
    order: each waits for the one before; `wait` waits for the last and raises what it
    raised."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._written: threading.Event | None = None
        self._error: BaseException | None = None

    def write(self, results_folder: str, result: PartitionResult) -> None:
        self.wait()
        written = threading.Event()
        self._thread = threading.Thread(
            target=self._write,
            args=(results_folder, result, written),
            name="trialsieve-write-result",
        )
        self._thread.start()
        self._written = written  # once started: `finish_before_ending` waits for it

    def _write(
        self, results_folder: str, result: PartitionResult, written: threading.Event
    ) -> None:
        try:
            if _started is not None:
                _started.returned.wait()
                if _started.failed.is_set():
                    return  # the run stops: nothing is written
            write_result(results_folder, result)
        except BaseException as error:  # raised by wait(): the thread cannot raise
            self._error = error
        finally:
            written.set()

    def finish_before_ending(self) -> None:
        """Wait for the write under way (if any) to end, from a SIGTERM handler. Not by
        joining its thread: the handler may run in the main thread between `join`'s taking
        of the thread's lock and its release (bpo-45274), where a second join waits for that
        lock for ever (a worker ended by SIGTERM while it waited for its previous write hung,
        and with it the command, in `ProcessPoolExecutor.shutdown`); an Event's wait takes no
        lock the interrupted code holds."""
        written = self._written
        if written is not None:
            written.wait()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


@dataclass(frozen=True)
class _Started:
    """Set by `run_local` once the run's `on_started` has returned (`returned`), and before
    that when it raised (`failed`): a local worker writes only after `returned`, and nothing
    once `failed`."""

    returned: Event
    failed: Event


_writer = _BackgroundWriter()
_finished: Barrier | None = None
_started: _Started | None = None
"""In a local worker: its writer, the barrier its `_finish_writing` task waits at, and
whether it may write."""


def _start_local_worker(setup: WorkerSetup, finished: Barrier, started: _Started) -> None:
    """Process pool initializer of the local engine: `start_worker`, the barrier and the
    events."""
    global _finished, _started
    _finished, _started = finished, started
    # SIGTERM: the file being written is kept
    leave_interrupts_to_the_parent(_writer.finish_before_ending)
    start_worker(setup)


def _evaluate_in_worker_measured(index: int) -> tuple[PartitionOutcome, int]:
    """Process pool task: `evaluate_in_worker`, its files written in the background
    (`_BackgroundWriter`), and this process's peak resident memory after it (`ru_maxrss`,
    as `getrusage` gives it: the same as when the process ends)."""
    outcome = evaluate_in_worker(index, _writer.write)
    return outcome, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _finish_writing() -> int:
    """Process pool task, one per worker once every partition is evaluated: wait for this
    worker's last write, then at the barrier until every worker has taken such a task (so
    that no worker takes two); this process's peak resident memory."""
    assert _finished is not None
    try:
        _writer.wait()
    finally:
        _finished.wait()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


_ending: list[threading.Thread] = []
"""Threads shutting down the local engine's process pools, not yet waited for."""


def wait_for_ended_workers() -> None:
    """Wait for the local engine's workers told to end to have ended (a run calls it last:
    it leaves no process or thread of its own behind)."""
    while _ending:
        _ending.pop().join()


# --------------------------------------------------------------------------- dask


@dataclass(frozen=True)
class DaskJob:
    """What every Dask task of a run shares: sent to each worker once."""

    criteria: CriteriaFiles
    as_of: dt.date
    attestations: Attestations
    full: bool = False
    screen_lines: bool | None = None
    store_key: str | None = None
    conversions: tuple[tuple[Any, Any], ...] = ()
    """The unit conversions this process knows (`units.known_conversions`: restored from the
    cache, or worked out compiling the criteria): a worker that knows them needs no unit
    registry for them."""


@dataclass(frozen=True)
class PartitionOnDisk:
    """A partition by where it is: the worker reads it (a `PartitionPayload`; shared FS only)."""

    partitions: PartitionedInput
    index: int

    def patients(
        self,
        on_problem: ProblemHandler,
        screen: LineScreen | None = None,
        preview_first: bool = False,
    ) -> Iterator[PatientResources]:
        return self.partitions.payload(self.index).patients(on_problem, screen, preview_first)


_compiled: tuple[tuple[str, tuple[str, ...]], CompiledCriteria] | None = None
"""The criteria this worker process compiled last, by `CriteriaFiles.key` (the files' digest
and the unavailable types: the same files with other types unavailable compile anew)."""


def _compiled_criteria(files: CriteriaFiles) -> CompiledCriteria:
    global _compiled
    if _compiled is None or _compiled[0] != files.key:
        _compiled = (files.key, files.load())
    return _compiled[1]


def compile_on_dask_worker(
    files: CriteriaFiles,
    prepare_units: bool = False,
    conversions: tuple[tuple[Any, Any], ...] = (),
) -> str:
    """`client.run` warm-up: compile the criteria on this worker now (cached), take the unit
    conversions the run's process knows, and build the unit registry when the run will
    convert units and none are known (`prepare_unit_conversions`); the criteria's digest."""
    _compiled_criteria(files)
    units.add_known_conversions(dict(conversions))
    if prepare_units:
        prepare_unit_conversions()
    return files.digest


_evaluator: tuple[DaskJob, PartitionEvaluator] | None = None
"""The evaluator of the job this worker process ran last: kept from task to task, as a local
worker keeps its own (with the output shapes it validated, `OutputShapes`)."""


def _evaluator_of(job: DaskJob) -> PartitionEvaluator:
    global _evaluator
    if _evaluator is None or _evaluator[0] != job:
        criteria = _compiled_criteria(job.criteria)
        units.add_known_conversions(dict(job.conversions))
        evaluator = PartitionEvaluator(
            criteria, job.as_of, job.attestations, job.full, job.screen_lines, job.store_key
        )
        _evaluator = (job, evaluator)
    return _evaluator[1]


def evaluate_on_dask_worker(job: DaskJob, payload: PartitionPayload) -> tuple[PartitionResult, int]:
    """Dask task: evaluate one partition; the criteria are compiled once per worker, and its
    evaluator is made once per job. With the result, this worker's peak memory after it
    (as a local worker reports it: the run's `worker_peak_memory`)."""
    return _evaluator_of(job).evaluate(payload), peak_memory()


def evaluate_and_write_on_dask_worker(
    job: DaskJob,
    payloads: Sequence[PartitionPayload],
    results_folder: str,
    in_background: bool = True,
) -> None:
    """Dask task (shared filesystem): evaluate partitions one after the other (`task_groups`)
    and write each one's result file as it is evaluated. Nothing comes back (the run knows a
    task's partitions by its key, and fetching a result costs a round trip per task: 1.3-1.5
    ms of CPU over the processes). `in_background`: the files are written in a thread of this
    worker while it evaluates its next partition (`_DaskWrites`); the run asks each worker at
    its end which partitions it wrote, and its peak memory (`_finish_writing_on_dask_worker`),
    so a task cut short by its worker's end loses no partition it wrote."""
    evaluator = _evaluator_of(job)
    for payload in payloads:
        result = evaluator.evaluate(payload)
        if in_background:
            _dask_writes.write(results_folder, result)
        else:
            write_result(results_folder, result)


class _DaskWrites:
    """A Dask worker's partition files, written in a thread while the worker evaluates its
    next partition (`_BackgroundWriter`, as the local engine's workers do: the records file's
    fsync is a wait for the disk), and the partitions written so far, by results folder.

    A write's error is raised by the worker's next task or by `finish`. A worker that ends
    with a write under way (its process killed) takes the list with it: the run evaluates
    the partitions no worker says it wrote again (`_evaluate_on_cluster`). One write at a
    time, in order, also on a worker of a running cluster started with several threads."""

    def __init__(self) -> None:
        self._writer = _BackgroundWriter()
        self._writing: tuple[str, int] | None = None
        self._written: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def write(self, results_folder: str, result: PartitionResult) -> None:
        with self._lock:
            self._wait()
            self._writing = (results_folder, result.outcome.index)
            self._writer.write(results_folder, result)

    def _wait(self) -> None:
        writing, self._writing = self._writing, None
        self._writer.wait()
        if writing is not None:
            self._written.append(writing)

    def finish_before_ending(self) -> None:
        """Wait for the file being written, from a SIGTERM handler (as the local engine's
        workers do: `_BackgroundWriter.finish_before_ending`)."""
        self._writer.finish_before_ending()

    def finish(self, results_folder: str) -> list[int]:
        """Wait for the last write (raising its error): the partitions written into
        `results_folder` since the last `finish` (those of other folders are forgotten)."""
        with self._lock:
            try:
                self._wait()
                return [index for folder, index in self._written if folder == results_folder]
            finally:
                self._written.clear()


_dask_writes = _DaskWrites()
"""In a Dask worker: its partition files being written, and those written."""


def _finish_writing_on_dask_worker(
    results_folder: str, end_of_run: bool = False
) -> tuple[list[int], int]:
    """`client.run` once every partition of a run is evaluated: wait for this worker's last
    write; the partitions it wrote into `results_folder` (`_DaskWrites.finish`), and this
    worker's peak memory (as a local worker reports it: the run's `worker_peak_memory`).
    `end_of_run`: the run's own cluster closes next (`_end_of_run_on_worker`, in the same
    round trip, once the writes are done)."""
    written = _dask_writes.finish(results_folder)
    if end_of_run:
        _end_of_run_on_worker()
    return written, peak_memory()


_CLOSE_RACES = frozenset(
    {
        "Failed to communicate with scheduler during heartbeat.",
        "Scheduler was unaware of this worker; shutting down.",
    }
)
"""What a worker of a closing LocalCluster may log when a heartbeat meets the scheduler
closing or having let the worker go (a race of Dask's close, with a traceback for the
first): nothing failed, the run's results are all written by then."""


class _CloseRaceFilter(logging.Filter):
    """Drops the records of `_CLOSE_RACES` (and only those) from a worker's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _CLOSE_RACES


class _CancelledOnCloseFilter(logging.Filter):
    """Drops the warning a worker of the run's own cluster logs for a task it was running
    when the cluster closed under it ("Async instruction for <Task ...> ended with
    CancelledError", which distributed logs only from `Worker.close`): the command stopped
    the run (Ctrl-C) and says so itself; the partition is evaluated when the run resumes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Async instruction for ")
            and message.endswith(" ended with CancelledError")
        )


class _LostWorkerFilter(logging.Filter):
    """Drops what the scheduler of the run's own cluster logs when a worker process is lost
    (killed, by the out-of-memory killer or a person): "Removing worker ... caused the
    cluster to lose ..." (the tasks are retried elsewhere, `retries=1`, or the run stops)
    and "broadcast to tcp://... failed: CommClosedError: ..." (a `client.run` met the dead
    worker: when the run asks the workers which partitions they wrote). A run that cannot
    go on raises a WorkerLostError saying so: the command prints that one line, and the
    same command resumes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            (message.startswith("Removing worker ") and " caused the cluster to lose " in message)
            or (message.startswith("broadcast to ") and " failed: " in message)
        )


def _quiet_lost_workers() -> None:
    """In the process of the run's own scheduler: `_LostWorkerFilter`, once."""
    logger = logging.getLogger("distributed.scheduler")
    if not any(isinstance(each, _LostWorkerFilter) for each in logger.filters):
        logger.addFilter(_LostWorkerFilter())


def _end_of_run_on_worker() -> None:
    """At the end of a run on the run's own cluster (closed next; with a shared filesystem
    when the run asks the workers which partitions they wrote, else a `client.run` once
    every result is written): the heartbeat's close races are dropped from this worker's log
    from now on. Real errors before, and any other record, are logged as ever."""
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(each, _CloseRaceFilter) for each in logger.filters):
        logger.addFilter(_CloseRaceFilter())


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise CohortError(
            "the dask engine needs dask.distributed: pip install 'trialsieve[dask]'"
        ) from error
    return distributed


_NOT_FOR_THE_HOST = ("jinja2",)
"""What distributed's import loads that a cluster's host and its workers never use: jinja2
(dask.widgets' HTML templates, for notebooks; dask.widgets goes without it, as where jinja2
is not installed). 0.03-0.04 s of CPU of the import's 0.23-0.27."""


def _import_distributed_for_host() -> Any:
    """Import distributed in the cluster's host (before it forks the workers), for less CPU.

    The cyclic garbage collector stays off during the import (it would walk the heap the
    host inherited from the command, and the import's own thousands of new objects, several
    times) and what the host holds then is frozen (`gc.freeze`: the command's objects, and
    distributed's modules, which live as long as the process; the workers forked next inherit
    that). Its YAML defaults (distributed.yaml, dask.yaml) are read with libyaml's safe loader
    where PyYAML has it (the same loader rules in C). `_NOT_FOR_THE_HOST` is not imported.
    """
    gc.freeze()
    collecting = gc.isenabled()
    gc.disable()
    for name in _NOT_FOR_THE_HOST:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: import refused
    try:
        with _yaml_safe_load_in_c():
            distributed = _import_distributed()
    finally:
        if collecting:
            gc.enable()
    gc.freeze()
    return distributed


@contextlib.contextmanager
def _yaml_safe_load_in_c() -> Iterator[None]:
    """`yaml.safe_load` with libyaml's CSafeLoader (same rules, 5x faster), meanwhile."""
    import yaml  # type: ignore[import-untyped]  # PyYAML: a dependency of ours and dask's

    loader = getattr(yaml, "CSafeLoader", None)
    if loader is None:
        yield
        return
    python_safe_load = yaml.safe_load

    def safe_load(stream: Any) -> Any:
        return yaml.load(stream, Loader=loader)

    yaml.safe_load = safe_load
    try:
        yield
    finally:
        yaml.safe_load = python_safe_load


QUIET_LOCAL_CLUSTER: dict[str, object] = {
    # Dask's statistical profiler samples each worker's task thread every 10 ms, taking the GIL
    # from the task: 0.4-0.6 s of CPU over a 10x Synthea run on two workers, for a profile
    # nobody reads (docs/cohort.md, Dask).
    "distributed.worker.profile.enabled": False,
    # Health checks and system monitors (psutil reads of /proc) of the scheduler, nannies and
    # workers, every 20-500 ms by default: a cluster that lives for one run needs them rarely.
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
    # No HTTP routes (Prometheus metrics, /info, /health, JSON, proxy, statics) on the HTTP
    # server of the scheduler and of each worker: it listens on a free loopback port nobody
    # is told of, for a cluster that lives one run. Building the scheduler's routes (tornado's
    # routing rules, 20-odd regular expressions) took 15-16 ms of its 30 ms start.
    "distributed.scheduler.http.routes": [],
    "distributed.worker.http.routes": [],
}
"""Dask settings for the LocalCluster a run starts for itself (a running cluster's are its
own)."""


def _start_warm_forkserver(prepare_units: bool) -> bool:
    """Start the forkserver the LocalCluster's workers will be forked from, having it import
    distributed and trialsieve (and, with `prepare_units`, build the unit registry) once.
    (`DaskStart` asks for the registry only when no unit conversions are cached: the workers
    are sent the known ones, and build a registry only for a pair of units they lack.)

    By default Dask spawns each worker, which then imports distributed and trialsieve (most
    of a second on two cores); forked from a server that imported them, a worker is up at
    once. Started first thing, the server imports while this process imports distributed and
    starts the scheduler. A forkserver already running (an earlier run in this process) is
    kept with what it preloaded. False where forkserver does not exist (Windows): Dask's
    default then.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    preload = ["distributed", __name__]
    forkserver.set_forkserver_preload(
        [*preload, UNIT_REGISTRY_MODULE] if prepare_units else preload
    )
    forkserver.ensure_running()
    return True


def _conversions_known() -> bool:
    """Whether this process knows unit conversions, restored from the cache if need be (as
    loading the criteria does)."""
    load_conversions()
    return bool(units.known_conversions())


def _serve_as_dask_worker(host: Connection) -> None:
    """A forked worker process: wait for the scheduler's address (and this worker's name),
    then run a `distributed.Worker` (one thread) until the scheduler closes it, telling the
    process that forked it once it has joined. Nothing to import: the process is a fork of
    one that imported distributed and trialsieve."""
    exit_when_orphaned()
    # Ctrl-C is the command's: it closes us; SIGTERM: the file being written is kept
    leave_interrupts_to_the_parent(_dask_writes.finish_before_ending)
    try:
        received = host.recv()
    except EOFError:
        return
    if received is None:  # the run ended before the cluster started
        return
    scheduler_address, name = received
    import distributed  # imported already (and Dask's settings made) by the host

    async def serve() -> None:
        async with distributed.Worker(
            scheduler_address, nthreads=1, name=name, host="127.0.0.1", dashboard=False
        ) as worker:
            host.send("joined")
            await worker.finished()

    import asyncio  # here: a run on the local engine never needs it (0.02 s to import)

    asyncio.run(serve())


class _ForkedWorkers:
    """Worker processes forked from this process as soon as it has imported distributed:
    each starts at once, with nothing to import, and waits for the scheduler's address.

    A `distributed.Worker` each, without a nanny (the nanny of a LocalCluster is an extra
    server per worker in this process, which starts the worker and restarts it when it dies:
    a run's retries cover a lost worker). They connect to the scheduler as the workers of a
    remote cluster do (`dask worker --no-nanny`).
    """

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("fork")
        self._processes: list[Any] = []
        self._pipes: list[Connection] = []
        for number in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve_as_dask_worker,
                args=(theirs,),
                name=f"trialsieve-dask-worker-{number}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self._processes.append(process)
            self._pipes.append(ours)

    def connect(self, scheduler_address: str) -> None:
        """Send each worker the scheduler's address and its name (one that ended already is
        found by `joined`)."""
        for number, pipe in enumerate(self._pipes, start=1):  # 0: the host's (`HOST_WORKER`)
            with contextlib.suppress(OSError):
                pipe.send((scheduler_address, f"trialsieve-worker-{number}"))

    async def joined(self) -> None:
        """Wait until every worker has joined the scheduler (it says so as soon as it has:
        no polling); CohortError when one ends before that."""
        for pipe, process in zip(self._pipes, self._processes, strict=True):
            await _readable(pipe)
            try:
                pipe.recv()
            except (EOFError, OSError):  # it ended: its end of the pipe closed
                process.join(10)
                raise CohortError(
                    f"a Dask worker process ended before it joined the cluster "
                    f"(exit code {process.exitcode})"
                ) from None

    def stop(self) -> None:
        """Tell the workers still waiting to end, and wait for every worker to end (the
        scheduler closes those that connected); terminate one that does not within 10 s."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):  # the worker already ended
                pipe.send(None)
            pipe.close()
        for process in self._processes:
            process.join(10)
            if process.exitcode is None:
                process.terminate()
                process.join()


@dataclass(frozen=True)
class DaskRun:
    """What one run asks of a cluster: evaluate these partitions for this job."""

    job: DaskJob
    partitions: PartitionedInput
    results_folder: str
    indexes: tuple[int, ...]
    shared_filesystem: bool


class _HostClosing(Exception):
    """The command asked the cluster's host to close in the middle of a run."""


TASKS_PER_THREAD = 4
"""A Dask run with a shared filesystem makes at least this many tasks per worker thread of
the cluster, when it has that many partitions (`task_groups`): a thread's last task is then at
most about a quarter of its share, so no thread idles long at the end while another ends a
task."""
PARTITIONS_PER_TASK = 4
"""At most this many partitions in one Dask task (`task_groups`): a task of 32 MB partitions
then takes 0.2-0.6 s on the development machine, long enough that Dask's own cost per task
(about 6 ms of CPU, below) is 1-3% of it, short enough that a task a lost worker takes with it
is soon done again and the progress bar moves every few tenths of a second."""


def task_groups(indexes: Sequence[int], threads: int) -> list[tuple[int, ...]]:
    """The partitions `indexes` (in the order the run evaluates them: largest first) as the
    Dask tasks of a run with a shared filesystem, each a tuple of partitions evaluated one
    after the other: consecutive runs of as many partitions as leave `TASKS_PER_THREAD` tasks
    per worker thread, at least one and at most `PARTITIONS_PER_TASK` (one when `threads` is
    unknown, 0: a cluster still without workers). The tasks, like the partitions, come
    largest first, and the last ones are the smallest.

    Why: a task here costs about 6 ms of CPU besides its work (messages and state changes in
    the scheduler's, the client's and the worker's event loops, on two cores), and a 32 MB
    partition of the Synthea export takes 0.05-0.15 s to evaluate. Dask's best practices
    ("Avoid very large graphs": every task comes with an overhead of 200 us to 1 ms; "the
    more administrative work you can move into your functions the better") advise fusing
    work into fewer tasks. Measured on two cores (in-process runs in ABBA order, medians;
    docs/cohort-performance.md, Dask): NCT05315778 default at 10x (16 partitions, tasks of 2)
    0.81 against 0.835 s and 0.05 s of CPU less; DAPA-CKD `--full` at 10x 0.98 against 1.02
    s; NCT05315778 default at 20x (32 partitions, tasks of 4) 1.44 against 1.50 s and 0.14 s
    of CPU less.
    """
    if threads < 1:
        size = 1
    else:
        size = max(1, min(PARTITIONS_PER_TASK, len(indexes) // (TASKS_PER_THREAD * threads)))
    return [tuple(indexes[start : start + size]) for start in range(0, len(indexes), size)]


async def _evaluate_on_cluster(
    client: Any,
    run: DaskRun,
    on_started: Callable[[], None],
    on_done: Callable[[int], None],
    closing: Callable[[], bool] = lambda: False,
    own_cluster: bool = False,
) -> int | None:
    """Evaluate `run`'s partitions on the cluster of `client` (see `run_dask`; with a shared
    filesystem up to `PARTITIONS_PER_TASK` a task, `task_groups`, else one); the largest peak
    memory of a worker. `closing`: checked after each task, whether
    to stop (`_HostClosing`). `own_cluster`: the cluster is the run's own, closed after it
    (its workers drop the close's races from their logs, `_end_of_run_on_worker`). Runs in
    the client's event loop (the cluster's host runs its loop in its one thread; a client
    of this process runs it through `client.sync`)."""
    distributed = _import_distributed()
    job = run.job
    shared_job = await client.scatter(job, broadcast=True, hash=False)

    def key(group: tuple[int, ...]) -> str:
        partitions = "-".join(str(index) for index in group)
        return f"trialsieve-partition-{partitions}-{job.criteria.digest[:12]}"

    # Without a shared filesystem the results are gathered as the tasks finish, in the
    # client's event loop (with_results); with one a task returns nothing to gather
    if run.shared_filesystem:  # every task at once, as one graph
        threads = sum((await client.nthreads()).values())
        groups = task_groups(run.indexes, threads)
        running = distributed.as_completed(
            client.map(
                evaluate_and_write_on_dask_worker,
                [shared_job] * len(groups),
                [[PartitionOnDisk(run.partitions, index) for index in group] for group in groups],
                [run.results_folder] * len(groups),
                key=[key(group) for group in groups],
                pure=False,
                retries=1,
            ),
            loop=client.loop,
        )
        waiting: Iterator[int] = iter(())
    else:
        groups = [(index,) for index in run.indexes]
        running = distributed.as_completed(loop=client.loop, with_results=True)
        waiting = iter(run.indexes)

    async def submit_next() -> None:
        index = next(waiting, None)
        if index is not None:
            payload = await client.scatter(run.partitions.payload(index), hash=False)
            running.add(
                client.submit(
                    evaluate_on_dask_worker,
                    shared_job,
                    payload,
                    key=key((index,)),
                    pure=False,
                    retries=1,
                )
            )

    partitions_of = {key(group): group for group in groups}
    peak: int | None = None
    try:
        if not run.shared_filesystem:
            for _slot in range(2 * max(1, len(await client.nthreads()))):
                await submit_next()
        on_started()
        async for done in running:
            if run.shared_filesystem:
                future = done
                if future.status != "finished":
                    await future  # raises its error, or CancelledError
            else:
                future, returned = done
                if isinstance(returned, BaseException):  # cancelled: yielded, not raised
                    raise returned
                evaluated, worker_peak = returned
                peak = max(peak or 0, worker_peak)
                write_result(run.results_folder, evaluated)
            future.release()
            for index in partitions_of[future.key]:
                on_done(index)
            if closing():
                raise _HostClosing
            await submit_next()
        if run.shared_filesystem:
            peak = await _dask_writes_finished(client, run, shared_job, key, own_cluster)
        elif own_cluster:  # every result is written: closing the cluster is clean
            await client.run(_end_of_run_on_worker)
    except (
        distributed.KilledWorker,
        CancelledError,
        distributed.comm.CommClosedError,
    ) as error:
        # a worker died with the run's data (FutureCancelledError), a task killed
        # worker after worker (KilledWorker), the scheduler gone (CommClosedError)
        raise _lost_worker("Dask", error) from error
    return peak


async def _dask_writes_finished(
    client: Any,
    run: DaskRun,
    shared_job: Any,
    key: Callable[[tuple[int, ...]], str],
    end_of_run: bool,
) -> int | None:
    """Once every partition of `run` is evaluated (shared filesystem: the workers write their
    files in the background, `_DaskWrites`), wait for every worker's last write; evaluate
    again, written before the task ends, the partitions no worker says it wrote (a worker
    that ended after it evaluated them, before it had written them). Raises a write's error.
    The largest peak memory of the workers (None when none answered). `end_of_run`: see
    `_finish_writing_on_dask_worker`."""
    answers = await client.run(_finish_writing_on_dask_worker, run.results_folder, end_of_run)
    done = {index for indexes, _peak in answers.values() for index in indexes}
    lost = [index for index in run.indexes if index not in done]
    if lost:
        await client.gather(
            client.map(
                evaluate_and_write_on_dask_worker,
                [shared_job] * len(lost),
                [[PartitionOnDisk(run.partitions, index)] for index in lost],
                [run.results_folder] * len(lost),
                [False] * len(lost),
                key=[f"{key((index,))}-again" for index in lost],
                pure=False,
                retries=1,
            )
        )
    return max((peak for _indexes, peak in answers.values()), default=None)


async def _start_scheduler_for(forked: _ForkedWorkers, running: contextlib.AsyncExitStack) -> Any:
    """The scheduler (in this event loop, on loopback, with a free port for its HTTP server and
    no dashboard), this process's own worker, `HOST_WORKER`, and a client, once every forked
    worker has joined; CohortError when one ended before that. They close when `running`
    does (the scheduler closes the forked workers that joined it)."""
    distributed = _import_distributed()
    scheduler = await running.enter_async_context(
        distributed.Scheduler(
            host="127.0.0.1",  # loopback only: a local cluster is nobody else's
            port=0,
            dashboard=False,
            dashboard_address="127.0.0.1:0",  # a free port: clusters side by side
        )
    )
    forked.connect(scheduler.address)
    await running.enter_async_context(
        distributed.Worker(
            scheduler.address, nthreads=1, name=HOST_WORKER, host="127.0.0.1", dashboard=False
        )
    )
    client = await running.enter_async_context(
        distributed.Client(scheduler.address, asynchronous=True)
    )
    # Every worker joins before the run's tasks go out: the job is scattered to each, so no
    # worker fetches it from another (a fetch from the host's worker when the host dies is
    # an error with a traceback in the fetching worker's log).
    await forked.joined()
    return client


async def _readable(connection: Connection) -> None:
    """Wait in this event loop until `connection` has something to read or has closed."""
    import asyncio  # imported already: this runs in its event loop

    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def set_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    descriptor = connection.fileno()
    loop.add_reader(descriptor, set_ready)
    try:
        await ready
    finally:
        loop.remove_reader(descriptor)


def _picklable(error: BaseException) -> BaseException:
    """`error` if it pickles (to cross the pipe to the command's process), else a
    CohortError that names it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return CohortError(f"the Dask cluster failed: {type(error).__name__}: {error}")
    return error


HOSTED_START_BYTES = 640 << 20
"""The input (bytes) up to which pass 1 leaves the hosted cluster's start a core
(`DaskStart.cores_taken`): what one pass-1 process splits (about 3 GB/s on the development
machine) in the 0.2 s the host takes to import distributed and start the cluster. Measured on
two cores, NCT05315778 default, in-process runs: at 10x (507 MB) one process started the
first partitions 0.03 s earlier; at 20x (1,015 MB) two processes ended the run 0.06 s
earlier (medians 1.55 against 1.61 s, six and five runs)."""
HOST_WORKER = "trialsieve-worker-0"
"""The name of the hosted cluster's worker that lives in the host itself (its tasks run in a
thread of the host): a worker less to fork, start and keep (about 0.03-0.04 s of CPU a run),
and the host's event loop, idle while tasks run, shares a process with it instead of taking
a core's time slices of its own."""


def _host_dask_cluster(requests: Connection, workers: int, prepare_units: bool) -> None:
    """The cluster's host: a process forked from the command's before pass 1. It imports
    distributed (while pass 1 runs in the command's processes), forks all workers but one
    from itself (`_ForkedWorkers`: nothing imported twice), then runs the scheduler, its own
    worker (`HOST_WORKER`) and a client in one event loop (`_serve_the_command`), until told
    to close, or until the command's end of the pipe closes. With `prepare_units` it builds
    the unit registry before it forks (the forked workers share it)."""
    # Ctrl-C is the command's: it closes us; SIGTERM: the file its worker writes is kept
    leave_interrupts_to_the_parent(_dask_writes.finish_before_ending)
    failed: BaseException | None = None
    forked: _ForkedWorkers | None = None
    # Every worker, the client and the scheduler read the installed versions (package
    # metadata, and the processor's name, which `platform` asks `uname -p` for: a process
    # waited for 40 ms): read once here, cached for the workers forked next; `uname -p`
    # runs while distributed is imported, in a thread that ends before the workers fork.
    # So does the digest of trialsieve's code, which each worker's first task reads (the
    # cache of validated output shapes is keyed by it): 8 ms of file reads and hashing.
    processor = threading.Thread(target=_read_once_for_the_workers, name="trialsieve-read")
    processor.start()
    try:
        try:
            distributed = _import_distributed_for_host()
        finally:
            processor.join()
        distributed.versions.get_versions()
        import dask

        dask.config.set(QUIET_LOCAL_CLUSTER)
        logging.getLogger("distributed").setLevel(logging.WARNING)
        # for the host's worker and the forked ones alike (a logger's filters are copied)
        logging.getLogger("distributed.worker.state_machine").addFilter(_CancelledOnCloseFilter())
        _quiet_lost_workers()
        if prepare_units:
            prepare_unit_conversions()  # for this process's worker and the forks alike
        first = _criteria_before_the_fork(requests)
        forked = _ForkedWorkers(workers - 1)
        exit_when_orphaned()  # after the forks: the workers copy no thread
    except BaseException as error:
        failed = error
    import asyncio  # here: a run on the local engine never needs it (0.02 s to import)

    try:
        asyncio.run(_serve_the_command(requests, forked, failed, first))
    finally:
        if forked is not None:
            forked.stop()


def _read_once_for_the_workers() -> None:
    """In the cluster's host, while it imports distributed: what every worker would read
    for itself before its first task, and which the workers forked next inherit (both are
    cached for the process): the processor's name and the digest of trialsieve's code."""
    platform.processor()
    with contextlib.suppress(OSError):  # an unreadable source file: each worker meets it again
        code_digest()


def _criteria_before_the_fork(requests: Connection) -> tuple[Any, ...] | None:
    """In the host, before it forks its workers: when the command has sent the run's
    criteria by now (`DaskStart.criteria_loaded`, while pass 1 runs), load them into this
    process's cache of compiled criteria (`_compiled_criteria`), which the forked workers
    inherit: no worker unpickles them for the run (4-13 ms each, before its first partition).
    Another request that came first is returned, for `_serve_the_command` to serve."""
    if not requests.poll():
        return None
    try:
        request: tuple[Any, ...] = requests.recv()
    except (EOFError, OSError):
        return None  # the command has gone: `_serve_the_command` finds out
    if request[0] != "criteria":
        return request
    _compiled_criteria(request[1])
    return None


async def _serve_the_command(
    requests: Connection,
    forked: _ForkedWorkers | None,
    failed: BaseException | None,
    first: tuple[Any, ...] | None = None,
) -> None:
    """The host's event loop: start the scheduler for the forked workers (unless `failed`),
    then serve the command's requests (`DaskStart`) one at a time (`first`, a request
    received already, first), until told to close or until the command's end of the pipe
    closes; the scheduler and the client close after. The criteria sent after the workers
    forked are loaded into this process's cache (for its own worker), with no answer."""

    def reply(message: tuple[Any, ...]) -> None:
        try:
            requests.send(message)
        except OSError as error:  # the command has gone: nobody to answer
            raise _HostClosing from error

    async with contextlib.AsyncExitStack() as running:
        client: Any = None
        if failed is None and forked is not None:
            try:
                client = await _start_scheduler_for(forked, running)
            except BaseException as error:
                failed = error
        while True:
            if first is not None:
                request, first = first, None
            else:
                await _readable(requests)
                try:
                    request = requests.recv()
                except (EOFError, OSError):
                    return
            kind, *arguments = request
            if kind == "close":
                return
            if kind == "criteria":
                if failed is None:
                    _compiled_criteria(arguments[0])
                continue
            try:
                if failed is not None:
                    reply(("error", _picklable(failed)))
                elif kind == "run":
                    function, function_arguments = arguments
                    try:
                        answers = await client.run(function, *function_arguments)
                    except BaseException as error:
                        reply(("error", _picklable(error)))
                    else:
                        reply(("ok", answers))
                else:
                    (run,) = arguments
                    try:
                        peak = await _evaluate_on_cluster(
                            client,
                            run,
                            lambda: reply(("started",)),
                            lambda index: reply(("done", index)),
                            requests.poll,
                            own_cluster=True,
                        )
                    except _HostClosing:
                        raise
                    except BaseException as error:
                        reply(("error", _picklable(error)))
                    else:
                        reply(("ok", peak))
            except _HostClosing:
                return


def _ask_to_close(pipe: Connection) -> None:
    """Tell a cluster's host to close the cluster and end (once), without waiting."""
    if not pipe.closed:
        with contextlib.suppress(OSError):  # it has ended already
            pipe.send(("close",))
        pipe.close()


class _DaskHost:
    """The command's end of `_host_dask_cluster`: one request at a time."""

    def __init__(self, workers: int, prepare_units: bool) -> None:
        context = multiprocessing.get_context("fork")
        self._sending: threading.Thread | None = None
        self._pipe, theirs = context.Pipe()
        self._process = context.Process(
            target=_host_dask_cluster,
            args=(theirs, workers, prepare_units),
            name="trialsieve-dask-cluster",
        )
        self._process.start()
        theirs.close()
        # A host never told to close would keep the interpreter's exit waiting for it
        # (multiprocessing joins its processes then): tell it first, whatever happens.
        multiprocessing.util.Finalize(self, _ask_to_close, (self._pipe,), exitpriority=10)

    def send(self, request: tuple[Any, ...]) -> None:
        self._sent()
        try:
            self._pipe.send(request)
        except OSError as error:
            raise self._ended(error) from error

    def send_soon(self, request: tuple[Any, ...]) -> None:
        """Send a request that has no answer from a thread: one larger than the pipe holds
        (the criteria, 0.1-0.3 MB) waits for the host to read it, which it does once it has
        imported distributed. The next request, `stop` and `close` wait for it to be sent.
        (The thread holds no lock a fork could copy while it waits: it is in a write.)"""
        self._sent()
        self._sending = threading.Thread(
            target=self._send_quietly, args=(request,), name="trialsieve-dask-send"
        )
        self._sending.start()

    def _send_quietly(self, request: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):  # the host ended: the next request says so
            self._pipe.send(request)

    def _sent(self) -> None:
        """Wait for a request `send_soon` is sending."""
        if self._sending is not None:
            self._sending.join()
            self._sending = None

    def receive(self) -> tuple[Any, ...]:
        """The host's next message; an error it sent is raised."""
        try:
            message: tuple[Any, ...] = self._pipe.recv()
        except (EOFError, OSError) as error:
            raise self._ended(error) from error
        if message[0] == "error":
            raise message[1]
        return message

    def _ended(self, error: BaseException) -> WorkerLostError:
        self._process.join(1)
        return WorkerLostError(
            f"the Dask cluster's process ended abruptly (exit code {self._process.exitcode}: "
            "killed, or out of memory?) before every partition was evaluated and written; the "
            "partitions written so far are kept: run the same command again to resume"
        )

    def stop(self) -> None:
        """Ask the host to close the cluster and end, without waiting."""
        self._sent()
        _ask_to_close(self._pipe)

    def close(self) -> None:
        """Ask the host to close the cluster and wait for it to end; terminate it if it has
        not ended within 30 s."""
        self.stop()
        self._process.join(30)
        if self._process.exitcode is None:
            self._process.terminate()
            self._process.join()


class DaskStart:
    """A Dask LocalCluster (or a connection to `scheduler`), started ahead of the run.

    Made before pass 1 forks its processes. On Linux, when this process runs no other thread,
    it forks the cluster's host (`_host_dask_cluster`) at once: that process imports
    distributed and starts the cluster while pass 1 runs, and this process never imports
    distributed; the run's requests and each partition's outcome go through a pipe.
    Elsewhere (or with `scheduler`) a thread of this process, begun once pass 1's processes
    exist, starts a LocalCluster whose workers fork from a warm forkserver (or connects to
    the scheduler). `warm_up` has those workers load the criteria as soon as they are up,
    and, with `prepare_units` (a `--full` run), build the unit registry when no unit
    conversion is cached (the hosted cluster's host builds it before it forks the workers,
    and the run's job brings them the criteria). `evaluate` and `run_on_workers` wait for
    all that and raise what failed; `close` shuts the cluster down.
    """

    def __init__(self, settings: EngineSettings, prepare_units: bool = False) -> None:
        self._settings = settings
        self._prepare_units = prepare_units
        self._client: Any = None
        self._cluster: Any = None
        self._error: BaseException | None = None
        self._criteria: CriteriaFiles | None = None
        self._warmed_with: CriteriaFiles | None = None
        self._loaded: CriteriaFiles | None = None
        self._conversions: tuple[tuple[Any, Any], ...] = ()
        self._criteria_known = threading.Event()
        self._host: _DaskHost | None = None
        if settings.scheduler is None and fork_is_safe():  # the host forks the workers
            if importlib.util.find_spec("distributed") is None:
                _import_distributed()  # its CohortError: no need to start anything
            self._host = _DaskHost(settings.workers, prepare_units and not _conversions_known())
        self._thread = threading.Thread(target=self._start, name="trialsieve-dask-start")

    def begin(self) -> None:
        if self._host is None and self._thread.ident is None:
            self._thread.start()

    def criteria_loaded(self, criteria: CompiledCriteria) -> None:
        """Collect `criteria` as a task ships them (compiled: pickling them takes 6-10 ms)
        while pass 1 runs, instead of after it; a hosted cluster's host is sent them at once,
        from a thread (`_DaskHost.send_soon`): when they are there by the end of its import,
        it loads them before it forks its workers, so that no worker unpickles them for the
        run (they are the criteria the run ships, `criteria_files`)."""
        self._loaded = CriteriaFiles.collect(criteria, with_compiled=True)
        if self._host is not None:
            self._host.send_soon(("criteria", self._loaded))

    def warm_up(self, criteria: CompiledCriteria | None) -> None:
        """Load `criteria` (and build the unit registry, with `prepare_units`) on every worker
        once they are up (None: nothing to load); the unit conversions this process knows
        now go along. A hosted cluster's workers are sent nothing (the run's job carries it
        all); either way these are the criteria the run ships (`criteria_files`)."""
        files = None if criteria is None else self.criteria_files(criteria)
        self._warmed_with = files
        if self._host is not None:
            # Nothing to send: the host built the unit registry before it forked the workers,
            # if the run needs one, and the run's job carries the criteria and the conversions
            # (a warm-up came after pass 1 anyway, on the critical path: one more round trip)
            return
        self._criteria = files
        self._conversions = tuple(units.known_conversions().items())
        self._criteria_known.set()

    def criteria_files(self, criteria: CompiledCriteria) -> CriteriaFiles:
        """`criteria` as a task ships them (compiled): those the workers were warmed up with,
        or those collected when they were loaded, when they are the same files with the same
        unavailable types (which the workers' cache takes for the same criteria,
        `CriteriaFiles.key`), else collected now. Collecting pickles the compiled criteria
        (6-10 ms): once a run."""
        for known in (self._warmed_with, self._loaded):
            if known is not None and known.compiled is not None:
                files = CriteriaFiles.collect(criteria)  # reads and hashes the files: 1 ms
                if files.key == known.key:
                    return known
        return CriteriaFiles.collect(criteria, with_compiled=True)

    def _start(self) -> None:
        try:
            self._start_cluster()
            self._criteria_known.wait()
            if self._criteria is not None:
                self._client.run(
                    compile_on_dask_worker, self._criteria, self._prepare_units, self._conversions
                )
        except BaseException as error:  # re-raised by _connected(): the thread cannot raise
            self._error = error

    def _start_cluster(self) -> None:
        forked = self._settings.scheduler is None and _start_warm_forkserver(
            self._prepare_units and not _conversions_known()
        )
        distributed = _import_distributed()
        if self._settings.scheduler is None:
            import dask

            method = {"distributed.worker.multiprocessing-method": "forkserver"}
            with dask.config.set({**QUIET_LOCAL_CLUSTER, **(method if forked else {})}):
                self._cluster = distributed.LocalCluster(
                    n_workers=self._settings.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",  # loopback only: a local cluster is nobody else's
                    dashboard_address="127.0.0.1:0",  # a free port: clusters side by side
                    silence_logs=logging.WARNING,
                )
            _quiet_lost_workers()
        if self._cluster is not None:
            self._client = distributed.Client(self._cluster)
            return
        try:
            self._client = distributed.Client(self._settings.scheduler)
        except OSError as error:  # refused, or no answer within distributed's connect timeout
            raise CohortError(
                f"--scheduler {self._settings.scheduler}: cannot reach the Dask scheduler "
                f"({error}); start it (dask scheduler) or correct the address; what was "
                "finished is kept: run the same command again to resume"
            ) from None

    def _connected(self) -> Any:
        """The client of this process, once the workers are up (and warm); raises what
        failed."""
        self._criteria_known.set()  # never wait for a warm-up nobody asked for
        self.begin()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._client

    @property
    def hosted(self) -> bool:
        """Whether the cluster lives in a process of its own (`_host_dask_cluster`)."""
        return self._host is not None

    def cores_taken(self, input_bytes: int) -> int:
        """One while the cluster's host imports distributed (0.15-0.25 s of CPU) and starts
        the cluster beside pass 1, which then runs in one process fewer: the import is on
        the way to the first partition, pass 1 alone keeps two processes busy, and on two
        cores a pass 1 of two processes slowed the import by a third (the first partitions
        started 0.33 s after the run's start, median of 8, against 0.30 with pass 1 in one
        process: docs/cohort-performance.md, Dask: measurements). Only for an input pass 1
        splits in one process in about the time the host takes to start the cluster
        (`HOSTED_START_BYTES`): a larger one would leave that core idle once the cluster is
        up. None for a cluster started from a thread of this process, or reached at a
        scheduler, or when the machine has a core the workers leave free."""
        if self._host is None or input_bytes > HOSTED_START_BYTES:
            return 0
        return 1 if self._settings.workers >= (os.cpu_count() or 1) else 0

    def run_on_workers(self, function: Callable[..., Any], *arguments: Any) -> dict[str, Any]:
        """`function(*arguments)` on every worker (`Client.run`): the answers by worker."""
        if self._host is not None:
            self._host.send(("run", function, arguments))
            answers: dict[str, Any] = self._host.receive()[1]
            return answers
        return dict(self._connected().run(function, *arguments))

    def evaluate(
        self,
        run: DaskRun,
        on_started: Callable[[], None],
        on_done: Callable[[int], None],
    ) -> int | None:
        """Evaluate `run` (see `run_dask`): `on_started` once its tasks are submitted,
        `on_done` with each partition's index as it is done; the largest peak memory of a
        worker."""
        if self._host is None:
            owns_cluster = self._cluster is not None
            client = self._connected()
            evaluated: int | None = client.sync(
                _evaluate_on_cluster,
                client,
                run,
                on_started,
                on_done,
                own_cluster=owns_cluster,
            )
            return evaluated
        self._host.send(("evaluate", run))
        while True:
            message = self._host.receive()
            if message[0] == "started":
                on_started()
            elif message[0] == "done":
                on_done(message[1])
            else:
                peak: int | None = message[1]
                return peak

    def stop(self) -> None:
        """Have a hosted cluster begin closing while this process goes on (`close` waits
        for it); nothing for a cluster of this process."""
        if self._host is not None:
            self._host.stop()

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            return
        self._criteria_known.set()
        if self._thread.ident is not None:
            self._thread.join()
        try:
            if self._client is not None:
                self._client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()


def run_dask(
    setup: WorkerSetup,
    indexes: list[int],
    settings: EngineSettings,
    on_started: Callable[[], None],
    on_done: Callable[[int], None],
) -> int | None:
    """The Dask engine: the partitions as tasks on a LocalCluster or the cluster at `scheduler`.

    With a shared filesystem every task is submitted at once (a task is only paths: a few
    partitions each, `task_groups`) and the workers write the result files; without one a
    task is one partition, and at most two tasks per worker are in flight,
    so the process that holds the client holds only a few partitions at a time whatever the
    input size.
    """
    criteria = setup.compiled_criteria()
    start = settings.started
    owned = start is None
    if start is None:
        start = DaskStart(settings, prepare_units=setup.full)
        start.begin()
        start.warm_up(criteria)
    if not isinstance(start, DaskStart):
        raise TypeError(f"the dask engine runs on a DaskStart, not {type(start).__name__}")
    try:
        job = DaskJob(
            start.criteria_files(criteria),
            setup.as_of,
            setup.attestations,
            setup.full,
            setup.screen_lines,
            setup.store_key,
            tuple(units.known_conversions().items()),
        )
        run = DaskRun(
            job,
            setup.partitions,
            str(setup.results_folder),
            tuple(indexes),
            settings.filesystem_is_shared,
        )
        return start.evaluate(run, on_started, on_done)
    finally:
        if owned:
            start.close()


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class EngineKind:
    """An engine the runner knows: how it evaluates partitions, and what it needs around that.

    `start`: starts the engine's workers ahead of the run, so that they come up while pass 1
    splits the input (settings, whether the run converts units); None when there is nothing to
    start. `takes_scheduler`: it can run on a running cluster (`--scheduler`). `forks_workers`:
    its workers are forks of this process, so what this process prepares before they start
    (the unit registry of a `--full` run) they share. `writes_after_started`: its workers
    write no file before the run's `on_started` has returned, so the runner may write its
    own files (pass 1's and the manifest) in `on_started`, while the workers start.
    """

    run: Engine
    start: Callable[[EngineSettings, bool], EngineStart] | None = None
    takes_scheduler: bool = False
    forks_workers: bool = False
    writes_after_started: bool = False


def _start_dask(settings: EngineSettings, prepare_units: bool) -> EngineStart:
    return DaskStart(settings, prepare_units=prepare_units)


ENGINES: dict[str, EngineKind] = {
    "local": EngineKind(run_local, forks_workers=True, writes_after_started=True),
    "dask": EngineKind(run_dask, start=_start_dask, takes_scheduler=True),
}
"""The engines `run_cohort` knows, by name."""


SCHEDULER_ADDRESS = re.compile(
    r"(?:(?:tcp|tls|ws|wss|ucx)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})"
)
"""A Dask scheduler's address as distributed reads it: an optional protocol, a host (an IPv6
one in brackets) and a port (`tcp://head-node:8786`, `10.0.0.5:8786`)."""


def engine_kind(name: str, scheduler: str | None = None) -> EngineKind:
    """The engine called `name`; CohortError for an unknown one, a `scheduler` given to an
    engine that cannot take one, or one that is no scheduler address (before anything is
    read or written: distributed would raise a ValueError when it connects)."""
    kind = ENGINES.get(name)
    if kind is None:
        raise CohortError(f"unknown engine '{name}'; known engines: {', '.join(sorted(ENGINES))}")
    if scheduler is not None and not kind.takes_scheduler:
        takers = " or ".join(sorted(known for known, k in ENGINES.items() if k.takes_scheduler))
        raise CohortError(f"--scheduler needs --engine {takers}")
    if scheduler is not None:
        address = SCHEDULER_ADDRESS.fullmatch(scheduler)
        if address is None or not 0 < int(address["port"]) < 65536:
            raise CohortError(
                f"--scheduler {scheduler!r} is not a Dask scheduler address: write "
                "[tcp://]HOST:PORT, e.g. tcp://head-node:8786"
            )
    return kind
