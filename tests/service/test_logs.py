"""Structured JSON logs: request ids, trial ids, timings and statuses; no patient data, no
tokens, even from the engine's own messages.
"""

from __future__ import annotations

import logging

import orjson
import pytest
from sekmet_server import SekmetServer
from service_support import (
    API_TOKEN,
    AUTH,
    ClientFactory,
    example,
    fhir_authorization,
    server_settings,
)

from engine.service.logs import JsonFormatter, redact

PATIENT = "itp-relapsed-candidate"


def test_logs_name_no_patient_and_no_token(
    service_client: ClientFactory, sekmet: SekmetServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    headers = {**AUTH, "X-Request-ID": "req-42"}
    response = api.post("/evaluate", json={"patient": PATIENT}, headers=headers)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    api.post("/evaluate", json={"bundle": example("itp-too-old")}, headers=AUTH)
    hook = {
        "hook": "patient-view",
        "hookInstance": "0f2c8e7a-1111-4a3b-9c1d-000000000001",
        "context": {"patientId": PATIENT, "userId": "Practitioner/example"},
        "fhirServer": sekmet.base_url,
        "fhirAuthorization": fhir_authorization(sekmet.token),
    }
    assert api.post("/cds-services/NCT05315778", json=hook, headers=AUTH).status_code == 200
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any("Patient/" + PATIENT in record.getMessage() for record in caplog.records), (
        "the engine names the patient in a warning; the formatter must redact it"
    )
    for line in lines:
        assert PATIENT not in line
        assert "itp-too-old" not in line
        assert sekmet.token not in line
        assert API_TOKEN not in line
    entries = [orjson.loads(line) for line in lines]
    requests = [entry for entry in entries if entry["message"] == "request"]
    assert {entry["route"] for entry in requests} >= {"/evaluate", "/cds-services/{service_id}"}
    first = requests[0]
    assert first["correlation_id"] == "req-42"
    assert first["http_status"] == 200
    assert first["duration_ms"] >= 0
    evaluated = [entry for entry in entries if entry["message"] == "patient evaluated"]
    assert evaluated[0]["trial"] == "NCT05315778"
    assert evaluated[0]["status"] == "candidate"
    assert evaluated[0]["correlation_id"] == "req-42"
    assert {"time", "level", "logger"} <= set(evaluated[0])


def test_redaction() -> None:
    assert redact("GET Patient/p-1/$everything") == "GET Patient/[redacted]/$everything"
    assert redact("GET Observation?patient=Patient/x&_count=5") == (
        "GET Observation?patient=[redacted]&_count=5"
    )
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer [redacted]"


def test_exceptions_are_logged_without_their_message(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("engine.service.test")
    secret = "-".join(("itp", "secret", "id"))  # not in the stack's source lines either
    try:
        raise KeyError(f"patient {secret}")
    except KeyError:
        logger.exception("failed")
    line = JsonFormatter().format(caplog.records[-1])
    assert "itp-secret-id" not in line
    assert orjson.loads(line)["exception"] == "KeyError"


def test_resource_ids_of_every_type_are_redacted() -> None:
    """docs/service.md, Logs: "never by resource or patient id". Ids of every type may be MRNs
    or accession numbers, so every `Type/id` is redacted, not only `Patient/id`; `HTTP/1.1`
    and operations (`Patient/$everything`) are not ids."""
    message = 'HTTP Request: GET http://h/fhir/Observation/MRN-1234 "HTTP/1.1 404 Not Found"'
    assert redact(message) == (
        'HTTP Request: GET http://h/fhir/Observation/[redacted] "HTTP/1.1 404 Not Found"'
    )
    assert redact("GET Subscription/s1") == "GET Subscription/[redacted]"
    assert redact("GET Patient/$everything") == "GET Patient/$everything"
    assert redact("GET Condition?_id=c1&identifier=urn:mrn|7") == (
        "GET Condition?_id=[redacted]&identifier=[redacted]"
    )


def test_an_id_only_notification_logs_no_resource_id(
    service_client: ClientFactory, sekmet: SekmetServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The id-only notification path reads the resource from the server; the FHIR client's
    request line (httpx, INFO) named it with its id (`GET .../Observation/MRN-...`)."""
    caplog.set_level(logging.INFO)
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    secret = "MRN-123456-secret"
    response = api.put(f"/fhir-notify/Observation/{secret}", headers=AUTH)
    assert response.status_code == 202, response.text
    api.portal.call(api.app.state.notifications.drain)  # type: ignore[union-attr,attr-defined]
    messages = [record.getMessage() for record in caplog.records]
    assert any(secret in message for message in messages), "the id was not read: no test"
    formatter = JsonFormatter()
    for record in caplog.records:
        assert secret not in formatter.format(record)
