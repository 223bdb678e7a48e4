"""A FHIR server that refuses part of a pull (issue 12, item 3): a search refused for a type
(HTTP 400, 403, 404, 405, 501, with or without an OperationOutcome) or a type its
CapabilityStatement declares no search on leaves that type unavailable for the patient, so
criteria over it are unknown, never "none on record"; `$everything` refused falls back to the
searches. Scripted HTTP answers (respx), as in tests/fhir_http.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
import respx
from medplum_server import MedplumServer
from refusing_server import Refusal, refusing_server
from scripted_fhir import BASE, capability_statement, patient_search, searchset
from sekmet_server import ROOT, SekmetServer

from engine.errors import ServerError
from engine.evaluate import CompiledCriteria, Truth
from engine.fhir_http import FHIR_JSON
from engine.resource_types import resource_types_to_pull
from engine.screening import screen_patient
from engine.sources import BearerToken, FhirServerClient, FhirServerSource, RetryPolicy

AS_OF = dt.date(2026, 11, 1)
PATIENTS = ROOT / "examples" / "patients"
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female"}
CONDITION = {
    "resourceType": "Condition",
    "id": "c1",
    "code": {"text": "immune thrombocytopenia"},
    "subject": {"reference": "Patient/p1"},
}
NEEDED = {"Patient", "Condition", "MedicationStatement"}
SEARCH = ["read", "search-type"]


def statement(interactions: dict[str, list[str]], *, everything: bool = False) -> dict[str, Any]:
    """A CapabilityStatement listing each type with its interactions and a patient search."""
    declared = [patient_search(name, codes) for name, codes in interactions.items()]
    return capability_statement(declared, everything=everything)


def outcome(diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-supported", "diagnostics": diagnostics}],
    }


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.get("/Patient/p1").mock(return_value=httpx.Response(200, json=PATIENT))
        router.get("/Condition").mock(return_value=httpx.Response(200, json=searchset(CONDITION)))
        yield router


def pull(everything: bool = True) -> Any:
    client = FhirServerClient(BASE, retry=RetryPolicy(attempts=1), sleep=lambda _: None)
    with client:
        return FhirServerSource(client, ["p1"], NEEDED, use_everything=everything).pull("p1")


def declare(server: respx.MockRouter, everything: bool = False, **interactions: list[str]) -> None:
    listed = {"Condition": SEARCH, "MedicationStatement": SEARCH, **interactions}
    server.get("/metadata").mock(
        return_value=httpx.Response(200, json=statement(listed, everything=everything))
    )


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (
            httpx.Response(
                400, json=outcome('The requested resource type "MedicationStatement" is unknown')
            ),
            'HTTP 400 Bad Request: The requested resource type "MedicationStatement" is unknown',
        ),
        (
            httpx.Response(403, json=outcome("scope lacks MedicationStatement")),
            "HTTP 403 Forbidden: scope lacks MedicationStatement",
        ),
        (httpx.Response(404), "HTTP 404 Not Found"),
        (httpx.Response(405), "HTTP 405 Method Not Allowed"),
        (httpx.Response(501, text="no"), "HTTP 501 Not Implemented"),
    ],
    ids=["400", "403", "404", "405", "501"],
)
def test_a_refused_search_leaves_its_type_unavailable_with_the_servers_answer(
    server: respx.MockRouter, answer: httpx.Response, why: str
) -> None:
    declare(server)
    refused = server.get("/MedicationStatement").mock(return_value=answer)
    patient = pull()
    assert refused.call_count == 1  # a refusal is not retried
    assert {f"{r['resourceType']}/{r['id']}" for r in patient.resources} == {
        "Patient/p1",
        "Condition/c1",
    }
    assert patient.unavailable_types == {
        "MedicationStatement": f"not available from the server ({why})"
    }


def test_a_type_declared_without_search_type_is_unavailable_without_asking(
    server: respx.MockRouter,
) -> None:
    declare(server, MedicationStatement=["read", "create"])
    searched = server.get("/MedicationStatement").mock(
        return_value=httpx.Response(200, json=searchset())
    )
    patient = pull()
    assert searched.call_count == 0
    assert patient.unavailable_types == {
        "MedicationStatement": "not available from the server (its CapabilityStatement "
        "declares no search-type interaction on MedicationStatement)"
    }


def test_a_type_the_statement_does_not_list_is_still_asked_for(
    server: respx.MockRouter,
) -> None:
    server.get("/metadata").mock(
        return_value=httpx.Response(200, json=statement({"Condition": SEARCH}))
    )
    statement_of = {
        "resourceType": "MedicationStatement",
        "id": "ms1",
        "status": "active",
        "medicationCodeableConcept": {"text": "aspirin"},
        "subject": {"reference": "Patient/p1"},
    }
    scanned = server.get("/MedicationStatement").mock(
        return_value=httpx.Response(200, json=searchset(statement_of))
    )
    patient = pull()
    assert scanned.call_count == 1
    assert "MedicationStatement/ms1" in {
        f"{r['resourceType']}/{r['id']}" for r in patient.resources
    }
    assert patient.unavailable_types == {}


def test_a_type_the_statement_does_not_list_and_the_server_refuses_is_unavailable(
    server: respx.MockRouter,
) -> None:
    server.get("/metadata").mock(
        return_value=httpx.Response(200, json=statement({"Condition": SEARCH}))
    )
    server.get("/MedicationStatement").mock(
        return_value=httpx.Response(404, json=outcome("Unknown resource type MedicationStatement"))
    )
    patient = pull()
    assert patient.unavailable_types == {
        "MedicationStatement": "not available from the server (HTTP 404 Not Found: Unknown "
        "resource type MedicationStatement)"
    }


def test_everything_refused_falls_back_to_searches_and_a_refused_search_is_unavailable(
    server: respx.MockRouter,
) -> None:
    declare(server, everything=True)
    everything = server.get("/Patient/p1/$everything").mock(
        return_value=httpx.Response(403, json=outcome("$everything is not allowed"))
    )
    server.get("/MedicationStatement").mock(
        return_value=httpx.Response(400, json=outcome("unknown type"))
    )
    patient = pull()
    assert everything.call_count == 1
    assert "Condition/c1" in {f"{r['resourceType']}/{r['id']}" for r in patient.resources}
    assert patient.unavailable_types == {
        "MedicationStatement": "not available from the server (HTTP 400 Bad Request: unknown type)"
    }


def test_a_refusal_after_the_first_page_is_an_error(server: respx.MockRouter) -> None:
    declare(server)
    server.get("/MedicationStatement", params={"page": "2"}).mock(
        return_value=httpx.Response(400, json=outcome("page expired"))
    )
    server.get("/MedicationStatement").mock(
        return_value=httpx.Response(
            200, json=searchset(next_url=f"{BASE}/MedicationStatement?page=2")
        )
    )
    with pytest.raises(ServerError) as caught:
        pull()
    assert "page expired" in str(caught.value)


def test_other_failures_still_abort(server: respx.MockRouter) -> None:
    declare(server)
    server.get("/MedicationStatement").mock(return_value=httpx.Response(401))
    with pytest.raises(ServerError) as caught:
        pull()
    assert caught.value.status == 401


LOGIN_PAGE = httpx.Response(
    200, content=b"<html><body>Login</body></html>", headers={"Content-Type": "text/html"}
)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (LOGIN_PAGE, "the answer is text/html, not FHIR JSON (application/fhir+json)"),
        (
            httpx.Response(200, content=b"<html/>", headers={"Content-Type": FHIR_JSON}),
            "the answer is not JSON (application/fhir+json)",
        ),
        (
            httpx.Response(200, content=b"[]", headers={"Content-Type": FHIR_JSON}),
            "the answer is not a JSON object (application/fhir+json)",
        ),
    ],
)
def test_a_200_answer_that_is_not_fhir_json_is_an_error_not_a_refusal(
    server: respx.MockRouter, answer: httpx.Response, why: str
) -> None:
    """docs/server.md "A type the server refuses": a broken answer is an error for the
    patient. A reverse proxy's login page after a session expired must not turn the type's
    criteria into unknowns and the patient into a written result."""
    declare(server)
    server.get("/MedicationStatement").mock(return_value=answer)
    with pytest.raises(ServerError) as caught:
        pull()
    assert str(caught.value) == (
        f"{BASE}: GET MedicationStatement?patient=Patient/p1&_count=200: {why}"
    )
    assert caught.value.status is None


def test_everything_answered_with_a_login_page_is_an_error_not_a_fallback(
    server: respx.MockRouter,
) -> None:
    declare(server, everything=True)
    server.get("/Patient/p1/$everything").mock(return_value=LOGIN_PAGE)
    searches = server.get("/MedicationStatement")
    with pytest.raises(ServerError, match="the answer is text/html, not FHIR JSON"):
        pull()
    assert searches.call_count == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/fhir+json; charset=utf-8", "application/json", "application/json+fhir", None],
)
def test_json_answers_of_every_usual_content_type_are_read(
    server: respx.MockRouter, content_type: str | None
) -> None:
    declare(server)
    headers = {"Content-Type": content_type} if content_type else {}
    server.get("/MedicationStatement").mock(
        return_value=httpx.Response(200, content=orjson.dumps(searchset()), headers=headers)
    )
    assert pull().unavailable_types == {}


# --------------------------------------------------------------------------- both test servers


@contextmanager
def copy_on(server: SekmetServer | MedplumServer, example: str, patient_id: str) -> Iterator[None]:
    """An example patient under a new id, its other resources given server ids, without its
    ResearchStudy and ResearchSubject; deleted on leaving (the servers are shared, and the
    demo's test evaluates every patient on Medplum)."""
    bundle = orjson.loads((PATIENTS / f"{example}.json").read_bytes())
    entries = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] in ("ResearchStudy", "ResearchSubject"):
            continue
        if resource["resourceType"] == "Patient":
            resource["id"] = patient_id
            entry["request"] = {"method": "PUT", "url": f"Patient/{patient_id}"}
        entries.append(entry)
    bundle["entry"] = entries
    with server.http() as http:
        response = http.post(
            "", content=orjson.dumps(bundle), headers={"Content-Type": "application/fhir+json"}
        )
        assert response.status_code == 200, response.text[:2000]
        locations = [
            "/".join(entry["response"]["location"].split("/_history")[0].split("/")[-2:])
            for entry in response.json()["entry"]
        ]
        try:
            yield
        finally:
            for location in reversed(locations):  # the Patient, written first, last
                http.delete(location).raise_for_status()


def test_on_both_servers_a_refused_type_is_left_out_and_its_criteria_are_unknown(
    fhir_server: SekmetServer | MedplumServer, trial: CompiledCriteria
) -> None:
    """Each FHIR server of the suite behind a loopback proxy that refuses `$everything` and
    every MedicationRequest search (400, an OperationOutcome): the pull brings the rest, names
    MedicationRequest unavailable, and the antithrombotics exclusion, clear on the whole
    record, lacks data instead of reading "none on record"."""
    name = f"refused-{uuid.uuid4().hex[:8]}"
    types = resource_types_to_pull(trial.resource_types)
    refusals = {
        "MedicationRequest": Refusal(400, "MedicationRequest is not available on this server"),
        "$everything": Refusal(501),
    }
    auth = BearerToken(fhir_server.token) if isinstance(fhir_server, SekmetServer) else None
    with (
        copy_on(fhir_server, "itp-relapsed-candidate", name),
        refusing_server(fhir_server.base_url, refusals) as proxy,
    ):
        with fhir_server.client() as client:
            direct = FhirServerSource(client, [name], types).pull(name)
        with FhirServerClient(proxy.base_url, auth=auth) as client:
            refused = FhirServerSource(client, [name], types).pull(name)
    kinds = {resource["resourceType"] for resource in direct.resources}
    assert "MedicationRequest" in kinds
    assert {r["resourceType"] for r in refused.resources} == kinds - {"MedicationRequest"}
    assert refused.unavailable_types == {
        "MedicationRequest": "not available from the server (HTTP 400 Bad Request: "
        "MedicationRequest is not available on this server)"
    }
    whole = screen_patient(trial, direct, AS_OF).evaluation
    partial = screen_patient(trial, refused, AS_OF).evaluation
    said = "MedicationRequest not available from the server (HTTP 400 Bad Request"
    unknown_for_it = [
        result.id
        for result in partial.results
        if result.outcome.truth is Truth.UNKNOWN and said in str(result.outcome)
    ]
    # The antithrombotics exclusion (E2) is clear on the whole record; without
    # MedicationRequest it lacks data, whatever the server.
    assert "exclusion-2-thrombosis-or-antithrombotics" in unknown_for_it
    (antithrombotics,) = [
        r for r in whole.results if r.id == "exclusion-2-thrombosis-or-antithrombotics"
    ]
    assert antithrombotics.outcome.truth is Truth.NOT_MET
    assert (
        f"{said}: MedicationRequest is not available on this server): criteria over it are unknown"
        in partial.data_problems
    )
