"""Writing results back to sekmet: in place on a re-run, atomically, never duplicated."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sekmet_server import ROOT, SekmetServer

from engine.errors import ServerError
from engine.evaluate import CompiledCriteria, PatientEvaluation, evaluate_patient
from engine.record import build_record
from engine.report import transaction_bundle
from engine.report.resources import entry_id
from engine.sinks import FhirServerSink
from engine.sources import read_bundle_file

AS_OF = dt.date(2026, 11, 1)
PATIENTS = ROOT / "examples" / "patients"


def evaluate_file(trial: CompiledCriteria, patient_id: str) -> PatientEvaluation:
    record = build_record(read_bundle_file(PATIENTS / f"{patient_id}.json"), trial.terminology)
    return evaluate_patient(trial, record, AS_OF)


def every(http: httpx.Client, resource_type: str) -> Iterator[dict[str, Any]]:
    """Every resource of a type on the server (an unfiltered search, all pages)."""
    url: str | None = f"{resource_type}?_count=1000"
    while url is not None:
        response = http.get(url, headers={"Prefer": "handling=strict"})
        response.raise_for_status()
        bundle = response.json()
        yield from (entry["resource"] for entry in bundle.get("entry", ()))
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


def about(resources: Iterator[dict[str, Any]], field: str, patient_id: str) -> list[dict[str, Any]]:
    return [r for r in resources if r[field]["reference"] == f"Patient/{patient_id}"]


def test_writing_twice_updates_in_place(sekmet: SekmetServer, trial: CompiledCriteria) -> None:
    evaluation = evaluate_file(trial, "itp-relapsed-missing-labs")
    with sekmet.client() as client:
        sink = FhirServerSink(client)
        first = sink.write(evaluation)
        second = sink.write(evaluation)
    # The ResearchStudy may have been written by an earlier test; the results were not.
    assert [entry.status for entry in first][1:] == ["201 Created"] * 2
    assert [entry.status for entry in second] == ["200 OK"] * 3
    with sekmet.http() as http:
        subjects = about(every(http, "ResearchSubject"), "individual", "itp-relapsed-missing-labs")
        issues = about(every(http, "DetectedIssue"), "patient", "itp-relapsed-missing-labs")
        studies = [
            study
            for study in every(http, "ResearchStudy")
            if study["identifier"][0]["value"] == "NCT05315778"
        ]
    assert len(subjects) == 1
    assert len(issues) == 1
    assert len(studies) == 1
    expected = [entry_id(entry) for entry in transaction_bundle(evaluation)["entry"]]
    assert subjects[0]["id"] == expected[1]
    assert subjects[0]["status"] == "potential-candidate"
    assert subjects[0]["study"]["reference"] == f"ResearchStudy/{expected[0]}"
    assert subjects[0]["meta"]["versionId"] == "2"
    assert issues[0]["id"] == expected[2]
    assert issues[0]["meta"]["versionId"] == "2"


def test_sink_puts_by_id_because_sekmet_cannot_search_by_identifier(
    sekmet: SekmetServer, trial: CompiledCriteria
) -> None:
    evaluation = evaluate_file(trial, "itp-secondary-lupus")
    with sekmet.client() as client:
        requests = [
            e["request"] for e in FhirServerSink(client).transaction_for(evaluation)["entry"]
        ]
        ids = [entry_id(e) for e in transaction_bundle(evaluation)["entry"]]
        # The report's own Bundle uses conditional requests, which sekmet refuses as a whole.
        with pytest.raises(ServerError) as caught:
            FhirServerSink(client).send(transaction_bundle(evaluation))
    assert requests == [
        {"method": "PUT", "url": f"ResearchStudy/{ids[0]}"},
        {"method": "PUT", "url": f"ResearchSubject/{ids[1]}"},
        {"method": "PUT", "url": f"DetectedIssue/{ids[2]}"},
    ]
    assert caught.value.status == 400
    assert "Unknown search parameter 'identifier' for ResearchStudy" in str(caught.value)


def test_a_rejected_transaction_writes_nothing(
    sekmet: SekmetServer, trial: CompiledCriteria
) -> None:
    evaluation = evaluate_file(trial, "itp-abnormal-screening-labs")
    with sekmet.client() as client:
        sink = FhirServerSink(client)
        bundle = sink.transaction_for(evaluation)
        study, subject, issue = (entry["resource"] for entry in bundle["entry"])
        study["id"] = str(uuid.uuid4())  # a study that does not exist yet
        bundle["entry"][0]["request"]["url"] = f"ResearchStudy/{study['id']}"
        # Not an element of DetectedIssue: sekmet's structural validation rejects the entry.
        # (It checks structure only: a status outside the value set would be accepted.)
        issue["notAnElement"] = True
        with pytest.raises(ServerError) as caught:
            sink.send(bundle)
        assert client.read("ResearchStudy", study["id"]) is None
        assert client.read("ResearchSubject", subject["id"]) is None
        assert client.read("DetectedIssue", issue["id"]) is None
    message = str(caught.value)
    assert message.startswith(f"{sekmet.base_url}: POST / (transaction: PUT ResearchStudy/")
    assert f"PUT DetectedIssue/{issue['id']}): HTTP 400 Bad Request" in message
    assert "rolled back" in message
    assert "DetectedIssue" in message
