"""CDS Hooks: discovery, cards from prefetch, fetching what the prefetch lacks from the
request's fhirServer (sekmet), and 400 for malformed calls.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sekmet_server import SekmetServer
from service_support import AS_OF, AUTH, PATIENTS, ClientFactory, example, prefetch_from

from engine.evaluate import PatientEvaluation
from engine.screening import screen_patient
from engine.service.cds_hooks import card
from engine.service.trials import LoadedTrial
from engine.sources import read_bundle_file

SERVICE = "/cds-services/NCT05315778"


def hook_call(patient_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"patientId": patient_id, "userId": "Practitioner/example"},
        **fields,
    }


def loaded_trial(api: TestClient) -> LoadedTrial:
    trial: LoadedTrial = api.app.state.service.trials["NCT05315778"]  # type: ignore[attr-defined]
    return trial


def evaluated_file(api: TestClient, name: str) -> PatientEvaluation:
    trial = loaded_trial(api).criteria
    return screen_patient(trial, read_bundle_file(PATIENTS / f"{name}.json"), AS_OF).evaluation


def test_discovery_asks_for_what_the_criteria_read(api: TestClient) -> None:
    (service,) = api.get("/cds-services").json()["services"]
    assert service["hook"] == "patient-view"
    assert service["id"] == "NCT05315778"
    assert service["prefetch"] == {
        "patient": "Patient/{{context.patientId}}",
        "allergyIntolerance": "AllergyIntolerance?patient={{context.patientId}}&_count=1000",
        "condition": "Condition?patient={{context.patientId}}&_count=1000",
        "medicationAdministration": "MedicationAdministration?patient={{context.patientId}}"
        "&_count=1000&_include=MedicationAdministration:medication",
        "medicationRequest": "MedicationRequest?patient={{context.patientId}}&_count=1000"
        "&_include=MedicationRequest:medication",
        "medicationStatement": "MedicationStatement?patient={{context.patientId}}&_count=1000"
        "&_include=MedicationStatement:medication",
        "observation": "Observation?patient={{context.patientId}}&_count=1000",
        "procedure": "Procedure?patient={{context.patientId}}&_count=1000",
        "researchSubject": "ResearchSubject?patient={{context.patientId}}&_count=1000",
    }


@pytest.mark.parametrize(
    "name", ["itp-relapsed-candidate", "itp-secondary-lupus", "itp-relapsed-missing-labs"]
)
def test_cards_from_prefetch(api: TestClient, name: str) -> None:
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    response = api.post(SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH)
    assert response.status_code == 200, response.text
    (answer,) = response.json()["cards"]
    assert same_card(answer, card(evaluated_file(api, name)))
    assert len(answer["summary"]) < 140
    assert answer["source"]["label"] == "trialsieve"
    assert answer["indicator"] in ("info", "warning")


def test_card_wording(api: TestClient) -> None:
    candidate = card(evaluated_file(api, "itp-relapsed-candidate"))
    assert candidate["summary"] == "May be eligible for NCT05315778: 14 questions to answer"
    assert "### What to check" in candidate["detail"]
    assert "### What excludes" not in candidate["detail"]
    assert candidate["detail"].count("\n- **") == 3  # a few items; the report has all
    assert "11 more on the eligibility report page." in candidate["detail"]
    ineligible = card(evaluated_file(api, "itp-secondary-lupus"))
    assert ineligible["summary"].startswith("Not eligible for NCT05315778: E1 ")
    assert "### What excludes" in ineligible["detail"]
    assert "Protocol: *Secondary ITP*" in ineligible["detail"]
    assert "What to check" not in ineligible["detail"]
    assert "What is missing" not in ineligible["detail"]
    missing = card(evaluated_file(api, "itp-relapsed-missing-labs"))
    assert "data items missing" in missing["summary"]
    assert "### What is missing" in missing["detail"]
    assert "result \\(LOINC " in missing["detail"]


def test_report_link(service_client: ClientFactory) -> None:
    api = service_client(report_url_template="https://reports.example.org/{trial_id}/{patient_id}")
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    (answer,) = api.post(SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH).json()[
        "cards"
    ]
    assert answer["links"] == [
        {
            "label": "Eligibility report",
            "url": "https://reports.example.org/NCT05315778/itp-relapsed-candidate",
            "type": "absolute",
        }
    ]


def same_card(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """The same card but for its uuid (fresh on every call)."""
    return {k: v for k, v in one.items() if k != "uuid"} == {
        k: v for k, v in other.items() if k != "uuid"
    }


def test_cards_follow_the_card_attributes_of_cds_hooks_2(api: TestClient) -> None:
    """CDS Hooks 2.0, "Card Attributes": `uuid` unique per card (feedback names it), so two
    calls give two uuids; `summary` "<140-character"; `source.topic` a Coding, with a system
    (the registry's)."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    first, second = (
        api.post(SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH).json()["cards"][0]
        for _ in range(2)
    )
    assert first["uuid"] != second["uuid"]
    assert same_card(first, second)
    assert first["source"]["topic"] == {
        "system": "https://clinicaltrials.gov",
        "code": "NCT05315778",
        "display": loaded_trial(api).criteria.trial.title,
    }
    assert len(first["summary"]) < 140


def test_a_null_prefetch_value_is_no_data(api: TestClient) -> None:
    """CDS Hooks 2.0, "Prefetch": "If the CDS Client has no data to populate a template
    prefetch key, the prefetch template key MUST have a value of null": no fetch (no
    fhirServer needed), the type counts as empty."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    response = api.post(
        SERVICE, json=hook_call(name, prefetch={**prefetch, "observation": None}), headers=AUTH
    )
    assert response.status_code == 200, response.text
    full = api.post(SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH)
    assert response.json()["cards"][0]["summary"] != full.json()["cards"][0]["summary"]


def test_a_missing_or_failed_prefetch_without_fhir_server_is_412(api: TestClient) -> None:
    """CDS Hooks 2.0, "Prefetch" / HTTP status codes: a prefetch key that is absent, or holds
    the OperationOutcome of a failed prefetch, with no fhirServer to read it from: 412."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    failed = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "search timed out"}],
    }
    for given in (without(prefetch, "condition"), {**prefetch, "condition": failed}):
        response = api.post(SERVICE, json=hook_call(name, prefetch=given), headers=AUTH)
        assert response.status_code == 412, response.text
        assert response.json()["issue"][0]["expression"] == ["prefetch.condition"]
    assert "search timed out" in response.json()["issue"][0]["diagnostics"]


def test_feedback_is_logged_per_card(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """CDS Hooks 2.0, "Feedback": `POST {baseUrl}/cds-services/{id}/feedback` with the
    outcome of each card (accepted / overridden, outcomeTimestamp, overrideReason)."""
    body = {
        "feedback": [
            {
                "card": "0f2c8e7a-1111-4a3b-9c1d-000000000001",
                "outcome": "accepted",
                "outcomeTimestamp": "2026-11-01T10:00:00Z",
            },
            {
                "card": "0f2c8e7a-1111-4a3b-9c1d-000000000002",
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-01T10:01:00Z",
                "overrideReason": {
                    "reason": {"system": "http://example.org", "code": "not-now"},
                    "userComment": "free text that is not logged",
                },
            },
        ]
    }
    with caplog.at_level("INFO", logger="engine.service"):
        response = api.post(f"{SERVICE}/feedback", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    logged = [r for r in caplog.records if r.getMessage() == "cds card feedback"]
    assert [r.fields["outcome"] for r in logged] == ["accepted", "overridden"]  # type: ignore[attr-defined]
    assert logged[1].fields["override_reason"] == "not-now"  # type: ignore[attr-defined]
    assert "free text" not in caplog.text
    bad = api.post(f"{SERVICE}/feedback", json={"feedback": [{"card": "x"}]}, headers=AUTH)
    assert bad.status_code == 400
    unknown = api.post("/cds-services/NCT00000000/feedback", json=body, headers=AUTH)
    assert unknown.status_code == 404
    unauthenticated = api.post(f"{SERVICE}/feedback", json=body)
    assert unauthenticated.status_code == 401


def without(prefetch: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in prefetch.items() if key not in keys}


def test_malformed_calls(api: TestClient) -> None:
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    wrong_patient = copy.deepcopy(prefetch)
    wrong_patient["patient"]["id"] = "someone-else"
    paged = copy.deepcopy(prefetch)
    paged["observation"]["link"] = [{"relation": "next", "url": "http://ehr/fhir?page=2"}]
    cases: list[tuple[dict[str, Any], int, list[str] | None]] = [
        (hook_call(name, hook="order-select", prefetch=prefetch), 400, ["hook"]),
        ({**hook_call(name, prefetch=prefetch), "context": {}}, 400, ["context.patientId"]),
        (without(hook_call(name), "hookInstance"), 400, ["hookInstance"]),
        (hook_call(name, prefetch=without(prefetch, "observation")), 412, ["prefetch.observation"]),
        (hook_call(name, prefetch=paged), 412, ["prefetch.observation"]),
        (hook_call(name, prefetch=wrong_patient), 400, ["prefetch.patient"]),
        (
            hook_call(name, prefetch={**prefetch, "procedure": {"resourceType": "Procedure"}}),
            400,
            ["prefetch.procedure"],
        ),
        (hook_call(name, prefetch={**prefetch, "procedure": [1]}), 400, ["prefetch.procedure"]),
        (hook_call(name, fhirServer="file:///etc/passwd"), 400, ["fhirServer"]),
        (
            hook_call(
                name,
                fhirServer="http://127.0.0.1:9/fhir",
                fhirAuthorization={"access_token": "x", "token_type": "MAC"},
            ),
            403,  # not allow-listed: refused before anything else is looked at
            ["fhirServer"],
        ),
    ]
    for body, status, expression in cases:
        response = api.post(SERVICE, json=body, headers=AUTH)
        assert response.status_code == status, (body.keys(), response.text)
        issue = response.json()["issue"][0]
        assert issue.get("expression") == expression, issue
    unknown = api.post("/cds-services/NCT0", json=hook_call(name, prefetch=prefetch), headers=AUTH)
    assert unknown.status_code == 404


def test_untrusted_fhir_server(service_client: ClientFactory) -> None:
    api = service_client(trusted_fhir_servers=("https://ehr.example.org/fhir",))
    body = hook_call("p1", fhirServer="http://127.0.0.1:9/fhir")
    response = api.post(SERVICE, json=body, headers=AUTH)
    assert response.status_code == 403
    assert response.json()["issue"][0]["expression"] == ["fhirServer"]


def server_call(sekmet: SekmetServer, name: str, prefetch: dict[str, Any] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "fhirServer": sekmet.base_url,
        "fhirAuthorization": {
            "access_token": sekmet.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "trialsieve",
        },
    }
    if prefetch is not None:
        fields["prefetch"] = prefetch
    return hook_call(name, **fields)


def test_no_prefetch_fetches_from_the_fhir_server(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    api = service_client(trusted_fhir_servers=(sekmet.base_url,))
    name = "itp-relapsed-candidate"
    response = api.post(SERVICE, json=server_call(sekmet, name, None), headers=AUTH)
    assert response.status_code == 200, response.text
    (answer,) = response.json()["cards"]
    assert same_card(answer, card(evaluated_file(api, name)))


def test_missing_prefetch_keys_are_fetched(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    api = service_client(trusted_fhir_servers=(sekmet.base_url,))
    name = "itp-secondary-lupus"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    failed = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    partial = {**without(prefetch, "condition", "medicationRequest"), "observation": failed}
    response = api.post(SERVICE, json=server_call(sekmet, name, partial), headers=AUTH)
    assert response.status_code == 200, response.text
    (answer,) = response.json()["cards"]
    assert same_card(answer, card(evaluated_file(api, name)))


def test_fhir_server_errors(service_client: ClientFactory, sekmet: SekmetServer) -> None:
    api = service_client(trusted_fhir_servers=(sekmet.base_url,))
    unknown = api.post(SERVICE, json=server_call(sekmet, "nobody-here", None), headers=AUTH)
    assert unknown.status_code == 404
    assert "no such resource (GET Patient)" in unknown.json()["issue"][0]["diagnostics"]
    refused = server_call(sekmet, "itp-too-old", None)
    refused["fhirAuthorization"]["access_token"] = "wrong-token"
    response = api.post(SERVICE, json=refused, headers=AUTH)
    assert response.status_code == 502
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "refused the request: HTTP 401" in diagnostics
    assert sekmet.base_url not in diagnostics  # upstream addresses are never echoed
