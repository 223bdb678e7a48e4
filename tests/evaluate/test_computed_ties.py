"""Computed values whose input has results that may each be the latest (the same instant, or
the same day when one gives no time): as with `select: latest`, the order the source lists
them in never decides. The value of each is computed; when every value is on the same side
of the test, it decides; otherwise the atom is unknown, naming each input and its value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_computed_and_exposure import (
    measured_first,  # noqa: F401 (a fixture)
    observation,
    outcome_of,
    patient,
)
from test_computed_same_sample import sample, trial_at

from engine.evaluate import CompiledCriteria, Truth
from engine.evaluate.outcome import Outcome
from engine.trial import load_trial

EGFR = "inclusion-1-egfr"  # >= 25 mL/min/{1.73_m2}, computed by CKD-EPI 2021 when not measured


def creatinine(value: float, when: str, identifier: str, unit: str = "mg/dL") -> dict[str, Any]:
    """A serum creatinine result at `when` (a dateTime or a bare day)."""
    code = "2160-0" if unit == "mg/dL" else "14682-9"
    resource = observation(code, value, unit, "2026-10-25", identifier)
    resource["effectiveDateTime"] = when
    return resource


def both_orders(trial: CompiledCriteria, criterion: str, *resources: dict[str, Any]) -> Outcome:
    """The outcome for the resources in the order given, checked to be the same (truth,
    reason, evidence, missing data) for the reverse order."""
    forward: Outcome = outcome_of(trial, criterion, patient(), *resources)
    backward: Outcome = outcome_of(trial, criterion, patient(), *reversed(resources))
    assert (backward.truth, backward.reason, backward.evidence, backward.missing) == (
        forward.truth,
        forward.reason,
        forward.evidence,
        forward.missing,
    )
    return forward


@pytest.mark.parametrize(
    ("first_when", "second_when"),
    [
        ("2026-10-25T09:00:00+00:00", "2026-10-25T09:00:00+00:00"),  # the same instant
        ("2026-10-25T09:00:00+00:00", "2026-10-25T11:00:00+02:00"),  # written in two zones
        ("2026-10-25", "2026-10-25"),  # the same day, no times
        ("2026-10-25", "2026-10-25T09:00:00+00:00"),  # a day and a time of that day
    ],
)
def test_tied_creatinines_whose_egfrs_disagree_are_unknown_naming_both(
    measured_first: CompiledCriteria,  # noqa: F811
    first_when: str,
    second_when: str,
) -> None:
    result = both_orders(
        measured_first,
        EGFR,
        creatinine(2.0, first_when, "creatinine-a"),  # 37.5: >= 25
        creatinine(5.0, second_when, "creatinine-b"),  # 12.49: not >= 25
    )
    assert result.truth is Truth.UNKNOWN, result.reason
    assert "two creatinine results may each be the latest" in result.reason
    assert "values computed by CKD-EPI 2021 (creatinine, race-free) disagree" in result.reason
    assert "37.5 mL/min/{1.73_m2}, which is >= 25 mL/min/{1.73_m2}, from creatinine 2 mg/dL" in (
        result.reason
    )
    assert (
        "12.5 mL/min/{1.73_m2}, which is not >= 25 mL/min/{1.73_m2}, from creatinine 5 mg/dL"
        in (result.reason)
    )
    assert "(Observation/creatinine-a)" in result.reason
    assert "(Observation/creatinine-b)" in result.reason
    assert {"Observation/creatinine-a", "Observation/creatinine-b"} <= set(result.evidence)
    assert any("may each be the latest disagree" in item for item in result.missing)


@pytest.mark.parametrize(
    ("second_value", "second_unit", "truth"),
    [
        (2.2, "mg/dL", Truth.MET),  # 37.5 and 33.6: both >= 25
        (176.8, "umol/L", Truth.MET),  # the same value, 2 mg/dL, in SI units
        (5.0, "mg/dL", Truth.UNKNOWN),
    ],
)
def test_tied_creatinines_whose_egfrs_agree_decide(
    measured_first: CompiledCriteria,  # noqa: F811
    second_value: float,
    second_unit: str,
    truth: Truth,
) -> None:
    when = "2026-10-25T09:00:00+00:00"
    result = both_orders(
        measured_first,
        EGFR,
        creatinine(2.0, when, "creatinine-a"),
        creatinine(second_value, when, "creatinine-b", second_unit),
    )
    assert result.truth is truth, result.reason
    if truth is Truth.MET:
        assert "two creatinine results may each be the latest, and each value" in result.reason
        assert "is >= 25 mL/min/{1.73_m2}" in result.reason
        assert {"Observation/creatinine-a", "Observation/creatinine-b"} <= set(result.evidence)


def test_tied_creatinines_that_both_fail_are_not_met(
    measured_first: CompiledCriteria,  # noqa: F811
) -> None:
    when = "2026-10-25"
    result = both_orders(
        measured_first,
        EGFR,
        creatinine(5.0, when, "creatinine-a"),
        creatinine(6.0, when, "creatinine-b"),
    )
    assert result.truth is Truth.NOT_MET, result.reason
    assert "is not >= 25 mL/min/{1.73_m2}" in result.reason


def test_a_surely_newer_creatinine_decides_alone(
    measured_first: CompiledCriteria,  # noqa: F811
) -> None:
    result = both_orders(
        measured_first,
        EGFR,
        creatinine(2.0, "2026-10-25T10:00:00+00:00", "creatinine-a"),
        creatinine(5.0, "2026-10-25T09:00:00+00:00", "creatinine-b"),
    )
    assert result.truth is Truth.MET, result.reason
    assert "may each be the latest" not in result.reason
    assert "Observation/creatinine-b" not in result.evidence


def test_a_tied_creatinine_that_is_unusable_keeps_the_value_unknown(
    measured_first: CompiledCriteria,  # noqa: F811
) -> None:
    when = "2026-10-25T09:00:00+00:00"
    unusable = creatinine(2.0, when, "creatinine-b")
    unusable["valueQuantity"]["comparator"] = "<"
    result = both_orders(measured_first, EGFR, creatinine(2.0, when, "creatinine-a"), unusable)
    assert result.truth is Truth.UNKNOWN, result.reason
    assert "Observation/creatinine-b has a censored value" in result.reason


# ------------------------------------------------------------------ a ratio of one sample


def urine_creatinine(when: str, identifier: str, specimen: str | None = None) -> dict[str, Any]:
    return sample("2161-8", 100, "mg/dL", when, identifier, specimen)  # 1 g/L


def urine_albumin(
    value: float, when: str, identifier: str, specimen: str | None = None
) -> dict[str, Any]:
    return sample("14957-5", value, "mg/L", when, identifier, specimen)


@pytest.fixture(scope="module")
def same_sample(tmp_path_factory: pytest.TempPathFactory) -> CompiledCriteria:
    return load_trial(trial_at(tmp_path_factory.mktemp("ties")))  # UACR >= 200 mg/g


def test_tied_albumins_whose_ratios_disagree_are_unknown(same_sample: CompiledCriteria) -> None:
    when = "2026-10-26T09:15:00-05:00"
    result = both_orders(
        same_sample,
        "inclusion-1-acr",
        urine_albumin(300, when, "albumin-a"),  # 300 mg/g
        urine_albumin(100, when, "albumin-b"),  # 100 mg/g
        urine_creatinine(when, "creatinine"),
    )
    assert result.truth is Truth.UNKNOWN, result.reason
    assert "two urine albumin results may each be the latest" in result.reason
    assert "300 mg/g, which is >= 200 mg/g, from urine_albumin 300 mg/L" in result.reason
    assert "100 mg/g, which is not >= 200 mg/g, from urine_albumin 100 mg/L" in result.reason


def test_the_specimen_pairs_tied_results(same_sample: CompiledCriteria) -> None:
    """Two albumins of one instant from two specimens, and the creatinine of one of them:
    only that pair is one sample, and it decides."""
    when = "2026-10-26T09:15:00-05:00"
    result = both_orders(
        same_sample,
        "inclusion-1-acr",
        urine_albumin(300, when, "albumin-a", "Specimen/u1"),
        urine_albumin(100, when, "albumin-b", "Specimen/u2"),
        urine_creatinine(when, "creatinine", "Specimen/u1"),
    )
    assert result.truth is Truth.MET, result.reason
    assert "Observation/albumin-a" in result.reason
    assert "Observation/albumin-b" not in result.evidence
    # no pair is one sample: unknown, saying so
    apart = both_orders(
        same_sample,
        "inclusion-1-acr",
        urine_albumin(300, when, "albumin-a", "Specimen/u1"),
        urine_albumin(100, when, "albumin-b", "Specimen/u2"),
        urine_creatinine(when, "creatinine", "Specimen/u3"),
    )
    assert apart.truth is Truth.UNKNOWN
    assert "are not from the same sample" in apart.reason


def test_the_explanation_asks_for_a_newer_result(tmp_path: Path) -> None:
    from test_computed_and_exposure import AS_OF, write_trial

    from engine.report.explanation import explain, explanation_text
    from engine.screening import screen_patient
    from engine.sources.base import PatientResources

    trial = load_trial(write_trial(tmp_path))
    resources = [
        patient(),
        creatinine(2.0, "2026-10-25", "creatinine-a"),
        creatinine(5.0, "2026-10-25", "creatinine-b"),
    ]
    source = PatientResources("p", resources, [None] * len(resources), "test")
    screening = screen_patient(trial, source, AS_OF)
    text = explanation_text(explain(screening.evaluation), width=1000)
    assert "two creatinine results may each be the latest" in text
    assert "a newer result, or a correction of them, settles it" in text


_INSTANTS = [
    "2026-10-25",
    "2026-10-25T09:00:00+00:00",
    "2026-10-25T11:00:00+02:00",
    "2026-10-25T10:00:00+00:00",
    "2026-10-24",
    "2026-10",
]


@settings(max_examples=60, deadline=None)
@given(
    results=st.lists(
        st.tuples(
            st.sampled_from(_INSTANTS),
            st.sampled_from([0.8, 2.0, 2.2, 3.2, 5.0]),
            st.sampled_from(["mg/dL", "umol/L"]),
        ),
        min_size=1,
        max_size=4,
    ),
    data=st.data(),
)
def test_the_order_of_the_inputs_never_decides(
    measured_first: CompiledCriteria,  # noqa: F811
    results: list[tuple[str, float, str]],
    data: st.DataObject,
) -> None:
    """Property: any order of the same creatinine results gives the same outcome, reason,
    evidence and missing data."""
    resources = [
        creatinine(value if unit == "mg/dL" else value * 88.42, when, f"creatinine-{index}", unit)
        for index, (when, value, unit) in enumerate(results)
    ]
    shuffled = data.draw(st.permutations(resources))
    one = outcome_of(measured_first, EGFR, patient(), *resources)
    other = outcome_of(measured_first, EGFR, patient(), *shuffled)
    assert (other.truth, other.reason, other.evidence, other.missing) == (
        one.truth,
        one.reason,
        one.evidence,
        one.missing,
    )
