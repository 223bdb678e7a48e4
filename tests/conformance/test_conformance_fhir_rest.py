"""FHIR R4 RESTful API (http://hl7.org/fhir/R4/http.html), as trialsieve writes results back.

Every test names the section it checks. The integration tests run against both FHIR servers
of the suite (`fhir_server`: sekmet-fhir and Medplum's FHIR router, written independently):
two runs of the write-back leave one ResearchSubject and one DetectedIssue per patient, with
the right status and a study reference that resolves on the server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import respx
from medplum_server import MedplumServer
from sekmet_server import ROOT, SekmetServer

from engine.errors import ServerError
from engine.evaluate import CompiledCriteria, PatientEvaluation, evaluate_patient
from engine.record import build_record
from engine.report import transaction_bundle
from engine.report.resources import DETECTED_ISSUE_SYSTEM, RESEARCH_SUBJECT_SYSTEM
from engine.sinks import FhirServerSink
from engine.sources import FhirServerClient, RetryPolicy, read_bundle_file

AS_OF = dt.date(2026, 11, 1)
PATIENTS = ("itp-too-old", "itp-relapsed-candidate")


def evaluate_file(trial: CompiledCriteria, patient_id: str) -> PatientEvaluation:
    path = ROOT / "examples" / "patients" / f"{patient_id}.json"
    return evaluate_patient(trial, build_record(read_bundle_file(path), trial.terminology), AS_OF)


def every(http: httpx.Client, resource_type: str) -> Iterator[dict[str, Any]]:
    """Every resource of a type on the server (an unfiltered search, all pages)."""
    url: str | None = f"{resource_type}?_count=1000"
    while url is not None:
        response = http.get(url)
        response.raise_for_status()
        bundle = response.json()
        yield from (entry["resource"] for entry in bundle.get("entry", ()))
        links = bundle.get("link") or ()
        url = next((link["url"] for link in links if link["relation"] == "next"), None)


def ours(resource: dict[str, Any]) -> bool:
    """Written by trialsieve (the examples hold a ResearchSubject of another study)."""
    systems = {identifier.get("system") for identifier in resource.get("identifier", ())}
    return bool(systems & {RESEARCH_SUBJECT_SYSTEM, DETECTED_ISSUE_SYSTEM})


def test_bodies_of_conditional_interactions_carry_no_id(trial: CompiledCriteria) -> None:
    """R4 3.1.0.4.3 (conditional update: a server may reject a body id that matches nothing)
    and 3.1.0.8.1 (conditional create): no `id` in the bodies; R4 2.36.4.1 (Bundle fullUrl):
    `urn:uuid:` fullUrls, the ResearchSubject's study reference resolving inside the Bundle."""
    bundle = transaction_bundle(evaluate_file(trial, "itp-too-old"))
    study, subject, issue = bundle["entry"]
    assert [entry["request"]["method"] for entry in bundle["entry"]] == ["POST", "PUT", "PUT"]
    assert all("id" not in entry["resource"] for entry in bundle["entry"])
    assert all(entry["fullUrl"].startswith("urn:uuid:") for entry in bundle["entry"])
    assert subject["resource"]["study"]["reference"] == study["fullUrl"]
    assert issue["request"]["url"].startswith("DetectedIssue?identifier=")


def test_search_urls_are_percent_encoded(trial: CompiledCriteria) -> None:
    """R4 3.1.1.5.6 / 3.1.1.3 (token search `system|code`, URL-encoded in a query): the `|`
    is `%7C` and the `/` inside the value `%2F`, so the query decodes to the token."""
    bundle = transaction_bundle(evaluate_file(trial, "itp-too-old"))
    study, subject, _issue = bundle["entry"]
    assert "|" not in study["request"]["ifNoneExist"]
    query = subject["request"]["url"].split("?", 1)[1]
    assert "|" not in query
    name, value = query.split("=", 1)
    assert name == "identifier"
    assert unquote(value) == (
        "https://trialsieve.org/fhir/identifier/research-subject|NCT05315778/itp-too-old"
    )


def test_two_runs_leave_one_subject_and_one_issue_per_patient(
    fhir_server: SekmetServer | MedplumServer, trial: CompiledCriteria
) -> None:
    """R4 3.1.0.4.3 (conditional update: no match creates, one match updates) and 3.1.0.8.1
    (conditional create, If-None-Exist) or, where a server declares neither, R4 3.1.0.4
    (update as create with a client id); R4 3.1.0.11 (transaction): each run is one
    transaction per patient and its every entry succeeds. After two runs the server holds one
    ResearchSubject and one DetectedIssue per patient, with the right status, and one
    ResearchStudy the subjects' study references resolve to (R4 2.3.0 literal references)."""
    evaluations = [evaluate_file(trial, patient_id) for patient_id in PATIENTS]
    assert [e.status.value for e in evaluations] == ["ineligible", "candidate"]
    runs = []
    for _run in range(2):
        with fhir_server.client() as client:
            sink = FhirServerSink(client)  # a fresh sink: each run finds the study anew
            runs.append([sink.write(evaluation) for evaluation in evaluations])
    for written in runs[1]:
        assert all(entry.status.startswith("200") for entry in written), written
    with fhir_server.http() as http:
        subjects = list(every(http, "ResearchSubject"))
        issues = list(every(http, "DetectedIssue"))
        studies = [
            study
            for study in every(http, "ResearchStudy")
            if study["identifier"][0]["value"] == trial.trial.id
        ]
        assert len(studies) == 1
        for patient_id, evaluation in zip(PATIENTS, evaluations, strict=True):
            mine = [
                s
                for s in subjects
                if s["individual"]["reference"] == f"Patient/{patient_id}" and ours(s)
            ]
            assert len(mine) == 1, mine
            assert mine[0]["status"] == evaluation.status.value
            reference = mine[0]["study"]["reference"]
            assert reference == f"ResearchStudy/{studies[0]['id']}"
            resolved = http.get(reference)
            assert resolved.status_code == 200
            assert resolved.json()["identifier"][0]["value"] == trial.trial.id
            theirs = [
                i
                for i in issues
                if i["patient"]["reference"] == f"Patient/{patient_id}" and ours(i)
            ]
            assert len(theirs) == 1, theirs


# --------------------------------------------------------------------------- paging links

TENANT_BASE = "https://fhir.example.org/tenant-a/fhir"


def _page(next_url: str | None = None) -> httpx.Response:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "link": links})


@pytest.mark.parametrize(
    ("link", "followed"),
    [
        ("/tenant-a/fhir/Observation?page=2", f"{TENANT_BASE}/Observation?page=2"),
        ("?page=2", f"{TENANT_BASE}/Observation?page=2"),
        ("Observation?page=2", f"{TENANT_BASE}/Observation?page=2"),
        ("../fhir/Observation?page=2", f"{TENANT_BASE}/Observation?page=2"),
        (f"{TENANT_BASE}/Observation?page=2", f"{TENANT_BASE}/Observation?page=2"),
    ],
)
def test_a_relative_next_link_is_resolved_against_the_page_that_carries_it(
    link: str, followed: str
) -> None:
    """R4 http.html#paging (the links are opaque: followed as given) and RFC 3986 §5.2
    (a relative reference is resolved against the URL of the document it is in): an
    absolute-path, query-only or relative-path link leads to the page the server meant, not
    to the base URL with the link appended."""
    with respx.mock(assert_all_called=False) as mock:
        second = mock.get(followed).mock(return_value=_page())
        mock.get(f"{TENANT_BASE}/Observation").mock(side_effect=[_page(link), _page()])
        with FhirServerClient(TENANT_BASE, retry=RetryPolicy(attempts=1)) as client:
            pages = list(client.pages("Observation", {"patient": "Patient/p1"}))
    assert len(pages) == 2
    assert str(second.calls.last.request.url) == followed
    assert second.calls.last.request.headers["Prefer"] == "handling=strict"


def test_a_network_path_next_link_is_another_host() -> None:
    """RFC 3986 §4.2: `//host/path` is a network-path reference, so it names another host: it
    is refused before any request (the token stays on the server), never sent to the base."""
    other = "//other.example.org/fhir/Observation?page=2"
    with respx.mock(assert_all_called=False) as mock:
        first = mock.get(f"{TENANT_BASE}/Observation").mock(return_value=_page(other))
        anything_else = mock.route().mock(return_value=_page())
        with (
            FhirServerClient(TENANT_BASE, retry=RetryPolicy(attempts=1)) as client,
            pytest.raises(ServerError) as caught,
        ):
            list(client.pages("Observation"))
    assert f"the next link {other} is outside the base URL" in str(caught.value)
    assert first.call_count == 1
    assert anything_else.call_count == 0


@pytest.mark.parametrize(
    ("reference", "on_server"),
    [
        ("Medication/m1", True),
        (f"{TENANT_BASE}/Medication/m1", True),
        ("//other.example.org/fhir/Medication/m1", False),
        ("/tenant-b/fhir/Medication/m1", False),
        ("https://other.example.org/tenant-a/fhir/Medication/m1", False),
        ("urn:uuid:0b9f1b4e-9a8c-4f3b-8e1a-2b7c0d3e4f5a", False),
    ],
)
def test_a_reference_is_on_the_server_only_when_it_resolves_under_the_base_url(
    reference: str, on_server: bool
) -> None:
    """R4 references.html#literal (a relative reference is relative to the server's base)
    and RFC 3986 §5.2: a protocol-relative or absolute-path reference is not this server's."""
    with FhirServerClient(TENANT_BASE) as client:
        assert client.is_on_server(reference) is on_server


@pytest.mark.parametrize(
    ("url", "on_server"),
    [
        (f"{TENANT_BASE}/../../tenant-b/fhir/Patient", False),
        (f"{TENANT_BASE}/%2E%2E/%2e%2e/tenant-b/fhir/Patient", False),
        (f"{TENANT_BASE}/Patient/%2E%2E/%2E%2E/%2E%2E/tenant-b/fhir/Patient", False),
        ("https://fhir.example.org/tenant-a/fhirx/Patient", False),
        ("https://fhir.example.org/tenant-a%2Ffhir/Patient", False),
        ("http://fhir.example.org/tenant-a/fhir/Patient", False),
        ("https://fhir.example.org:8443/tenant-a/fhir/Patient", False),
        ("HTTPS://FHIR.Example.ORG:443/tenant-a/fhir/Patient", True),
        ("https://fhir.example.org/tenant-%61/fhir/Patient", True),
        (f"{TENANT_BASE}/Patient/../Observation?page=2", True),
        (f"{TENANT_BASE}?_count=1", True),
    ],
)
def test_the_base_url_check_compares_normalised_urls(url: str, on_server: bool) -> None:
    """RFC 3986 §6.2.2 (syntax-based normalisation: case, percent-encoding, dot segments) and
    §6.2.3 (the scheme's default port): `BASE/../other` or `BASE/%2E%2E/other` leaves the
    base URL, so the token is not sent there; the same server written in other case or with
    its default port is the base URL. The prefix is compared by whole segments."""
    with FhirServerClient(TENANT_BASE) as client:
        assert client.is_on_server(url) is on_server


def test_a_next_link_that_climbs_out_of_the_base_url_is_refused_before_any_request() -> None:
    """docs/server.md "Authentication": the token goes only under the base URL; on a
    multi-tenant gateway, another tenant's path is another server."""
    escape = f"{TENANT_BASE}/%2E%2E/%2E%2E/tenant-b/fhir/Observation?page=2"
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{TENANT_BASE}/Observation").mock(return_value=_page(escape))
        anything_else = mock.route().mock(return_value=_page())
        with (
            FhirServerClient(TENANT_BASE, retry=RetryPolicy(attempts=1)) as client,
            pytest.raises(ServerError) as caught,
        ):
            list(client.pages("Observation"))
    assert anything_else.call_count == 0
    assert "is outside the base URL" in str(caught.value)
