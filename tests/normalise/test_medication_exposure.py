"""Periods of use and daily doses read from medication resources (pure functions)."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Mapping
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.normalise.medication_exposure import (
    _is_mapping,
    daily_dose,
    exposure_period,
    milligrams,
    use_in_days,
)

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def request(status: str = "active", **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": status,
        "authoredOn": "2026-09-01T10:00:00+00:00",
        "medicationCodeableConcept": {
            "coding": [
                {"system": RXNORM, "code": "312617", "display": "prednisone 5 MG Oral Tablet"}
            ]
        },
        **fields,
    }


def dosage(
    dose: float,
    unit: str | None = "mg",
    frequency: int = 1,
    period: float = 1,
    period_unit: str = "d",
) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": dose}
    if unit is not None:
        quantity["unit"] = unit
    return {
        "timing": {"repeat": {"frequency": frequency, "period": period, "periodUnit": period_unit}},
        "doseAndRate": [{"doseQuantity": quantity}],
    }


# ------------------------------------------------------------------ periods of use


def test_supply_duration_times_fills_ends_the_order() -> None:
    order = request(
        "completed",
        dispenseRequest={
            "expectedSupplyDuration": {"value": 30, "unit": "days", "code": "d"},
            "numberOfRepeatsAllowed": 2,
        },
    )
    period = exposure_period(order)
    assert not isinstance(period, str)
    assert (period.start, period.end, period.end_known) == (
        dt.date(2026, 9, 1),
        dt.date(2026, 11, 29),
        True,
    )


def test_validity_period_ends_an_order_without_supply_duration() -> None:
    order = request(
        "completed",
        dispenseRequest={"validityPeriod": {"start": "2026-08-01", "end": "2026-10-01"}},
    )
    period = exposure_period(order)
    assert not isinstance(period, str)
    assert (period.start, period.end) == (dt.date(2026, 8, 1), dt.date(2026, 10, 1))


def test_open_ended_orders_run_to_the_as_of_date_while_active_only() -> None:
    active = exposure_period(request("active"))
    stopped = exposure_period(request("stopped"))
    assert not isinstance(active, str) and not isinstance(stopped, str)
    as_of = dt.date(2026, 11, 1)
    assert active.end is None and active.end_known and active.last_day(as_of) == as_of
    assert not stopped.end_known and stopped.last_day(as_of) == dt.date(2026, 9, 1)


def test_a_held_order_or_statement_is_not_ongoing() -> None:
    """`on-hold` (FHIR R4: "temporarily halted"): use up to an unknown day, as `stopped`."""
    as_of = dt.date(2026, 11, 1)
    held = exposure_period(request("on-hold"))
    statement = exposure_period(
        {
            "resourceType": "MedicationStatement",
            "status": "on-hold",
            "effectivePeriod": {"start": "2026-01-01"},
        }
    )
    for period in (held, statement):
        assert not isinstance(period, str)
        assert not period.end_known and period.last_day(as_of) == period.start


def test_a_single_date_on_a_statement_no_longer_going_on_has_an_unknown_end() -> None:
    """A stopped (or completed) statement with one date proves use on that day only, and its
    end is unknown, as an open-ended order's: one shape, which `use_in_days` reads."""
    as_of = dt.date(2026, 11, 1)
    for status in ("stopped", "completed", "on-hold"):
        period = exposure_period(
            {
                "resourceType": "MedicationStatement",
                "status": status,
                "effectiveDateTime": "2026-09-01",
            }
        )
        assert not isinstance(period, str)
        assert (period.start, period.end, period.end_known) == (dt.date(2026, 9, 1), None, False)
        assert period.last_day(as_of) == dt.date(2026, 9, 1)
        assert use_in_days(period, dt.date(2026, 9, 6), as_of, as_of) is None  # may reach
        assert use_in_days(period, dt.date(2026, 8, 1), as_of, as_of) is True
        assert use_in_days(period, None, as_of, as_of) is True
        assert use_in_days(period, dt.date(2026, 7, 1), dt.date(2026, 8, 31), as_of) is False
    ended = exposure_period(request("completed", dispenseRequest=_supply(30)))
    assert not isinstance(ended, str)
    assert use_in_days(ended, dt.date(2026, 9, 30), as_of, as_of) is True  # to 2026-09-30
    assert use_in_days(ended, dt.date(2026, 10, 1), as_of, as_of) is False


def _supply(days: int) -> dict[str, Any]:
    return {"expectedSupplyDuration": {"value": days, "unit": "days", "code": "d"}}


def test_statement_and_administration_periods() -> None:
    statement = {
        "resourceType": "MedicationStatement",
        "status": "completed",
        "effectivePeriod": {"start": "2026-01-01", "end": "2026-03-01"},
    }
    administration = {
        "resourceType": "MedicationAdministration",
        "status": "completed",
        "effectiveDateTime": "2026-05-05T10:00:00Z",
    }
    first, second = exposure_period(statement), exposure_period(administration)
    assert not isinstance(first, str) and not isinstance(second, str)
    assert (first.start, first.end) == (dt.date(2026, 1, 1), dt.date(2026, 3, 1))
    assert second.start == second.end == dt.date(2026, 5, 5)
    assert "no usable" in str(exposure_period({"resourceType": "MedicationStatement"}))


# ------------------------------------------------------------------ daily dose


def test_daily_dose_from_dose_and_timing() -> None:
    dose = daily_dose(request(dosageInstruction=[dosage(10, "mg", frequency=2)]), None)
    assert not isinstance(dose, str) and dose.value == pytest.approx(20)
    weekly = daily_dose(request(dosageInstruction=[dosage(70, "mg", 1, 1, "wk")]), None)
    assert not isinstance(weekly, str) and weekly.value == pytest.approx(10)
    grams = daily_dose(request(dosageInstruction=[dosage(0.5, "g", 1, 12, "h")]), None)
    assert not isinstance(grams, str) and grams.value == pytest.approx(1000)


def test_daily_doses_are_exact_fractions_of_a_milligram() -> None:
    """0.1 mg three times a day is 3/10 mg (not 0.30000000000000004), 750 ug is 3/4 mg and
    500 ng 1/2000 mg: a dose equal to a threshold compares equal."""
    split = daily_dose(request(dosageInstruction=[dosage(0.1, "mg", frequency=3)]), None)
    assert not isinstance(split, str) and split.value == Fraction(3, 10)
    micrograms = daily_dose(request(dosageInstruction=[dosage(750, "ug")]), None)
    assert not isinstance(micrograms, str) and micrograms.value == Fraction(3, 4)
    nanograms = daily_dose(request(dosageInstruction=[dosage(500, "ng")]), None)
    assert not isinstance(nanograms, str) and nanograms.value == Fraction(1, 2000)
    assert milligrams(0.6, "mg") * 25 / 3 == 5  # betamethasone 0.6 mg x 8.333...
    twice_daily = daily_dose(request(dosageInstruction=[dosage(0.375, "mg", 1, 12, "h")]), None)
    assert not isinstance(twice_daily, str) and twice_daily.value == Fraction(3, 4)


def test_tablets_use_the_strength_of_the_rxnorm_clinical_drug_or_the_medication() -> None:
    tablets = daily_dose(request(dosageInstruction=[dosage(2, None)]), None)
    assert not isinstance(tablets, str) and tablets.value == pytest.approx(10)
    medication = {
        "resourceType": "Medication",
        "ingredient": [
            {"strength": {"numerator": {"value": 4, "unit": "mg"}, "denominator": {"value": 1}}}
        ],
    }
    order = request(dosageInstruction=[dosage(1, "tablet")])
    del order["medicationCodeableConcept"]
    with_medication = daily_dose(order, medication)
    assert not isinstance(with_medication, str) and with_medication.value == pytest.approx(4)
    assert "no single-ingredient strength" in str(daily_dose(order, None))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({**dosage(5), "asNeededBoolean": True}, "as needed"),
        ({"doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}]}, "no timing"),
        ({"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}, "doseQuantity"),
        (dosage(5, "mL"), "neither a mass"),
    ],
)
def test_unreadable_doses_say_why(line: dict[str, Any], reason: str) -> None:
    assert reason in str(daily_dose(request(dosageInstruction=[line]), None))


@given(
    st.floats(min_value=0.1, max_value=500),
    st.integers(min_value=1, max_value=6),
    st.sampled_from([(1, "d", 1.0), (12, "h", 2.0), (1, "wk", 1 / 7)]),
)
def test_daily_dose_is_dose_times_administrations_per_day(
    dose: float, frequency: int, timing: tuple[float, str, float]
) -> None:
    period, unit, per_day = timing
    result = daily_dose(
        request(dosageInstruction=[dosage(dose, "mg", frequency, period, unit)]), None
    )
    assert not isinstance(result, str)
    assert result.value == pytest.approx(dose * frequency * per_day)


@pytest.mark.parametrize(
    "value",
    [{}, {"start": "2026-01-01"}, None, [], "2026", 3, MappingProxyType({"a": 1}), OrderedDict()],
)
def test_the_quick_mapping_check_is_isinstance_of_mapping(value: object) -> None:
    """`_is_mapping` answers a dict and None without the ABC's check: the same answer."""
    assert _is_mapping(value) is isinstance(value, Mapping)
