"""FHIR server sink: write one evaluation's results to the server in one transaction.

The report's `transaction_bundle` ensures the ResearchStudy by conditional create and upserts
the ResearchSubject and DetectedIssue by conditional update on their identifiers. A server
that cannot search a type by `identifier` (its CapabilityStatement lists no such searchParam,
or no conditional create/update) cannot do that; for such a type the entry becomes
`PUT TYPE/{deterministic id}` instead, which updates in place as well. The resources
themselves are the report's, unchanged.

The transaction is atomic on the server: it is written whole or not at all. Its answer is
checked entry by entry; anything but success raises `ServerError`. The requests go through
`engine.fhir_http.FhirServerClient`, the HTTP layer (retries, auth) the sources use too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ServerError
from engine.evaluate import PatientEvaluation
from engine.fhir_http import FhirServerClient, ServerCapabilities, outcome_diagnostics
from engine.report import transaction_bundle, validate_bundle
from engine.sources.references import reference_key


@dataclass(frozen=True)
class WrittenEntry:
    """What the server did with one entry: its request, status line and location."""

    request: str
    status: str
    location: str | None


def server_transaction(
    evaluation: PatientEvaluation, capabilities: ServerCapabilities
) -> dict[str, Any]:
    """The report's transaction Bundle, with conditional requests the server cannot do by id."""
    bundle = transaction_bundle(evaluation)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        resource_type = resource["resourceType"]
        request = entry["request"]
        if request["method"] == "POST" and "ifNoneExist" in request:
            conditional_ok = capabilities.conditional_create_on_identifier(resource_type)
        elif request["method"] == "PUT" and "?" in request["url"]:
            conditional_ok = capabilities.conditional_update_on_identifier(resource_type)
        else:
            continue
        if not conditional_ok:
            entry["request"] = {"method": "PUT", "url": f"{resource_type}/{resource['id']}"}
    return bundle


class FhirServerSink:
    """Writes evaluations to a FHIR server so that a re-run updates in place, never duplicates."""

    def __init__(self, client: FhirServerClient) -> None:
        self.client = client

    def transaction_for(self, evaluation: PatientEvaluation) -> dict[str, Any]:
        """The transaction Bundle `write` would send (for `--dry-run`), validated against the
        R4B models: what trialsieve writes is checked here, once, by every caller."""
        bundle = server_transaction(evaluation, self.client.capabilities())
        validate_bundle(bundle)
        return bundle

    def write(self, evaluation: PatientEvaluation) -> list[WrittenEntry]:
        """Write one evaluation; what the server did with each entry, in entry order."""
        return self.send(self.transaction_for(evaluation))

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
            raise self._error(described, error.message, error.status) from error
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
    client: FhirServerClient, study_id: str, patient_ids: Sequence[str], page_size: int
) -> list[dict[str, Any]]:
    """The ResearchSubjects of `ResearchStudy/{study_id}` for these patients, read back.

    Searched by `study` where the server declares it, else read whole and filtered here.
    """
    study = f"ResearchStudy/{study_id}"
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
