"""Build the FHIR R4 resources that carry a patient's screening result.

Pure functions from a `PatientEvaluation` to plain dicts: a ResearchSubject (the patient's
status for the study), a DetectedIssue (what excludes, what is missing, what a person must
check, with the evidence), and the transaction Bundle that writes both idempotently. Ids and
identifiers are derived from trial and patient, so a re-run updates instead of duplicating.
"""

from __future__ import annotations

import functools
import html
import uuid
from typing import Any
from urllib.parse import quote

from engine import __version__
from engine.criteria.model import Trial
from engine.evaluate.patient import (
    CriterionResult,
    CriterionVerdict,
    PatientEvaluation,
    SubjectStatus,
)
from engine.evaluate.status import TRIALSIEVE_IDENTIFIER_SYSTEM
from engine.report.explanation import CriterionExplanation, PatientExplanation, explain

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
    trial = evaluation.criteria.trial
    value = subject_identifier_value(trial, evaluation.patient_id)
    return {
        "resourceType": "ResearchSubject",
        "id": deterministic_id(RESEARCH_SUBJECT_SYSTEM, value),
        "identifier": [{"system": RESEARCH_SUBJECT_SYSTEM, "value": value}],
        "status": evaluation.status.value,
        "study": {
            "reference": study_reference,
            "identifier": {"system": trial.identifier_system, "value": trial.id},
            "display": trial.title,
        },
        "individual": {"reference": evaluation.patient_reference},
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


def detected_issue(evaluation: PatientEvaluation) -> dict[str, Any]:
    """The DetectedIssue: every criterion that is not clear, with its evidence, and a table."""
    trial = evaluation.criteria.trial
    value = subject_identifier_value(trial, evaluation.patient_id)
    status = evaluation.status
    open_results = [r for r in evaluation.results if r.verdict is not CriterionVerdict.CLEAR]
    implicated = list(dict.fromkeys(ref for r in open_results for ref in r.outcome.evidence))
    summary = summary_line(evaluation)
    explanation = explain(evaluation)
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
        "patient": {"reference": evaluation.patient_reference},
        "identifiedDateTime": evaluation.as_of.isoformat(),
        "author": {"reference": f"#{DEVICE_ID}", "display": f"trialsieve {__version__}"},
        "detail": summary,
        "text": {"status": "generated", "div": _narrative(evaluation, summary, explanation)},
    }
    if open_results:
        explained = {criterion.id: criterion for criterion in explanation.criteria}
        issue["evidence"] = [
            _evidence(trial, result, explained[result.id]) for result in open_results
        ]
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


def _evidence(
    trial: Trial, result: CriterionResult, explained: CriterionExplanation
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "code": [
            {
                "coding": [
                    {
                        "system": f"{CRITERIA_CODE_SYSTEM}/{trial.id}",
                        "code": result.id,
                        "display": _shorten(result.criterion.criterion.text, 250),
                    }
                ],
                "text": f"{explained.number} {explained.label}: {explained.outcome_text}. "
                f"{_shorten(explained.summary, 900)}",
            }
        ]
    }
    if result.outcome.evidence:
        entry["detail"] = [{"reference": reference} for reference in result.outcome.evidence]
    return entry


def summary_line(evaluation: PatientEvaluation) -> str:
    """One line: the status and the criteria behind it."""
    trial = evaluation.criteria.trial.id
    parts = []
    for verdict, words in (
        (CriterionVerdict.FAILS, "exclude"),
        (CriterionVerdict.MISSING_DATA, "lack data"),
        (CriterionVerdict.MANUAL_REVIEW, "need manual review"),
    ):
        ids = [result.id for result in evaluation.results_with(verdict)]
        if ids:
            parts.append(f"{len(ids)} {words} ({', '.join(ids)})")
    if evaluation.not_evaluated:
        ids = [criterion.id for criterion in evaluation.not_evaluated]
        parts.append(f"{len(ids)} not evaluated ({', '.join(ids)}): {NOT_EVALUATED_REASON}")
    status = evaluation.status.value
    if not parts:
        return f"{status} for {trial}: every criterion is clear"
    return f"{status} for {trial}: " + "; ".join(parts)


def narrative(evaluation: PatientEvaluation) -> str:
    """An XHTML table of every criterion's outcome, for the DetectedIssue's text."""
    return _narrative(evaluation, summary_line(evaluation), explain(evaluation))


_escape_label = functools.cache(html.escape)
"""html.escape for the few texts that repeat for every patient (labels, outcomes)."""


def _narrative(evaluation: PatientEvaluation, summary: str, explanation: PatientExplanation) -> str:
    """`narrative`, given the evaluation's `summary_line`: per criterion its number and
    label, its outcome and the explanation in clinical language (engine.report.explanation)."""
    escape = html.escape
    escape_label = _escape_label
    rows = [
        "<tr>"
        f"<td>{escape_label(criterion.number)}</td>"
        f"<td>{escape_label(criterion.label)}</td>"
        f"<td>{escape_label(criterion.outcome_text)}</td>"
        f"<td>{escape(criterion.summary)}</td>"
        "</tr>"
        for criterion in explanation.criteria
    ]
    problems = ""
    if evaluation.data_problems:
        items = "".join(f"<li>{escape(problem)}</li>" for problem in evaluation.data_problems)
        problems = f"<p>Data problems in the record:</p><ul>{items}</ul>"
    newest = evaluation.newest_data.isoformat() if evaluation.newest_data else "none dated"
    return (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        f"<p>{escape(summary)} (as of {evaluation.as_of.isoformat()}; newest data in the "
        f"record {newest})</p>"
        "<table><thead><tr><th>#</th><th>Criterion</th><th>Outcome</th><th>Why</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{problems}</div>"
    )


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
