"""The service pulls from a FHIR server as `evaluate --server` does (issue 12, item 3): a type
the server refuses to search is unavailable, so criteria over it are unknown with the server's
answer, never "none on record", and the call is answered. The configured server here is sekmet
behind a loopback proxy that refuses every MedicationStatement search with 400 and an
OperationOutcome (tests/refusing_server.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from refusing_server import Refusal, RefusingServer, refusing_server
from sekmet_server import SekmetServer
from service_support import AUTH, ClientFactory, copy_patient, server_settings

from engine.report.resources import DETECTED_ISSUE_SYSTEM, deterministic_id

DIAGNOSTICS = "MedicationStatement is not supported here"
REFUSED = (
    "MedicationStatement not available from the server (HTTP 400 Bad Request: "
    f"{DIAGNOSTICS}): criteria over it are unknown"
)


@pytest.fixture
def proxy(sekmet: SekmetServer) -> Iterator[RefusingServer]:
    refusals = {"MedicationStatement": Refusal(400, DIAGNOSTICS), "$everything": Refusal(501)}
    with refusing_server(sekmet.base_url, refusals) as running:
        yield running


@pytest.fixture
def served(
    service_client: ClientFactory, sekmet: SekmetServer, proxy: RefusingServer
) -> TestClient:
    return service_client(server_settings(proxy.base_url, sekmet.token))


def test_evaluate_by_patient_id_answers_with_the_type_unknown(served: TestClient) -> None:
    response = served.post(
        "/evaluate",
        json={"trial": "NCT05315778", "patient": "itp-relapsed-candidate", "asOf": "2026-11-01"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert REFUSED in answer["dataProblems"]
    (antithrombotics,) = [c for c in answer["criteria"] if c["id"].startswith("exclusion-2-")]
    assert antithrombotics["truth"] == "unknown"
    assert "MedicationStatement not available from the server (HTTP 400" in str(
        antithrombotics["missing"]
    )
    assert answer["researchSubject"]["status"] != "eligible"


def test_a_notification_re_evaluates_with_the_type_unknown(
    served: TestClient, sekmet: SekmetServer
) -> None:
    patient_id = f"service-refused-{uuid.uuid4().hex[:8]}"
    with sekmet.http() as http:
        copy_patient(http, "itp-relapsed-candidate", patient_id)
    change = {
        "resourceType": "Observation",
        "id": "o-refused",
        "status": "final",
        "code": {"text": "platelets"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    response = served.put("/fhir-notify/Observation/o-refused", json=change, headers=AUTH)
    assert response.status_code == 202, response.text
    served.portal.call(served.app.state.notifications.drain)  # type: ignore[union-attr,attr-defined]
    counts = served.app.state.notifications.counts  # type: ignore[attr-defined]
    assert counts.failed == 0, counts.errors
    issue_id = deterministic_id(DETECTED_ISSUE_SYSTEM, f"NCT05315778/{patient_id}")
    with sekmet.http() as http:
        issue = http.get(f"DetectedIssue/{issue_id}").json()
    assert issue["resourceType"] == "DetectedIssue", issue
    assert REFUSED in issue["text"]["div"]
    assert "exclusion-2-thrombosis-or-antithrombotics" in issue["detail"]
