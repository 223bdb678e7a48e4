"""A patient the record says died (FHIR R4 Patient.deceased[x]) is no candidate, on every
front end alike: `evaluate`, the service and CDS Hooks (through `screen_patient`); cohort runs:
tests/cohort/test_cohort_deceased.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from service_support import AUTH, make_settings
from trial_patients import example_with_patient_fields
from typer.testing import CliRunner

from engine.cli import app as cli_app
from engine.evaluate import CompiledCriteria, SubjectStatus, VitalStatus, vital_status
from engine.screening import screen_patient
from engine.service import create_app
from engine.service.cds_hooks import card
from engine.sources import PatientResources, parse_bundle

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = ROOT / "criteria" / "NCT05315778.yaml"
PATIENTS = ROOT / "examples" / "patients"
AS_OF = dt.date(2026, 11, 1)
CANDIDATE = "itp-relapsed-candidate"
ELIGIBLE_ANSWERS = ROOT / "examples" / "attestations.yaml"


def _bundle(name: str, **deceased: Any) -> dict[str, Any]:
    """An example Bundle with these `deceased[x]` fields on its Patient."""
    return example_with_patient_fields(PATIENTS / f"{name}.json", **deceased)


def _parsed(bundle: dict[str, Any]) -> PatientResources:
    return parse_bundle(orjson.dumps(bundle), "test Bundle")


# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"deceasedBoolean": False}, None),
        ({"deceasedDateTime": "2026-11-02"}, None),  # after the as-of day: alive on it
        ({"deceasedDateTime": "2026-12"}, None),
        (
            {"deceasedDateTime": "2026-10-29"},
            VitalStatus("deceased on 2026-10-29 (Patient.deceasedDateTime): not a candidate", True),
        ),
        (
            {"deceasedDateTime": "2026-11-01T23:30:00-05:00"},  # on the as-of day
            VitalStatus("deceased on 2026-11-01 (Patient.deceasedDateTime): not a candidate", True),
        ),
        (
            {"deceasedDateTime": "2026-10"},
            VitalStatus("deceased on 2026-10 (Patient.deceasedDateTime): not a candidate", True),
        ),
        (
            {"deceasedBoolean": True},
            VitalStatus("deceased (Patient.deceasedBoolean true, no date): not a candidate", True),
        ),
        (
            {"deceasedDateTime": "2026-11"},  # some day of November: before or after 11-01?
            VitalStatus(
                "deceased in 2026-11 (Patient.deceasedDateTime): whether before or after "
                "2026-11-01 cannot be told",
                False,
            ),
        ),
        (
            {"deceasedDateTime": "late 2026"},
            VitalStatus(
                "Patient.deceasedDateTime 'late 2026' cannot be read: whether the patient was "
                "alive on 2026-11-01 cannot be told",
                False,
            ),
        ),
    ],
)
def test_vital_status_as_of_a_day(fields: dict[str, Any], expected: VitalStatus | None) -> None:
    assert vital_status({"resourceType": "Patient", **fields}, AS_OF) == expected


# ------------------------------------------------------------------ one patient


def test_a_patient_who_died_is_ineligible_and_the_issue_says_why(trial: CompiledCriteria) -> None:
    alive = screen_patient(trial, _parsed(_bundle(CANDIDATE)), AS_OF)
    dead = screen_patient(trial, _parsed(_bundle(CANDIDATE, deceasedDateTime="2026-10-29")), AS_OF)
    assert alive.status is SubjectStatus.CANDIDATE
    assert dead.status is SubjectStatus.INELIGIBLE
    # the criteria are evaluated and reported as for the living patient
    assert dead.evaluation.results == alive.evaluation.results
    bundle = dead.transaction_bundle
    assert bundle["entry"][1]["resource"]["status"] == "ineligible"
    detail = bundle["entry"][2]["resource"]["detail"]
    assert detail.startswith(
        "ineligible for NCT05315778: deceased on 2026-10-29 (Patient.deceasedDateTime): "
        "not a candidate; criteria: "
    )
    assert "deceased on 2026-10-29" in bundle["entry"][2]["resource"]["text"]["div"]
    later = screen_patient(trial, _parsed(_bundle(CANDIDATE, deceasedDateTime="2026-11-20")), AS_OF)
    assert later.status is SubjectStatus.CANDIDATE  # alive on the as-of day
    unclear = screen_patient(trial, _parsed(_bundle(CANDIDATE, deceasedDateTime="2026-11")), AS_OF)
    assert unclear.status is SubjectStatus.POTENTIAL_CANDIDATE
    cds = card(dead.evaluation)
    assert cds["summary"] == (
        "Not eligible for NCT05315778: deceased on 2026-10-29 (Patient.deceasedDateTime): "
        "not a candidate"
    )
    assert "**Deceased**" in cds["detail"]


def test_attested_and_deceased_is_still_ineligible(tmp_path: Path) -> None:
    """`trialsieve evaluate --explain` with every manual item answered favourably."""
    bundle = tmp_path / "dead.json"
    bundle.write_bytes(orjson.dumps(_bundle(CANDIDATE, deceasedBoolean=True)))
    output = tmp_path / "out.json"
    result = CliRunner().invoke(
        cli_app,
        [
            "evaluate",
            str(CRITERIA),
            "--bundle",
            str(bundle),
            "--as-of",
            AS_OF.isoformat(),
            "--attestations",
            str(ELIGIBLE_ANSWERS),
            "--explain",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ineligible (not eligible: deceased (Patient.deceasedBoolean true" in " ".join(
        result.output.split()
    )
    written = orjson.loads(output.read_bytes())
    assert written["entry"][1]["resource"]["status"] == "ineligible"


def test_the_service_says_what_evaluate_says() -> None:
    api = TestClient(create_app(make_settings()))
    dead = _bundle(CANDIDATE, deceasedDateTime="2026-10-29")
    response = api.post("/evaluate", json={"bundle": dead}, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "ineligible"
    assert "deceased on 2026-10-29 (Patient.deceasedDateTime)" in answer["detectedIssue"]["detail"]
