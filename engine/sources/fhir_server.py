"""Patients from a live FHIR R4 server.

`FhirServerSource` pulls each patient through a `FhirServerClient` (`engine.fhir_http`, the
HTTP layer sources and sinks share: retries, time bounds, paging, auth):
`Patient/{id}/$everything` when the server declares it, else `Patient/{id}` and one search
`TYPE?patient=Patient/{id}` per resource type the criteria need, always with
`Prefer: handling=strict` (a lenient server would otherwise ignore a parameter it does not
know and answer with every resource of the type). Medications that `medicationReference`
points to are read when the pull did not bring them. The pulled resources go through
`parse_bundle`, so they are checked exactly like a Bundle file.

A server may refuse part of the pull. `$everything` refused (HTTP 400, 403, 404, 405, 501)
falls back to the searches. A search for a type refused the same way on its first page, or a
type whose CapabilityStatement entry declares interactions but not `search-type`, is left
out of the pull and named in `PatientResources.unavailable_types` ("not available from the
server (HTTP 400 Bad Request: <diagnostics>)"): criteria over it are unknown, never "none on
record". A search answered 200 with an OperationOutcome instead of a searchset is refused the
same way (`ServerRefusal`); a 200 answer that is not FHIR JSON at all (a proxy's login page)
is an error, never a refusal (`is_refusal`). A searchset entry holding an OperationOutcome
(`search.mode` outcome) with an error or fatal issue leaves the type "not complete from the
server (<diagnostics>)", the entries read kept; warning and information issues go to
`PatientResources.source_problems`, as does a Medication read the server refuses (the
reference stays unresolved). A type the statement does not list is still asked for (sekmet
serves ResearchSubject without listing it): the server's answer decides.

Every other failure raises `ServerError` naming the server and the request; nothing is logged
but URLs, statuses and fallbacks, never a token.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import orjson

from engine.errors import ServerError, ServerRefusal
from engine.fhir_http import FhirServerClient, ServerCapabilities, outcome_diagnostics
from engine.resource_types import MEDICATION_REFERENCING_TYPES
from engine.resource_types import resource_types_to_pull as resource_types_to_pull
from engine.sources.base import PatientResources
from engine.sources.bundle import parse_bundle
from engine.sources.references import reference_key

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 200

# Fields that tie a resource to its patient (ResearchSubject.individual among them).
_PATIENT_REFERENCE_FIELDS = ("subject", "patient", "individual")
# Answers that refuse a request outright (bad request, forbidden, no such endpoint, method not
# allowed, not implemented): "this server does not do $everything", after which searches are
# tried, or "this server does not give this type", after which it is unavailable.
REFUSALS = frozenset({400, 403, 404, 405, 501})
# OperationOutcome issue severities (R4 `issue-severity`) that say the results are not complete.
_INCOMPLETE = frozenset({"error", "fatal"})


def is_refusal(error: ServerError) -> bool:
    """Whether a failed search or read is the server refusing it: one of `REFUSALS`, or an
    OperationOutcome answered with 200 in place of the searchset or the resource
    (`ServerRefusal`, from `FhirServerClient.pages` and `read`). An answer that is not FHIR
    JSON (a login page), a 401 or a 5xx is no refusal: it stays an error."""
    return isinstance(error, ServerRefusal) or error.status in REFUSALS


# --------------------------------------------------------------------------- source


@dataclass
class _Pulled:
    """Entries of one patient's pull, keyed by `Type/id` (a resource met twice is kept once).

    Malformed entries are kept too, under their position, so that `parse_bundle` reports them.
    """

    entries: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Types the server refused, each with why (`PatientResources.unavailable_types`)."""
    problems: list[str] = field(default_factory=list)
    """What the server noted about the data it gave (`PatientResources.source_problems`)."""

    def add(self, entry: Any) -> None:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        resource_id = resource.get("id") if isinstance(resource, dict) else None
        if isinstance(resource, dict) and isinstance(resource_id, str) and resource_id:
            key = f"{resource.get('resourceType')}/{resource_id}"
        else:
            key = f"#{len(self.entries)}"
        self.entries.setdefault(key, entry)

    def resources(self) -> Iterator[dict[str, Any]]:
        """The well-formed resources pulled so far."""
        return (entry["resource"] for key, entry in self.entries.items() if not key.startswith("#"))


class FhirServerSource:
    """Patients pulled from a FHIR server, one `PatientResources` per id, in the order given.

    `resource_types` are the types the criteria need (Patient is always read; Medication means
    "resolve medicationReference"). With `use_everything` (the default) the pull uses
    `Patient/{id}/$everything` when the CapabilityStatement declares it, and falls back to
    per-type searches when it does not or the server refuses the operation. Searches ask for
    `page_size` resources per page. A type the server declares no patient search for is read
    whole and filtered here (in both modes: such a server leaves it out of `$everything` too),
    since leaving it out would read as "the patient has none". A type the server refuses to
    search is named in the patient's `unavailable_types` (see the module docstring).
    """

    def __init__(
        self,
        client: FhirServerClient,
        patient_ids: Sequence[str],
        resource_types: Collection[str],
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        use_everything: bool = True,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.client = client
        self.patient_ids = tuple(patient_ids)
        self.resource_types = frozenset(resource_types)
        self.page_size = page_size
        self.use_everything = use_everything

    def __iter__(self) -> Iterator[PatientResources]:
        for patient_id in self.patient_ids:
            yield self.pull(patient_id)

    def pull(self, patient_id: str) -> PatientResources:
        """One patient's resources from the server (ServerError, or InputError for bad data)."""
        capabilities = self.client.capabilities()
        by_parameter = {
            resource_type: capabilities.patient_search_param(resource_type)
            for resource_type in sorted(self.resource_types - {"Patient", "Medication"})
        }
        not_searchable = {t for t in by_parameter if _declares_no_search(capabilities, t)}
        searches = [
            (t, parameter)
            for t, parameter in by_parameter.items()
            if parameter and t not in not_searchable
        ]
        unsearchable = [
            t
            for t, parameter in by_parameter.items()
            if parameter is None and t not in not_searchable
        ]
        pulled: _Pulled | None = None
        if self.use_everything and capabilities.supports_everything:
            pulled = self._everything(patient_id)
        if pulled is None:
            pulled = self._searches(patient_id, searches, capabilities)
            for resource_type in sorted(not_searchable):
                self._unavailable(
                    pulled,
                    resource_type,
                    f"its CapabilityStatement declares no search-type interaction on "
                    f"{resource_type}",
                )
        for resource_type in unsearchable:
            self._scan(resource_type, patient_id, pulled)
        if "Medication" in self.resource_types:
            self._add_referenced_medications(pulled)
        origin = f"{self.client.base_url}/Patient/{patient_id}"
        entries = list(pulled.entries.values())
        bundle = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
        patient = parse_bundle(orjson.dumps(bundle), origin)
        if patient.patient_id != patient_id:
            raise ServerError(
                f"asked for Patient/{patient_id}, the server answered with Patient/"
                f"{patient.patient_id}",
                server=self.client.base_url,
                request=f"GET Patient/{patient_id}",
            )
        if not pulled.unavailable and not pulled.problems:
            return patient
        return replace(
            patient,
            unavailable_types=dict(sorted(pulled.unavailable.items())),
            source_problems=tuple(dict.fromkeys(pulled.problems)),
        )

    def _unavailable(
        self, pulled: _Pulled, resource_type: str, why: str, *, state: str = "available"
    ) -> None:
        """Name a type the server does not give (`state` "available") or gave in part
        ("complete") as unavailable for this patient, and log it (at info: front ends report
        it from `PatientResources.unavailable_types`)."""
        pulled.unavailable[resource_type] = f"not {state} from the server ({why})"
        log.info(
            "%s: %s not available (%s); criteria over it are unknown",
            self.client.base_url,
            resource_type,
            why,
        )

    def _search(
        self, pulled: _Pulled, resource_type: str, params: dict[str, str]
    ) -> Iterator[dict[str, Any]]:
        """The entries of a paged search; none, and the type unavailable, when the server
        refuses the search outright, an OperationOutcome in place of its first page among
        refusals (a refusal after the first page is an error). An OperationOutcome entry
        (`search.mode` outcome) with an error or fatal issue makes the type unavailable as not
        complete, the entries read so far kept; other issues go to the data problems."""
        first = True
        try:
            for page in self.client.pages(resource_type, params):
                first = False
                complete = True
                for entry in page.get("entry") or ():
                    outcome = search_outcome(entry)
                    if outcome is None:
                        yield entry
                    elif not self._note_outcome(pulled, resource_type, outcome):
                        complete = False
                if not complete:
                    return
        except ServerError as error:
            if not first or not is_refusal(error):
                raise
            self._unavailable(pulled, resource_type, error.message)

    def _note_outcome(self, pulled: _Pulled, searched: str, outcome: dict[str, Any]) -> bool:
        """Take in an OperationOutcome entry of a search for `searched`: its error and fatal
        issues make the type unavailable (not complete), its warnings and information become
        data problems. False when the results are not complete."""
        errors, notes = outcome_words(outcome)
        if notes:
            pulled.problems.append(f"{searched} search: the server notes: {notes}")
        if errors is None:
            return True
        self._unavailable(pulled, searched, errors, state="complete")
        return False

    def _everything(self, patient_id: str) -> _Pulled | None:
        """`$everything`, all pages; None when the server refuses the operation."""
        url = f"Patient/{quote(patient_id, safe='')}/$everything"
        params = {"_count": str(self.page_size)}
        pulled = _Pulled()
        try:
            for page in self.client.pages(url, params):
                for entry in page.get("entry") or ():
                    outcome = search_outcome(entry)
                    if outcome is None:
                        pulled.add(entry)
                    elif not self._note_outcome(pulled, "Patient/$everything", outcome):
                        log.warning(
                            "%s: %s is not complete (%s); falling back to searches by patient",
                            self.client.base_url,
                            url,
                            pulled.unavailable["Patient/$everything"],
                        )
                        return None
        except ServerError as error:
            if not is_refusal(error) or pulled.entries:
                raise
            log.warning("%s; falling back to searches by patient", error)
            return None
        return pulled

    def _searches(
        self,
        patient_id: str,
        searches: Sequence[tuple[str, str]],
        capabilities: ServerCapabilities,
    ) -> _Pulled:
        """`Patient/{id}`, then one paged search per (type, patient search parameter)."""
        pulled = _Pulled()
        patient = self.client.read("Patient", patient_id)
        if patient is None:
            raise ServerError(
                f"no Patient/{patient_id} on the server",
                server=self.client.base_url,
                request=f"GET Patient/{patient_id}",
                status=404,
            )
        pulled.add({"fullUrl": f"{self.client.base_url}/Patient/{patient_id}", "resource": patient})
        for resource_type, parameter in searches:
            params = {parameter: f"Patient/{patient_id}", "_count": str(self.page_size)}
            include = f"{resource_type}:medication"
            if resource_type in MEDICATION_REFERENCING_TYPES and capabilities.can_include(
                resource_type, include
            ):
                params["_include"] = include
            for entry in self._search(pulled, resource_type, params):
                pulled.add(entry)
        return pulled

    def _scan(self, resource_type: str, patient_id: str, pulled: _Pulled) -> None:
        """Every resource of a type the server cannot search by patient, this patient's kept.

        Such a server (sekmet has no search parameters on ResearchSubject) usually leaves the
        type out of `$everything` as well. Reading the whole type is slow on a large server,
        but leaving the type out would read as "the patient has none".
        """
        log.warning(
            "%s declares no patient search for %s: reading every %s and keeping Patient/%s's",
            self.client.base_url,
            resource_type,
            resource_type,
            patient_id,
        )
        for entry in self._search(pulled, resource_type, {"_count": str(self.page_size)}):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and self._is_about(resource, patient_id):
                pulled.add(entry)

    def _is_about(self, resource: dict[str, Any], patient_id: str) -> bool:
        """Whether the resource's subject, patient or individual is this server's patient."""
        for field_name in _PATIENT_REFERENCE_FIELDS:
            value = resource.get(field_name)
            reference = value.get("reference") if isinstance(value, dict) else None
            if (
                isinstance(reference, str)
                and reference_key(reference) == f"Patient/{patient_id}"
                and self.client.is_on_server(reference)
            ):
                return True
        return False

    def _add_referenced_medications(self, pulled: _Pulled) -> None:
        """Read each Medication a medicationReference names that the pull did not bring."""
        wanted: dict[str, str] = {}
        for resource in list(pulled.resources()):
            if resource.get("resourceType") not in MEDICATION_REFERENCING_TYPES:
                continue
            reference = resource.get("medicationReference")
            literal = reference.get("reference") if isinstance(reference, dict) else None
            if not isinstance(literal, str):
                continue
            key = reference_key(literal)
            if key is None or not key.startswith("Medication/") or key in pulled.entries:
                continue
            if not self.client.is_on_server(literal):
                log.warning("%s: not following %s, which is on another server", key, literal)
                continue
            wanted.setdefault(key, key.split("/", 1)[1])
        for key, medication_id in wanted.items():
            try:
                medication = self.client.read("Medication", medication_id)
            except ServerError as error:
                if not is_refusal(error):  # refused, or 200 with an outcome
                    raise
                # The reference stays unresolved (a data problem of the record), with why.
                log.warning("%s: %s not read (%s)", self.client.base_url, key, error.message)
                pulled.problems.append(f"{key} not read from the server ({error.message})")
                continue
            if medication is None:
                log.warning("%s: %s is not on the server", self.client.base_url, key)
                continue
            pulled.add({"fullUrl": f"{self.client.base_url}/{key}", "resource": medication})


def outcome_words(outcome: dict[str, Any]) -> tuple[str | None, str | None]:
    """An OperationOutcome's error and fatal issues (the results are not complete), and its
    other issues (warning, information), each as one line; None when it has none."""
    issues = [issue for issue in outcome.get("issue") or () if isinstance(issue, dict)]
    errors = [issue for issue in issues if issue.get("severity") in _INCOMPLETE]
    notes = [issue for issue in issues if issue.get("severity") not in _INCOMPLETE]
    return (
        (outcome_diagnostics({"issue": errors}) or "an OperationOutcome") if errors else None,
        (outcome_diagnostics({"issue": notes}) or "an OperationOutcome") if notes else None,
    )


def search_outcome(entry: Any) -> dict[str, Any] | None:
    """The OperationOutcome of a searchset entry whose `search.mode` is `outcome` (R4 3.1.1.5.7
    "Searching" and Bundle.entry.search.mode: information about the search), else None."""
    if not isinstance(entry, dict):
        return None
    search, resource = entry.get("search"), entry.get("resource")
    if not isinstance(search, dict) or search.get("mode") != "outcome":
        return None
    if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
        return None
    return resource


def _declares_no_search(capabilities: ServerCapabilities, resource_type: str) -> bool:
    """Whether the CapabilityStatement lists the type with interactions, `search-type` not
    among them (a type it does not list, or lists without interactions, may still be asked)."""
    interactions = capabilities.of(resource_type).interactions
    return bool(interactions) and "search-type" not in interactions


def patient_ids_on_server(client: FhirServerClient, page_size: int) -> list[str]:
    """The ids of every Patient on the server (a paged `Patient?_count=N` search), sorted."""
    ids: set[str] = set()
    for page in client.pages("Patient", {"_count": str(page_size)}):
        for entry in page.get("entry") or ():
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and isinstance(resource.get("id"), str):
                ids.add(resource["id"])
    return sorted(ids)
