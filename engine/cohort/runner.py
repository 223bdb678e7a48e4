"""Run one trial's criteria over a whole record set, partition by partition, resumably.

    run_cohort(criteria_path, source, out_dir, as_of, engine="local", workers=N)

1. The manifest (`out/manifest.json`: criteria and mappings digest, as-of day, input files,
   partition count, version) is written on the first run; a re-run with the same `out`
   must match it, or `CohortError` says what differs.
2. The first pass splits the input into partitions (`out/work/`, removed at the end), keeping
   only the resource types something reads (`kept_types`); its problems go to
   `out/partitions/source-problems.ndjson`.
3. An engine (`engine.cohort.engines`: `local` processes or a `dask` cluster) evaluates
   every partition whose result (`out/partitions/NNNN.ndjson`) is not complete yet, criteria
   compiled once per worker.
4. The output files are assembled from the partition results (`engine.cohort.outputs`), so
   an interrupted and resumed run writes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from engine import __version__
from engine.atomic_write import AtomicFiles, write_atomically
from engine.attestations import Attestations, load_attestations
from engine.cohort.engines import (
    Engine,
    EngineKind,
    EngineSettings,
    EngineStart,
    engine_kind,
    peak_memory,
    wait_for_ended_workers,
)
from engine.cohort.inputs import CohortInput, NdjsonInput, PartitionedInput
from engine.cohort.outcome_store import outcomes_path, previous_result_path, store_key
from engine.cohort.outputs import (
    SOURCE_PROBLEMS,
    CohortCounts,
    assemble_outputs,
    discard_previous_outputs,
    kept_outputs,
    output_files,
    outputs_key,
    remember_outputs,
    set_aside_outputs,
)
from engine.cohort.partition import (
    CriteriaFiles,
    WorkerSetup,
    is_complete,
    result_path,
)
from engine.cohort.prefilter import Prefilter
from engine.cohort.rerun import Rebuilder, rebuild_partitions
from engine.cohort.run_folder import (
    MANIFEST,
    SUMMARY,
    RunLock,
    remove_leftover_temporary_files,
)
from engine.compiled_cache import code_digest, remember_resource_types, remembered_resource_types
from engine.errors import CohortError, InputChangedError, Location
from engine.evaluate import CompiledCriteria
from engine.normalise.units import prepare_unit_conversions
from engine.normalise.yaml_reading import check_limits
from engine.resource_types import RECORD_TYPES, expand_resource_types
from engine.sources import SourceProblem
from engine.trial import load_trial

MINIMUM_PARTITIONS = 16
"""At least this many partitions, so that workers share the work evenly."""
PARTITION_BYTES = 32 * 1024 * 1024
"""About this much input per partition: bounds a worker's memory, whatever the input size."""

_SOURCE_RECORD = "source.json"


class ProgressListener(Protocol):
    """Told how many patients there are and as partitions finish (a progress bar)."""

    def start(self, total_patients: int) -> None: ...

    def advance(self, patients: int) -> None: ...


def kept_types(criteria: CompiledCriteria) -> frozenset[str]:
    """The resource types a run over these criteria needs from the input."""
    return RECORD_TYPES | criteria.resource_types


def provisional_kept_types(criteria_path: str | Path) -> frozenset[str] | None:
    """What `kept_types` will most likely be, without compiling anything: pass 1 can start
    with them while the criteria compile. The run checks them against `kept_types` of the
    compiled criteria and splits the input again when they differ.

    The resource types a fresh run remembered for this criteria file as it reads now
    (`remembered_resource_types`: no YAML parsed, no digest of trialsieve's sources, no
    entry unpickled, 0.1-0.3 ms instead of 10-20 before pass 1 starts); else RECORD_TYPES
    and every type a `resource:` key of the file names (MedicationStatement bringing the
    other medication types). None when the file does not read as YAML (compiling it reports
    why).
    """
    remembered = remembered_resource_types(criteria_path)
    if remembered is not None:
        return RECORD_TYPES | remembered
    try:
        text = Path(criteria_path).read_text(encoding="utf-8-sig")
        check_limits(text)
        document = YAML(typ="safe").load(text)
    except (OSError, UnicodeDecodeError, YAMLError, RecursionError):
        return None
    found: set[str] = set()
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            written = node.get("resource")
            names = written if isinstance(written, list) else [written]
            found.update(expand_resource_types([name for name in names if isinstance(name, str)]))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return RECORD_TYPES | frozenset(found)


class _Loading:
    """`load_trial` in a thread (started after pass 1's forks): compiles while pass 1 runs,
    and remembers the criteria's resource types for the next run's pass 1 to start with.

    `prepare_units`: also build the unit registry, for workers that will convert units (a
    full evaluation) to inherit. `on_loaded`: called with the criteria in the thread, once
    they are compiled (an engine's start takes them then: `EngineStart.criteria_loaded`).
    """

    def __init__(
        self,
        criteria_path: str | Path,
        prepare_units: bool = False,
        on_loaded: Callable[[CompiledCriteria], None] | None = None,
    ) -> None:
        self._path = criteria_path
        self._prepare_units = prepare_units
        self._on_loaded = on_loaded
        self._criteria: CompiledCriteria | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, name="trialsieve-load-criteria")

    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        try:
            self._criteria = criteria = load_trial(self._path)
            remember_resource_types(self._path, criteria.resource_types)
            if self._prepare_units:
                prepare_unit_conversions()
            if self._on_loaded is not None:
                self._on_loaded(criteria)
        except BaseException as error:  # re-raised by result(): the thread cannot raise
            self._error = error

    def result(self) -> CompiledCriteria:
        if self._thread.ident is None:
            self._load()  # never started: pass 1 ended before its workers existed
        else:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._criteria is not None
        return self._criteria


@dataclass(frozen=True)
class CohortSummary:
    """What a cohort run did."""

    out_dir: Path
    patients: int
    statuses: dict[str, int]
    settled_by_prefilter: int
    full: bool
    prefilter: tuple[str, ...]
    problems: int
    lines_affected: int
    patients_affected: int
    partitions: int
    partitions_reused: int
    bytes_read: int
    seconds: float
    """From the start of the run to its outputs and summary written (before their fsync)."""
    peak_memory: int
    worker_peak_memory: int | None
    partitions_from_store: int = 0
    """Partitions rebuilt from the store (`engine.cohort.rerun`: only the criteria without a
    stored outcome were evaluated); not counted in `partitions_reused`."""
    criteria_evaluated: int | None = None
    """In partitions rebuilt from the store, the criterion outcomes evaluated again (patients
    times edited or new criteria); None when nothing was rebuilt."""
    deceased: int = 0
    """Patients the record says died on or before the as-of day (ineligible; attrition's
    step 0)."""
    criteria_sha256: str | None = None
    """The digest of the criteria and mapping files the outputs are of (the manifest's):
    `engine.cohort.run_folder.check_finished` compares them."""

    @property
    def patients_per_second(self) -> float:
        return self.patients / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "criteria_sha256": self.criteria_sha256,
            "patients": self.patients,
            "statuses": self.statuses,
            "deceased": self.deceased,
            "settled_by_prefilter": self.settled_by_prefilter,
            "settled_patients_evaluated_in_full": self.full,
            "prefilter": list(self.prefilter),
            "problems": self.problems,
            "lines_affected": self.lines_affected,
            "patients_affected": self.patients_affected,
            "partitions": self.partitions,
            "partitions_reused": self.partitions_reused,
            "partitions_from_store": self.partitions_from_store,
            "criteria_evaluated_again": self.criteria_evaluated,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
            "peak_memory_mb": round(self.peak_memory / 1e6),
            "worker_peak_memory_mb": (
                None if self.worker_peak_memory is None else round(self.worker_peak_memory / 1e6)
            ),
        }


def run_cohort(
    criteria_path: str | Path,
    source: CohortInput,
    out_dir: str | Path,
    as_of: dt.date,
    engine: str = "local",
    workers: int | None = None,
    progress: ProgressListener | None = None,
    partition_count: int | None = None,
    scheduler: str | None = None,
    attestations_path: str | Path | None = None,
    shared_filesystem: bool | None = None,
    full: bool = False,
    screen_lines: bool | None = None,
    keep_store: bool = True,
) -> CohortSummary:
    """Evaluate every patient of `source` and write the cohort files into `out_dir`.

    `workers`: processes (default: every core) for the first pass and the local engine, the
    size of the Dask LocalCluster; `scheduler`: a running Dask scheduler's address instead.
    `attestations_path`: answers to manual items per patient (the `evaluate` file format).
    `shared_filesystem`: whether Dask workers see the input and `out_dir` at the same paths
    (default: yes for the LocalCluster, no for a `scheduler`); then tasks carry partition paths
    and the workers write the result files.
    `full`: evaluate every patient in full; by default patients the pre-filter settles are
    evaluated from their diagnoses, procedures and demographics only (the criteria that read
    other data are `not_evaluated` for them).
    `screen_lines` (on unless False): leave unparsed the NDJSON lines no criterion can read
    (`engine.cohort.line_screen`: the outputs are the same either way; docs/cohort.md).
    `keep_store`: keep, for each partition evaluated from the input, what a re-run after
    editing criteria needs (`engine.cohort.outcome_store`); False for a one-off run.

    Raises CriteriaError/MappingError for bad criteria, AttestationError for a bad
    attestation file, InputError when the input cannot be found at all, CohortError for an
    unknown engine or an `out_dir` holding another run. Unusable input (a bad line, a bad
    file) never stops the run: it goes to errors.ndjson.
    """
    started = time.perf_counter()
    if isinstance(source, NdjsonInput) and source.exported_here():
        from engine.sources.bulk_export import check_complete_records

        check_complete_records(source.folder)  # never an incremental (_since) export alone
    kind = engine_kind(engine, scheduler)
    settings = EngineSettings(workers or os.cpu_count() or 1, scheduler, shared_filesystem)
    out = Path(out_dir)
    results_folder = out / "partitions"
    work = out / "work"
    existed = {folder: folder.is_dir() for folder in (out, results_folder, work)}
    _check_output_folder(out, source)
    lock = RunLock.take(out)  # one run at a time; refused: nothing touched
    resumed = (out / MANIFEST).is_file()
    engine_start: EngineStart | None = None
    # A fresh run's pass 1 files and manifest, committed (fsynced at once) as the engine's
    # workers start, for an engine whose workers write nothing before (`writes_after_started`)
    deferred: AtomicFiles | None = None
    try:
        remove_leftover_temporary_files(out)  # of a run killed while it wrote them
        # the input files' names, sizes and times (stat once), before pass 1 reads them: the
        # manifest's, and what pass 1 checks they still are at its end
        described = source.describe()
        fresh = settings.workers > 1 and not resumed
        if fresh and kind.start is not None:
            # first: a Dask cluster's host imports distributed while the criteria file is
            # read for pass 1's types (0.02-0.07 s of CPU) and pass 1 runs
            engine_start = kind.start(settings, full)
        provisional = provisional_kept_types(criteria_path) if fresh else None
        if provisional is not None:
            # A fresh run: pass 1 starts at once with the types the criteria file names, while
            # the criteria compile (and a Dask cluster starts) in threads.
            criteria, partitions, engine_start, deferred = _fresh_start(
                criteria_path,
                source,
                out,
                partition_count,
                provisional,
                kind,
                settings,
                full,
                described,
                engine_start,
            )
            if not kind.writes_after_started:
                deferred.commit()
                deferred = None
        else:
            criteria = load_trial(criteria_path)
            partitions = None
        if isinstance(source, NdjsonInput) and source.exported_here():
            from engine.sources.bulk_export import exported_types_left_out

            # types a Bulk export into the folder left out: unknown, never "none on record"
            criteria = replace(criteria, unavailable_types=exported_types_left_out(source.folder))
        answers: Attestations = (
            load_attestations(attestations_path, criteria.manual_ids, criteria.trial.id)
            if attestations_path is not None
            else {}
        )
        results_folder.mkdir(parents=True, exist_ok=True)
        count, attested, digest = _check_manifest(
            out,
            criteria_path,
            criteria,
            source,
            described,
            as_of,
            partition_count,
            attestations_path,
            full,
            deferred,
        )
        key = store_key(
            criteria,
            described,
            count,
            as_of.isoformat(),
            _sha256_of(attested),
            kept_types(criteria),
            full,
        )
        pending = [
            index for index in range(count) if not is_complete(result_path(results_folder, index))
        ]
        reused = count - len(pending)
        pending, from_store, evaluated = _rebuild_from_store(
            criteria, as_of, answers, full, key, results_folder, pending, settings.workers
        )
        if kind.start is not None and pending and engine_start is None:
            engine_start = kind.start(settings, full)
        if engine_start is not None:
            engine_start.begin()  # begun already unless pass 1 ran in this process alone
            engine_start.warm_up(criteria)
            settings = replace(settings, started=engine_start)
        source_record = results_folder / _SOURCE_RECORD
        if partitions is None and (pending or not source_record.is_file()):
            partitions = source.reopen(work, count) if source_record.is_file() else None
            if partitions is None:
                partitions, pass_one_files = _first_pass(
                    source,
                    work,
                    results_folder,
                    count,
                    kept_types(criteria),
                    settings.workers,
                    described,
                )
                pass_one_files.commit()
        worker_peak = _run_engine(
            criteria_path,
            criteria,
            partitions,
            results_folder,
            as_of,
            answers,
            full,
            pending,
            kind.run,
            settings,
            progress,
            screen_lines,
            key if keep_store else None,
            None if deferred is None else deferred.commit,
        )
        if deferred is not None:
            deferred.commit()  # when nothing was evaluated
        if engine_start is not None:
            engine_start.stop()  # the workers end while the outputs are assembled
        # The outputs and then the summary, fsynced at once (one wait for the disk) and
        # renamed into place in that order (the local engine's workers end meanwhile too).
        # Outputs that would be the same as those in `out` are kept (`kept_outputs`).
        assembled_from = outputs_key(out, criteria, count)
        kept = None if assembled_from is None else kept_outputs(out, assembled_from)
        with output_files() as files:
            counts = kept if kept is not None else assemble_outputs(out, criteria, count, files)
            summary = _summary(
                out,
                criteria,
                counts,
                count,
                reused,
                source_record,
                started,
                worker_peak,
                full,
                from_store,
                evaluated,
                digest,
            )
            files.open(out / SUMMARY).write(
                orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2)
            )
        discard_previous_outputs(out)  # an edit's earlier outputs, set aside (or moved back)
        if kept is None and assembled_from is not None:
            remember_outputs(out, assembled_from, counts)
        shutil.rmtree(work, ignore_errors=True)
    except InputChangedError as error:
        if deferred is not None:
            deferred.discard()
        if not resumed:  # nothing of this run is worth keeping: the next run starts afresh
            (out / MANIFEST).unlink(missing_ok=True)
        raise _input_changed(error, out, resumed) from None
    except BaseException:
        if deferred is not None:
            deferred.discard()
        raise
    finally:
        try:
            if engine_start is not None:
                engine_start.close()
        finally:
            try:
                wait_for_ended_workers()
                if not (out / MANIFEST).is_file():  # refused, or ended before it began
                    _remove_created_folders(existed)
            finally:
                lock.release()  # last: every process of the run has ended
    return summary


def _check_output_folder(out: Path, source: CohortInput) -> None:
    """Refuse an `out` the run cannot use, before anything is read or written: a path that
    is not a folder, a folder inside the input folder (the run would read its own outputs
    as input), one that cannot be created or written. Creates `out`."""
    if out.exists() and not out.is_dir():
        raise CohortError("--out is not a folder", Location(file=str(out)))
    input_folder = getattr(source, "folder", None)
    if input_folder is not None:
        inside = Path(input_folder).resolve()
        target = out.resolve()
        if target == inside or inside in target.parents:
            raise CohortError(
                f"--out is inside the input folder {input_folder}: the run would read "
                "its own outputs as input; choose a folder outside it",
                Location(file=str(out)),
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CohortError(
            f"--out: cannot create the folder ({error.strerror})", Location(file=str(out))
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CohortError(
            "--out: cannot write in the folder (permission denied, or a read-only file system)",
            Location(file=str(out)),
        )


def _remove_created_folders(existed: dict[Path, bool]) -> None:
    """After a run that wrote no manifest (refused, or ended before it began: nothing to
    resume), remove the folders it created, the innermost first; folders that were there
    before are left as they were."""
    for folder, was_there in reversed(existed.items()):
        if not was_there:
            shutil.rmtree(folder, ignore_errors=True)


def _fresh_start(
    criteria_path: str | Path,
    source: CohortInput,
    out: Path,
    partition_count: int | None,
    provisional: frozenset[str],
    kind: EngineKind,
    settings: EngineSettings,
    full: bool,
    described: dict[str, Any],
    engine_start: EngineStart | None = None,
) -> tuple[CompiledCriteria, PartitionedInput, EngineStart | None, AtomicFiles]:
    """Pass 1 of a fresh run, overlapped with compiling the criteria (and starting the
    engine's workers, for an engine that starts them, unless `engine_start` has: the caller
    then closes it should this fail). Pass 1's files are returned as a set to commit (the
    caller commits or discards it).

    The threads start once pass 1's worker processes exist, so that no fork copies them. When
    the compiled criteria keep other types than `provisional`, pass 1 runs again with those.
    When the criteria do not compile, what pass 1 wrote is removed and the error raised.
    """
    results_folder = out / "partitions"
    work = out / "work"
    created = [folder for folder in (out, results_folder) if not folder.is_dir()]
    results_folder.mkdir(parents=True, exist_ok=True)
    count = partition_count or default_partition_count(source)

    def on_loaded(criteria: CompiledCriteria) -> None:
        if engine_start is not None:
            engine_start.criteria_loaded(criteria)

    loading = _Loading(criteria_path, full and kind.forks_workers, on_loaded)
    started_here = engine_start is None and kind.start is not None

    def on_started() -> None:
        loading.start()
        if engine_start is not None:
            engine_start.begin()

    try:
        if started_here:  # before pass 1 forks (a Dask host)
            assert kind.start is not None
            engine_start = kind.start(settings, full)
        # the cores the engine's start keeps busy meanwhile (a Dask host's import) are left to it
        taken = 0 if engine_start is None else engine_start.cores_taken(source.size_in_bytes())
        pass_one_workers = max(1, settings.workers - taken)
        partitions, files = _first_pass(
            source,
            work,
            results_folder,
            count,
            provisional,
            pass_one_workers,
            described,
            on_started,
        )
        try:
            criteria = loading.result()
        except BaseException:
            files.discard()
            raise
    except BaseException:
        if engine_start is not None and started_here:
            engine_start.close()
        shutil.rmtree(work, ignore_errors=True)
        for name in (SOURCE_PROBLEMS, _SOURCE_RECORD):
            (results_folder / name).unlink(missing_ok=True)
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    if kept_types(criteria) != provisional:
        files.discard()
        partitions, files = _first_pass(
            source, work, results_folder, count, kept_types(criteria), settings.workers, described
        )  # the engine's start is over by now (or soon): every core
    return criteria, partitions, engine_start, files


def _run_engine(
    criteria_path: str | Path,
    criteria: CompiledCriteria,
    partitions: PartitionedInput | None,
    results_folder: Path,
    as_of: dt.date,
    answers: Attestations,
    full: bool,
    pending: list[int],
    engine: Engine,
    settings: EngineSettings,
    progress: ProgressListener | None,
    screen_lines: bool | None = None,
    key: str | None = None,
    commit: Callable[[], None] | None = None,
) -> int | None:
    """Evaluate the pending partitions; the largest worker's peak memory when known.
    `commit`: called once the engine's workers are started (before any writes a file)."""
    if not pending:
        return None
    assert partitions is not None
    setup = WorkerSetup(
        str(criteria_path),
        partitions,
        str(results_folder),
        as_of,
        criteria,
        answers,
        full,
        screen_lines,
        criteria.unavailable_types,
        key,
    )
    return _evaluate(setup, pending, engine, settings, progress, commit)


def _evaluate(
    setup: WorkerSetup,
    pending: list[int],
    engine: Engine,
    settings: EngineSettings,
    progress: ProgressListener | None,
    commit: Callable[[], None] | None = None,
) -> int | None:
    partitions = setup.partitions
    total = sum(partitions.patients_in(index) for index in pending)
    # The largest partitions first: the last to finish are small ones, so that no worker
    # idles long while another ends a large one (the results do not depend on the order).
    pending = sorted(pending, key=partitions.patients_in, reverse=True)

    def on_started() -> None:
        if commit is not None:
            commit()
        if progress is not None:
            progress.start(total)

    def on_done(index: int) -> None:
        if progress is not None:
            progress.advance(partitions.patients_in(index))

    return engine(setup, pending, settings, on_started, on_done)


def _first_pass(
    source: CohortInput,
    work: Path,
    results_folder: Path,
    count: int,
    types: frozenset[str],
    workers: int,
    described: dict[str, Any],
    on_started: Callable[[], None] | None = None,
) -> tuple[PartitionedInput, AtomicFiles]:
    """Split the input; its problems go to `source-problems.ndjson`, its sizes to source.json,
    with pass 1's marker: a set of files the caller commits (fsynced at once, then renamed in
    that order: source.json vouches for the other; one wait for the disk) or discards (then
    none is written).

    `described`: the input as `source.describe()` gave it before the pass (the manifest's);
    when it differs at the pass's end (a file still being written or copied), what the pass
    wrote is removed and InputChangedError names the files that changed."""
    shutil.rmtree(work, ignore_errors=True)
    problems = 0
    files = AtomicFiles()
    try:
        handle = files.open(results_folder / SOURCE_PROBLEMS)

        def record(problem: SourceProblem) -> None:
            nonlocal problems
            problems += 1
            handle.write(orjson.dumps({"problem": problem.to_json()}) + b"\n")

        partitions = source.prepare(work, count, record, types, workers, on_started, files)
        changed = input_differences(described, source.describe())
        if changed:
            shutil.rmtree(work, ignore_errors=True)
            raise InputChangedError(
                "the input changed while the cohort's first pass read it, as an export "
                f"still being written or copied does ({changed})",
                Location(file=str(described.get("path", ""))),
            )
        record_data = {"bytes_read": partitions.bytes_read, "problems": problems}
        files.open(results_folder / _SOURCE_RECORD).write(orjson.dumps(record_data))
    except BaseException:
        files.discard()
        raise
    return partitions, files


def _summary(
    out: Path,
    criteria: CompiledCriteria,
    counts: CohortCounts,
    partitions: int,
    reused: int,
    source_record: Path,
    started: float,
    worker_peak_memory: int | None,
    full: bool,
    from_store: int = 0,
    evaluated: int | None = None,
    criteria_sha256: str | None = None,
) -> CohortSummary:
    source = orjson.loads(source_record.read_bytes())
    return CohortSummary(
        out_dir=out,
        patients=counts.patients,
        statuses=counts.statuses,
        settled_by_prefilter=counts.settled_by_prefilter,
        full=full,
        prefilter=tuple(str(r) for r in Prefilter.from_criteria(criteria).requirements),
        problems=counts.problems,
        lines_affected=counts.lines_affected,
        patients_affected=counts.patients_affected,
        partitions=partitions,
        partitions_reused=reused,
        partitions_from_store=from_store,
        criteria_evaluated=evaluated,
        deceased=counts.deceased,
        bytes_read=source["bytes_read"],
        seconds=time.perf_counter() - started,
        peak_memory=peak_memory(),
        worker_peak_memory=worker_peak_memory,
        criteria_sha256=criteria_sha256,
    )


# --------------------------------------------------------------------------- manifest


def _check_manifest(
    out: Path,
    criteria_path: str | Path,
    criteria: CompiledCriteria,
    source: CohortInput,
    described: dict[str, Any],
    as_of: dt.date,
    partition_count: int | None,
    attestations_path: str | Path | None,
    full: bool,
    files: AtomicFiles | None = None,
) -> tuple[int, Any, str]:
    """Write the manifest, or check the one there; returns the partition count to use, the
    manifest's attestations (`described`: `source.describe()`) and the criteria's digest.
    With other criteria or mappings (a re-run) the earlier outputs and results are set aside
    (the outputs first: the folder never shows the earlier criteria's outputs beside a
    manifest naming the edited ones) and the manifest is written again. `files`: a set of
    files to which a new manifest is added (written when the caller commits it)."""
    path = out / MANIFEST
    digest = CriteriaFiles.collect(criteria).digest
    earlier = orjson.loads(path.read_bytes()) if path.is_file() else None
    if partition_count is None:
        partition_count = (
            earlier["partition_count"] if earlier is not None else default_partition_count(source)
        )
    manifest = {
        "trialsieve": __version__,
        # the code itself: its sources, Python's and the libraries' versions (a checkout's
        # commits share one version number)
        "code": code_digest().hex(),
        "trial": criteria.trial.id,
        "criteria": {"path": str(Path(criteria_path).resolve()), "sha256": digest},
        "as_of": as_of.isoformat(),
        "attestations": (
            None
            if attestations_path is None
            else {
                "path": str(Path(attestations_path).resolve()),
                "sha256": hashlib.sha256(Path(attestations_path).read_bytes()).hexdigest(),
            }
        ),
        "input": described,
        "partition_count": partition_count,
        "full": full,
        "unavailable_types": sorted(criteria.unavailable_types),
    }
    if earlier is None:
        if files is None:
            write_atomically(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        else:
            files.open(path).write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        return partition_count, manifest["attestations"], digest
    if earlier.get("trial", manifest["trial"]) != manifest["trial"]:
        raise CohortError(
            f"this folder holds a cohort run of another trial ({earlier['trial']}, criteria "
            f"{earlier['criteria']['path']}); choose another --out for {manifest['trial']}",
            Location(file=str(path)),
        )
    differences = [
        name
        for name, same in (
            ("trialsieve version", earlier["trialsieve"] == manifest["trialsieve"]),
            (
                "trialsieve code (its source files, or the Python or libraries it runs on)",
                earlier["trialsieve"] != manifest["trialsieve"]
                or earlier.get("code") == manifest["code"],
            ),
            ("as-of day", earlier["as_of"] == manifest["as_of"]),
            (
                "attestations",
                _sha256_of(earlier.get("attestations")) == _sha256_of(manifest["attestations"]),
            ),
            ("input files", earlier["input"] == manifest["input"]),
            ("partition count", earlier["partition_count"] == partition_count),
            ("evaluation mode (--full)", earlier.get("full", False) == full),
            (
                "types not exported by the server (export.json types_left_out)",
                earlier.get("unavailable_types", []) == manifest["unavailable_types"],
            ),
        )
        if not same
    ]
    if differences:
        changed = input_differences(earlier["input"], described)
        raise CohortError(
            f"this folder holds a cohort run with other {', '.join(differences)} "
            f"(as of {earlier['as_of']}, input {earlier['input']['path']}"
            f"{'' if not changed else f'; {changed}'}); "
            "resume it with the same arguments, or choose another --out",
            Location(file=str(path)),
        )
    if earlier["criteria"] != manifest["criteria"]:
        if earlier["criteria"]["sha256"] != digest:  # the results are the other criteria's
            set_aside_outputs(out)
            _set_aside_results(out / "partitions", partition_count)
        write_atomically(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return partition_count, manifest["attestations"], digest


def input_differences(earlier: dict[str, Any], now: dict[str, Any]) -> str:
    """How the input `now` differs from `earlier` (both `CohortInput.describe()`): the
    files changed, added or removed, a few of each named; "" when it does not."""
    if earlier == now:
        return ""
    if earlier.get("kind") != now.get("kind") or earlier.get("path") != now.get("path"):
        return f"another input folder: {now.get('path')}"
    before = {name: rest for name, *rest in earlier.get("files", [])}
    after = {name: rest for name, *rest in now.get("files", [])}
    parts = []
    for what, names in (
        ("changed", [name for name in after if name in before and after[name] != before[name]]),
        ("added", [name for name in after if name not in before]),
        ("removed", [name for name in before if name not in after]),
    ):
        if names:
            more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
            parts.append(f"{what}: {', '.join(names[:_NAMES_SHOWN])}{more}")
    return "; ".join(parts) or "the files are listed in another order"


_NAMES_SHOWN = 3


def _input_changed(error: InputChangedError, out: Path, resumed: bool) -> InputChangedError:
    """`error` with what to do: run again (a fresh run: it kept nothing), or, when it
    resumed a run of the input as it was, evaluate the input as it is now elsewhere."""
    if resumed:
        advice = (
            f"the partitions kept in {out} are of the input as it was before: to evaluate "
            f"the input as it is now, choose another --out (or remove {out})"
        )
    else:
        advice = "nothing was kept: run the same command again once the input no longer changes"
    return InputChangedError(f"{error.message}; {advice}", error.location)


def _set_aside_results(results_folder: Path, partition_count: int) -> None:
    """Move each partition's result file into the store (`previous_result_path`), where a
    re-run reuses the lines of patients whose outcomes did not change."""
    for index in range(partition_count):
        result = result_path(results_folder, index)
        if result.is_file():
            target = previous_result_path(results_folder, index)
            target.parent.mkdir(parents=True, exist_ok=True)
            result.replace(target)


def _rebuild_from_store(
    criteria: CompiledCriteria,
    as_of: dt.date,
    answers: Attestations,
    full: bool,
    key: str,
    results_folder: Path,
    pending: list[int],
    workers: int = 1,
) -> tuple[list[int], int, int | None]:
    """Rebuild what pending partitions the store can (`engine.cohort.rerun`: only criteria
    without a stored outcome are evaluated; in two processes with two `workers` or more and
    enough to do); the partitions left to evaluate from the input, how many were rebuilt
    and how many criterion outcomes were evaluated for them."""
    if not any(outcomes_path(results_folder, index).is_file() for index in pending):
        return pending, 0, None
    rebuilder = Rebuilder(criteria, as_of, answers, full, key, results_folder)
    # The rebuild makes many objects (stored outcomes and records, parsed) and no cycles
    # worth collecting: the cyclic collector would walk the process's whole heap for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        left = rebuild_partitions(rebuilder, pending, workers)
    finally:
        if collecting:
            gc.enable()
    return left, len(pending) - len(left), rebuilder.evaluated


def default_partition_count(source: CohortInput) -> int:
    """max(16, input size / 32 MB): a partition is about 32 MB of input."""
    return max(MINIMUM_PARTITIONS, math.ceil(source.size_in_bytes() / PARTITION_BYTES))


def _sha256_of(attestations: Any) -> str | None:
    return attestations["sha256"] if isinstance(attestations, dict) else None
