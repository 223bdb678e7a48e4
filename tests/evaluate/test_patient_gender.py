"""`gender:` against FHIR R4 administrative-gender: `unknown` ("The gender of the patient is
unknown") is missing data, as an absent gender is, unless the test lists it; `other` ("could
not be uniquely defined as male or female") is a gender recorded, and answers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from language_support import atom_trial

from engine.evaluate.outcome import Outcome, Truth
from engine.report.explanation import explain, explanation_text
from engine.screening import Screening, screen_patient
from engine.sources.base import PatientResources
from engine.trial import load_trial

AS_OF = dt.date(2026, 11, 1)


def _screen(path: Path, gender: str | None) -> Screening:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": "p", "birthDate": "1980-01-01"}
    if gender is not None:
        patient["gender"] = gender
    return screen_patient(load_trial(path), PatientResources("p", [patient], [None], "t"), AS_OF)


def _outcome(path: Path, gender: str | None) -> Outcome:
    [result] = _screen(path, gender).evaluation.results
    return result.outcome


@pytest.mark.parametrize(
    ("gender", "truth"),
    [
        ("female", Truth.MET),
        ("male", Truth.NOT_MET),
        ("other", Truth.NOT_MET),
        ("unknown", Truth.UNKNOWN),
        (None, Truth.UNKNOWN),
    ],
)
def test_women_only(tmp_path: Path, gender: str | None, truth: Truth) -> None:
    outcome = _outcome(atom_trial(tmp_path, "patient: {gender: [female]}\n"), gender)
    assert outcome.truth is truth
    if gender == "unknown":
        assert outcome.missing == ("Patient.gender",)
        assert "gender is recorded as unknown; female cannot be checked" in outcome.reason


def test_an_exclusion_of_men_is_not_cleared_by_an_unknown_gender(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, "not: {patient: {gender: [male]}}\n")
    assert _outcome(path, "unknown").truth is Truth.UNKNOWN
    assert _outcome(path, "female").truth is Truth.MET


@pytest.mark.parametrize(("gender", "truth"), [("unknown", Truth.MET), ("male", Truth.NOT_MET)])
def test_a_test_that_lists_unknown_reads_it_as_written(
    tmp_path: Path, gender: str, truth: Truth
) -> None:
    path = atom_trial(tmp_path, "patient: {gender: [other, unknown]}\n")
    assert _outcome(path, gender).truth is truth


def test_the_explanation_says_the_gender_is_recorded_as_unknown(tmp_path: Path) -> None:
    screening = _screen(atom_trial(tmp_path, "patient: {gender: [female]}\n"), "unknown")
    text = explanation_text(explain(screening.evaluation), width=1000)
    assert "gender recorded as unknown (female needed)" in text
    assert "to settle: the patient's administrative gender (Patient.gender)" in text
