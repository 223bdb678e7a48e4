"""Build the FHIR R4 resources that carry a patient's screening result.

Pure functions from a `PatientEvaluation` to plain dicts: a ResearchSubject (the patient's
status for the study), a DetectedIssue (what excludes, what is missing, what a person must
check, with the evidence), and the transaction Bundle that writes both idempotently. Ids and
identifiers are derived from trial and patient, so a re-run updates instead of duplicating.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import html
import re
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from operator import attrgetter, is_
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import orjson

from engine import __version__
from engine.criteria.model import CriterionKind, Trial
from engine.dataclass_init import cached_attribute, direct_init
from engine.evaluate.compile import CompiledCriteria, CompiledCriterion
from engine.evaluate.outcome import Outcome
from engine.evaluate.patient import (
    CLEAR,
    CriterionResult,
    CriterionVerdict,
    PatientEvaluation,
    SubjectStatus,
    VitalStatus,
    status_given_vital,
    status_of_verdicts,
)
from engine.evaluate.status import TRIALSIEVE_IDENTIFIER_SYSTEM
from engine.normalise import Terminology
from engine.report.explanation import (
    NOT_EVALUATED_SUMMARY,
    CriterionExplanation,
    OutcomeMemo,
    cites_nothing,
    criterion_label,
    criterion_summary,
    outcome_text,
    remembered,
)
from engine.report.validate import (
    Shape,
    StringFit,
    fhir_text,
    fits_fhir_string,
    has_refused_whitespace,
    output_shape,
)
from engine.sources.references import FHIR_ID, is_fhir_id

RESEARCH_SUBJECT_SYSTEM = f"{TRIALSIEVE_IDENTIFIER_SYSTEM}/research-subject"
DETECTED_ISSUE_SYSTEM = f"{TRIALSIEVE_IDENTIFIER_SYSTEM}/detected-issue"
CRITERIA_CODE_SYSTEM = "https://trialsieve.org/fhir/CodeSystem/criteria"
ISSUE_CODE_SYSTEM = "https://trialsieve.org/fhir/CodeSystem/detected-issue"
DEVICE_ID = "trialsieve"
NOT_EVALUATED_REASON = (
    "the cohort pre-filter found the patient ineligible from their diagnoses and procedures "
    "alone, so the criteria that read other data were not evaluated"
)

_SEVERITY = {
    SubjectStatus.INELIGIBLE: "high",
    SubjectStatus.POTENTIAL_CANDIDATE: "moderate",
    SubjectStatus.CANDIDATE: "low",
    SubjectStatus.ELIGIBLE: "low",
}


def deterministic_id(*parts: str) -> str:
    """A stable UUID (v5) from the given parts: the same inputs always give the same id.

    `str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts)))` (RFC 9562 5.5: the SHA-1 of the
    namespace's bytes and the name, its first 16 bytes with the version and variant bits
    set), written out from the digest: uuid5 builds an integer and a UUID object to format,
    a third of the cost of a cohort patient's two ids (a test compares both). The namespace's
    bytes are hashed once: each id continues a copy of that hash with its name (the SHA-1
    of the two joined), 0.94 us against 1.51 for a new hash of both."""
    hasher = _URL_NAMESPACE_SHA1.copy()
    hasher.update("|".join(parts).encode())
    digest = hasher.digest()
    text = digest[:16].hex()
    variant = (digest[8] & 0x3F) | 0x80
    return f"{text[:8]}-{text[8:12]}-5{text[13:16]}-{variant:02x}{text[18:20]}-{text[20:]}"


_URL_NAMESPACE_SHA1 = hashlib.sha1(uuid.NAMESPACE_URL.bytes)
"""The SHA-1 of the URL namespace's bytes, continued (copied) by every `deterministic_id`."""
DETERMINISTIC_ID_SHAPE = output_shape(deterministic_id(), "id")
"""`output_shape` of every `deterministic_id` as an `id`: a UUID's text (36 lower-case hex
digits and hyphens) always fits the FHIR id pattern (a test checks ids of many names)."""


def subject_identifier_value(trial: Trial, patient_id: str) -> str:
    return f"{trial.id}/{patient_id}"


def research_study_id(trial: Trial) -> str:
    return deterministic_id(trial.identifier_system, trial.id)


def research_subject(evaluation: PatientEvaluation, study_reference: str) -> dict[str, Any]:
    """The ResearchSubject: the patient's screening status for the study."""
    return _research_subject(
        evaluation.criteria.trial,
        evaluation.patient_id,
        evaluation.patient_reference,
        evaluation.status,
        study_reference,
    )


def research_subject_of(report: PatientReport, study_reference: str) -> dict[str, Any]:
    """`research_subject` from a patient's report parts."""
    return _research_subject(
        report.criteria.trial,
        report.patient_id,
        report.patient_reference,
        report.status,
        study_reference,
    )


def research_subject_json(report: PatientReport, study_reference: str) -> ShapedJson:
    """`research_subject_of` as JSON text, with its `output_shape`, made from the same
    members (the study's made and shaped once per trial and reference)."""
    members = _research_subject_members(
        report.criteria.trial,
        report.patient_id,
        report.patient_reference,
        report.status,
        study_reference,
    )
    subject: dict[str, Any] = {}
    shapes: list[tuple[str, Shape]] = []
    for key, member, member_shape in members:  # one loop, not two comprehensions (frames)
        subject[key] = member
        shapes.append((key, member_shape))
    shape = tuple(shapes)
    known = _subject_shapes.get(shape)
    if known is None:
        if len(_subject_shapes) >= 1024:
            _subject_shapes.clear()
        known = _subject_shapes[shape] = shape
    return ShapedJson(orjson.dumps(subject), known)


_subject_shapes: dict[Shape, Shape] = {}
"""One object per ResearchSubject shape (a few in a cohort), which
`OutputShapes.validate_json` knows by identity."""


def _research_subject(
    trial: Trial,
    patient_id: str,
    patient_reference: str,
    status: SubjectStatus,
    study_reference: str,
) -> dict[str, Any]:
    members = _research_subject_members(
        trial, patient_id, patient_reference, status, study_reference
    )
    subject = {key: member for key, member, _shape in members}
    study = subject["study"]  # shared by every patient: each resource gets its own copy
    subject["study"] = {**study, "identifier": {**study["identifier"]}}
    return subject


def _research_subject_members(
    trial: Trial,
    patient_id: str,
    patient_reference: str,
    status: SubjectStatus,
    study_reference: str,
) -> list[tuple[str, Any, Shape]]:
    """The ResearchSubject's members in order, each with its `output_shape`."""
    value = subject_identifier_value(trial, patient_id)
    subject_id = deterministic_id(RESEARCH_SUBJECT_SYSTEM, value)
    study, study_shape = _study_member(trial, study_reference)
    return [
        ("resourceType", "ResearchSubject", _SUBJECT_TYPE_SHAPE),
        ("id", subject_id, DETERMINISTIC_ID_SHAPE),
        (
            "identifier",
            [{"system": RESEARCH_SUBJECT_SYSTEM, "value": value}],
            _SUBJECT_IDENTIFIER_SHAPES[fits_fhir_string(value)],
        ),
        ("status", _STATUS_VALUES[status], _STATUS_SHAPES[status]),
        ("study", study, study_shape),
        ("individual", *_reference_member(patient_reference)),
    ]


# The members' shapes that do not depend on the patient, made once (a ResearchSubject's
# shape is then found among those met before mostly by the identity of its pieces)
_SUBJECT_TYPE_SHAPE = ("s", "ResearchSubject")
_SUBJECT_IDENTIFIER_SHAPES = {
    fits: ("[]", (("system", ("s", RESEARCH_SUBJECT_SYSTEM)), ("value", ("s", fits))))
    for fits in (None, False, True)
}
"""`("[]", _system_value_shape(RESEARCH_SUBJECT_SYSTEM, value))` by whether the value fits."""
_STATUS_VALUES = {status: status.value for status in SubjectStatus}
_STATUS_SHAPES = {status: ("s", status.value) for status in SubjectStatus}


_study_members: dict[tuple[int, str], tuple[Trial, dict[str, Any], Shape]] = {}


def _study_member(trial: Trial, study_reference: str) -> tuple[dict[str, Any], Shape]:
    """A ResearchSubject's `study` and its `output_shape`, made once per trial and reference
    (the same objects for every patient: not to be changed)."""
    key = (id(trial), study_reference)
    known = _study_members.get(key)
    if known is None or known[0] is not trial:
        study = {
            "reference": study_reference,
            "identifier": {"system": trial.identifier_system, "value": trial.id},
            "display": fhir_text(trial.title),
        }
        if len(_study_members) >= 64:
            _study_members.clear()
        known = _study_members[key] = (trial, study, output_shape(study, "study"))
    return known[1], known[2]


def research_study(trial: Trial) -> dict[str, Any]:
    """A minimal ResearchStudy identified by the registry id (created only if absent)."""
    return {
        "resourceType": "ResearchStudy",
        "id": research_study_id(trial),
        "identifier": [{"system": trial.identifier_system, "value": trial.id}],
        "title": fhir_text(trial.title),
        "status": "active",
    }


@direct_init
@dataclass(frozen=True)
class CriterionReport:
    """What a patient's report shows of one criterion: its verdict (None: not evaluated, a
    cohort pre-filter settled the patient), the explanation's summary in clinical language,
    the evidence references and the missing items (for cohort.csv).

    A cohort run stores these per patient and criterion, so a re-run after editing one
    criterion rebuilds the report without evaluating the others (engine.cohort.outcome_store).
    """

    verdict: CriterionVerdict | None
    summary: str
    evidence: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


NOT_EVALUATED_REPORT = CriterionReport(None, NOT_EVALUATED_SUMMARY)
_verdict_of_part = attrgetter("verdict")


@direct_init
@dataclass(frozen=True)
class PatientReport:
    """Everything the ResearchSubject and DetectedIssue say of one patient: `parts` holds
    every criterion in protocol order (`report_of` builds it from an evaluation)."""

    criteria: CompiledCriteria
    patient_id: str
    patient_reference: str
    as_of: dt.date
    parts: tuple[CriterionReport, ...]
    data_problems: tuple[str, ...] = ()
    newest_data: dt.date | None = None
    vital: VitalStatus | None = None
    """The record says the patient died (`engine.evaluate.patient.vital_status`)."""

    @cached_attribute
    def status(self) -> SubjectStatus:
        verdicts = set(map(_verdict_of_part, self.parts))
        verdicts.discard(None)  # not evaluated
        return status_given_vital(status_of_verdicts(verdicts), self.vital)


def report_of(evaluation: PatientEvaluation) -> PatientReport:
    """The report parts of an evaluation (explained in clinical language).

    A full evaluation's results are in protocol order: they are walked beside the
    criteria, and a result met at its place by the previous patient whose part was shared
    (`criterion_result`: one result object per criterion and shared outcome) takes that
    part again (`_recent_parts`), as `criterion_report_of` would find it."""
    criteria = evaluation.criteria
    as_of = evaluation.as_of
    terminology = criteria.terminology
    compiled_criteria = criteria.criteria
    results = evaluation.results
    if len(results) != len(compiled_criteria) or not all(
        map(is_, map(_criterion_of, results), compiled_criteria)
    ):
        return _report_by_id(evaluation)
    known = _recent_parts.get(id(criteria))
    if known is None or known[0] is not criteria:
        if len(_recent_parts) >= 64:
            _recent_parts.clear()
        known = _recent_parts[id(criteria)] = (criteria, [_NO_RECENT_PART] * len(results))
    recent = known[1]
    parts = []
    for place, result in enumerate(results):
        last = recent[place]
        if last[0] is result and last[1] == as_of:
            parts.append(last[2])
            continue
        part = criterion_report_of(result, as_of, terminology)
        if is_shared(part):
            recent[place] = (result, as_of, part)
        parts.append(part)
    return _patient_report(evaluation, parts)


def _patient_report(evaluation: PatientEvaluation, parts: list[CriterionReport]) -> PatientReport:
    """The patient's report of these parts, one per criterion in protocol order."""
    return PatientReport(
        evaluation.criteria,
        evaluation.patient_id,
        evaluation.patient_reference,
        evaluation.as_of,
        tuple(parts),
        tuple(map(fhir_text, evaluation.data_problems)),
        evaluation.newest_data,
        evaluation.vital,
    )


_criterion_of = attrgetter("criterion")
_NO_RECENT_PART: tuple[object, dt.date | None, CriterionReport] = (
    object(),
    None,
    NOT_EVALUATED_REPORT,
)
_recent_parts: dict[
    int, tuple[CompiledCriteria, list[tuple[object, dt.date | None, CriterionReport]]]
] = {}
"""Per compiled criteria (kept to check identity), the result last met at each criterion's
place whose part is shared (`is_shared`), with its day and part."""


def _report_by_id(evaluation: PatientEvaluation) -> PatientReport:
    """`report_of` of an evaluation whose results are not every criterion's in protocol
    order (a pre-filter left some out): each criterion's result found by its id."""
    results = {result.criterion.id: result for result in evaluation.results}
    as_of = evaluation.as_of
    terminology = evaluation.criteria.terminology
    parts = []
    for compiled in evaluation.criteria.criteria:
        result = results.get(compiled.id)
        if result is None:
            parts.append(NOT_EVALUATED_REPORT)
        else:
            parts.append(criterion_report_of(result, as_of, terminology))
    return _patient_report(evaluation, parts)


def criterion_report(result: CriterionResult, explained: CriterionExplanation) -> CriterionReport:
    """One evaluated criterion's report part."""
    outcome = result.outcome
    return CriterionReport(result.verdict, explained.summary, outcome.evidence, outcome.missing)


_uncited_parts: dict[
    tuple[int, dt.date, int, Outcome], tuple[CompiledCriterion, Terminology, CriterionReport]
] = {}
"""Report parts of outcomes citing nothing, anywhere in their tree (most criteria, for most
patients), by compiled criterion, day, terminology and outcome: as the explanations of such
outcomes (`engine.report.explanation._uncited_criteria`), the part is the same for every
patient with an equal outcome."""
_PARTS_LIMIT = 4096
_parts_by_outcome: OutcomeMemo[CriterionReport] = OutcomeMemo(_PARTS_LIMIT)
"""The same parts by the outcome object itself (and its compiled criterion): an outcome
shared by every patient (`engine.evaluate.outcome.shared`) is found without hashing its
tree."""
_shared_parts: dict[int, CriterionReport] = {}
"""The parts `criterion_report_of` keeps for outcomes citing nothing (by id, kept to check
identity): each is the part of many patients (`_pieces`)."""


def keep_shared(part: CriterionReport) -> None:
    """Mark `part` as the part of many patients (it is kept until the mark is dropped):
    what is made of it (`_pieces`, the re-run store's encoding) is made once."""
    if _shared_parts.get(id(part)) is not part:
        if len(_shared_parts) >= _PARTS_LIMIT:
            _shared_parts.clear()
        _shared_parts[id(part)] = part


def is_shared(part: CriterionReport) -> bool:
    """Whether `part` is marked as the part of many patients (`keep_shared`)."""
    return part is NOT_EVALUATED_REPORT or _shared_parts.get(id(part)) is part


JsonValue = TypeVar("JsonValue")

_shared_texts: dict[tuple[int, Hashable], tuple[CriterionReport, orjson.Fragment]] = {}
"""`shared_json`'s texts, by part (its id; the part kept to check identity) and use."""


def shared_json(
    part: CriterionReport, use: Hashable, make: Callable[..., JsonValue], *arguments: Any
) -> JsonValue | orjson.Fragment:
    """`make(*arguments)`, the JSON value made of `part` for `use` (a summary cell, a store
    encoding); for a part of many patients (`is_shared`) its JSON text instead, an
    `orjson.Fragment` made once per part and use. The arguments are passed rather than a
    closure: a function whose closure reads its locals makes a cell of each at every call."""
    key = (id(part), use)
    known = _shared_texts.get(key)
    if known is not None and known[0] is part:
        return known[1]
    value = make(*arguments)
    if not is_shared(part):
        return value
    text = orjson.Fragment(orjson.dumps(value))
    if len(_shared_texts) >= _PARTS_LIMIT:
        _shared_texts.clear()
    _shared_texts[key] = (part, text)
    return text


def criterion_report_of(
    result: CriterionResult, as_of: dt.date, terminology: Terminology
) -> CriterionReport:
    """`criterion_report(result, explain_criterion(result, as_of, terminology))`, building
    only what the part holds (`criterion_summary`), and once per equal outcome for outcomes
    citing nothing."""
    outcome = result.outcome
    compiled = result.criterion
    known = _parts_by_outcome.get(outcome, compiled, as_of, terminology)
    if known is not None:
        return known
    if not cites_nothing(outcome):
        summary = criterion_summary(result, as_of, terminology, cites=True)
        return CriterionReport(result.verdict, summary, outcome.evidence, outcome.missing)
    return _uncited_part(result, as_of, terminology)


def _uncited_part(
    result: CriterionResult, as_of: dt.date, terminology: Terminology
) -> CriterionReport:
    """`criterion_report_of` of an outcome citing nothing (apart, so that the parts citing
    something make no closure cells)."""
    outcome = result.outcome
    compiled = result.criterion
    part = remembered(
        _uncited_parts,
        (id(compiled), as_of, id(terminology), outcome),
        compiled,
        terminology,
        lambda: CriterionReport(
            result.verdict,
            criterion_summary(result, as_of, terminology),
            outcome.evidence,
            outcome.missing,
        ),
    )
    keep_shared(part)
    _parts_by_outcome.keep(outcome, compiled, as_of, terminology, part)
    return part


@dataclass(frozen=True)
class CriterionHeading:
    """A criterion as every report names it: number (I1, E2), label, protocol text."""

    id: str
    kind: CriterionKind
    number: str
    label: str
    display: str


_headings: dict[int, tuple[CompiledCriteria, tuple[CriterionHeading, ...]]] = {}


def criterion_headings(criteria: CompiledCriteria) -> tuple[CriterionHeading, ...]:
    """Each criterion's heading in protocol order (computed once per compiled criteria)."""
    known = _headings.get(id(criteria))
    if known is not None and known[0] is criteria:
        return known[1]
    numbers = {CriterionKind.INCLUSION: 0, CriterionKind.EXCLUSION: 0}
    headings = []
    for compiled in criteria.criteria:
        numbers[compiled.kind] += 1
        criterion = compiled.criterion
        headings.append(
            CriterionHeading(
                compiled.id,
                compiled.kind,
                f"{compiled.kind.value[0].upper()}{numbers[compiled.kind]}",
                fhir_text(criterion_label(criterion.expression, criterion.id)),
                fhir_text(_shorten(criterion.text, 250)),
            )
        )
    if len(_headings) >= 64:
        _headings.clear()
    _headings[id(criteria)] = (criteria, tuple(headings))
    return tuple(headings)


def detected_issue(evaluation: PatientEvaluation) -> dict[str, Any]:
    """The DetectedIssue: every criterion that is not clear, with its evidence, and a table."""
    return detected_issue_of(report_of(evaluation))


def detected_issue_of(report: PatientReport) -> dict[str, Any]:
    """`detected_issue` from a patient's report parts."""
    issue: dict[str, Any] = orjson.loads(detected_issue_json(report).text)
    return issue


class ShapedJson(NamedTuple):
    """A generated resource's JSON text (as `orjson.dumps` writes it) and its `output_shape`,
    made together from the same parts (`OutputShapes.validate_json`)."""

    text: bytes
    shape: Shape


class _PartPieces(NamedTuple):
    """What a DetectedIssue shows of one criterion's part: its row of the narrative table
    and, for a criterion not clear, its evidence entry (JSON text and `output_shape`)."""

    row: str
    row_clean: bool
    """Whether the row holds no character the FHIR string pattern refuses."""
    row_json: bytes
    """The row as the inside of a JSON string (`orjson.dumps(row)` without its quotes)."""
    entry: orjson.Fragment | None = None
    entry_shape: Shape = None
    entry_key: Hashable = None
    """What `entry_shape` is made of besides the criteria (`_pieces`): equal keys, equal
    shapes, and the other way round."""


_part_pieces: dict[tuple[int, int], tuple[CriterionReport, CriterionHeading, _PartPieces]] = {}
"""The pieces of parts shared by many patients (`_shared_parts`, `NOT_EVALUATED_REPORT`: one
part for every criterion not evaluated), by part and heading (kept to check identity): a
criterion whose outcome cites nothing shows the same row and evidence entry for every
patient with that outcome."""


def _pieces(trial: Trial, heading: CriterionHeading, part: CriterionReport) -> _PartPieces:
    """A part's narrative row and evidence entry: made once for a shared part, from texts
    made once per criterion, verdict and summary (`_texts`)."""
    shared = is_shared(part)  # only a shared part's pieces are kept
    key = (id(part), id(heading))
    if shared:
        known = _part_pieces.get(key)
        if known is not None and known[0] is part and known[1] is heading:
            return known[2]
    texts, shapes = _texts(trial, heading, part)
    if texts.code is None:
        pieces = _PartPieces(texts.row, texts.row_clean, texts.row_json)
    else:
        evidence = part.evidence
        references_fit: tuple[Shape, ...] = ()
        if evidence:
            details = [_reference_member(reference) for reference in evidence]
            entry = orjson.dumps(
                {"code": orjson.Fragment(texts.code), "detail": [member for member, _ in details]}
            )
            references_fit = tuple(dict.fromkeys(shape for _member, shape in details))
        else:
            entry = b'{"code":%b}' % texts.code
        entry_key = (heading.id, texts.text_fits, references_fit)
        shape = shapes.get(entry_key)
        if shape is None:
            shape = shapes[entry_key] = _entry_shape(texts.code_shape, references_fit)
        pieces = _PartPieces(
            texts.row, texts.row_clean, texts.row_json, orjson.Fragment(entry), shape, entry_key
        )
    if shared:
        if len(_part_pieces) >= _PARTS_LIMIT:
            _part_pieces.clear()
        _part_pieces[key] = (part, heading, pieces)
    return pieces


class _PartTexts(NamedTuple):
    """What a DetectedIssue shows of a criterion with a verdict and summary, whoever the
    patient: the narrative row (`_PartPieces`), and for a criterion not clear the evidence
    entry's `code` (JSON text and `output_shape`) and whether its text fits."""

    row: str
    row_clean: bool
    row_json: bytes
    code: bytes | None = None
    code_shape: Shape = None
    text_fits: StringFit = True


_part_texts: dict[
    int,
    tuple[
        Trial,
        CriterionHeading,
        dict[tuple[CriterionVerdict | None, str], _PartTexts],
        dict[Hashable, Shape],
    ],
] = {}
"""Per heading (the trial and heading kept to check identity), `_texts` by verdict and
summary, and the evidence entries' shapes by `_PartPieces.entry_key`."""
_TEXTS_LIMIT = 64


def _texts(
    trial: Trial, heading: CriterionHeading, part: CriterionReport
) -> tuple[_PartTexts, dict[Hashable, Shape]]:
    """The texts of `part` under `heading` (made once per verdict and summary: a criterion
    citing the patient's own resources often says the same for many of them, such as
    "Needs ..." beside a gender test), and the heading's entry shapes."""
    known = _part_texts.get(id(heading))
    if known is None or known[0] is not trial or known[1] is not heading:
        if len(_part_texts) >= 1024:
            _part_texts.clear()
        known = _part_texts[id(heading)] = (trial, heading, {}, {})
    by_summary = known[2]
    texts = by_summary.get((part.verdict, part.summary))
    if texts is None:
        texts = _make_texts(trial, heading, part)
        if len(by_summary) >= _TEXTS_LIMIT:
            by_summary.clear()
        by_summary[part.verdict, part.summary] = texts
    return texts, known[3]


def _make_texts(trial: Trial, heading: CriterionHeading, part: CriterionReport) -> _PartTexts:
    row = (
        "<tr>"
        f"<td>{_escape_label(heading.number)}</td>"
        f"<td>{_escape_label(heading.label)}</td>"
        f"<td>{_escape_label(_outcome_words(heading.kind, part.verdict))}</td>"
        f"<td>{html.escape(part.summary)}</td>"
        "</tr>"
    )
    clean = not has_refused_whitespace(row)
    row_json = orjson.dumps(row)[1:-1]
    if part.verdict is None or part.verdict is CLEAR:
        return _PartTexts(row, clean, row_json)
    code, code_shape, text_fits = _evidence_code(trial, heading, part)
    return _PartTexts(row, clean, row_json, code, code_shape, text_fits)


def _evidence_code(
    trial: Trial, heading: CriterionHeading, part: CriterionReport
) -> tuple[bytes, Shape, StringFit]:
    """A criterion's evidence entry's `code` (JSON text) and its `output_shape`, made from
    the same pieces: the criterion's coding (made and shaped once per heading) and the
    text; and whether the text fits the FHIR string pattern."""
    coding, coding_shape = _criterion_coding(trial, heading)
    text = _evidence_text(heading, part)
    text_fits = fits_fhir_string(text)
    code = orjson.dumps([{"coding": coding, "text": text}])
    return code, ("[]", (("coding", coding_shape), ("text", ("s", text_fits)))), text_fits


def _entry_shape(code_shape: Shape, references_fit: tuple[Shape, ...]) -> Shape:
    """`output_shape` of an evidence entry whose code has `code_shape` and whose distinct
    references have the shapes `references_fit` (none: no `detail`)."""
    shape: tuple[Any, ...] = (("code", code_shape),)
    if references_fit:
        shape += (("detail", ("[]", *references_fit)),)
    return shape


_NO_PART = object()
_NO_PIECES = _PartPieces("", True, b"")
_recent_pieces: dict[int, tuple[Sequence[CriterionHeading], list[tuple[object, _PartPieces]]]] = {}
"""Per criteria's headings (kept to check identity), the shared part last met at each
criterion's place, with its pieces."""


def _pieces_of(
    trial: Trial, headings: Sequence[CriterionHeading], parts: Sequence[CriterionReport]
) -> list[_PartPieces]:
    """`_pieces` of each part under its heading. Consecutive patients mostly have the same
    shared part at a criterion's place (the one part of every criterion not evaluated, an
    outcome citing nothing): the one last met there is found by identity, a third of the
    time of `_pieces`' own lookup."""
    if len(parts) != len(headings):
        raise ValueError(f"{len(parts)} report parts for {len(headings)} criteria")
    known = _recent_pieces.get(id(headings))
    if known is None or known[0] is not headings:
        if len(_recent_pieces) >= 64:
            _recent_pieces.clear()
        known = _recent_pieces[id(headings)] = (headings, [(_NO_PART, _NO_PIECES)] * len(parts))
    recent = known[1]
    pieces = []
    for place, part in enumerate(parts):
        last = recent[place]
        if last[0] is part:
            pieces.append(last[1])
            continue
        made = _pieces(trial, headings[place], part)
        if is_shared(part):
            recent[place] = (part, made)
        pieces.append(made)
    return pieces


class _IssueConstants(NamedTuple):
    """What the DetectedIssues of one compiled criteria share: the members the same for
    every patient (the device, the code, the author) as JSON fragments with their shapes,
    and the DetectedIssue's shapes by what they are made of (`detected_issue_json`)."""

    members: dict[str, tuple[orjson.Fragment, Shape]]
    shapes: dict[Hashable, Shape]


_issue_constants: dict[int, tuple[CompiledCriteria, _IssueConstants]] = {}


def _constants_of(criteria: CompiledCriteria) -> _IssueConstants:
    """The DetectedIssue's constants of `criteria`: made once per compiled criteria."""
    known = _issue_constants.get(id(criteria))
    if known is not None and known[0] is criteria:
        return known[1]
    trial = criteria.trial
    values = {
        "contained": [_device()],
        "code": {
            "coding": [
                {
                    "system": ISSUE_CODE_SYSTEM,
                    "code": "trial-eligibility",
                    "display": "Clinical trial eligibility screening",
                }
            ],
            "text": f"Eligibility for {trial.id}",
        },
        "author": {"reference": f"#{DEVICE_ID}", "display": f"trialsieve {__version__}"},
    }
    members = {
        key: (orjson.Fragment(orjson.dumps(value)), output_shape(value, key))
        for key, value in values.items()
    }
    if len(_issue_constants) >= 64:
        _issue_constants.clear()
    constants = _IssueConstants(members, {})
    _issue_constants[id(criteria)] = (criteria, constants)
    return constants


_FINAL_STATUSES = (SubjectStatus.INELIGIBLE, SubjectStatus.ELIGIBLE)
_summary_clean: dict[str, bool] = {}
"""Whether each summary line met holds no character the FHIR string pattern refuses."""


def detected_issue_json(report: PatientReport) -> ShapedJson:
    """The DetectedIssue of a patient's report parts as JSON text, with its `output_shape`:
    every criterion that is not clear, with its evidence, and a table. The rows and evidence
    entries of parts shared by many patients are made once (`_pieces`).

    The shape is made from each member's, once per key of what those are made of besides
    the criteria (the id's, identifier's and patient reference's fit, the status and
    severity, the day, the detail's and narrative's fit, the evidence entries' keys, the
    implicated references' fit): equal keys make equal shapes, so patients with the same key
    share one shape object, which `OutputShapes.validate_json` knows by identity."""
    criteria = report.criteria
    trial = criteria.trial
    parts = report.parts
    value = subject_identifier_value(trial, report.patient_id)
    status = report.status
    headings = criterion_headings(criteria)
    pieces = _pieces_of(trial, headings, parts)
    entries: list[_PartPieces] = []
    entry_texts: list[orjson.Fragment] = []
    entry_keys: dict[Hashable, None] = {}
    cited: list[str] = []
    rows_clean = True
    for part, piece in zip(parts, pieces, strict=True):  # one loop, no comprehension frames
        if piece.entry is not None:
            entries.append(piece)
            entry_texts.append(piece.entry)
            entry_keys[piece.entry_key] = None
            cited += part.evidence
        if not piece.row_clean:
            rows_clean = False
    implicated = list(dict.fromkeys(cited))
    summary = _with_vital(_summary_line(trial.id, status, headings, parts), report.vital)
    constants = _constants_of(criteria)
    members = constants.members
    patient_reference = report.patient_reference
    summary_clean = _summary_clean.get(summary)  # (a few dozen lines in a cohort)
    if summary_clean is None:
        if len(_summary_clean) >= 4096:
            _summary_clean.clear()
        summary_clean = _summary_clean[summary] = not has_refused_whitespace(summary)
    # the narrative fits the FHIR string pattern when its pieces hold no refused character
    # (its own words and tags hold none, and html.escape changes none)
    narrative_clean = (
        rows_clean and summary_clean and not any(map(has_refused_whitespace, report.data_problems))
    )
    issue_id = deterministic_id(DETECTED_ISSUE_SYSTEM, value)
    issue_status = "final" if status in _FINAL_STATUSES else "preliminary"
    severity = _SEVERITY[status]
    identified = report.as_of.isoformat()
    patient_member, patient_shape = _reference_member(patient_reference)
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": issue_id,
        "contained": members["contained"][0],
        "identifier": [{"system": DETECTED_ISSUE_SYSTEM, "value": value}],
        "status": issue_status,
        "code": members["code"][0],
        "severity": severity,
        "patient": patient_member,
        "identifiedDateTime": identified,
        "author": members["author"][0],
        "detail": summary,
        "text": orjson.Fragment(
            b'{"status":"generated","div":"%b"}' % _narrative_json(report, summary, pieces)
        ),
    }
    if entries:
        issue["evidence"] = entry_texts
    implicated_members = [_reference_member(reference) for reference in implicated]
    if implicated:
        issue["implicated"] = [member for member, _shape in implicated_members]
    key = (
        DETERMINISTIC_ID_SHAPE,
        fits_fhir_string(value),
        issue_status,
        severity,
        patient_shape,
        identified,
        bool(summary) and summary_clean,
        narrative_clean,
        tuple(entry_keys),
        tuple(dict.fromkeys(shape for _member, shape in implicated_members)),
    )
    shape = constants.shapes.get(key)
    if shape is None:
        shape = _issue_shape(issue, members, key, entries, implicated)
        if len(constants.shapes) >= 4096:
            constants.shapes.clear()
        constants.shapes[key] = shape
    return ShapedJson(orjson.dumps(issue), shape)


def _issue_shape(
    issue: dict[str, Any],
    members: dict[str, tuple[orjson.Fragment, Shape]],
    key: tuple[Any, ...],
    entries: Sequence[_PartPieces],
    implicated: Sequence[str],
) -> Shape:
    """`output_shape` of the DetectedIssue `detected_issue_json` makes, from each member's
    (`key`: what they are made of)."""
    id_shape, value_fits, _status, _severity, patient_shape = key[:5]
    shapes: dict[str, Shape] = {
        "resourceType": ("s", "DetectedIssue"),
        "id": id_shape,
        "contained": members["contained"][1],
        "identifier": (
            "[]",
            (("system", ("s", DETECTED_ISSUE_SYSTEM)), ("value", ("s", value_fits))),
        ),
        "status": ("s", issue["status"]),
        "code": members["code"][1],
        "severity": ("s", fits_fhir_string(issue["severity"])),
        "patient": patient_shape,
        "identifiedDateTime": output_shape(issue["identifiedDateTime"], "identifiedDateTime"),
        "author": members["author"][1],
        "detail": ("s", key[6]),
        "text": (("status", ("s", "generated")), ("div", ("s", key[7]))),
    }
    if entries:
        shapes["evidence"] = ("[]", *dict.fromkeys(piece.entry_shape for piece in entries))
    if implicated:
        shapes["implicated"] = ("[]", *key[9])
    return tuple((name, shapes[name]) for name in issue)


def _reference_member(label: str) -> tuple[dict[str, str], Shape]:
    """How a report refers to a resource of the record it names by `label`
    (`PatientRecord.label`), with its `output_shape`: `{"reference": label}` when the label
    is a reference FHIR allows (a relative or absolute reference naming a FHIR id, a
    `urn:uuid:` or `urn:oid:`, with no white space or control character), else the label as
    the reference's display: a resource without an id is labelled by its position
    (`Observation#6`), and an NDJSON line's id or a Bundle entry's fullUrl may be no FHIR id
    or URI (`Observation/obs id with spaces`), which a `reference` may not hold."""
    if _is_reference(label):
        return {"reference": label}, _REFERENCE_SHAPES[fits_fhir_string(label)]
    display = f"{fhir_text(label).strip()} (no FHIR reference to it)".lstrip()
    return {"display": display}, (("display", ("s", fits_fhir_string(display))),)


def _is_reference(label: str) -> bool:
    """Whether `label` is a reference FHIR allows, naming the resource it labels (see
    `_reference_member`): the whole label, `Type/id` with a FHIR id, the same after an
    absolute base (a fullUrl, `/_history/<version>` allowed), or a uuid or oid URN. A
    label ending as a reference does not make one (an id `abc/_history/2` would name version
    2 of `Observation/abc`)."""
    if not label.isprintable() or " " in label:
        return False
    if label.startswith("urn:"):
        return _URN.fullmatch(label) is not None
    found = _RELATIVE.fullmatch(label) or _ABSOLUTE.fullmatch(label)
    return found is not None and is_fhir_id(found["id"])


_URN = re.compile(
    r"urn:uuid:[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|urn:oid:[0-2](\.(0|[1-9][0-9]*))+"
)
"""FHIR's `uuid` and `oid` URNs."""
_RELATIVE = re.compile(rf"[A-Z][A-Za-z]*/(?P<id>{FHIR_ID.pattern})")
_ABSOLUTE = re.compile(
    rf"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s]+(/[^\s]*)?/[A-Z][A-Za-z]*/(?P<id>{FHIR_ID.pattern})"
    rf"(/_history/{FHIR_ID.pattern})?"
)


_REFERENCE_SHAPES = {fits: (("reference", ("s", fits)),) for fits in (None, False, True)}


def _system_value_shape(system: str, value: str) -> Shape:
    """`output_shape` of an identifier `{"system": system, "value": value}`."""
    return (("system", ("s", system)), ("value", ("s", fits_fhir_string(value))))


def _device() -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": DEVICE_ID,
        "deviceName": [{"name": "trialsieve", "type": "manufacturer-name"}],
        "version": [{"value": __version__}],
    }


def _evidence_text(heading: CriterionHeading, part: CriterionReport) -> str:
    assert part.verdict is not None
    return (
        f"{heading.number} {heading.label}: "
        f"{outcome_text(heading.kind, part.verdict)}. {_shorten(part.summary, 900)}"
    )


_codings: dict[int, tuple[Trial, CriterionHeading, list[dict[str, str]], Shape]] = {}


def _criterion_coding(
    trial: Trial, heading: CriterionHeading
) -> tuple[list[dict[str, str]], Shape]:
    """The coding of a criterion's evidence entry, with its `output_shape` (once per
    heading: the same in every patient's entry)."""
    known = _codings.get(id(heading))
    if known is not None and known[0] is trial and known[1] is heading:
        return known[2], known[3]
    coding = [
        {
            "system": f"{CRITERIA_CODE_SYSTEM}/{trial.id}",
            "code": heading.id,
            "display": heading.display,
        }
    ]
    shape = output_shape(coding, "coding")
    if len(_codings) >= 1024:
        _codings.clear()
    _codings[id(heading)] = (trial, heading, coding, shape)
    return coding, shape


def summary_line(evaluation: PatientEvaluation) -> str:
    """One line: the status and the criteria behind it."""
    criteria = evaluation.criteria
    verdicts = {result.id: result.verdict for result in evaluation.results}
    parts = [
        CriterionReport(verdicts[c.id], "") if c.id in verdicts else NOT_EVALUATED_REPORT
        for c in criteria.criteria
    ]
    line = _summary_line(criteria.trial.id, evaluation.status, criterion_headings(criteria), parts)
    return _with_vital(line, evaluation.vital)


def _with_vital(line: str, vital: VitalStatus | None) -> str:
    """The summary line, saying first that the record says the patient died (when it does):
    `ineligible for X: deceased on 2026-10-29 (Patient.deceasedDateTime): not a candidate;
    criteria: 2 lack data (...)`."""
    if vital is None:
        return line
    head, _, criteria = line.partition(": ")
    return f"{head}: {vital.reason}; criteria: {criteria}"


_summary_lines: dict[
    tuple[str, SubjectStatus, int, tuple[Any, ...]], tuple[Sequence[CriterionHeading], str]
] = {}


def _summary_line(
    trial: str,
    status: SubjectStatus,
    headings: Sequence[CriterionHeading],
    parts: Sequence[CriterionReport],
) -> str:
    """The DetectedIssue's one line (`summary_line`): made once per trial, status, headings
    (the same object for a compiled criteria, kept to check identity) and verdicts (a
    cohort's patients have a few dozen combinations)."""
    key = (trial, status, id(headings), tuple(map(_verdict_of_part, parts)))
    known = _summary_lines.get(key)
    if known is not None and known[0] is headings:
        return known[1]
    line = _make_summary_line(trial, status, headings, parts)
    if len(_summary_lines) >= 4096:
        _summary_lines.clear()
    _summary_lines[key] = (headings, line)
    return line


def _make_summary_line(
    trial: str,
    status: SubjectStatus,
    headings: Sequence[CriterionHeading],
    parts: Sequence[CriterionReport],
) -> str:
    pieces = []
    for verdict, words in (
        (CriterionVerdict.FAILS, "exclude"),
        (CriterionVerdict.MISSING_DATA, "lack data"),
        (CriterionVerdict.MANUAL_REVIEW, "need manual review"),
    ):
        ids = [h.id for h, part in zip(headings, parts, strict=True) if part.verdict is verdict]
        if ids:
            pieces.append(f"{len(ids)} {words} ({', '.join(ids)})")
    skipped = [h.id for h, part in zip(headings, parts, strict=True) if part.verdict is None]
    if skipped:
        pieces.append(
            f"{len(skipped)} not evaluated ({', '.join(skipped)}): {NOT_EVALUATED_REASON}"
        )
    if not pieces:
        return f"{status.value} for {trial}: every criterion is clear"
    return f"{status.value} for {trial}: " + "; ".join(pieces)


def narrative(evaluation: PatientEvaluation) -> str:
    """An XHTML table of every criterion's outcome, for the DetectedIssue's text."""
    report = report_of(evaluation)
    headings = criterion_headings(report.criteria)
    summary = _with_vital(
        _summary_line(report.criteria.trial.id, report.status, headings, report.parts),
        report.vital,
    )
    return _narrative(report, summary, headings)


_escape_label = functools.cache(html.escape)
"""html.escape for the few texts that repeat for every patient (labels, outcomes)."""


def _narrative(report: PatientReport, summary: str, headings: Sequence[CriterionHeading]) -> str:
    """`narrative`, given the report's summary line: per criterion its number and label,
    its outcome and the explanation in clinical language (engine.report.explanation)."""
    trial = report.criteria.trial
    pieces = [
        _pieces(trial, heading, part) for heading, part in zip(headings, report.parts, strict=True)
    ]
    head, tail = _narrative_ends(report, summary)
    return head + "".join([piece.row for piece in pieces]) + tail


def _narrative_json(report: PatientReport, summary: str, pieces: Sequence[_PartPieces]) -> bytes:
    """The narrative (`_narrative`) as the inside of a JSON string, from the JSON texts of
    its pieces: JSON escapes character by character, so the text of the whole is the texts
    of its pieces, joined. The rows' texts are made once for a shared part, the head's
    text before the newest data day once per summary line and day (`_narrative_start`), the
    end without data problems once."""
    dumps = orjson.dumps
    key = (summary, report.as_of)
    start = _narrative_starts.get(key)
    if start is None:
        if len(_narrative_starts) >= 4096:
            _narrative_starts.clear()
        start = _narrative_starts[key] = dumps(_narrative_start(summary, report.as_of))[1:-1]
    tail = dumps(_narrative_tail(report))[1:-1] if report.data_problems else _PLAIN_TAIL_JSON
    return b"".join(
        [
            start,
            dumps(_newest_words(report))[1:-1],
            _HEAD_END_JSON,
            *map(_row_json_of, pieces),
            tail,
        ]
    )


def _narrative_ends(report: PatientReport, summary: str) -> tuple[str, str]:
    """The narrative before its table's rows, and after them."""
    head = _narrative_start(summary, report.as_of) + _newest_words(report) + _HEAD_END
    return head, _narrative_tail(report)


def _narrative_start(summary: str, as_of: dt.date) -> str:
    """The narrative's head up to the newest data day."""
    return (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        f"<p>{html.escape(summary)} (as of {as_of.isoformat()}; newest data in the record "
    )


def _newest_words(report: PatientReport) -> str:
    return report.newest_data.isoformat() if report.newest_data else "none dated"


def _narrative_tail(report: PatientReport) -> str:
    """The narrative after its table's rows: the data problems, if any."""
    problems = ""
    if report.data_problems:
        escape = html.escape
        items = "".join(f"<li>{escape(problem)}</li>" for problem in report.data_problems)
        problems = f"<p>Data problems in the record:</p><ul>{items}</ul>"
    return f"</tbody></table>{problems}</div>"


_row_json_of = attrgetter("row_json")
_HEAD_END = (
    ")</p><table><thead><tr><th>#</th><th>Criterion</th><th>Outcome</th><th>Why</th>"
    "</tr></thead><tbody>"
)
_HEAD_END_JSON = orjson.dumps(_HEAD_END)[1:-1]
_PLAIN_TAIL_JSON = orjson.dumps("</tbody></table></div>")[1:-1]
"""The narrative's end without data problems, as the inside of a JSON string."""
_narrative_starts: dict[tuple[str, dt.date], bytes] = {}
"""`_narrative_start` as the inside of a JSON string, by summary line and day."""


def _outcome_words(kind: CriterionKind, verdict: CriterionVerdict | None) -> str:
    return "not evaluated" if verdict is None else outcome_text(kind, verdict)


def transaction_bundle(evaluation: PatientEvaluation) -> dict[str, Any]:
    """A transaction Bundle that ensures the ResearchStudy and upserts the two results.

    ResearchSubject and DetectedIssue are written by conditional update on their identifiers,
    the ResearchStudy by conditional create on its registry identifier. The bodies carry no
    `id` (R4 3.1.0.4.3: a server may refuse a conditional update whose body has an id that
    matches nothing, and must when it differs from the matched resource's); each entry's
    `fullUrl` is `urn:uuid:` + its deterministic id, so the ResearchSubject's study reference
    resolves inside the Bundle (R4 Bundle 2.36.4.1) and the server resolves it to whichever
    ResearchStudy the conditional create matched or made. Search URLs are percent-encoded,
    the `|` of identifier tokens too.
    """
    trial = evaluation.criteria.trial
    study = research_study(trial)
    study_url = f"urn:uuid:{study['id']}"
    subject = research_subject(evaluation, study_url)
    issue = detected_issue(evaluation)
    study_query = study_search(trial)
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": study_url,
                "resource": _without_id(study),
                "request": {"method": "POST", "url": "ResearchStudy", "ifNoneExist": study_query},
            },
            _upsert(subject, RESEARCH_SUBJECT_SYSTEM),
            _upsert(issue, DETECTED_ISSUE_SYSTEM),
        ],
    }


def _upsert(resource: dict[str, Any], system: str) -> dict[str, Any]:
    value = resource["identifier"][0]["value"]
    return {
        "fullUrl": f"urn:uuid:{resource['id']}",
        "resource": _without_id(resource),
        "request": {
            "method": "PUT",
            "url": f"{resource['resourceType']}?identifier={_token(system, value)}",
        },
    }


def study_search(trial: Trial) -> str:
    """The search that finds the trial's ResearchStudy: `identifier=system%7Cvalue`."""
    return f"identifier={_token(trial.identifier_system, trial.id)}"


def _without_id(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key != "id"}


def _token(system: str, value: str) -> str:
    """An identifier search token, percent-encoded as a query value (`|` is `%7C`)."""
    return f"{quote(system, safe=':/')}%7C{quote(value, safe='')}"


def entry_id(entry: dict[str, Any]) -> str:
    """The deterministic id of a `transaction_bundle` entry (its `urn:uuid:` fullUrl)."""
    full_url = str(entry["fullUrl"])
    return full_url.removeprefix("urn:uuid:")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
