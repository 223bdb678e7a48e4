"""Build the FHIR R4 resources that carry a patient's screening result.

Pure functions from a `PatientEvaluation` to plain dicts: a ResearchSubject (the patient's
status for the study), a DetectedIssue (what excludes, what is missing, what a person must
check, with the evidence), and the transaction Bundle that writes both idempotently. Ids and
identifiers are derived from trial and patient, so a re-run updates instead of duplicating.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import quote

from engine import __version__
from engine.criteria.model import CriterionKind, Trial
from engine.evaluate.compile import CompiledCriteria, CompiledCriterion
from engine.evaluate.outcome import Outcome
from engine.evaluate.patient import (
    CriterionResult,
    CriterionVerdict,
    PatientEvaluation,
    SubjectStatus,
    status_of_verdicts,
)
from engine.evaluate.status import TRIALSIEVE_IDENTIFIER_SYSTEM
from engine.normalise import Terminology
from engine.report.explanation import (
    NOT_EVALUATED_SUMMARY,
    CriterionExplanation,
    cites_nothing,
    criterion_label,
    criterion_summary,
    outcome_text,
    remembered,
)

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
    """A stable UUID (v5) from the given parts: the same inputs always give the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts)))


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


def _research_subject(
    trial: Trial,
    patient_id: str,
    patient_reference: str,
    status: SubjectStatus,
    study_reference: str,
) -> dict[str, Any]:
    value = subject_identifier_value(trial, patient_id)
    return {
        "resourceType": "ResearchSubject",
        "id": deterministic_id(RESEARCH_SUBJECT_SYSTEM, value),
        "identifier": [{"system": RESEARCH_SUBJECT_SYSTEM, "value": value}],
        "status": status.value,
        "study": {
            "reference": study_reference,
            "identifier": {"system": trial.identifier_system, "value": trial.id},
            "display": trial.title,
        },
        "individual": {"reference": patient_reference},
    }


def research_study(trial: Trial) -> dict[str, Any]:
    """A minimal ResearchStudy identified by the registry id (created only if absent)."""
    return {
        "resourceType": "ResearchStudy",
        "id": research_study_id(trial),
        "identifier": [{"system": trial.identifier_system, "value": trial.id}],
        "title": trial.title,
        "status": "active",
    }


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

    @cached_property
    def status(self) -> SubjectStatus:
        return status_of_verdicts(part.verdict for part in self.parts if part.verdict)


def report_of(evaluation: PatientEvaluation) -> PatientReport:
    """The report parts of an evaluation (explained in clinical language)."""
    results = {result.id: result for result in evaluation.results}
    as_of = evaluation.as_of
    terminology = evaluation.criteria.terminology
    parts = []
    for compiled in evaluation.criteria.criteria:
        result = results.get(compiled.id)
        if result is None:
            parts.append(NOT_EVALUATED_REPORT)
        else:
            parts.append(criterion_report_of(result, as_of, terminology))
    return PatientReport(
        evaluation.criteria,
        evaluation.patient_id,
        evaluation.patient_reference,
        as_of,
        tuple(parts),
        evaluation.data_problems,
        evaluation.newest_data,
    )


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
_parts_by_outcome: dict[
    int, tuple[Outcome, CompiledCriterion, dt.date, Terminology, CriterionReport]
] = {}
"""The same parts by the outcome object itself (its id, the outcome kept to check identity):
an outcome shared by every patient (`engine.evaluate.outcome.shared`) is found without
hashing its tree."""
_PARTS_LIMIT = 4096


def criterion_report_of(
    result: CriterionResult, as_of: dt.date, terminology: Terminology
) -> CriterionReport:
    """`criterion_report(result, explain_criterion(result, as_of, terminology))`, building
    only what the part holds (`criterion_summary`), and once per equal outcome for outcomes
    citing nothing."""
    outcome = result.outcome
    compiled = result.criterion
    known = _parts_by_outcome.get(id(outcome))
    if (
        known is not None
        and known[0] is outcome
        and known[1] is compiled
        and known[2] == as_of
        and known[3] is terminology
    ):
        return known[4]
    if not cites_nothing(outcome):
        summary = criterion_summary(result, as_of, terminology)
        return CriterionReport(result.verdict, summary, outcome.evidence, outcome.missing)
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
    if len(_parts_by_outcome) >= _PARTS_LIMIT:
        _parts_by_outcome.clear()
    _parts_by_outcome[id(outcome)] = (outcome, compiled, as_of, terminology, part)
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
                criterion_label(criterion.expression, criterion.id),
                _shorten(criterion.text, 250),
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
    trial = report.criteria.trial
    value = subject_identifier_value(trial, report.patient_id)
    status = report.status
    headings = criterion_headings(report.criteria)
    open_parts = [
        (heading, part)
        for heading, part in zip(headings, report.parts, strict=True)
        if part.verdict is not None and part.verdict is not CriterionVerdict.CLEAR
    ]
    implicated = list(dict.fromkeys(ref for _h, part in open_parts for ref in part.evidence))
    summary = _summary_line(report.criteria.trial.id, status, headings, report.parts)
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": deterministic_id(DETECTED_ISSUE_SYSTEM, value),
        "contained": [_device()],
        "identifier": [{"system": DETECTED_ISSUE_SYSTEM, "value": value}],
        "status": "final"
        if status in (SubjectStatus.INELIGIBLE, SubjectStatus.ELIGIBLE)
        else "preliminary",
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
        "severity": _SEVERITY[status],
        "patient": {"reference": report.patient_reference},
        "identifiedDateTime": report.as_of.isoformat(),
        "author": {"reference": f"#{DEVICE_ID}", "display": f"trialsieve {__version__}"},
        "detail": summary,
        "text": {"status": "generated", "div": _narrative(report, summary, headings)},
    }
    if open_parts:
        issue["evidence"] = [_evidence(trial, heading, part) for heading, part in open_parts]
    if implicated:
        issue["implicated"] = [{"reference": reference} for reference in implicated]
    return issue


def _device() -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": DEVICE_ID,
        "deviceName": [{"name": "trialsieve", "type": "manufacturer-name"}],
        "version": [{"value": __version__}],
    }


def _evidence(trial: Trial, heading: CriterionHeading, part: CriterionReport) -> dict[str, Any]:
    assert part.verdict is not None
    entry: dict[str, Any] = {
        "code": [
            {
                "coding": [
                    {
                        "system": f"{CRITERIA_CODE_SYSTEM}/{trial.id}",
                        "code": heading.id,
                        "display": heading.display,
                    }
                ],
                "text": f"{heading.number} {heading.label}: "
                f"{outcome_text(heading.kind, part.verdict)}. {_shorten(part.summary, 900)}",
            }
        ]
    }
    if part.evidence:
        entry["detail"] = [{"reference": reference} for reference in part.evidence]
    return entry


def summary_line(evaluation: PatientEvaluation) -> str:
    """One line: the status and the criteria behind it."""
    criteria = evaluation.criteria
    verdicts = {result.id: result.verdict for result in evaluation.results}
    parts = [
        CriterionReport(verdicts[c.id], "") if c.id in verdicts else NOT_EVALUATED_REPORT
        for c in criteria.criteria
    ]
    return _summary_line(criteria.trial.id, evaluation.status, criterion_headings(criteria), parts)


def _summary_line(
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
    summary = _summary_line(report.criteria.trial.id, report.status, headings, report.parts)
    return _narrative(report, summary, headings)


_escape_label = functools.cache(html.escape)
"""html.escape for the few texts that repeat for every patient (labels, outcomes)."""


def _narrative(report: PatientReport, summary: str, headings: Sequence[CriterionHeading]) -> str:
    """`narrative`, given the report's summary line: per criterion its number and label,
    its outcome and the explanation in clinical language (engine.report.explanation)."""
    escape = html.escape
    escape_label = _escape_label
    rows = [
        "<tr>"
        f"<td>{escape_label(heading.number)}</td>"
        f"<td>{escape_label(heading.label)}</td>"
        f"<td>{escape_label(_outcome_words(heading.kind, part.verdict))}</td>"
        f"<td>{escape(part.summary)}</td>"
        "</tr>"
        for heading, part in zip(headings, report.parts, strict=True)
    ]
    problems = ""
    if report.data_problems:
        items = "".join(f"<li>{escape(problem)}</li>" for problem in report.data_problems)
        problems = f"<p>Data problems in the record:</p><ul>{items}</ul>"
    newest = report.newest_data.isoformat() if report.newest_data else "none dated"
    return (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        f"<p>{escape(summary)} (as of {report.as_of.isoformat()}; newest data in the "
        f"record {newest})</p>"
        "<table><thead><tr><th>#</th><th>Criterion</th><th>Outcome</th><th>Why</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{problems}</div>"
    )


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
