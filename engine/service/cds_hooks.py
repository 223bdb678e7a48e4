"""CDS Hooks (1.0 and 2.0): discovery, prefetch, and cards for `patient-view`.

Each loaded trial is one service (its id is the trial id). Its prefetch templates ask for
exactly what the criteria read: `patient: Patient/{{context.patientId}}` and one search by
patient per resource type (`Observation?patient={{context.patientId}}&_count=1000`, with
`_include` of the Medication for medication types). A service call is answered from the
prefetch (CDS Hooks 2.0, "Providing FHIR Resources to a CDS Service"): a key that is
absent or a search with a `next` page is fetched from the request's `fhirServer` with
`fhirAuthorization.access_token`, as `trialsieve evaluate --server` pulls; without a
`fhirServer` the call is answered 412. A key whose value is `null` means the client has no
such data: nothing is fetched for it. A search key whose value is an OperationOutcome means
the client could not fetch it, and says so "to prevent the CDS Service from incurring an
unneeded follow-up query" (2.0, "Prefetch Template"): its type is unavailable (criteria over
it are unknown, with the client's words), not fetched and not "none on record"; only the
`patient` key, without which nothing can be evaluated, is then fetched (or 412). The answer
is one card per call, with a fresh `uuid` each time, a summary under 140 characters and a
`source.topic` Coding with its system.
Feedback on a card (`POST /cds-services/{id}/feedback`) is logged per card, once it holds
what 2.0 "Feedback" requires (`feedback_problems`).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from engine.evaluate import CriterionVerdict, PatientEvaluation, SubjectStatus
from engine.report.explanation import explain, stale_data_warning
from engine.resource_types import MEDICATION_REFERENCING_TYPES
from engine.service.fhir_json import check_fhir_resource
from engine.service.models import CdsFeedback, CdsHookRequest
from engine.service.problems import ApiError, Issue
from engine.service.trials import LoadedTrial
from engine.sources import PatientResources, parse_bundle, reference_key
from engine.sources.fhir_server import outcome_words, search_outcome
from engine.sources.references import is_fhir_id

HOOK = "patient-view"
PREFETCH_COUNT = 1000
SUMMARY_LIMIT = 139
"""CDS Hooks 2.0, Card: "summary ... One-sentence, <140-character summary message"."""
FEEDBACK_OUTCOMES = frozenset({"accepted", "overridden"})
SOURCE_LABEL = "trialsieve"
_ELLIPSIS = "…"
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")
# Types read through the Patient template, or through medicationReference (never searched).
_NOT_SEARCHED = frozenset({"Patient", "Medication"})
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


@dataclass(frozen=True)
class PrefetchTemplate:
    """One prefetch key: the resource type it brings and the FHIR query template."""

    key: str
    resource_type: str
    query: str


def prefetch_templates(trial: LoadedTrial) -> tuple[PrefetchTemplate, ...]:
    """`patient` and one search per resource type the trial's criteria read."""
    templates = [PrefetchTemplate("patient", "Patient", "Patient/{{context.patientId}}")]
    for resource_type in sorted(trial.resource_types - _NOT_SEARCHED):
        query = f"{resource_type}?patient={{{{context.patientId}}}}&_count={PREFETCH_COUNT}"
        if resource_type in MEDICATION_REFERENCING_TYPES:
            query += f"&_include={resource_type}:medication"
        key = resource_type[0].lower() + resource_type[1:]
        templates.append(PrefetchTemplate(key, resource_type, query))
    return tuple(templates)


def discovery(trials: Mapping[str, LoadedTrial]) -> dict[str, Any]:
    """`GET /cds-services`: one patient-view service per loaded trial."""
    return {
        "services": [
            {
                "hook": HOOK,
                "id": trial.id,
                "title": f"Trial eligibility: {trial.id}",
                "description": f"Screens the patient for {trial.criteria.trial.title} "
                f"({trial.id}): what excludes, what data is missing, what to check.",
                "prefetch": {t.key: t.query for t in prefetch_templates(trial)},
            }
            for trial in trials.values()
        ]
    }


# --------------------------------------------------------------------------- requests


def patient_id_of(request: CdsHookRequest) -> str:
    """`context.patientId`, checked; 400 when the hook or the id is not what is served."""
    if request.hook != HOOK:
        raise ApiError.of(
            400, "not-supported", f"hook '{request.hook}' is not served (only {HOOK})", "hook"
        )
    patient_id = request.context.get("patientId")
    if patient_id is None:
        raise ApiError.of(
            400,
            "required",
            "context.patientId (the id of the patient in view) is required",
            "context.patientId",
        )
    if not is_fhir_id(patient_id):
        raise ApiError.of(
            400,
            "invalid",
            "context.patientId must be a FHIR id (letters, digits, '-', '.'; 1 to 64; not "
            "only dots)",
            "context.patientId",
        )
    assert isinstance(patient_id, str)
    _check_context(request.context)
    return patient_id


def _check_context(context: Mapping[str, Any]) -> None:
    """The rest of the patient-view context (hook version 1.0, "Context"): `userId` REQUIRED,
    "The id of the current user. Must be in the format [ResourceType]/[id]" (a resource type,
    a FHIR id); `encounterId`, OPTIONAL, "The FHIR Encounter.id", a FHIR id when given. 400
    naming the field otherwise. The service reads neither, but a call without them is not a
    patient-view call, and a client that sends a malformed one should hear it."""
    user = context.get("userId")
    if user is None:
        raise ApiError.of(
            400,
            "required",
            "context.userId (the current user, [ResourceType]/[id]) is required",
            "context.userId",
        )
    kind, _, identifier = user.partition("/") if isinstance(user, str) else ("", "", "")
    if not _RESOURCE_TYPE.fullmatch(kind) or not is_fhir_id(identifier):
        raise ApiError.of(
            400,
            "invalid",
            "context.userId must be [ResourceType]/[id] (Practitioner/abc, Patient/123)",
            "context.userId",
        )
    if "encounterId" in context and not is_fhir_id(context["encounterId"]):
        raise ApiError.of(
            400,
            "invalid",
            "context.encounterId must be a FHIR id (the Encounter.id)",
            "context.encounterId",
        )


@dataclass
class Prefetched:
    """What the prefetch brought: Bundle entries by `Type/id`, the types still to fetch, the
    keys still to fetch that the client failed to prefetch (with its OperationOutcome's
    words), and the types it could not provide, each with why
    (`PatientResources.unavailable_types`)."""

    entries: dict[str, dict[str, Any]]
    missing_types: frozenset[str]
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    """What the client or the server noted about the data they gave
    (`PatientResources.source_problems`)."""


def read_prefetch(
    trial: LoadedTrial, prefetch: Mapping[str, Any] | None, patient_id: str
) -> Prefetched:
    """The prefetched resources, and the types whose key is absent or one page of more; a
    `null` value is "no data" (CDS Hooks 2.0: "If the CDS Client has no data to populate a
    template prefetch key, the prefetch template key MUST have a value of null"), so that
    type is neither read nor fetched (the Patient is always needed). An OperationOutcome
    makes a search key's type unavailable ("not available from the EHR (prefetch.condition:
    search timed out)"), the `patient` key missing.

    400 when a value is not what its template asks for (a Patient that is another patient, a
    search answered with something other than a Bundle, a Bundle holding a type its search
    does not return), or an element the engine reads does not have its FHIR JSON shape
    (`engine.service.fhir_json`: `"entry": {}`, a Condition whose `code.coding` is `[5]`;
    elements it does not read are not checked): a malformed value is never read as "none
    on record" (CDS Hooks 2.0, "Prefetch": a prefetch that is missing or incomplete is
    fetched or reported; one the service cannot read is the client's error, named in the
    answer).
    """
    given = prefetch or {}
    entries: dict[str, dict[str, Any]] = {}
    missing: set[str] = set()
    failed: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    problems: list[str] = []
    for template in prefetch_templates(trial):
        value = given.get(template.key)
        field = f"prefetch.{template.key}"
        if value is None:
            if template.key not in given or template.resource_type == "Patient":
                missing.add(template.resource_type)
            continue  # else null: the client has no such data
        if not isinstance(value, dict):
            raise ApiError.of(400, "invalid", f"{field} must be a FHIR resource (JSON)", field)
        if value.get("resourceType") == "OperationOutcome":
            check_fhir_resource(value, field)
            # The client could not prefetch it, and says so to spare a follow-up query.
            if template.resource_type == "Patient":
                missing.add(template.resource_type)
                failed[field] = _outcome_words(value)
            else:
                words = _outcome_words(value)
                unavailable[template.resource_type] = (
                    f"not available from the EHR ({field}: {words})"
                )
        elif template.resource_type == "Patient":
            if value.get("resourceType") != "Patient" or value.get("id") != patient_id:
                found = f"{value.get('resourceType')}/{value.get('id')}"
                raise ApiError.of(
                    400,
                    "invalid",
                    f"{field} is {found}, not Patient/{patient_id} (context.patientId)",
                    field,
                )
            check_fhir_resource(value, field)
            _add(entries, {"resource": value})
        elif value.get("resourceType") != "Bundle":
            raise ApiError.of(
                400,
                "invalid",
                f"{field} must be the Bundle answering {template.query}, "
                f"found {value.get('resourceType')}",
                field,
            )
        else:
            # Checked for the shape of what the engine reads: malformed is refused, never empty.
            check_fhir_resource(value, field)
            if any(link.get("relation") == "next" for link in value.get("link") or ()):
                missing.add(template.resource_type)  # one page of several: read it all
                continue
            _check_entry_types(value, template, field)
            for entry in value.get("entry") or ():
                outcome = search_outcome(entry)
                if outcome is None:
                    _add(entries, entry)
                    continue
                # R4 3.1.1.5.7: an error or fatal issue, the results are not complete.
                errors, notes = outcome_words(outcome)
                if notes:
                    problems.append(f"{field}: the EHR notes: {notes}")
                if errors:
                    unavailable[template.resource_type] = (
                        f"not complete from the EHR ({field}: {errors})"
                    )
    return Prefetched(entries, frozenset(missing), failed, unavailable, problems)


def _check_entry_types(bundle: Mapping[str, Any], template: PrefetchTemplate, field: str) -> None:
    """400 when a search key's Bundle holds a resource its query cannot return: only the
    searched type, the Medications its `_include` brings, and OperationOutcomes."""
    allowed = {template.resource_type, "OperationOutcome"}
    if template.resource_type in MEDICATION_REFERENCING_TYPES:
        allowed.add("Medication")
    for index, entry in enumerate(bundle.get("entry") or ()):
        found = entry["resource"]["resourceType"]
        if found not in allowed:
            at = f"{field}.entry[{index}].resource"
            raise ApiError.of(
                400,
                "invalid",
                f"{at} is a {found}, which {template.query} does not return",
                at,
            )


def _outcome_words(outcome: Mapping[str, Any]) -> str:
    """An OperationOutcome's first diagnostics or details text (shortened), else its code."""
    for issue in outcome.get("issue") or ():
        if not isinstance(issue, dict):
            continue
        details = issue.get("details")
        text = issue.get("diagnostics") or (
            details.get("text") if isinstance(details, dict) else None
        )
        if isinstance(text, str) and text.strip():
            return _shorten(" ".join(text.split()), 200)
        if isinstance(issue.get("code"), str):
            return str(issue["code"])
    return "an OperationOutcome"


def _add(entries: dict[str, dict[str, Any]], entry: dict[str, Any]) -> None:
    resource = entry.get("resource")
    if isinstance(resource, dict) and isinstance(resource.get("id"), str):
        entries.setdefault(f"{resource.get('resourceType')}/{resource['id']}", entry)
    else:
        entries[f"#{len(entries)}"] = entry  # parse_bundle names what is wrong with it


def unresolved_medications(entries: Mapping[str, dict[str, Any]]) -> list[str]:
    """Ids of Medications that medicationReference names and the entries lack."""
    wanted: dict[str, None] = {}
    for entry in entries.values():
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") not in MEDICATION_REFERENCING_TYPES:
            continue
        reference = resource.get("medicationReference")
        literal = reference.get("reference") if isinstance(reference, dict) else None
        key = reference_key(literal) if isinstance(literal, str) else None
        if key is not None and key.startswith("Medication/") and key not in entries:
            wanted[key.split("/", 1)[1]] = None
    return list(wanted)


def assemble(
    entries: Mapping[str, dict[str, Any]],
    origin: str,
    unavailable: Mapping[str, str] | None = None,
    problems: Sequence[str] = (),
) -> PatientResources:
    """The patient's data from prefetched and fetched entries, checked as a Bundle file is,
    with the types neither could provide (`Prefetched.unavailable`)."""
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": list(entries.values())}
    try:
        text = orjson.dumps(bundle)
    except orjson.JSONEncodeError:
        raise ApiError.of(
            400, "invalid", "prefetch holds a number beyond the 64-bit integer range", "prefetch"
        ) from None
    resources = parse_bundle(text, origin)
    if not unavailable and not problems:
        return resources
    return dataclasses.replace(
        resources,
        unavailable_types=dict(sorted((unavailable or {}).items())),
        source_problems=tuple(dict.fromkeys(problems)),
    )


def feedback_problems(feedback: CdsFeedback) -> list[Issue]:
    """What a feedback request lacks or holds against CDS Hooks 2.0 "Feedback", beyond the
    shape the request model checks: `acceptedSuggestions` is "Required for `accepted`
    outcomes" and names a `card.suggestion.uuid` (this service's cards carry no suggestions,
    so no id names one); `overrideReason` is sent with an `overridden` outcome ("Explicit
    reject with override reasons").

    A `card` uuid this service did not give is not refused: the service keeps no card after
    answering (a card "once ignored could later be acted upon"), so its feedback is logged.
    """
    issues: list[Issue] = []
    for index, item in enumerate(feedback.feedback):
        at = f"feedback.{index}"
        if item.outcome == "accepted" and item.accepted_suggestions is None:
            issues.append(
                Issue(
                    "required",
                    f"{at}.acceptedSuggestions is required for an accepted outcome (the "
                    "suggestions accepted; this service's cards carry none, so a card can "
                    "only be overridden)",
                    (f"{at}.acceptedSuggestions",),
                )
            )
        for number, suggestion in enumerate(item.accepted_suggestions or ()):
            field = f"{at}.acceptedSuggestions.{number}.id"
            issues.append(
                Issue(
                    "invalid",
                    f"{field}: no suggestion {_shorten(suggestion.id, 64)!r} "
                    "(this service's cards carry no suggestions)",
                    (field,),
                )
            )
        if item.override_reason is not None and item.outcome != "overridden":
            issues.append(
                Issue(
                    "invalid",
                    f"{at}.overrideReason is for an overridden outcome, not {item.outcome}",
                    (f"{at}.overrideReason",),
                )
            )
    return issues


def check_fhir_server(
    url: str, allow_list: frozenset[str], allow_any: bool = False
) -> tuple[str, bool]:
    """The request's `fhirServer` base URL, and whether it is on the allow-list.

    400 when it is not an http(s) base URL (credentials, query or fragment included); 403
    when it is not allow-listed, unless `allow_any` (then the caller's token is not sent
    to it: the second value is False). The answer never repeats the URL.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or any(character.isspace() for character in url)
    ):
        raise ApiError.of(
            400, "invalid", "fhirServer must be an http(s) FHIR base URL", "fhirServer"
        )
    del port
    base = url.rstrip("/")
    trusted = base in allow_list
    if not trusted and not allow_any:
        raise ApiError.of(
            403,
            "forbidden",
            "fhirServer is not a server this service may call (see trusted FHIR servers)",
            "fhirServer",
        )
    return base, trusted


# --------------------------------------------------------------------------- cards


def card(evaluation: PatientEvaluation, report_url_template: str | None = None) -> dict[str, Any]:
    """The card for one evaluation: summary (under 140 characters), indicator, markdown
    detail (what excludes, what is missing, what to check), source, and the report link.
    """
    trial = evaluation.criteria.trial
    result: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),  # fresh per card: feedback names the card it is about
        "summary": summary(evaluation),
        "indicator": "warning" if evaluation.data_problems else "info",
        "detail": detail(evaluation),
        "source": {
            "label": SOURCE_LABEL,
            "topic": {"system": trial.identifier_system, "code": trial.id, "display": trial.title},
        },
    }
    if report_url_template:
        patient_id = evaluation.patient_id
        url = report_url_template.format(
            trial_id=quote(trial.id, safe=""), patient_id=quote(patient_id, safe="")
        )
        result["links"] = [{"label": "Eligibility report", "url": url, "type": "absolute"}]
    return result


WHAT_TO_CHECK_LIMIT = 3
"""At most this many missing data items, and as many questions, are listed on a card."""
REPORT_PATH = "trials/{trial_id}/patients/{patient_id}/report"
"""The service's own report page, relative to its base URL (the default card link)."""


def summary(evaluation: PatientEvaluation) -> str:
    """One line: `Not eligible for NCT...: E2 Thrombosis or antithrombotics`, `May be
    eligible for NCT...: 2 results missing, 11 questions to answer`.
    """
    trial = evaluation.criteria.trial.id
    status = evaluation.status
    explanation = explain(evaluation)
    vital = evaluation.vital
    if vital is not None and vital.certain:  # died on or before the as-of day
        return _shorten(f"Not eligible for {trial}: {vital.reason}", SUMMARY_LIMIT)
    if status is SubjectStatus.INELIGIBLE:
        failing = explanation.with_verdict(CriterionVerdict.FAILS)
        return _fit(f"Not eligible for {trial}: ", [f"{c.number} {c.label}" for c in failing])
    if status is SubjectStatus.ELIGIBLE:
        return _shorten(f"Eligible for {trial}: every criterion is clear", SUMMARY_LIMIT)
    parts = [] if vital is None else ["date of death unclear"]
    missing = len(explanation.missing_data)
    questions = len(explanation.open_questions)
    if missing:
        parts.append(f"{missing} {_plural(missing, 'data item', 'data items')} missing")
    if questions:
        parts.append(f"{questions} {_plural(questions, 'question', 'questions')} to answer")
    return _shorten(f"May be eligible for {trial}: " + ", ".join(parts), SUMMARY_LIMIT)


def _fit(prefix: str, items: list[str]) -> str:
    """`prefix` and as many items as fit in the summary, then `(+N more)`."""
    text = prefix + items[0]
    for index, item in enumerate(items[1:], start=1):
        more = len(items) - index - 1
        tail = f" (+{more} more)" if more else ""
        if len(text + "; " + item + tail) > SUMMARY_LIMIT:
            return _shorten(text + f" (+{len(items) - index} more)", SUMMARY_LIMIT)
        text += "; " + item
    return _shorten(text, SUMMARY_LIMIT)


def detail(evaluation: PatientEvaluation) -> str:
    """Markdown from the clinical explanation: the status and dates; for a patient who is
    excluded, what excludes (with the protocol text); for one who could still be eligible,
    at most a few items of missing data and questions to check (the report page has all).
    """
    explanation = explain(evaluation)
    newest = explanation.newest_data.isoformat() if explanation.newest_data else "none dated"
    lines = [
        f"**{_escape(explanation.trial_title)}** ({_escape(explanation.trial_id)}): "
        f"**{_escape(explanation.status_text)}** ({explanation.status.value}) as of "
        f"{explanation.as_of.isoformat()}; newest data {newest}."
    ]
    warning = stale_data_warning(evaluation)
    if warning:
        lines += ["", f"Warning: {_escape(warning)}"]
    vital = evaluation.vital
    if vital is not None and not vital.certain:
        lines += ["", f"Warning: {_escape(vital.reason)}"]
    if explanation.status is SubjectStatus.INELIGIBLE:
        lines += ["", "### What excludes", ""]
        if vital is not None and vital.certain:
            lines.append(f"- **Deceased**: {_escape(vital.reason)}")
        for criterion in explanation.with_verdict(CriterionVerdict.FAILS):
            lines.append(
                f"- **{_escape(criterion.number)} {_escape(criterion.label)}**: "
                f"{_escape(_shorten(criterion.summary, 300))}"
            )
            lines.append(f"  Protocol: *{_escape(_shorten(criterion.protocol_text, 300))}*")
    else:
        hidden = 0
        missing = explanation.missing_data
        if missing:
            lines += ["", "### What is missing", ""]
            for criterion, item in missing[:WHAT_TO_CHECK_LIMIT]:
                lines.append(f"- **{_escape(criterion.number)}** {_escape(item)}")
            hidden += max(0, len(missing) - WHAT_TO_CHECK_LIMIT)
        questions = explanation.open_questions
        if questions:
            lines += ["", "### What to check", ""]
            for criterion, question in questions[:WHAT_TO_CHECK_LIMIT]:
                lines.append(f"- **{_escape(criterion.number)}** {_escape(question)}")
            hidden += max(0, len(questions) - WHAT_TO_CHECK_LIMIT)
        if hidden:
            lines += ["", f"{hidden} more on the eligibility report page."]
    if evaluation.data_problems:
        lines += ["", f"{len(evaluation.data_problems)} data problems in the record."]
    return "\n".join(lines)


def _escape(text: str) -> str:
    """Text shown as written in markdown (no markup, no HTML)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _plural(count: int, one: str, several: str) -> str:
    return one if count == 1 else several


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS
