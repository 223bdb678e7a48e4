"""Pulling patients from sekmet evaluates exactly like their Bundle files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sekmet_server import HAND_WRITTEN_PATIENTS, ROOT, SYNTHEA_PATIENT, SekmetServer

from engine.attestations import Attestations, load_attestations
from engine.errors import ServerError
from engine.evaluate import CompiledCriteria, PatientEvaluation, evaluate_patient
from engine.record import build_record
from engine.report import transaction_bundle
from engine.resource_types import MEDICATION_REFERENCING_TYPES, resource_types_to_pull
from engine.sources import FhirServerSource, PatientResources, read_bundle_file, reference_key

AS_OF = dt.date(2026, 11, 1)
PULL_MODES = {"everything": True, "searches": False}


@pytest.fixture(scope="module")
def answers(trial: CompiledCriteria) -> Attestations:
    return load_attestations(ROOT / "examples" / "attestations.yaml", trial.manual_ids)


def evaluate(
    trial: CompiledCriteria, patient: PatientResources, answers: Attestations
) -> PatientEvaluation:
    record = build_record(patient, trial.terminology)
    return evaluate_patient(trial, record, AS_OF, answers.get(record.patient_id))


def pull(
    sekmet: SekmetServer, trial: CompiledCriteria, patient_id: str, *, mode: str, page_size: int
) -> PatientResources:
    with sekmet.client() as client:
        source = FhirServerSource(
            client,
            [patient_id],
            resource_types_to_pull(trial.resource_types),
            page_size=page_size,
            use_everything=PULL_MODES[mode],
        )
        (patient,) = list(source)
    return patient


def evidence_codes(evaluation: PatientEvaluation) -> list[str]:
    issue = transaction_bundle(evaluation)["entry"][2]["resource"]
    return [
        coding["code"]
        for evidence in issue.get("evidence", ())
        for concept in evidence["code"]
        for coding in concept["coding"]
    ]


@pytest.mark.parametrize("mode", PULL_MODES)
@pytest.mark.parametrize("path", HAND_WRITTEN_PATIENTS, ids=lambda path: path.stem)
def test_pulled_patient_gives_the_same_bundle_as_the_file(
    sekmet: SekmetServer,
    trial: CompiledCriteria,
    answers: Attestations,
    path: Path,
    mode: str,
) -> None:
    # Small pages, so the searches follow next links; ids were kept, so references match too.
    pulled = pull(sekmet, trial, path.stem, mode=mode, page_size=4)
    from_server = evaluate(trial, pulled, answers)
    from_file = evaluate(trial, read_bundle_file(path), answers)
    assert transaction_bundle(from_server) == transaction_bundle(from_file)


@pytest.mark.parametrize("mode", PULL_MODES)
def test_synthea_patient_with_server_assigned_ids(
    sekmet: SekmetServer, trial: CompiledCriteria, mode: str
) -> None:
    pulled = pull(sekmet, trial, sekmet.synthea_patient_id, mode=mode, page_size=50)
    from_server = evaluate(trial, pulled, {})
    from_file = evaluate(trial, read_bundle_file(SYNTHEA_PATIENT), {})
    assert from_server.status == from_file.status
    assert evidence_codes(from_server) == evidence_codes(from_file)
    assert [(r.id, r.verdict) for r in from_server.results] == [
        (r.id, r.verdict) for r in from_file.results
    ]
    # Every medicationReference resolves to a Medication that was pulled with the patient.
    pulled_keys = {f"{r['resourceType']}/{r['id']}" for r in pulled.resources}
    references = [
        reference_key(r["medicationReference"]["reference"])
        for r in pulled.resources
        if r["resourceType"] in MEDICATION_REFERENCING_TYPES and "medicationReference" in r
    ]
    assert references
    assert all(key in pulled_keys and key.startswith("Medication/") for key in references)


def test_searches_ask_only_for_what_the_criteria_need(
    sekmet: SekmetServer, trial: CompiledCriteria
) -> None:
    pulled = pull(sekmet, trial, sekmet.synthea_patient_id, mode="searches", page_size=200)
    types = {resource["resourceType"] for resource in pulled.resources}
    assert types <= resource_types_to_pull(trial.resource_types)
    assert "Encounter" not in types  # the Synthea Bundle has Encounters; no criterion reads them


def test_missing_patient_is_a_clear_error(sekmet: SekmetServer, trial: CompiledCriteria) -> None:
    for mode in PULL_MODES:
        with pytest.raises(ServerError) as caught:
            pull(sekmet, trial, "no-such-patient", mode=mode, page_size=10)
        assert caught.value.server == sekmet.base_url
        assert "Patient/no-such-patient" in str(caught.value)


def test_without_the_token_the_server_refuses(sekmet: SekmetServer) -> None:
    from engine.sources import FhirServerClient

    with FhirServerClient(sekmet.base_url) as client, pytest.raises(ServerError) as caught:
        client.json("GET", "Patient/itp-too-old")
    assert caught.value.status == 401
    assert str(caught.value).startswith(f"{sekmet.base_url}: GET Patient/itp-too-old: HTTP 401")
