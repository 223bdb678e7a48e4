"""Evaluate one partition and write its results, atomically: the unit of work of a cohort run.

A worker process is set up once (`WorkerSetup`: the compiled criteria, the pre-filter, the
partitioned input, where results go) and then evaluates whole partitions. Each partition's
results go to `partitions/NNNN.ndjson` through a temporary file and a rename, and end with a
`complete` line, so a partition file exists only when it is whole: a re-run skips it.

A result line per patient, sorted by patient id:
`{"patient", "status", "settled_by", "criteria": [[value, [missing...]], ...], "subject",
"issue"}`; a line per input problem: `{"problem": {file, line, resource, patient, message}}`.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from engine.cohort.inputs import PartitionedInput
from engine.cohort.prefilter import Prefilter
from engine.errors import TrialsieveError
from engine.evaluate import (
    CompiledCriteria,
    CriterionResult,
    PatientEvaluation,
    Truth,
    UnknownReason,
    evaluate_patient,
)
from engine.record import build_record
from engine.report import detected_issue, research_study, research_subject
from engine.sources import PatientResources, SourceProblem
from engine.trial import load_trial

CRITERION_VALUES = ("met", "not_met", "unknown_missing", "manual")
"""What cohort.csv says of a criterion: its truth, with unknown split by reason."""


def criterion_value(result: CriterionResult) -> str:
    """met / not_met (the criterion's own truth, whatever its kind), unknown_missing, manual.

    An unknown outcome that lacks data is `unknown_missing` even when a manual item is also
    open (as `CriterionVerdict` ranks them).
    """
    truth = result.outcome.truth
    if truth is Truth.MET:
        return "met"
    if truth is Truth.NOT_MET:
        return "not_met"
    if UnknownReason.MISSING_DATA in result.outcome.unknown_reasons:
        return "unknown_missing"
    return "manual"


def study_reference(criteria: CompiledCriteria) -> str:
    """The ResearchSubject.study reference cohort outputs use: `ResearchStudy/<id>`."""
    return f"ResearchStudy/{research_study(criteria.trial)['id']}"


def patient_result(evaluation: PatientEvaluation, settled_by: str | None) -> dict[str, Any]:
    """One patient's result line (see the module docstring)."""
    return {
        "patient": evaluation.patient_id,
        "status": evaluation.status.value,
        "settled_by": settled_by,
        "criteria": [
            [criterion_value(result), list(result.outcome.missing)] for result in evaluation.results
        ],
        "subject": research_subject(evaluation, study_reference(evaluation.criteria)),
        "issue": detected_issue(evaluation),
    }


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs, sent once (inherited through fork, else pickled)."""

    criteria_path: str
    partitions: PartitionedInput
    results_folder: str
    as_of: dt.date
    criteria: CompiledCriteria | None = None


@dataclass(frozen=True)
class PartitionOutcome:
    """What a finished partition reports back to the runner."""

    index: int
    patients: int
    problems: int
    seconds: float


def result_path(results_folder: str | Path, index: int) -> Path:
    return Path(results_folder) / f"{index:04d}.ndjson"


def is_complete(path: Path) -> bool:
    """Whether a partition result file exists and ends with its `complete` line."""
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 200))
        tail = handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return tail.startswith(b'{"complete":')


class PartitionEvaluator:
    """Evaluates partitions with criteria compiled once per process."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.criteria = setup.criteria or load_trial(setup.criteria_path)
        self.prefilter = Prefilter.from_criteria(self.criteria)
        # The criteria and terminology live as long as the process: keep the collector from
        # scanning them after every partition.
        gc.freeze()

    def evaluate(self, index: int) -> PartitionOutcome:
        started = time.perf_counter()
        problems: list[SourceProblem] = []
        results: list[dict[str, Any]] = []
        with _without_cycle_collection():
            for patient in self.setup.partitions.patients(index, problems.append):
                result = self._patient(patient, problems)
                if result is not None:
                    results.append(result)
        results.sort(key=lambda result: str(result["patient"]))
        lines = [orjson.dumps(result) for result in results]
        lines += [orjson.dumps({"problem": problem.to_json()}) for problem in problems]
        complete = {"patients": len(results), "problems": len(problems)}
        lines.append(orjson.dumps({"complete": complete}))
        _write_lines(result_path(self.setup.results_folder, index), lines)
        return PartitionOutcome(index, len(results), len(problems), time.perf_counter() - started)

    def _patient(
        self, patient: PatientResources, problems: list[SourceProblem]
    ) -> dict[str, Any] | None:
        criteria = self.criteria
        settled_by = self.prefilter.settling_criterion(patient.resources, criteria.terminology)
        try:
            record = build_record(patient, criteria.terminology)
            evaluation = evaluate_patient(criteria, record, self.setup.as_of)
        except TrialsieveError as error:
            problems.append(
                SourceProblem(
                    error.location.file or patient.origin,
                    error.location.line,
                    error.location.resource,
                    patient.patient_id,
                    error.message,
                )
            )
            return None
        if settled_by is not None:
            _check_settled(evaluation, settled_by)
        return patient_result(evaluation, settled_by)


def _check_settled(evaluation: PatientEvaluation, settled_by: str) -> None:
    """The full evaluation must agree with the pre-filter; a disagreement is a bug."""
    for result in evaluation.results:
        if result.id == settled_by and result.outcome.truth is not Truth.NOT_MET:
            raise RuntimeError(
                f"pre-filter bug: Patient/{evaluation.patient_id} was settled by {settled_by}, "
                f"but the criterion is {result.outcome.truth.value}"
            )


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector while a partition's objects are built.

    Grouping and evaluation allocate many containers that stay alive until the partition is
    done; the collector would scan them again and again (half the time of grouping). Reference
    counting still frees everything acyclic; one collection afterwards frees the rest.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


def _write_lines(path: Path, lines: list[bytes]) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for line in lines:
                handle.write(line)
                handle.write(b"\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- worker processes

_evaluator: PartitionEvaluator | None = None


def start_worker(setup: WorkerSetup) -> None:
    """Process pool initializer: compile (or inherit) the criteria once for this process."""
    global _evaluator
    _evaluator = PartitionEvaluator(setup)


def evaluate_in_worker(index: int) -> PartitionOutcome:
    """Process pool task: evaluate one partition with this process's evaluator."""
    if _evaluator is None:
        raise RuntimeError("evaluate_in_worker runs only in a process set up by start_worker")
    return _evaluator.evaluate(index)
