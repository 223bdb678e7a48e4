"""Re-run a partition from what an earlier run stored: evaluate only the changed criteria.

    result = rebuild_partition(rebuilder, index)   # None: evaluate it from the input

For each patient of the partition (`engine.cohort.outcome_store`), every criterion whose
content hash has a stored report part is taken as stored; the others (edited or new
criteria) are evaluated on the patient's stored record; then the patient's result line
(ResearchSubject, DetectedIssue, cohort.csv cells) is built from the parts exactly as a
fresh run builds it. The pre-filter is checked again when its requirements changed: a
patient it now settles otherwise (or no longer settles) needs their whole record, so the
partition is evaluated from the input. Anything the store cannot answer (`NotStored`) does
the same.
"""

from __future__ import annotations

import datetime as dt
import operator
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson

from engine.attestations import Attestations
from engine.cohort.orphans import fork_is_safe
from engine.cohort.outcome_store import (
    NotStored,
    RecordStore,
    StoredPartition,
    complete_digest,
    criterion_digests,
    decode_part,
    encode_part,
    headings_digest,
    outcomes_path,
    previous_result_path,
    records_path,
    verified_digest,
)
from engine.cohort.partition import (
    PartitionOutcome,
    PartitionResult,
    report_result_line,
    result_data,
    result_path,
    study_reference,
    write_result,
)
from engine.cohort.prefilter import Prefilter, RequiredConcept
from engine.compiled_cache import save_validated_shapes, validated_shapes
from engine.criteria.model import ResourceAtom, iter_atoms
from engine.errors import TrialsieveError
from engine.evaluate import CompiledCriteria, CompiledCriterion, Outcome
from engine.evaluate.computed import computation_key
from engine.evaluate.nodes import EvaluationContext
from engine.evaluate.patient import CriterionVerdict, VitalStatus, criterion_result
from engine.report.resources import (
    NOT_EVALUATED_REPORT,
    CriterionReport,
    PatientReport,
    criterion_report_of,
)
from engine.report.validate import OutputShapes, Shape, output_shape


@dataclass
class Rebuilder:
    """What rebuilding every partition of a run shares: the criteria, their digests, the
    pre-filter, the run's key."""

    criteria: CompiledCriteria
    as_of: dt.date
    attestations: Attestations
    full: bool
    key: str
    results_folder: Path
    digests: dict[str, str] = field(init=False)
    prefilter: Prefilter = field(init=False)
    study: str = field(init=False)
    headings: str = field(init=False)
    outputs: OutputShapes | None = None
    """The output shapes taken as valid (`output_shapes`)."""
    lines_shaped: int = 0
    """Partitions whose earlier lines were read for their shapes (`_KnownShapes`; tests)."""
    evaluated: int = 0
    """Criterion evaluations done (for the summary and tests)."""
    ordered: list[tuple[CompiledCriterion, str]] = field(init=False)
    """Each criterion with its digest, in the file's order."""
    computation_keys: frozenset[str] = field(init=False)
    """The keys of the criteria's computed values (`computation_key`): what the formulas
    found under another key (of a computed value edited or removed since) is dropped."""

    def __post_init__(self) -> None:
        self.digests = criterion_digests(self.criteria)
        self.ordered = [
            (compiled, self.digests[compiled.id]) for compiled in self.criteria.criteria
        ]
        self.prefilter = Prefilter.from_criteria(self.criteria)
        self.study = study_reference(self.criteria)
        self.headings = headings_digest(self.criteria)
        self.computation_keys = frozenset(
            computation_key(atom)
            for compiled in self.criteria.criteria
            for atom in iter_atoms(compiled.criterion.expression)
            if isinstance(atom, ResourceAtom) and atom.computed is not None
        )

    def output_shapes(self) -> OutputShapes:
        """The output shapes taken as valid: those earlier runs validated with the R4B models
        (the shapes cache, `validated_shapes`: a first run's workers saved theirs), read
        when a result line is first made anew, and those validated since."""
        if self.outputs is None:
            self.outputs = OutputShapes(validated_shapes())
        return self.outputs

    def save_shapes(self) -> None:
        """Add the shapes validated by this process to the shapes cache."""
        if self.outputs is not None and self.outputs.validated:
            save_validated_shapes(self.outputs.valid_shapes)


@dataclass(frozen=True)
class Rebuilt(PartitionResult):
    """A partition's result rebuilt from the store. `unchanged`: its result file is the one
    the earlier run wrote (`previous_result_path`), byte for byte (every patient kept their
    line): it can be moved back instead of written."""

    unchanged: bool = False


def rebuild_partition(rebuilder: Rebuilder, index: int) -> Rebuilt | None:
    """The partition's result from the store, or None when it must be evaluated from the
    input (nothing stored under this key, or something the store cannot answer)."""
    path = outcomes_path(rebuilder.results_folder, index)
    try:
        stored = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if type(stored) is not dict or stored.get("key") != rebuilder.key:
        return None
    if stored.get("index") != index or not _outcomes_shape_holds(stored):
        return None
    try:
        return _rebuild(rebuilder, index, stored)
    except (NotStored, TrialsieveError):
        return None


_OUTCOMES_FIELDS = {
    "digests": dict,
    "headings": str,
    "requirements": list,
    "settling": list,
    "patients": list,
    "problems": list,
}
_PATIENT_FIELDS = {"id": str, "reference": str, "problems": list, "parts": dict}
_PATIENT_NULLABLE_FIELDS = ("preview", "settled_by", "newest", "file")


def _outcomes_shape_holds(stored: dict[str, Any]) -> bool:
    """Whether an outcomes file with the run's key has the fields `_rebuild` reads, of their
    JSON types (one a crash left cut short is not JSON at all; this is for one edited by
    hand): else the partition is evaluated from the input."""
    if any(type(stored.get(name)) is not kind for name, kind in _OUTCOMES_FIELDS.items()):
        return False
    for entry in stored["patients"]:
        if type(entry) is not dict:
            return False
        if any(type(entry.get(name)) is not kind for name, kind in _PATIENT_FIELDS.items()):
            return False
        for name in _PATIENT_NULLABLE_FIELDS:
            value = entry.get(name, 0)
            if value is not None and type(value) is not str:
                return False
        computed = entry.get("computed")
        if computed is not None and type(computed) is not dict:
            return False
        vital = entry.get("vital")
        if vital is not None and (
            type(vital) is not list
            or len(vital) != 2
            or type(vital[0]) is not str
            or type(vital[1]) is not bool
        ):
            return False
    return all(type(problem) is str for problem in stored["problems"])


def write_rebuilt(results_folder: Path, result: Rebuilt) -> None:
    """Write a rebuilt partition's files (`write_result`); an unchanged result file is the
    earlier one, moved back from the store (verified by `patient_lines` as it was read)."""
    if not result.unchanged:
        write_result(results_folder, result)
        return
    assert result.stored is not None
    result.stored.write(results_folder)
    index = result.outcome.index
    os.replace(previous_result_path(results_folder, index), result_path(results_folder, index))


def rebuild_partitions(rebuilder: Rebuilder, indexes: list[int], workers: int = 1) -> list[int]:
    """Rebuild and write what partitions the store can (`rebuild_partition`,
    `write_rebuilt`); the indexes left to evaluate from the input.

    With two `workers` or more and enough to do (`FORK_OUTCOMES_BYTES` of stored
    outcomes), half of them (by outcomes size) are rebuilt in a process forked for it, which
    writes their files and ends, while this process rebuilds the other half
    (`_rebuild_in_child`). A child that dies leaves its partitions to be evaluated from the
    input; an error its rebuild raised is raised here, as it would be in this process."""
    sizes = {index: _outcomes_size(rebuilder, index) for index in indexes}
    if (
        workers < 2
        or len(indexes) < 2
        or sum(sizes.values()) < FORK_OUTCOMES_BYTES
        or not fork_is_safe()
    ):
        return _rebuild_here(rebuilder, indexes)
    mine: list[int] = []
    theirs: list[int] = []
    loads = [0, 0]
    for index in sorted(indexes, key=sizes.__getitem__, reverse=True):
        half = 0 if loads[0] <= loads[1] else 1
        (mine, theirs)[half].append(index)
        loads[half] += sizes[index]
    read_end, write_end = os.pipe()
    evaluated_before = rebuilder.evaluated
    child = os.fork()
    if child == 0:  # pragma: no cover (the child ends with os._exit: coverage cannot see it)
        os.close(read_end)
        _rebuild_in_child(rebuilder, theirs, write_end)
    os.close(write_end)
    try:
        left = _rebuild_here(rebuilder, mine)
    finally:
        with os.fdopen(read_end, "rb") as reply:
            message = reply.read()
        os.waitpid(child, 0)
    try:
        outcome, theirs_left, evaluated = pickle.loads(message)
    except Exception:  # the child died before it could answer: evaluate its partitions anew
        return sorted(left + theirs)
    if outcome == "error":
        raise theirs_left
    rebuilder.evaluated += evaluated - evaluated_before
    return sorted(left + theirs_left)


FORK_OUTCOMES_BYTES = 4 << 20
"""Stored outcomes (bytes) above which a re-run rebuilds partitions in two processes: each
process pays 15-20 ms of CPU for the pages it writes that the fork shared (copy on write,
about 2,500 faults each at 10x), so the fork pays for rebuilds that evaluate much (DAPA-CKD
at 10x: 5.1 MB of outcomes, 1,420 eGFR evaluations, 123-135 ms of CPU in one process
against 69-85 ms in each of two), not for one that evaluates nothing (NCT05315778 by
default at 10x: 3.2 MB, 40-45 ms in one process against 31-40 ms in each of two). Still
so with the eGFR's values stored (the DAPA-CKD re-run's wall time 0.38-0.41 s with one
worker, 0.22-0.23 s with two)."""


def _outcomes_size(rebuilder: Rebuilder, index: int) -> int:
    try:
        return outcomes_path(rebuilder.results_folder, index).stat().st_size
    except OSError:
        return 0


def _rebuild_here(rebuilder: Rebuilder, indexes: list[int]) -> list[int]:
    left = []
    for index in indexes:
        result = rebuild_partition(rebuilder, index)
        if result is None:
            left.append(index)
        else:
            write_rebuilt(rebuilder.results_folder, result)
    rebuilder.save_shapes()
    return left


def _rebuild_in_child(rebuilder: Rebuilder, indexes: list[int], pipe: int) -> NoReturn:
    """In the forked process: rebuild and write these partitions, send back which are left
    and the evaluations done (or the error raised), and end without running any exit
    handler of the parent's."""
    code = 0
    try:
        try:
            message = pickle.dumps(("done", _rebuild_here(rebuilder, indexes), rebuilder.evaluated))
        except BaseException as error:
            code = 1
            try:
                message = pickle.dumps(("error", error, 0))
            except Exception:
                message = pickle.dumps(("error", RuntimeError(repr(error)), 0))
        with os.fdopen(pipe, "wb") as reply:
            reply.write(message)
    finally:
        os._exit(code)


def _rebuild(rebuilder: Rebuilder, index: int, stored: dict[str, Any]) -> Rebuilt:
    criteria = rebuilder.criteria
    prefilter = rebuilder.prefilter
    digests = rebuilder.digests
    evaluable = prefilter.evaluable
    requirements = [str(requirement) for requirement in prefilter.requirements]
    settling = [str(requirement) for requirement in prefilter.settling]
    same_requirements = stored["requirements"] == requirements
    same_settling = stored["settling"] == settling
    settling_by_id = {requirement.criterion_id: requirement for requirement in prefilter.settling}
    earlier_digests: dict[str, str] = stored["digests"]
    # criteria whose stored part is another definition's: compare to keep a patient's line
    edited = [
        (digests[compiled.id], earlier_digests[compiled.id])
        for compiled in criteria.criteria
        if earlier_digests.get(compiled.id, digests[compiled.id]) != digests[compiled.id]
    ]
    earlier = _previous_result(rebuilder, index, stored)
    # a patient keeps their line only when the criteria's headings are the same too
    previous = earlier.lines if stored["headings"] == rebuilder.headings else {}
    shapes = _KnownShapes(rebuilder, earlier.lines)
    records: RecordStore | None = None
    lines: list[Line] = []
    kept = 0  # patients keeping their earlier line
    ordered = rebuilder.ordered
    computation_keys = rebuilder.computation_keys
    try:
        for entry in stored["patients"]:
            patient_id: str = entry["id"]
            preview: str | None = entry["preview"]
            parts: dict[str, Any] = entry["parts"]
            wanted = [compiled for compiled, digest in ordered if digest not in parts]
            if wanted and preview is not None:
                wanted = [
                    compiled
                    for compiled in wanted
                    if compiled.id in evaluable or compiled.id == preview
                ]
            record = None
            if wanted or not same_requirements or not same_settling:
                if records is None:
                    records = RecordStore(
                        records_path(rebuilder.results_folder, index), stored.get("records_sha256")
                    )
                record = records.record(
                    patient_id, "stored record", preview is not None, entry["reference"]
                )
            settled_by: str | None = entry["settled_by"]
            requirement: RequiredConcept | None = None
            if preview is not None:
                requirement = settling_by_id.get(preview)
                if requirement is None:
                    raise NotStored(f"Patient/{patient_id} was settled by another requirement")
            if record is not None and not same_settling and not rebuilder.full:
                now = prefilter.settle(record) if prefilter.settling else None
                if (None if now is None else now.criterion_id) != preview:
                    raise NotStored(f"the pre-filter settles Patient/{patient_id} otherwise now")
            if record is not None and not same_requirements and preview is None:
                settled_by = prefilter.settling_criterion(record)
            new_parts = {digest: parts[digest] for _compiled, digest in ordered if digest in parts}
            made: dict[str, CriterionReport] = {}  # the parts evaluated now, by digest
            if wanted:
                assert record is not None
                answers = rebuilder.attestations.get(patient_id) or {}
                context = EvaluationContext(
                    record,
                    rebuilder.as_of,
                    answers,
                    criteria.terminology,
                    unavailable_types=criteria.unavailable_types,
                    # the stored dict, added to in place, or None (`_outcomes_shape_holds`)
                    computed_values=entry.get("computed"),
                )
                for compiled in wanted:
                    outcome: Outcome
                    if compiled.id == preview and compiled.id not in evaluable:
                        assert requirement is not None
                        outcome = prefilter.settled_outcome(
                            criteria, record, rebuilder.as_of, requirement, answers
                        )
                    else:
                        outcome = compiled.root.evaluate(context)
                    rebuilder.evaluated += 1
                    # as a fresh run makes the part (`report_of`): once per shared outcome
                    part = criterion_report_of(
                        criterion_result(compiled, outcome), rebuilder.as_of, criteria.terminology
                    )
                    digest = digests[compiled.id]
                    made[digest] = part
                    new_parts[digest] = encode_part(part)
                if context.computed_values:  # with what the formulas found now
                    entry["computed"] = context.computed_values
            computed = entry.get("computed")
            if computed is not None and not computation_keys.issuperset(computed):
                current = {key: value for key, value in computed.items() if key in computation_keys}
                if current:
                    entry["computed"] = current
                else:
                    del entry["computed"]
            if settled_by is not None and preview is None:
                _check_settled(criteria, digests, new_parts, settled_by, patient_id)
            line = previous.get(patient_id)
            if (
                line is None
                or settled_by != entry["settled_by"]
                or any(new_parts.get(now) != parts.get(before) for now, before in edited)
            ):
                line = _result_line(rebuilder, entry, new_parts, made, preview, settled_by, shapes)
            else:
                kept += 1
            entry["parts"] = new_parts
            entry["settled_by"] = settled_by
            lines.append(line)
    finally:
        if records is not None:
            records.close()
    problems = [line.encode() for line in stored["problems"]]
    unchanged = kept == len(lines) and earlier.holds(lines, problems)
    if unchanged:
        data = earlier.data
    else:  # the kept lines are slices of the earlier file: copied only now
        data = result_data([bytes(line) for line in lines] + problems, len(lines), len(problems))
    stored |= {
        "result_sha256": complete_digest(data),
        "digests": digests,
        "headings": rebuilder.headings,
        "requirements": requirements,
        "settling": settling,
    }
    # the records stay as they are: only the outcomes file is written again
    keep = StoredPartition(index, orjson.dumps(stored), None)
    done = PartitionOutcome(index, len(lines), len(problems), 0.0)
    return Rebuilt(done, data, keep, unchanged)


def _result_line(
    rebuilder: Rebuilder,
    entry: dict[str, Any],
    parts: dict[str, Any],
    made: dict[str, CriterionReport],
    preview: str | None,
    settled_by: str | None,
    shapes: _KnownShapes,
) -> bytes:
    """The patient's result line from their parts: those evaluated now (`made`) as they
    are, the stored ones decoded."""
    criteria = rebuilder.criteria
    evaluable = rebuilder.prefilter.evaluable
    report_parts = []
    for compiled in criteria.criteria:
        digest = rebuilder.digests[compiled.id]
        part = made.get(digest)
        if part is not None:
            report_parts.append(part)
            continue
        known = parts.get(digest)
        if known is not None:
            report_parts.append(decode_part(known))
        else:  # a settled patient, on a criterion their preview cannot answer
            assert preview is not None and compiled.id not in evaluable
            report_parts.append(NOT_EVALUATED_REPORT)
    newest = entry["newest"]
    vital = entry.get("vital")  # (absent from a store written before it was kept)
    report = PatientReport(
        criteria,
        entry["id"],
        entry["reference"],
        rebuilder.as_of,
        tuple(report_parts),
        tuple(entry["problems"]),
        None if newest is None else dt.date.fromisoformat(newest),
        None if vital is None else VitalStatus(vital[0], vital[1]),
    )
    return report_result_line(report, settled_by, rebuilder.study, shapes, entry["file"])


Line = bytes | memoryview
"""A result line: made now, or a slice of the earlier result file (`PreviousResult`)."""


@dataclass(frozen=True)
class PreviousResult:
    """The result file a store's outcomes were written with (`patient_lines`)."""

    data: bytes = b""
    lines: dict[str, Line] = field(default_factory=dict)
    """Its patients' lines, by patient id (slices of `data`, not copies)."""
    ordered: list[Line] = field(default_factory=list)
    """Every line before the `complete` one, in file order (the same slices)."""

    def holds(self, lines: list[Line], problems: list[bytes]) -> bool:
        """Whether these lines, then these problems, are this file's lines: each patient's
        line is the earlier one itself (`is`), in the earlier order. Never for no file."""
        ordered = self.ordered
        if not self.data or len(ordered) != len(lines) + len(problems):
            return False
        return all(map(operator.is_, lines, ordered)) and ordered[len(lines) :] == problems


def _previous_result(rebuilder: Rebuilder, index: int, stored: dict[str, Any]) -> PreviousResult:
    try:
        data = previous_result_path(rebuilder.results_folder, index).read_bytes()
    except OSError:
        return PreviousResult()
    return patient_lines(data, stored.get("result_sha256"))


def patient_lines(data: bytes, digest: object) -> PreviousResult:
    """A partition result file's lines, when its `complete` line gives `digest` and the
    lines before it match that digest; else none.

    The lines are memoryview slices of `data`: a partition whose patients all keep their
    line is moved back whole (`write_rebuilt`), so copying its lines (`bytes.split`: 30 MB
    for NCT05315778 `--full` at 10x) would be for nothing; a partition written anew copies
    them when it joins them (`_rebuild`)."""
    if digest is None or verified_digest(data) != digest:
        return PreviousResult()  # another file, or a block a machine crash left unwritten
    end = data.rfind(b"\n", 0, len(data) - 1) + 1  # where the `complete` line starts
    view = memoryview(data)
    find, startswith = data.find, data.startswith
    ordered: list[Line] = []
    lines: dict[str, Line] = {}
    start = 0
    while start < end:
        stop = find(b"\n", start, end)  # found: the line before `complete` ends with one
        line = view[start:stop]
        ordered.append(line)
        if startswith(_PATIENT_TEXT, start):
            # the id's JSON text is the id, unless it holds an escape (then it is parsed)
            id_start = start + len(_PATIENT_TEXT)
            text = data[id_start : data.index(b'"', id_start, stop)]
            if b"\\" not in text:
                lines[text.decode()] = line
                start = stop + 1
                continue
        if startswith(b'{"patient":', start):
            lines[orjson.loads(view[start : data.index(b"\t", start, stop)])["patient"]] = line
        start = stop + 1
    return PreviousResult(data, lines, ordered)


_PATIENT_TEXT = b'{"patient":"'


class _KnownShapes(OutputShapes):
    """Validation of a partition's result lines made anew: a shape validated before (in this
    process, or by an earlier run: `Rebuilder.output_shapes`) is valid; so is the shape of a
    line the earlier run wrote in this partition (each validated, or of a shape validated,
    before it was written), read only when a shape is none of the former (with no shapes
    cache, or after a change of trialsieve or its models); any other is validated."""

    def __init__(self, rebuilder: Rebuilder, previous: dict[str, Line]) -> None:
        super().__init__()
        self._rebuilder = rebuilder
        self._previous = previous
        self._earlier: set[Shape] | None = None

    def _known(self, shape: Shape) -> bool:
        if self._rebuilder.output_shapes().knows(shape):
            return True
        if self._earlier is None:
            self._earlier = set()
            self._rebuilder.lines_shaped += 1
            for line in self._previous.values():
                _summary, subject, issue = bytes(line).split(b"\t")
                self._earlier.add(output_shape(orjson.loads(subject)))
                self._earlier.add(output_shape(orjson.loads(issue)))
        return shape in self._earlier

    def validate(self, resource: dict[str, Any]) -> None:
        if not self._known(output_shape(resource)):
            self._rebuilder.output_shapes().validate(resource)

    def validate_json(self, text: bytes, shape: Shape) -> None:
        if not self._known(shape):
            self._rebuilder.output_shapes().validate_json(text, shape)


def _check_settled(
    criteria: CompiledCriteria,
    digests: dict[str, str],
    parts: dict[str, Any],
    settled_by: str,
    patient_id: str,
) -> None:
    """The evaluation must agree with the pre-filter (as `partition._check_settled`)."""
    verdict = parts[digests[settled_by]][0]
    if verdict != CriterionVerdict.FAILS.value:
        raise RuntimeError(
            f"pre-filter bug: Patient/{patient_id} was settled by {settled_by}, "
            f"but its verdict is {verdict}"
        )
