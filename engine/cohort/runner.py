"""Run one trial's criteria over a whole record set, partition by partition, resumably.

    run_cohort(criteria_path, source, out_dir, as_of, engine="local", workers=N)

1. The manifest (`out/manifest.json`: criteria and mappings digest, as-of day, input files,
   partition count, version) is written on the first run; a re-run with the same `out`
   must match it, or `CohortError` says what differs.
2. The first pass splits the input into partitions (`out/work/`, removed at the end); its
   problems go to `out/partitions/source-problems.ndjson`.
3. An engine evaluates every partition whose result (`out/partitions/NNNN.ndjson`) is not
   complete yet; `local` uses worker processes, criteria compiled once per process.
4. The output files are assembled from the partition results (`engine.cohort.outputs`), so
   an interrupted and resumed run writes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from engine import __version__
from engine.cohort.inputs import CohortInput, PartitionedInput
from engine.cohort.outputs import SOURCE_PROBLEMS, CohortCounts, assemble_outputs
from engine.cohort.partition import (
    PartitionEvaluator,
    PartitionOutcome,
    WorkerSetup,
    evaluate_in_worker,
    is_complete,
    result_path,
    start_worker,
)
from engine.cohort.prefilter import Prefilter
from engine.errors import Location, TrialsieveError
from engine.evaluate import CompiledCriteria
from engine.sources import SourceProblem
from engine.trial import load_trial

MINIMUM_PARTITIONS = 16
"""At least this many partitions, so that workers share the work evenly."""
PARTITION_BYTES = 32 * 1024 * 1024
"""About this much input per partition: bounds a worker's memory, whatever the input size."""

MANIFEST = "manifest.json"
_SOURCE_RECORD = "source.json"


class CohortError(TrialsieveError):
    """A cohort run cannot start: the output folder holds another run, an unknown engine."""


class ProgressListener(Protocol):
    """Told how many patients there are and as partitions finish (a progress bar)."""

    def start(self, total_patients: int) -> None: ...

    def advance(self, patients: int) -> None: ...


Engine = Callable[
    [WorkerSetup, list[int], int, Callable[[], None], Callable[[PartitionOutcome], None]], None
]
"""Evaluates partitions: (setup, partition indexes, workers, on_started, on_done)."""


def run_local(
    setup: WorkerSetup,
    indexes: list[int],
    workers: int,
    on_started: Callable[[], None],
    on_done: Callable[[PartitionOutcome], None],
) -> None:
    """The local engine: `workers` processes (this process alone when 1), whole partitions."""
    if workers <= 1 or len(indexes) <= 1:
        evaluator = PartitionEvaluator(setup)
        on_started()
        for index in indexes:
            on_done(evaluator.evaluate(index))
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    if context.get_start_method() != "fork":
        setup = replace(setup, criteria=None)  # compiled criteria do not pickle: recompile
    with ProcessPoolExecutor(
        max_workers=min(workers, len(indexes)),
        mp_context=context,
        initializer=start_worker,
        initargs=(setup,),
    ) as pool:
        futures = [pool.submit(evaluate_in_worker, index) for index in indexes]
        on_started()  # after the workers are forked: no progress thread is copied into them
        for future in as_completed(futures):
            on_done(future.result())


ENGINES: dict[str, Engine] = {"local": run_local}
"""The engines `run_cohort` knows, by name."""


@dataclass(frozen=True)
class CohortSummary:
    """What a cohort run did."""

    out_dir: Path
    patients: int
    statuses: dict[str, int]
    settled_by_prefilter: int
    prefilter: tuple[str, ...]
    problems: int
    lines_affected: int
    patients_affected: int
    partitions: int
    partitions_reused: int
    bytes_read: int
    seconds: float

    @property
    def patients_per_second(self) -> float:
        return self.patients / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "patients": self.patients,
            "statuses": self.statuses,
            "settled_by_prefilter": self.settled_by_prefilter,
            "prefilter": list(self.prefilter),
            "problems": self.problems,
            "lines_affected": self.lines_affected,
            "patients_affected": self.patients_affected,
            "partitions": self.partitions,
            "partitions_reused": self.partitions_reused,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
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
) -> CohortSummary:
    """Evaluate every patient of `source` and write the cohort files into `out_dir`.

    Raises CriteriaError/MappingError for bad criteria, InputError when the input cannot be
    found at all, CohortError for an unknown engine or an `out_dir` holding another run.
    Unusable input (a bad line, a bad file) never stops the run: it goes to errors.ndjson.
    """
    started = time.perf_counter()
    if engine not in ENGINES:
        known = ", ".join(sorted(ENGINES))
        raise CohortError(f"unknown engine '{engine}'; known engines: {known}")
    criteria = load_trial(criteria_path)
    out = Path(out_dir)
    results_folder = out / "partitions"
    work = out / "work"
    results_folder.mkdir(parents=True, exist_ok=True)
    count = _check_manifest(out, criteria_path, criteria, source, as_of, partition_count)
    pending = [
        index for index in range(count) if not is_complete(result_path(results_folder, index))
    ]
    source_record = results_folder / _SOURCE_RECORD
    partitions: PartitionedInput | None = None
    if pending or not source_record.is_file():
        partitions = source.reopen(work, count) if source_record.is_file() else None
        if partitions is None:
            partitions = _first_pass(source, work, results_folder, count)
    if pending:
        assert partitions is not None
        _evaluate(
            criteria_path,
            criteria,
            partitions,
            results_folder,
            as_of,
            pending,
            engine,
            workers,
            progress,
        )
    counts = assemble_outputs(out, criteria, count)
    shutil.rmtree(work, ignore_errors=True)
    summary = _summary(out, criteria, counts, count, count - len(pending), source_record, started)
    (out / "summary.json").write_bytes(orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2))
    return summary


def _evaluate(
    criteria_path: str | Path,
    criteria: CompiledCriteria,
    partitions: PartitionedInput,
    results_folder: Path,
    as_of: dt.date,
    pending: list[int],
    engine: str,
    workers: int | None,
    progress: ProgressListener | None,
) -> None:
    setup = WorkerSetup(str(criteria_path), partitions, str(results_folder), as_of, criteria)
    total = sum(partitions.patients_in(index) for index in pending)

    def on_started() -> None:
        if progress is not None:
            progress.start(total)

    def on_done(outcome: PartitionOutcome) -> None:
        if progress is not None:
            progress.advance(partitions.patients_in(outcome.index))

    ENGINES[engine](setup, pending, workers or os.cpu_count() or 1, on_started, on_done)


def _first_pass(
    source: CohortInput, work: Path, results_folder: Path, count: int
) -> PartitionedInput:
    """Split the input; its problems go to `source-problems.ndjson`, its sizes to source.json."""
    shutil.rmtree(work, ignore_errors=True)
    problems_path = results_folder / SOURCE_PROBLEMS
    partial = problems_path.with_name(f".{problems_path.name}.partial")
    problems = 0
    with open(partial, "wb") as handle:

        def record(problem: SourceProblem) -> None:
            nonlocal problems
            problems += 1
            handle.write(orjson.dumps({"problem": problem.to_json()}) + b"\n")

        partitions = source.prepare(work, count, record)
    os.replace(partial, problems_path)
    record_data = {"bytes_read": partitions.bytes_read, "problems": problems}
    (results_folder / _SOURCE_RECORD).write_bytes(orjson.dumps(record_data))
    return partitions


def _summary(
    out: Path,
    criteria: CompiledCriteria,
    counts: CohortCounts,
    partitions: int,
    reused: int,
    source_record: Path,
    started: float,
) -> CohortSummary:
    source = orjson.loads(source_record.read_bytes())
    return CohortSummary(
        out_dir=out,
        patients=counts.patients,
        statuses=counts.statuses,
        settled_by_prefilter=counts.settled_by_prefilter,
        prefilter=tuple(str(r) for r in Prefilter.from_criteria(criteria).requirements),
        problems=counts.problems,
        lines_affected=counts.lines_affected,
        patients_affected=counts.patients_affected,
        partitions=partitions,
        partitions_reused=reused,
        bytes_read=source["bytes_read"],
        seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------- manifest


def _check_manifest(
    out: Path,
    criteria_path: str | Path,
    criteria: CompiledCriteria,
    source: CohortInput,
    as_of: dt.date,
    partition_count: int | None,
) -> int:
    """Write the manifest, or check the one there; returns the partition count to use."""
    path = out / MANIFEST
    earlier = orjson.loads(path.read_bytes()) if path.is_file() else None
    if partition_count is None:
        partition_count = (
            earlier["partition_count"]
            if earlier is not None
            else max(MINIMUM_PARTITIONS, math.ceil(source.size_in_bytes() / PARTITION_BYTES))
        )
    manifest = {
        "trialsieve": __version__,
        "criteria": {"path": str(Path(criteria_path).resolve()), "sha256": _digest(criteria)},
        "as_of": as_of.isoformat(),
        "input": source.describe(),
        "partition_count": partition_count,
    }
    if earlier is None:
        path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        return partition_count
    differences = [
        name
        for name, same in (
            ("trialsieve version", earlier["trialsieve"] == manifest["trialsieve"]),
            ("criteria or mappings", earlier["criteria"]["sha256"] == _digest(criteria)),
            ("as-of day", earlier["as_of"] == manifest["as_of"]),
            ("input files", earlier["input"] == manifest["input"]),
            ("partition count", earlier["partition_count"] == partition_count),
        )
        if not same
    ]
    if differences:
        raise CohortError(
            f"this folder holds a cohort run with other {', '.join(differences)} "
            f"(as of {earlier['as_of']}, input {earlier['input']['path']}); "
            "resume it with the same arguments, or choose another --out",
            Location(file=str(path)),
        )
    return partition_count


def _digest(criteria: CompiledCriteria) -> str:
    """SHA-256 over the criteria file and every mapping file it uses."""
    digest = hashlib.sha256()
    files = [Path(criteria.source.path)]
    for mapping in criteria.source.mapping_paths:
        root = Path(mapping)
        files += sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
