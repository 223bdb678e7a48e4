"""`screen_patient`: the one per-patient path (record, evaluation, report) every front end
takes; the golden outputs check its transaction Bundle for every shipped example."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.evaluate import CompiledCriteria, Truth, evaluate_patient
from engine.evaluate.outcome import Outcome
from engine.record import build_record
from engine.report import detected_issue, research_subject, transaction_bundle
from engine.screening import screen_patient, screen_record
from engine.sources import PatientResources, read_bundle_file

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 11, 1)
CANDIDATE = ROOT / "examples" / "patients" / "itp-relapsed-candidate.json"


@pytest.fixture(scope="module")
def patient() -> PatientResources:
    return read_bundle_file(CANDIDATE)


def test_screening_is_record_then_evaluation(
    trial: CompiledCriteria, patient: PatientResources
) -> None:
    screening = screen_patient(trial, patient, AS_OF)
    expected = evaluate_patient(trial, build_record(patient, trial.terminology), AS_OF)
    assert screening.record.patient_id == patient.patient_id == screening.patient_id
    assert screening.evaluation.results == expected.results
    assert screening.status is expected.status
    assert screening.status.value == "candidate"


def test_the_outputs_are_the_report_stage_s(
    trial: CompiledCriteria, patient: PatientResources
) -> None:
    screening = screen_patient(trial, patient, AS_OF)
    bundle = screening.transaction_bundle
    assert bundle == transaction_bundle(screening.evaluation)
    assert screening.transaction_bundle is bundle  # built and validated once
    study = "ResearchStudy/example"
    assert screening.research_subject(study) == research_subject(screening.evaluation, study)
    assert screening.detected_issue() == detected_issue(screening.evaluation)
    # The Bundle's bodies carry no id (conditional update); its fullUrl holds it.
    issue = screening.detected_issue()
    assert bundle["entry"][2]["resource"] == {k: v for k, v in issue.items() if k != "id"}
    assert bundle["entry"][2]["fullUrl"] == f"urn:uuid:{issue['id']}"


def test_screen_record_evaluates_part_of_the_criteria(
    trial: CompiledCriteria, patient: PatientResources
) -> None:
    record = build_record(patient, trial.terminology)
    first, second, *rest = [criterion.id for criterion in trial.criteria]
    decided = {second: Outcome(Truth.NOT_MET, "decided elsewhere")}
    screening = screen_record(trial, record, AS_OF, only={first}, decided=decided)
    assert [result.id for result in screening.evaluation.results] == [first, second]
    assert [criterion.id for criterion in screening.evaluation.not_evaluated] == rest
    assert screening.status.value == "ineligible"


def test_answers_are_the_patient_s_attestations(
    trial: CompiledCriteria, patient: PatientResources
) -> None:
    from engine.attestations import load_attestations

    answers = load_attestations(ROOT / "examples" / "attestations.yaml", trial.manual_ids)
    screening = screen_patient(trial, patient, AS_OF, answers.get(patient.patient_id))
    assert screening.status.value == "eligible"


def test_unusable_resources_raise_an_input_error(trial: CompiledCriteria) -> None:
    nobody = PatientResources("p1", [{"resourceType": "Observation", "id": "o1"}], [None], "x")
    with pytest.raises(InputError):
        screen_patient(trial, nobody, AS_OF)
