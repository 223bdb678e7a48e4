"""Evaluate one partition and write its results, atomically: the unit of work of a cohort run.

A worker is set up once (`PartitionEvaluator`: the compiled criteria, the pre-filter, the
as-of day, the attestations) and then evaluates whole partitions (`PartitionPayload`s). Each
partition's results go to `partitions/NNNN.ndjson` through a temporary file and a rename, and
end with a `complete` line, so a partition file exists only when it is whole: a re-run skips
it.

A result line per patient, sorted by patient id: three JSON texts separated by tabs, the
summary `{"patient", "status", "settled_by", ["deceased",] ["file",] "criteria": [[value,
[missing...]], ...]}` ("deceased": "yes" or "unknown", only for a patient the record says
died; "file": the Bundle file the patient was read from, for a folder of Bundles), the
ResearchSubject and the DetectedIssue (so that assembling the outputs parses only the
summary); a line per input problem: `{"problem": {file, line, resource, patient, message}}`.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from engine.atomic_write import write_atomically
from engine.attestations import Attestations
from engine.cohort.inputs import PartitionedInput, PartitionPayload
from engine.cohort.line_screen import LineScreen
from engine.cohort.ndjson_partitions import PreviewFirst
from engine.cohort.orphans import exit_when_orphaned
from engine.cohort.outcome_store import (
    StoreBuilder,
    StoredPartition,
    mapping_files_read,
    verified_digest,
)
from engine.cohort.prefilter import Prefilter, preview_of
from engine.compiled_cache import save_conversions, save_validated_shapes, validated_shapes
from engine.criteria.model import CriterionKind
from engine.errors import TrialsieveError
from engine.evaluate import (
    CompiledCriteria,
    CriterionResult,
    PatientEvaluation,
    Truth,
    UnknownReason,
)
from engine.evaluate.outcome import NOT_MET
from engine.evaluate.patient import CriterionVerdict
from engine.record import build_record
from engine.report import research_study
from engine.report.resources import (
    CriterionReport,
    PatientReport,
    detected_issue_json,
    is_shared,
    report_of,
    research_subject_json,
    shared_json,
)
from engine.report.validate import OutputShapes
from engine.screening import screen_patient
from engine.sources import PatientResources, SourceProblem

NOT_EVALUATED = "not_evaluated"
CRITERION_VALUES = ("met", "not_met", "unknown_missing", "manual", NOT_EVALUATED)
"""What cohort.csv says of a criterion: its truth, with unknown split by reason, or
`not_evaluated` (a patient the pre-filter settled from part of their record)."""


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


_VALUES_OF_VERDICTS = {
    (CriterionKind.INCLUSION, CriterionVerdict.CLEAR): "met",
    (CriterionKind.INCLUSION, CriterionVerdict.FAILS): "not_met",
    (CriterionKind.EXCLUSION, CriterionVerdict.CLEAR): "not_met",
    (CriterionKind.EXCLUSION, CriterionVerdict.FAILS): "met",
}


def verdict_value(kind: CriterionKind, verdict: CriterionVerdict | None) -> str:
    """`criterion_value` of a criterion of this kind with this verdict (None: not evaluated)."""
    if verdict is None:
        return NOT_EVALUATED
    if verdict is CriterionVerdict.MISSING_DATA:
        return "unknown_missing"
    if verdict is CriterionVerdict.MANUAL_REVIEW:
        return "manual"
    return _VALUES_OF_VERDICTS[kind, verdict]


def study_reference(criteria: CompiledCriteria) -> str:
    """The ResearchSubject.study reference cohort outputs use: `ResearchStudy/<id>`."""
    return f"ResearchStudy/{research_study(criteria.trial)['id']}"


def report_result_line(
    report: PatientReport,
    settled_by: str | None,
    study: str | None = None,
    outputs: OutputShapes | None = None,
    file: str | None = None,
) -> bytes:
    """One patient's result line (see the module docstring) of their report parts.

    `study`: the criteria's `study_reference`, when the caller has it already. `outputs`:
    validate the ResearchSubject and DetectedIssue (once per shape); raises
    OutputValidationError for an invalid one. `file`: the Bundle file the patient was read
    from (`PatientResources.file`), which the summary names."""
    criteria = report.criteria
    cells = _cells(criteria, report.parts)
    summary: dict[str, Any] = {
        "patient": report.patient_id,
        "status": report.status.value,
        "settled_by": settled_by,
    }
    vital = report.vital
    if vital is not None:  # the record says the patient died: "yes" on the as-of day
        summary["deceased"] = "yes" if vital.certain else "unknown"
    if file is not None:
        summary["file"] = file
    summary["criteria"] = cells  # last: assembling parses the summary up to it
    if study is None:
        study = study_reference(criteria)
    subject = research_subject_json(report, study)
    issue = detected_issue_json(report)
    if outputs is not None:
        outputs.validate_json(subject.text, subject.shape)
        outputs.validate_json(issue.text, issue.shape)
    return b"\t".join((orjson.dumps(summary), subject.text, issue.text))


def _cell(kind: CriterionKind, part: CriterionReport) -> list[Any] | orjson.Fragment:
    """A criterion's cell of the summary: `[value, [missing...]]` (made once as JSON text for
    a part shared by many patients: `shared_json`)."""
    if not is_shared(part):  # the patient's own part: its cell as a value, made once
        return _cell_value(kind, part)
    return shared_json(part, _CELL_USES[kind], _cell_value, kind, part)


def _cell_value(kind: CriterionKind, part: CriterionReport) -> list[Any]:
    """A criterion's cell of the summary as a value (`_cell`)."""
    return [verdict_value(kind, part.verdict), list(part.missing)]


_CELL_USES = {kind: ("summary cell", kind) for kind in CriterionKind}
_NO_PART = object()
_recent_cells: dict[
    int, tuple[CompiledCriteria, list[CriterionKind], list[tuple[object, orjson.Fragment]]]
] = {}
"""Per compiled criteria (kept to check identity), each criterion's kind and the shared part
last met at its place, with its cell's JSON text."""


def _cells(
    criteria: CompiledCriteria, parts: Sequence[CriterionReport]
) -> list[list[Any] | orjson.Fragment]:
    """`_cell` of each part, in protocol order. Consecutive patients mostly have the same
    shared part at a criterion's place: the one last met there is found by identity."""
    if len(parts) != len(criteria.criteria):
        raise ValueError(f"{len(parts)} report parts for {len(criteria.criteria)} criteria")
    known = _recent_cells.get(id(criteria))
    if known is None or known[0] is not criteria:
        if len(_recent_cells) >= 64:
            _recent_cells.clear()
        kinds = [compiled.kind for compiled in criteria.criteria]
        no_cell = orjson.Fragment(b"null")
        known = _recent_cells[id(criteria)] = (criteria, kinds, [(_NO_PART, no_cell)] * len(kinds))
    _criteria, kinds, recent = known
    cells: list[list[Any] | orjson.Fragment] = []
    for place, part in enumerate(parts):
        last = recent[place]
        if last[0] is part:
            cells.append(last[1])
            continue
        cell = _cell(kinds[place], part)
        if type(cell) is orjson.Fragment:  # a shared part's
            recent[place] = (part, cell)
        cells.append(cell)
    return cells


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs, sent once (inherited through fork, else pickled)."""

    criteria_path: str
    partitions: PartitionedInput
    results_folder: str
    as_of: dt.date
    criteria: CompiledCriteria | None = None
    attestations: Attestations = field(default_factory=dict)
    full: bool = False
    screen_lines: bool | None = None
    unavailable_types: frozenset[str] = frozenset()
    """`CompiledCriteria.unavailable_types`, for a worker that compiles the criteria anew."""
    store_key: str | None = None
    """Keep each partition's outcomes and records for re-runs (`engine.cohort.outcome_store`)
    under this key; None: keep nothing."""

    def compiled_criteria(self) -> CompiledCriteria:
        """The criteria: inherited compiled (fork), else compiled from `criteria_path` with
        the unavailable types (spawn: compiled criteria do not pickle)."""
        if self.criteria is not None:
            return self.criteria
        from engine.trial import load_trial  # the criteria loader: only where they compile

        return replace(load_trial(self.criteria_path), unavailable_types=self.unavailable_types)

    def partition_evaluator(self) -> PartitionEvaluator:
        """An evaluator of this run's partitions, over `compiled_criteria()`."""
        return PartitionEvaluator(
            self.compiled_criteria(),
            self.as_of,
            self.attestations,
            self.full,
            self.screen_lines,
            self.store_key,
        )


@dataclass(frozen=True)
class PartitionOutcome:
    """What a finished partition reports back to the runner."""

    index: int
    patients: int
    problems: int
    seconds: float


@dataclass(frozen=True)
class PartitionResult:
    """A partition's result file content (`data`, ending with its `complete` line), and
    what the run keeps of it for re-runs (`stored`)."""

    outcome: PartitionOutcome
    data: bytes
    stored: StoredPartition | None = None


@dataclass(frozen=True)
class CriteriaFiles:
    """The criteria file and every mapping file it uses (with the ValueSet files and cached
    expansions their concepts read: `mapping_files_read`), as bytes: criteria for any machine.

    `digest` (SHA-256 over names and contents) identifies them in the run's manifest and in
    the workers' cache of compiled criteria; `load` compiles them where the files do not
    exist (a Dask worker on another machine). `compiled`, when collected `with_compiled`:
    the compiled criteria themselves, cloudpickled (their closures included), which `load`
    unpickles instead of compiling (milliseconds instead of a third of a second per worker;
    the workers run the same trialsieve version, as they must anyway). `unavailable_types`:
    the compiled criteria's (types the source could not provide), which `load` gives the
    criteria it compiles; with `digest` it keys the workers' cache (`key`).
    """

    digest: str
    criteria: str
    files: tuple[tuple[str, bytes], ...]
    compiled: bytes | None = None
    unavailable_types: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """What identifies the compiled criteria: the files' digest, the unavailable types."""
        return self.digest, self.unavailable_types

    @classmethod
    def collect(cls, criteria: CompiledCriteria, with_compiled: bool = False) -> CriteriaFiles:
        # (the criteria file first; once, should a mapping folder hold it)
        paths = list(
            dict.fromkeys([Path(criteria.source.path).resolve(), *mapping_files_read(criteria)])
        )
        digest = hashlib.sha256()
        contents: list[tuple[str, bytes]] = []
        base = Path(os.path.commonpath([path.parent for path in paths]))
        for path in paths:
            data = path.read_bytes()
            digest.update(path.name.encode())
            digest.update(data)
            contents.append((path.relative_to(base).as_posix(), data))
        compiled = None
        if with_compiled:
            import cloudpickle  # type: ignore[import-untyped]  # comes with dask

            compiled = cloudpickle.dumps(criteria)
        unavailable = tuple(sorted(criteria.unavailable_types))
        return cls(digest.hexdigest(), contents[0][0], tuple(contents), compiled, unavailable)

    def load(self) -> CompiledCriteria:
        """The compiled criteria: unpickled when shipped compiled, else compiled from the
        files, written into a temporary folder in their layout."""
        if self.compiled is not None:
            loaded = pickle.loads(self.compiled)
            if not isinstance(loaded, CompiledCriteria):
                raise TypeError(f"shipped criteria unpickle to {type(loaded).__name__}")
            return loaded
        from engine.trial import load_trial  # the criteria loader: only where they compile

        with tempfile.TemporaryDirectory(prefix="trialsieve-criteria-") as folder:
            root = Path(folder)
            for relative, data in self.files:
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            compiled = load_trial(root / self.criteria)
        return replace(compiled, unavailable_types=frozenset(self.unavailable_types))


def result_path(results_folder: str | Path, index: int) -> Path:
    return Path(results_folder) / f"{index:04d}.ndjson"


def result_data(lines: list[bytes], patients: int, problems: int) -> bytes:
    """A partition result file's content: `lines` (patients' result lines, then problems),
    then the `complete` line with their counts and the SHA-256 of everything before it, so
    that `is_complete` knows a whole file from one a crash cut short or left with holes
    (result files are written without an fsync: `write_result`)."""
    # hashed line by line and joined once with the complete line (no copy of the body)
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line)
        digest.update(b"\n")
    complete = {"patients": patients, "problems": problems, "sha256": digest.hexdigest()}
    return b"\n".join([*lines, orjson.dumps({"complete": complete}), b""])


def is_complete(path: Path) -> bool:
    """Whether a partition result file exists and is whole: it ends with its `complete` line,
    whose SHA-256 is that of the lines before it (`result_data`)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return verified_digest(data) is not None


class PartitionEvaluator:
    """Evaluates partitions with criteria compiled once per process.

    `full`: evaluate every patient in full; by default a patient the pre-filter settles is
    evaluated from their preview only (`Prefilter.evaluate_settled`). `screen_lines` (on
    unless False): leave unparsed the NDJSON lines no criterion can read
    (`engine.cohort.line_screen`; the outputs are the same either way). Every other line of
    every patient is parsed and checked.
    """

    def __init__(
        self,
        criteria: CompiledCriteria,
        as_of: dt.date,
        attestations: Attestations,
        full: bool = False,
        screen_lines: bool | None = None,
        store_key: str | None = None,
    ) -> None:
        self.criteria = criteria
        self.store_key = store_key
        self.as_of = as_of
        self.attestations = attestations
        self.full = full
        self.prefilter = Prefilter.from_criteria(criteria)
        self.screen = None if screen_lines is False else LineScreen.from_criteria(criteria)
        self.study = study_reference(criteria)
        # Output shapes validated by earlier runs (and other workers) need no validating again.
        self.outputs = OutputShapes(validated_shapes())
        self._shapes_saved = len(self.outputs.valid_shapes)
        # The criteria and terminology live as long as the process: keep the collector from
        # scanning them after every partition.
        gc.freeze()

    def evaluate(self, payload: PartitionPayload) -> PartitionResult:
        """Evaluate every patient of a partition: its result file's content."""
        with _without_cycle_collection():
            return self._evaluate(payload)

    def _evaluate(self, payload: PartitionPayload) -> PartitionResult:
        started = time.perf_counter()
        problems: list[SourceProblem] = []
        results: list[tuple[str, bytes]] = []
        store = self._store_builder()
        preview_first = not self.full and bool(self.prefilter.settling)
        for patient in payload.patients(problems.append, self.screen, preview_first):
            result = self._patient(patient, problems, store)
            if result is not None:
                results.append((patient.patient_id, result))
        results.sort(key=lambda result: result[0])
        lines = [line for _patient, line in results]
        problem_lines = [orjson.dumps({"problem": problem.to_json()}) for problem in problems]
        lines += problem_lines
        save_conversions()  # unit conversions met in the data: the next run needs no registry
        if self.outputs.validated and len(self.outputs.valid_shapes) != self._shapes_saved:
            save_validated_shapes(self.outputs.valid_shapes)
            self._shapes_saved = len(self.outputs.valid_shapes)
        outcome = PartitionOutcome(
            payload.index, len(results), len(problems), time.perf_counter() - started
        )
        data = result_data(lines, len(results), len(problems))
        stored = store.finish(payload.index, problem_lines, data) if store is not None else None
        return PartitionResult(outcome, data, stored)

    def _store_builder(self) -> StoreBuilder | None:
        if self.store_key is None:
            return None
        prefilter = self.prefilter
        return StoreBuilder(
            self.criteria,
            self.store_key,
            [str(requirement) for requirement in prefilter.requirements],
            [str(requirement) for requirement in prefilter.settling],
        )

    def _patient(
        self,
        patient: PatientResources,
        problems: list[SourceProblem],
        store: StoreBuilder | None = None,
    ) -> bytes | None:
        criteria = self.criteria
        # NDJSON read preview first: the rest of the record is parsed only for a patient the
        # pre-filter does not settle; for one it settles, it is only screened.
        rest = patient.rest if isinstance(patient, PreviewFirst) else None
        try:
            if not self.full and self.prefilter.settling:
                settled = self._settled(patient, store)
                if settled is not None:
                    if rest is not None:
                        rest.screened()
                    return settled
            if rest is not None:
                patient = rest.parsed()
            screening = screen_patient(
                criteria, patient, self.as_of, self.attestations.get(patient.patient_id)
            )
            settled_by = self.prefilter.settling_criterion(screening.record)
            if settled_by is not None:
                _check_settled(screening.evaluation, settled_by)
            report = report_of(screening.evaluation)
            line = report_result_line(report, settled_by, self.study, self.outputs, patient.file)
            if store is not None:
                store.add(
                    screening.record,
                    report,
                    settled_by,
                    None,
                    patient.texts,
                    patient.file,
                    screening.evaluation.computed_values,
                )
            return line
        except TrialsieveError as error:
            # Bad input, or (a bug) an output the R4B models reject: a problem, the run goes on.
            if rest is not None and not rest.resolved:
                rest.parsed()  # its lines' problems come first, as when every line is parsed
            problems.append(_problem_of(error, patient))
            if store is not None:
                store.spoil()
            return None

    def _settled(self, patient: PatientResources, store: StoreBuilder | None) -> bytes | None:
        """The result line of a patient a settling requirement settles, evaluated from their
        preview record (Patient, Conditions, Procedures), or None when none settles them."""
        criteria = self.criteria
        preview = build_record(preview_of(patient), criteria.terminology)
        requirement = self.prefilter.settle(preview)
        if requirement is None:
            return None
        screening = self.prefilter.evaluate_settled(
            criteria, preview, self.as_of, requirement, self.attestations.get(preview.patient_id)
        )
        report = report_of(screening.evaluation)
        settled_by = requirement.criterion_id
        line = report_result_line(report, settled_by, self.study, self.outputs, patient.file)
        if store is not None:
            store.add(preview, report, settled_by, settled_by, patient.texts, patient.file)
        return line


def _problem_of(error: TrialsieveError, patient: PatientResources) -> SourceProblem:
    """A patient whose record cannot be built or evaluated: a problem, the run goes on."""
    location = error.location
    return SourceProblem(
        location.file or patient.origin,
        location.line,
        location.resource,
        patient.patient_id,
        error.message,
    )


def _check_settled(evaluation: PatientEvaluation, settled_by: str) -> None:
    """The full evaluation must agree with the pre-filter; a disagreement is a bug."""
    for result in evaluation.results:  # (the criterion's id: `result.id` is a property)
        if result.criterion.id == settled_by and result.outcome.truth is not NOT_MET:
            raise RuntimeError(
                f"pre-filter bug: Patient/{evaluation.patient_id} was settled by {settled_by}, "
                f"but the criterion is {result.outcome.truth.value}"
            )


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector while a partition is evaluated.

    Grouping and evaluation allocate many containers that stay alive until the partition is
    done; the collector would scan them again and again (half the time of grouping). Reference
    counting frees everything acyclic, the partition's objects as its evaluation returns; the
    collector's own young-generation collections, once it runs again, find any cycles left.
    (A full collection after each partition found none at 10x, for 25 ms of CPU each.)
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write_result(results_folder: str | Path, result: PartitionResult) -> None:
    """Write a partition's result file atomically (`engine.atomic_write`), and first what
    the run keeps of it for re-runs."""
    if result.stored is not None:
        result.stored.write(results_folder)
    # no fsync: a result file a crash cut short or left with holes has no `complete` line, or
    # one whose SHA-256 does not match (is_complete): the partition is evaluated again
    # (engine.atomic_write, durable)
    write_atomically(result_path(results_folder, result.outcome.index), result.data, durable=False)


# --------------------------------------------------------------------------- worker processes

_worker: tuple[WorkerSetup, PartitionEvaluator] | None = None


def start_worker(setup: WorkerSetup) -> None:
    """Process pool initializer: stop with the parent (`exit_when_orphaned`); compile (or
    inherit) the criteria once for this process."""
    global _worker
    exit_when_orphaned()
    _worker = (setup, setup.partition_evaluator())


def evaluate_in_worker(
    index: int, write: Callable[[str, PartitionResult], None] = write_result
) -> PartitionOutcome:
    """Process pool task: read, evaluate and write one partition in this process (`write`:
    how its files are written, `write_result` unless the engine writes them otherwise)."""
    if _worker is None:
        raise RuntimeError("evaluate_in_worker runs only in a process set up by start_worker")
    setup, evaluator = _worker
    result = evaluator.evaluate(setup.partitions.payload(index))
    write(setup.results_folder, result)
    return result.outcome
