"""`select: latest` when more than one result may be the latest: results at the same moment,
or on the same day when one of them gives no time of day. Which one the source listed first
must not decide: results that agree decide together, results that disagree leave the atom
unknown, naming both."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from language_support import atom_trial, evaluate, observation

from engine.evaluate.outcome import Truth
from engine.screening import screen_patient
from engine.sources.base import PatientResources
from engine.trial import load_trial

HB = "718-7"
AS_OF = dt.date(2026, 11, 1)
LATEST_BELOW_100 = 'resource: Observation\nconcept: hemoglobin\nwithin: P1Y\nvalue: "< 100 g/L"\n'


def _hb(value: float, date: str, name: str) -> dict[str, Any]:
    return observation(HB, value, "g/L", date, id=name)


def _outcomes(tmp_path: Path, *results: dict[str, Any]) -> list[tuple[Truth, str]]:
    """The outcome for the results in the order given and in the reverse order."""
    path = atom_trial(tmp_path, LATEST_BELOW_100)
    found = []
    for ordered in (results, tuple(reversed(results))):
        [outcome] = evaluate(path, *ordered, as_of=AS_OF)
        found.append((outcome.truth, outcome.reason))
    return found


@pytest.mark.parametrize(
    ("low_date", "high_date"),
    [
        ("2026-10-20T08:00:00Z", "2026-10-20T08:00:00Z"),  # the same instant
        ("2026-10-20T08:00:00Z", "2026-10-20T10:00:00+02:00"),  # the same instant, two zones
        ("2026-10-20", "2026-10-20"),  # the same day, no times
        ("2026-10-20", "2026-10-20T08:00:00Z"),  # a day and a time of that day
        ("2026-10-20T08:00:00Z", "2026-10-20"),
        ("2026-10", "2026-10-20"),  # a month in the window and a day of it
    ],
)
def test_results_that_may_each_be_the_latest_and_disagree_are_unknown(
    tmp_path: Path, low_date: str, high_date: str
) -> None:
    low, high = _hb(95, low_date, "hb-low"), _hb(130, high_date, "hb-high")
    for truth, reason in _outcomes(tmp_path, low, high):
        assert truth is Truth.UNKNOWN
        assert "may each be the latest and disagree" in reason
        assert "95 g/L (Observation/hb-low) is < 100 g/L" in reason
        assert "130 g/L (Observation/hb-high) is not" in reason


@pytest.mark.parametrize(
    ("first", "second", "truth"), [(95, 90, Truth.MET), (130, 140, Truth.NOT_MET)]
)
def test_results_that_may_each_be_the_latest_and_agree_decide(
    tmp_path: Path, first: float, second: float, truth: Truth
) -> None:
    results = (_hb(first, "2026-10-20", "hb-a"), _hb(second, "2026-10-20T08:00:00Z", "hb-b"))
    for found, reason in _outcomes(tmp_path, *results):
        assert found is truth
        assert "disagree" not in reason


@pytest.mark.parametrize(
    ("low_date", "high_date", "truth"),
    [
        ("2026-10-20T09:00:00Z", "2026-10-20T08:00:00Z", Truth.MET),  # later the same day
        ("2026-10-20T08:00:00Z", "2026-10-20T09:00:00Z", Truth.NOT_MET),
        ("2026-10-21", "2026-10-20T23:00:00Z", Truth.MET),  # the next day
        ("2026-10-19", "2026-10-20T00:30:00Z", Truth.NOT_MET),
        ("2026-10-20", "2026-10", Truth.UNKNOWN),  # October may be after the 20th
        ("2026-10-31T08:00:00Z", "2026-10-15", Truth.MET),
    ],
)
def test_a_surely_newer_result_decides_whatever_the_order(
    tmp_path: Path, low_date: str, high_date: str, truth: Truth
) -> None:
    low, high = _hb(95, low_date, "hb-low"), _hb(130, high_date, "hb-high")
    for found, _reason in _outcomes(tmp_path, low, high):
        assert found is truth


def test_the_explanation_says_why_and_asks_for_a_newer_result(tmp_path: Path) -> None:
    from engine.report.explanation import explain, explanation_text

    path = atom_trial(tmp_path, LATEST_BELOW_100)
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    resources = [patient, _hb(95, "2026-10-20", "hb-low"), _hb(130, "2026-10-20", "hb-high")]
    source = PatientResources("p", resources, [None] * len(resources), "test")
    screening = screen_patient(load_trial(path), source, AS_OF)
    text = explanation_text(explain(screening.evaluation), width=1000)
    assert "two results on 2026-10-20 may each be the latest and disagree" in text
    assert "to settle: a newer Haemoglobin result" in text
    assert "or a correction of the results that disagree" in text


# ------------------------------------------------------------------ imprecise dates and latest

# 2026-10-04 to 2026-11-01: a result dated 2026-10 may or may not be in it
SCREENING_LATEST = 'resource: Observation\nconcept: hemoglobin\nwithin: P28D\nvalue: "< 100 g/L"\n'


@pytest.mark.parametrize(
    ("dated", "truth"),
    [
        ("2026-11-01", Truth.NOT_MET),  # after every day of October: it decides
        ("2026-11-01T07:00:00Z", Truth.NOT_MET),
        ("2026-10-31", Truth.UNKNOWN),  # "2026-10" may be the 31st, and later that day
        ("2026-10-15", Truth.UNKNOWN),
    ],
)
def test_a_result_dated_to_a_month_competes_for_latest_only_if_it_may_be_newer(
    tmp_path: Path, dated: str, truth: Truth
) -> None:
    path = atom_trial(tmp_path, SCREENING_LATEST)
    month, day = _hb(95, "2026-10", "hb-month"), _hb(130, dated, "hb-day")
    [outcome] = evaluate(path, month, day, as_of=AS_OF)
    assert outcome.truth is truth
    if truth is Truth.UNKNOWN:
        assert "Observation/hb-month is dated too imprecisely" in outcome.reason
        assert f"it may be the latest, newer than Observation/hb-day of {dated[:10]}" in (
            outcome.reason
        )


def test_the_explanation_of_an_unknown_with_findings_gives_its_reason(tmp_path: Path) -> None:
    from engine.report.explanation import explain, explanation_text

    path = atom_trial(tmp_path, SCREENING_LATEST)
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    resources = [patient, _hb(95, "2026-10", "hb-month"), _hb(130, "2026-10-15", "hb-day")]
    source = PatientResources("p", resources, [None] * len(resources), "test")
    screening = screen_patient(load_trial(path), source, AS_OF)
    text = explanation_text(explain(screening.evaluation), width=1000)
    assert "unusable data: Observation/hb-month is dated too imprecisely" in text
    assert "it may be the latest, newer than Observation/hb-day of 2026-10-15" in text
