"""CDS Hooks as trialsieve answers it: the prefetch templates, the cards' wording and report
link, 400 for malformed calls, the fhirServer allow-list and how a fhirServer's failures are
worded. What the CDS Hooks 2.0 text requires of any service is checked, section by section, in
tests/conformance/test_conformance_cds_hooks.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sekmet_server import SekmetServer
from service_support import (
    AS_OF,
    AUTH,
    CDS_SERVICE,
    ClientFactory,
    evaluated_file,
    example,
    fhir_authorization,
    hook_call,
    loaded_trial,
    prefetch_from,
    same_card,
    server_call,
    without,
)

from engine.evaluate import Truth
from engine.screening import screen_patient
from engine.service.cds_hooks import assemble, card, read_prefetch

SERVICE = CDS_SERVICE


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


def test_malformed_calls(api: TestClient) -> None:
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    wrong_patient = copy.deepcopy(prefetch)
    wrong_patient["patient"]["id"] = "someone-else"
    cases: list[tuple[dict[str, Any], int, list[str] | None]] = [
        (hook_call(name, hook="order-select", prefetch=prefetch), 400, ["hook"]),
        ({**hook_call(name, prefetch=prefetch), "context": {}}, 400, ["context.patientId"]),
        (without(hook_call(name), "hookInstance"), 400, ["hookInstance"]),
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
                fhirAuthorization=fhir_authorization("x"),
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


def test_fhir_server_errors(service_client: ClientFactory, sekmet: SekmetServer) -> None:
    """What the 412 (tests/conformance, "Prefetch") says: what was asked, what came back."""
    api = service_client(trusted_fhir_servers=(sekmet.base_url,))
    unknown = api.post(SERVICE, json=server_call(sekmet, "nobody-here", None), headers=AUTH)
    assert unknown.status_code == 412
    assert "no such resource (GET Patient)" in unknown.json()["issue"][0]["diagnostics"]
    refused = server_call(sekmet, "itp-too-old", None)
    refused["fhirAuthorization"]["access_token"] = "wrong-token"
    response = api.post(SERVICE, json=refused, headers=AUTH)
    assert response.status_code == 412
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "refused the request: HTTP 401" in diagnostics
    assert sekmet.base_url not in diagnostics  # upstream addresses are never echoed


# --------------------------------------------------------------------------- failed prefetch

TIMED_OUT = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "timeout", "diagnostics": "search timed out"}],
}
EHR_SAYS = "not available from the EHR (prefetch.medicationStatement: search timed out)"


def test_an_operation_outcome_prefetch_makes_its_type_unknown_not_none_on_record(
    api: TestClient,
) -> None:
    """CDS Hooks 2.0, "Prefetch Template": "If the CDS Client encounters errors prefetching
    the requested data, OperationOutcome(s) SHOULD be used to communicate those errors to
    prevent the CDS Service from incurring an unneeded follow-up query." The key's data is
    not available: criteria over its type are unknown with the client's words, the card is
    answered (no 412, nothing fetched), and the type does not read as "none on record"."""
    name = "itp-relapsed-candidate"
    trial = loaded_trial(api)
    prefetch = prefetch_from(example(name), trial, name)
    failed = {**prefetch, "medicationStatement": TIMED_OUT}
    response = api.post(SERVICE, json=hook_call(name, prefetch=failed), headers=AUTH)
    assert response.status_code == 200, response.text
    (answer,) = response.json()["cards"]
    assert answer["indicator"] == "warning"  # a data problem: the type the EHR could not give
    assert not same_card(answer, card(evaluated_file(api, name)))

    prefetched = read_prefetch(trial, failed, name)
    assert prefetched.missing_types == frozenset()
    assert prefetched.unavailable == {"MedicationStatement": EHR_SAYS}
    resources = assemble(prefetched.entries, "test", prefetched.unavailable)
    evaluation = screen_patient(trial.criteria, resources, AS_OF).evaluation
    (antithrombotics,) = [
        result for result in evaluation.results if result.id.startswith("exclusion-2-")
    ]
    assert antithrombotics.outcome.truth is Truth.UNKNOWN
    assert f"MedicationStatement {EHR_SAYS}" in str(antithrombotics.outcome.missing)
    assert f"MedicationStatement {EHR_SAYS}: criteria over it are unknown" in (
        evaluation.data_problems
    )


def test_an_operation_outcome_prefetch_is_not_fetched_from_the_fhir_server(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    """The same with a `fhirServer` that holds the data: the client's OperationOutcome
    stands (no follow-up query), so the card is the one without a fhirServer, not the one
    from the whole record; a failed `patient` key, without which nothing can be evaluated,
    is read from the server."""
    api = service_client(trusted_fhir_servers=(sekmet.base_url,))
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    failed = {**prefetch, "medicationStatement": TIMED_OUT}
    alone = api.post(SERVICE, json=hook_call(name, prefetch=failed), headers=AUTH)
    with_server = api.post(SERVICE, json=server_call(sekmet, name, failed), headers=AUTH)
    assert alone.status_code == with_server.status_code == 200, with_server.text
    assert same_card(alone.json()["cards"][0], with_server.json()["cards"][0])
    failed_patient = {**prefetch, "patient": TIMED_OUT}
    fetched = api.post(SERVICE, json=server_call(sekmet, name, failed_patient), headers=AUTH)
    assert fetched.status_code == 200, fetched.text
    assert same_card(fetched.json()["cards"][0], card(evaluated_file(api, name)))


def test_a_type_the_fhir_server_refuses_is_unknown_in_the_card(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    """What the prefetch lacks is read from the fhirServer as `evaluate --server` reads it: a
    search the server refuses (here a proxy in front of sekmet answers MedicationStatement
    with 400) leaves that type unavailable, and the card is answered (no 412)."""
    from refusing_server import Refusal, refusing_server

    name = "itp-relapsed-candidate"
    refusals = {"MedicationStatement": Refusal(400, "MedicationStatement is not supported")}
    with refusing_server(sekmet.base_url, refusals) as proxy:
        api = service_client(trusted_fhir_servers=(proxy.base_url,))
        prefetch = prefetch_from(example(name), loaded_trial(api), name)
        body = server_call(sekmet, name, without(prefetch, "medicationStatement"))
        body["fhirServer"] = proxy.base_url
        response = api.post(SERVICE, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    (answer,) = response.json()["cards"]
    assert answer["indicator"] == "warning"
    assert not same_card(answer, card(evaluated_file(api, name)))


def test_an_outcome_entry_in_a_prefetch_bundle_is_read_as_from_a_server(
    api: TestClient,
) -> None:
    """A prefetched searchset with an OperationOutcome entry (R4 3.1.1.5.7, `search.mode`
    outcome): an error issue leaves its type not complete (unknown, not "none on record"),
    the entries kept; a warning keeps the data and joins the data problems."""
    name = "itp-relapsed-candidate"
    trial = loaded_trial(api)
    prefetch = prefetch_from(example(name), trial, name)
    truncated = {
        **prefetch["medicationStatement"],
        "entry": [
            *(prefetch["medicationStatement"].get("entry") or []),
            {"resource": TIMED_OUT, "search": {"mode": "outcome"}},
        ],
    }
    noted = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "warning", "code": "informational", "diagnostics": "sorted by date"}
        ],
    }
    conditions = {
        **prefetch["condition"],
        "entry": [
            *(prefetch["condition"].get("entry") or []),
            {"resource": noted, "search": {"mode": "outcome"}},
        ],
    }
    given = {**prefetch, "medicationStatement": truncated, "condition": conditions}
    prefetched = read_prefetch(trial, given, name)
    said = "not complete from the EHR (prefetch.medicationStatement: search timed out)"
    assert prefetched.unavailable == {"MedicationStatement": said}
    assert prefetched.problems == ["prefetch.condition: the EHR notes: sorted by date"]
    resources = assemble(prefetched.entries, "test", prefetched.unavailable, prefetched.problems)
    assert "OperationOutcome" not in {r["resourceType"] for r in resources.resources}
    evaluation = screen_patient(trial.criteria, resources, AS_OF).evaluation
    assert "prefetch.condition: the EHR notes: sorted by date" in evaluation.data_problems
    assert f"MedicationStatement {said}: criteria over it are unknown" in evaluation.data_problems
    response = api.post(SERVICE, json=hook_call(name, prefetch=given), headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["cards"][0]["indicator"] == "warning"
