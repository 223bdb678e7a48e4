"""FHIR server sink: write one evaluation's results to the server in one transaction.

The ResearchStudy is found or created first, once per sink and trial: searched by its registry
identifier (`Prefer: handling=strict`, every page; only a study whose `identifier` holds the
trial's system and value counts, so a server that ignores or mis-matches the parameter cannot
put the subjects into another trial), else POSTed with `If-None-Exist` (R4 3.1.0.8.1; a match
the server reports with 200 is checked the same way), and the ResearchSubject refers to
it by the id the server holds, so the reference resolves on any server (a conditional create
inside a transaction that matches an existing study is not rewritten by every server). Then
the ResearchSubject and DetectedIssue are upserted by conditional update on their identifiers
(bodies without `id`: R4 3.1.0.4.3). A server that cannot search a type by `identifier` (its
CapabilityStatement lists no such searchParam, or no conditional create/update) cannot do
that; for such a type the entry becomes `PUT TYPE/{deterministic id}` with that id in the
body, which updates in place as well, and the ResearchStudy stays in the transaction that way.

The transaction is atomic on the server: it is written whole or not at all. Its answer is
checked entry by entry; anything but success raises `ServerError`. The requests go through
`engine.fhir_http.FhirServerClient`, the HTTP layer (retries, auth) the sources use too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import orjson

from engine.criteria.model import Trial
from engine.errors import ServerError
from engine.evaluate import PatientEvaluation
from engine.fhir_http import FhirServerClient, ServerCapabilities, outcome_diagnostics
from engine.report import research_study, transaction_bundle, validate_bundle
from engine.report.resources import entry_id, research_study_id, study_search
from engine.sources.references import reference_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WrittenEntry:
    """What the server did with one entry: its request, status line and location."""

    request: str
    status: str
    location: str | None


def server_transaction(
    evaluation: PatientEvaluation,
    capabilities: ServerCapabilities,
    study_reference: str | None = None,
) -> dict[str, Any]:
    """The report's transaction Bundle, with conditional requests the server cannot do by id.

    `study_reference`: the ResearchStudy as the server holds it (`ResearchStudy/{id}`); the
    study's entry is then left out and the ResearchSubject refers to it.
    """
    bundle = transaction_bundle(evaluation)
    entries = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        resource_type = resource["resourceType"]
        request = entry["request"]
        if resource_type == "ResearchStudy" and study_reference is not None:
            continue
        if resource_type == "ResearchSubject" and study_reference is not None:
            resource["study"]["reference"] = study_reference
        if request["method"] == "POST" and "ifNoneExist" in request:
            conditional_ok = capabilities.conditional_create_on_identifier(resource_type)
        elif request["method"] == "PUT" and "?" in request["url"]:
            conditional_ok = capabilities.conditional_update_on_identifier(resource_type)
        else:
            conditional_ok = True
        if not conditional_ok:
            resource_id = entry_id(entry)
            entry["resource"] = {"resourceType": resource_type, "id": resource_id} | {
                key: value for key, value in resource.items() if key != "resourceType"
            }
            entry["request"] = {"method": "PUT", "url": f"{resource_type}/{resource_id}"}
        entries.append(entry)
    bundle["entry"] = entries
    return bundle


class FhirServerSink:
    """Writes evaluations to a FHIR server so that a re-run updates in place, never duplicates."""

    def __init__(self, client: FhirServerClient) -> None:
        self.client = client
        self._studies: dict[str, str] = {}

    def transaction_for(
        self, evaluation: PatientEvaluation, *, create_study: bool = False
    ) -> dict[str, Any]:
        """The transaction Bundle `write` would send (for `--dry-run`), validated against the
        R4B models: what trialsieve writes is checked here, once, by every caller.

        The ResearchStudy is looked up on the server (and created when `create_study`);
        without it, the study stays in the Bundle as a conditional create.
        """
        capabilities = self.client.capabilities()
        study = None
        if capabilities.conditional_create_on_identifier("ResearchStudy"):
            study = self.study_reference(evaluation.criteria.trial, create=create_study)
        bundle = server_transaction(evaluation, capabilities, study)
        validate_bundle(bundle)
        return bundle

    def study_reference(self, trial: Trial, *, create: bool = True) -> str | None:
        """`ResearchStudy/{id}` of the trial's study on the server: found by its identifier,
        else (when `create`) made by a conditional create; None when absent and not made.

        The search is sent with `Prefer: handling=strict` and read through every page, like
        every other search; only a study that carries the trial's identifier (system and
        value) counts as found: a server that ignores or mis-matches the parameter and
        answers with another trial's study does not put the subjects into that trial.
        """
        known = self._studies.get(trial.id)
        if known is not None:
            return known
        query = study_search(trial)
        search = f"ResearchStudy?{query}"
        matches = self._studies_found(search, trial)
        if len(matches) > 1:
            raise self.client.error(
                f"GET {search}",
                f"{len(matches)} ResearchStudies carry the identifier of {trial.id}",
            )
        if matches:
            resource_id = matches[0].get("id")
            if not isinstance(resource_id, str) or not resource_id:
                raise self.client.error(f"GET {search}", "the server's ResearchStudy has no id")
        elif create:
            resource_id = self._create_study(trial, query)
        else:
            return None
        reference = f"ResearchStudy/{resource_id}"
        self._studies[trial.id] = reference
        return reference

    def _studies_found(self, search: str, trial: Trial) -> list[dict[str, Any]]:
        """The ResearchStudies a search answers (`search.mode` match) that carry the trial's
        identifier; the others are named in a warning and left out."""
        found: list[dict[str, Any]] = []
        others: list[str] = []
        for page in self.client.pages(search):
            for entry in page.get("entry") or ():
                if not isinstance(entry, dict):
                    continue
                resource = entry.get("resource")
                if (entry.get("search") or {}).get("mode", "match") != "match" or not isinstance(
                    resource, dict
                ):
                    continue
                if carries_identifier(resource, trial):
                    found.append(resource)
                else:
                    others.append(f"{resource.get('resourceType')}/{resource.get('id')}")
        if others:
            log.warning(
                "%s: GET %s answered %s, which %s not carry the identifier %s|%s; left out",
                self.client.base_url,
                search,
                ", ".join(others),
                "does" if len(others) == 1 else "do",
                trial.identifier_system,
                trial.id,
            )
        return found

    def _create_study(self, trial: Trial, query: str) -> str:
        """Create the trial's ResearchStudy with `If-None-Exist` (R4 http.html#ccreate) and
        return the id the server holds it by (`created_id`: the Location header's).

        A 200 answer says the server matched a study already there: it must carry the trial's
        identifier (read back when the answer's body is not that study), else a ServerError.
        """
        body = {key: value for key, value in research_study(trial).items() if key != "id"}
        described = f"POST ResearchStudy (If-None-Exist: {query})"
        response = self.client.send(
            "POST",
            "ResearchStudy",
            body=body,
            headers={"If-None-Exist": query, "Prefer": "return=representation"},
        )
        resource_id = created_id(response, "ResearchStudy")
        if resource_id is None:
            raise self.client.error(
                described,
                f"HTTP {response.status_code}: the answer names no ResearchStudy id (no "
                "Location header, no ResearchStudy body)",
                response.status_code,
            )
        if response.status_code != 201:  # a conditional create that matched: check the match
            answered = _json_body(response)
            study = (
                answered
                if answered is not None
                and answered.get("resourceType") == "ResearchStudy"
                and answered.get("id") == resource_id
                else self.client.read("ResearchStudy", resource_id)
            )
            if study is None or not carries_identifier(study, trial):
                raise self.client.error(
                    described,
                    f"the server matched ResearchStudy/{resource_id}, which does not carry the "
                    f"identifier {trial.identifier_system}|{trial.id}; its identifier search "
                    "does not match identifiers exactly",
                    response.status_code,
                )
        return resource_id

    def write(self, evaluation: PatientEvaluation) -> list[WrittenEntry]:
        """Write one evaluation; what the server did with each entry, in entry order."""
        return self.send(self.transaction_for(evaluation, create_study=True))

    def send(self, bundle: dict[str, Any]) -> list[WrittenEntry]:
        """POST a transaction Bundle and check every entry of the answer.

        A retry after a lost answer is safe: every entry is an update or a conditional create.
        """
        requests = [f"{e['request']['method']} {e['request']['url']}" for e in bundle["entry"]]
        described = f"POST / (transaction: {', '.join(requests)})"
        try:
            answer = self.client.json(
                "POST", self.client.base_url, body=bundle, headers={"Prefer": "return=minimal"}
            )
        except ServerError as error:
            message = error.message + _entries_named(error.message, requests)
            raise self._error(described, message, error.status) from error
        if answer.get("resourceType") != "Bundle" or answer.get("type") != "transaction-response":
            kind = answer.get("type") or answer.get("resourceType")
            raise self._error(described, f"expected a transaction-response Bundle, got {kind}")
        entries = answer.get("entry")
        if not isinstance(entries, list) or len(entries) != len(requests):
            count = len(entries) if isinstance(entries, list) else 0
            raise self._error(
                described, f"the answer has {count} entries for {len(requests)} requests"
            )
        written = [
            _written_entry(request, entry) for request, entry in zip(requests, entries, strict=True)
        ]
        failed = [entry for entry in written if not entry.status.startswith("2")]
        if failed:
            problems = "; ".join(f"{entry.request}: {entry.status}" for entry in failed)
            raise self._error(
                described, f"entries failed in a transaction reported done: {problems}"
            )
        return written

    def _error(self, described: str, message: str, status: int | None = None) -> ServerError:
        return ServerError(message, server=self.client.base_url, request=described, status=status)


_ENTRY_PATH = re.compile(r"\bBundle\.entry\[(\d+)\]")


def _entries_named(message: str, requests: Sequence[str]) -> str:
    """`; Bundle.entry[1] is PUT DetectedIssue?identifier=...` for each transaction entry a
    server's message names by FHIRPath (an OperationOutcome's `expression`; 0-based, as
    FHIRPath indexes), so that a rejected transaction says which request it rejected."""
    named = dict.fromkeys(int(index) for index in _ENTRY_PATH.findall(message))
    return "".join(
        f"; Bundle.entry[{index}] is {requests[index]}" for index in named if index < len(requests)
    )


def _written_entry(request: str, entry: Any) -> WrittenEntry:
    response = entry.get("response") if isinstance(entry, dict) else None
    if not isinstance(response, dict):
        return WrittenEntry(request, "no response", None)
    status = response.get("status")
    status_text = status.strip() if isinstance(status, str) and status.strip() else "no status"
    outcome = response.get("outcome")
    if isinstance(outcome, dict) and not status_text.startswith("2"):
        details = outcome_diagnostics(outcome)
        status_text = f"{status_text}: {details}" if details else status_text
    location = response.get("location")
    return WrittenEntry(request, status_text, location if isinstance(location, str) else None)


def research_subjects_on_server(
    client: FhirServerClient, trial: Trial, patient_ids: Sequence[str], page_size: int
) -> list[dict[str, Any]]:
    """The ResearchSubjects of the trial's ResearchStudy for these patients, read back.

    The study is the one `FhirServerSink` writes to: found by its registry identifier, so by
    the id the server gave it (a server may assign its own on conditional create), or, on a
    server that cannot create conditionally on `identifier`, the deterministic id it was PUT
    with. None found: nothing was written. Searched by `study` where the server declares it,
    else read whole and filtered here.
    """
    if client.capabilities().conditional_create_on_identifier("ResearchStudy"):
        found = FhirServerSink(client).study_reference(trial, create=False)
    else:
        found = f"ResearchStudy/{research_study_id(trial)}"
    if found is None:
        return []
    study = found
    params = {"_count": str(page_size)}
    if "study" in client.capabilities().of("ResearchSubject").search_params:
        params["study"] = study
    wanted = {f"Patient/{patient_id}" for patient_id in patient_ids}
    subjects = []
    for page in client.pages("ResearchSubject", params):
        for entry in page.get("entry") or ():
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            if (
                _reference(resource, "study") == study
                and _reference(resource, "individual") in wanted
            ):
                subjects.append(resource)
    return subjects


def _reference(resource: dict[str, Any], field_name: str) -> str | None:
    value = resource.get(field_name)
    literal = value.get("reference") if isinstance(value, dict) else None
    return reference_key(literal) if isinstance(literal, str) else None


def subject_patient_id(subject: dict[str, Any]) -> str | None:
    """The id of the patient a ResearchSubject is about (None when it names none)."""
    key = _reference(subject, "individual")
    return key.split("/", 1)[1] if key else None


def carries_identifier(resource: dict[str, Any], trial: Trial) -> bool:
    """Whether a resource's `identifier` holds the trial's registry identifier (system and
    value, as `research_study` writes it)."""
    identifiers = resource.get("identifier")
    return isinstance(identifiers, list) and any(
        isinstance(identifier, dict)
        and identifier.get("system") == trial.identifier_system
        and identifier.get("value") == trial.id
        for identifier in identifiers
    )


def _json_body(response: httpx.Response) -> dict[str, Any] | None:
    """An answer's body as a JSON object, None when it is empty or not one."""
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def created_id(response: httpx.Response, resource_type: str) -> str | None:
    """The id of a created (or, for a conditional create, matched) resource of
    `resource_type`: from the `Location` header, which R4 http.html#create defines as the new
    resource's address (`[base]/[type]/[id]/_history/[vid]`), else `Content-Location`, else
    the body's `id` when the body is a resource of that type (a server may answer an
    OperationOutcome instead, R4 http.html#return, whose id is not the resource's).
    None when none of them names one."""
    for header in ("Location", "Content-Location"):
        location = response.headers.get(header)
        found = _id_in_location(location, resource_type) if location else None
        if found is not None:
            return found
    body = _json_body(response)
    if body is not None and body.get("resourceType") == resource_type:
        body_id = body.get("id")
        if isinstance(body_id, str) and body_id:
            return body_id
    return None


def _id_in_location(location: str, resource_type: str) -> str | None:
    """The id in `[base]/[type]/[id]` or `[base]/[type]/[id]/_history/[vid]` (absolute or
    relative), None when the URL is not the address of a resource of `resource_type`."""
    segments = [segment for segment in urlsplit(location).path.split("/") if segment]
    if len(segments) >= 4 and segments[-2] == "_history":
        segments = segments[:-2]
    if len(segments) >= 2 and segments[-2] == resource_type:
        return unquote(segments[-1])
    return None
