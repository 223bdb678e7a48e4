"""Issue 11, items 3 and 5: partial dates, implausible values, impossible days and windows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest
from hostile_support import (
    AS_OF,
    ROOT,
    SMALL_TRIAL,
    bundle,
    evaluate,
    haemoglobin,
    itp,
    patient,
    result,
    write_trial,
)

from engine.criteria.loader import parse_iso_duration
from engine.errors import CriteriaError, ErrorCollection, InputError
from engine.evaluate import CriterionVerdict
from engine.evaluate.outcome import Truth
from engine.screening import screen_patient
from engine.sources import parse_bundle
from engine.trial import load_trial


@pytest.fixture
def trial_path(tmp_path: Path) -> Path:
    return write_trial(tmp_path)


# ----------------------------------------------------------------- date precision (item 5)


@pytest.mark.parametrize("when", ["2026", "2026-10"])
def test_a_partial_date_that_cannot_be_placed_in_the_window_leaves_the_atom_unknown(
    trial_path: Path, when: str
) -> None:
    evaluation = evaluate(trial_path, bundle(patient(), haemoglobin(130, when)))
    presence = result(evaluation, "exclusion-1-any-haemoglobin").outcome
    value = result(evaluation, "inclusion-2-haemoglobin").outcome
    assert presence.truth is Truth.UNKNOWN, presence.reason
    assert value.truth is Truth.UNKNOWN, value.reason
    assert "too imprecisely" in presence.reason


@pytest.mark.parametrize(
    ("onset", "truth"),
    [("2026", Truth.UNKNOWN), ("2026-10", Truth.UNKNOWN), ("2025", Truth.NOT_MET)],
)
def test_a_partial_onset_date_is_placed_only_when_its_precision_allows(
    trial_path: Path, onset: str, truth: Truth
) -> None:
    evaluation = evaluate(trial_path, bundle(patient(), itp(onset)))
    outcome = result(evaluation, "exclusion-2-new-itp").outcome
    assert outcome.truth is truth, outcome.reason


@pytest.mark.parametrize(
    ("abatement", "truth"),
    [
        ("2026", Truth.UNKNOWN),
        ("2026-11", Truth.MET),
        ("2027", Truth.MET),
        ("2025", Truth.NOT_MET),
    ],
)
def test_a_partial_abatement_date_decides_active_now_only_when_precise_enough(
    trial_path: Path, abatement: str, truth: Truth
) -> None:
    condition = itp("2020-01-01") | {
        "abatementDateTime": abatement,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
    }
    evaluation = evaluate(trial_path, bundle(patient(), condition))
    outcome = result(evaluation, "exclusion-3-active-itp").outcome
    assert outcome.truth is truth, outcome.reason


def test_a_partial_date_wholly_inside_the_window_still_counts(trial_path: Path) -> None:
    evaluation = evaluate(
        trial_path, bundle(patient(), haemoglobin(130, "2026-02")), as_of=dt.date(2026, 3, 1)
    )
    assert result(evaluation, "inclusion-2-haemoglobin").outcome.truth is Truth.MET


def test_a_partial_date_wholly_outside_the_window_is_not_a_candidate(trial_path: Path) -> None:
    evaluation = evaluate(trial_path, bundle(patient(), haemoglobin(130, "2025")))
    outcome = result(evaluation, "exclusion-1-any-haemoglobin").outcome
    assert "no result within screening" in outcome.reason  # open world: missing, not unusable
    assert "imprecisely" not in outcome.reason


def test_a_precise_result_decides_next_to_an_imprecise_one(trial_path: Path) -> None:
    precise = haemoglobin(130, "2026-10-20T08:00:00Z") | {"id": "hb2"}
    evaluation = evaluate(trial_path, bundle(patient(), haemoglobin(130, "2026"), precise))
    assert result(evaluation, "exclusion-1-any-haemoglobin").outcome.truth is Truth.MET


# ----------------------------------------------------------------- implausible values (item 5)


@pytest.mark.parametrize("value", [-5, 1e308, 5000])
def test_an_implausible_value_is_a_data_problem_never_evidence(
    trial_path: Path, value: float
) -> None:
    evaluation = evaluate(trial_path, bundle(patient(), haemoglobin(value, "2026-10-20T08:00:00Z")))
    outcome = result(evaluation, "inclusion-2-haemoglobin").outcome
    assert outcome.truth is Truth.UNKNOWN
    assert "implausible value" in outcome.reason
    assert "Observation/hb1" not in outcome.evidence


def test_a_plausible_value_still_decides(trial_path: Path) -> None:
    evaluation = evaluate(trial_path, bundle(patient(), haemoglobin(80, "2026-10-20T08:00:00Z")))
    assert result(evaluation, "inclusion-2-haemoglobin").verdict is CriterionVerdict.FAILS


def test_a_birth_date_after_the_as_of_day_is_a_data_problem(trial_path: Path) -> None:
    evaluation = evaluate(trial_path, bundle(patient(birthDate="2099-01-01")))
    age = result(evaluation, "inclusion-1-adult").outcome
    assert age.truth is Truth.UNKNOWN
    assert "implausible value" in age.reason
    assert any("birthDate" in problem for problem in evaluation.data_problems)


def test_a_birth_date_that_is_no_date_is_a_data_problem(trial_path: Path) -> None:
    evaluation = evaluate(trial_path, bundle(patient(birthDate="1984-13-99")))
    assert result(evaluation, "inclusion-1-adult").outcome.truth is Truth.UNKNOWN
    assert any(
        "field birthDate: '1984-13-99' is not a valid date" in problem
        for problem in evaluation.data_problems
    )


@pytest.mark.parametrize("gender", ["M", 42, {"code": "F"}])
def test_a_gender_outside_administrative_gender_is_unknown_and_a_data_problem(
    tmp_path: Path, gender: object
) -> None:
    """'M' is no FHIR gender: read as not female, a man would fail a women-only criterion
    silently (FHIR R4 Patient.gender, required value set administrative-gender)."""
    women = SMALL_TRIAL.replace("age: {min: 18}", "gender: [female]")
    evaluation = evaluate(write_trial(tmp_path, women), bundle(patient(gender=gender)))
    outcome = result(evaluation, "inclusion-1-adult").outcome
    assert outcome.truth is Truth.UNKNOWN
    assert "is not an administrative-gender code" in outcome.reason
    assert any("field gender:" in problem for problem in evaluation.data_problems)


def test_a_null_patient_id_is_a_data_problem(trial_path: Path) -> None:
    document = bundle(patient(id=None))
    document["entry"][0]["fullUrl"] = "urn:uuid:7c1f3a52-0d7e-4c47-9a8b-1d2e3f405162"
    evaluation = evaluate(trial_path, document)
    assert any("field id: null" in problem for problem in evaluation.data_problems)


def test_plausible_range_must_be_stated_in_a_unit(tmp_path: Path) -> None:
    from engine.normalise import load_terminology

    (tmp_path / "m.yaml").write_text(
        "concepts:\n  thing:\n    display: Thing\n    plausible_range: {low: 5, high: 1}\n"
        "    codes: {http://loinc.org: ['1-8']}\n",
        encoding="utf-8",
    )
    with pytest.raises((ErrorCollection, Exception)) as caught:
        load_terminology([tmp_path])
    assert "plausible_range" in str(caught.value)


# ----------------------------------------------------------------- windows and days (item 3)


@pytest.mark.parametrize("text", ["P20000Y", "P" + "9" * 400 + "D", "P2401M"])
def test_an_absurd_window_is_refused_when_loading(text: str) -> None:
    with pytest.raises(ValueError, match="longer than 200 years"):
        parse_iso_duration(text)


@pytest.mark.parametrize("where", ["named", "inline"])
def test_an_absurd_window_in_a_criteria_file_is_a_criteria_error(
    tmp_path: Path, where: str
) -> None:
    from hostile_support import SMALL_TRIAL

    text = (
        SMALL_TRIAL.replace("{within: P28D}", "{within: P20000Y}")
        if where == "named"
        else SMALL_TRIAL.replace("within: screening\n      select", "within: P20000Y\n      select")
    )
    with pytest.raises((CriteriaError, ErrorCollection)) as caught:
        load_trial(write_trial(tmp_path, text))
    assert "longer than 200 years" in str(caught.value)
    assert "line" in str(caught.value) or ":" in str(caught.value)


@pytest.mark.parametrize("day", [dt.date(1, 1, 1), dt.date(9999, 12, 31)])
def test_an_as_of_day_outside_the_calendar_bounds_is_an_input_error(
    trial_path: Path, day: dt.date
) -> None:
    with pytest.raises(InputError, match="as-of day"):
        evaluate(trial_path, bundle(patient(), haemoglobin(130, "2026-10-20")), as_of=day)


@pytest.mark.parametrize("command", ["evaluate", "cohort"])
@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_the_command_line_refuses_an_as_of_day_out_of_range(command: str, day: str) -> None:
    from hostile_support import ROOT
    from typer.testing import CliRunner

    from engine.cli import app

    patients = str(ROOT / "examples" / "patients")
    source = ["--bundle", patients] if command == "evaluate" else ["--bundles", patients]
    outcome = CliRunner().invoke(
        app,
        [command, str(ROOT / "criteria" / "NCT05315778.yaml"), *source, "--as-of", day],
        env={"COLUMNS": "200"},  # the message on one line of the error panel
    )
    assert outcome.exit_code == 2, outcome.output
    assert f"'--as-of': the as-of day {day} is outside 1900-01-01 to 2199-12-31" in (outcome.output)
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit)


# ------------------------------------------------ a status or intent that is no code (review 5)

NOT_CODES = [5, 1.5, True, {"coding": [{"code": "final"}]}, ["final"], []]
"""A `code` element (FHIR R4 JSON: a string) as a faulty feed may send it."""


@pytest.mark.parametrize("value", NOT_CODES)
def test_a_status_that_is_not_a_code_leaves_the_atom_unknown_with_the_reason(
    trial_path: Path, value: object
) -> None:
    """A status that is a number, an object or a list (a list or an object made the status
    predicates raise TypeError, unhashable) reads as an unidentified status: the atom over
    the resource is unknown with the reason, never "none on record" and never a crash."""
    haemoglobin_result = {**haemoglobin(130, "2026-10-20"), "status": value}
    evaluation = evaluate(trial_path, bundle(patient(), haemoglobin_result))
    kind = {bool: "true/false", dict: "an object", list: "an array"}.get(type(value), "a number")
    for criterion in ("exclusion-1-any-haemoglobin", "inclusion-2-haemoglobin"):
        outcome = result(evaluation, criterion).outcome
        assert outcome.truth is Truth.UNKNOWN, outcome.reason
        assert f"Observation/hb1: its status is {kind}, not a code" in outcome.reason


@pytest.mark.parametrize("field", ["status", "intent"])
@pytest.mark.parametrize("value", NOT_CODES)
def test_a_medication_status_or_intent_that_is_not_a_code_is_screened(
    field: str, value: object
) -> None:
    """The shipped ITP trial over a patient whose first-line therapy orders carry a status or
    intent that is no code: the whole screening (evaluation, report, explanation) runs, and
    the criterion that reads the orders is unknown, naming the order and the element."""
    trial = load_trial(ROOT / "criteria" / "NCT05315778.yaml")
    document = orjson.loads(
        (ROOT / "examples" / "patients" / "itp-relapsed-candidate.json").read_bytes()
    )
    for entry in document["entry"]:
        if entry["resource"]["resourceType"] == "MedicationRequest":
            entry["resource"][field] = value
    screening = screen_patient(trial, parse_bundle(orjson.dumps(document), "test bundle"), AS_OF)
    outcome = result(screening.evaluation, "inclusion-1-relapsed-refractory-itp").outcome
    assert outcome.truth is Truth.UNKNOWN, outcome.reason
    assert f"its {field} is " in outcome.reason and "not a code" in outcome.reason
