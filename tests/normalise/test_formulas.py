"""The formula library: published example values, monotonicity, bounds (hypothesis)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.normalise.formulas import (
    FORMULAS,
    InputKind,
    albumin_creatinine_ratio,
    body_mass_index,
    body_surface_area_mosteller,
    cockcroft_gault_creatinine_clearance,
    egfr_ckd_epi_2021_creatinine,
    egfr_ckd_epi_2021_creatinine_cystatin_c,
    formula,
    prednisone_equivalent_dose,
)
from engine.normalise.units import is_valid_ucum

ROOT = Path(__file__).resolve().parents[2]

creatinine = st.floats(min_value=0.2, max_value=15)
cystatin = st.floats(min_value=0.3, max_value=10)
age = st.integers(min_value=18, max_value=100)
sex = st.sampled_from(["female", "male"])
weight = st.floats(min_value=30, max_value=250)
height_m = st.floats(min_value=1.2, max_value=2.2)


# ----------------------------------------------------------------- published example values


@pytest.mark.parametrize(
    ("creatinine_mg_dl", "age_years", "sex_at_birth", "expected"),
    [
        # Worked by hand from the published equation (Inker 2021), rounded to
        # whole mL/min/1.73 m2 as labs report; 60-year-old man, Scr 1.0 mg/dL: 86.
        (1.0, 60, "male", 86),
        (0.7, 50, "female", 105),
        (2.0, 65, "male", 36),
        (1.5, 70, "female", 37),
    ],
)
def test_ckd_epi_2021_creatinine_example_values(
    creatinine_mg_dl: float, age_years: int, sex_at_birth: str, expected: int
) -> None:
    assert round(egfr_ckd_epi_2021_creatinine(creatinine_mg_dl, age_years, sex_at_birth)) == (
        expected
    )


def test_ckd_epi_2021_at_the_knots_is_the_age_and_sex_term_only() -> None:
    # At Scr = kappa both min/max terms are 1: 142 x 0.9938^age (x 1.012 for women).
    assert egfr_ckd_epi_2021_creatinine(0.9, 40, "male") == pytest.approx(142 * 0.9938**40)
    assert egfr_ckd_epi_2021_creatinine(0.7, 40, "female") == pytest.approx(
        142 * 0.9938**40 * 1.012
    )
    assert egfr_ckd_epi_2021_creatinine_cystatin_c(0.9, 0.8, 40, "male") == pytest.approx(
        135 * 0.9961**40
    )


def test_cockcroft_gault_example() -> None:
    # (140 - 60) x 72 / (72 x 1.0) = 80 mL/min; women x 0.85.
    assert cockcroft_gault_creatinine_clearance(1.0, 60, 72, "male") == pytest.approx(80)
    assert cockcroft_gault_creatinine_clearance(1.0, 60, 72, "female") == pytest.approx(68)


def test_bmi_bsa_acr_prednisone_examples() -> None:
    assert body_mass_index(70, 1.75) == pytest.approx(22.857, abs=1e-3)
    assert body_surface_area_mosteller(80, 180) == pytest.approx(2.0)
    assert albumin_creatinine_ratio(30, 1) == pytest.approx(30)
    assert prednisone_equivalent_dose(4, 1.25) == pytest.approx(5)


# ----------------------------------------------------------------- monotonicity (properties)


@given(creatinine, creatinine, age, sex)
def test_egfr_falls_as_creatinine_rises(low: float, high: float, years: int, who: str) -> None:
    low, high = sorted((low, high))
    assert egfr_ckd_epi_2021_creatinine(high, years, who) <= egfr_ckd_epi_2021_creatinine(
        low, years, who
    )


@given(creatinine, age, age, sex)
def test_egfr_falls_with_age(value: float, younger: int, older: int, who: str) -> None:
    younger, older = sorted((younger, older))
    assert egfr_ckd_epi_2021_creatinine(value, older, who) <= egfr_ckd_epi_2021_creatinine(
        value, younger, who
    )


@given(creatinine, cystatin, cystatin, age, sex)
def test_combined_egfr_falls_as_cystatin_rises(
    value: float, low: float, high: float, years: int, who: str
) -> None:
    low, high = sorted((low, high))
    assert egfr_ckd_epi_2021_creatinine_cystatin_c(
        value, high, years, who
    ) <= egfr_ckd_epi_2021_creatinine_cystatin_c(value, low, years, who)


@given(creatinine, age, weight, weight, sex)
def test_cockcroft_gault_rises_with_weight(
    value: float, years: int, light: float, heavy: float, who: str
) -> None:
    light, heavy = sorted((light, heavy))
    assert cockcroft_gault_creatinine_clearance(
        value, years, light, who
    ) <= cockcroft_gault_creatinine_clearance(value, years, heavy, who)


@given(weight, height_m, height_m)
def test_bmi_falls_and_bsa_rises_with_height(mass: float, short: float, tall: float) -> None:
    short, tall = sorted((short, tall))
    assert body_mass_index(mass, tall) <= body_mass_index(mass, short)
    assert body_surface_area_mosteller(mass, short * 100) <= body_surface_area_mosteller(
        mass, tall * 100
    )


@given(creatinine, age, sex)
def test_every_plausible_egfr_input_gives_a_plausible_result(
    value: float, years: int, who: str
) -> None:
    result = formula("egfr-ckd-epi-2021-creatinine").compute(
        {"creatinine": value, "age": years, "sex": who}
    )
    assert isinstance(result, float) and math.isfinite(result)


# ----------------------------------------------------------------- the registry


def test_every_formula_is_documented_and_its_units_are_ucum() -> None:
    for entry in FORMULAS.values():
        assert entry.source and entry.version and entry.display
        assert is_valid_ucum(entry.unit), entry.id
        for item in entry.measurement_inputs:
            assert item.concept and item.unit and is_valid_ucum(item.unit), (entry.id, item)
        assert [item.kind for item in entry.inputs].count(InputKind.MEASUREMENT) >= 1


def test_implausible_inputs_and_results_are_reasons_not_values() -> None:
    egfr = formula("egfr-ckd-epi-2021-creatinine")
    assert "outside the plausible range" in str(
        egfr.compute({"creatinine": 88, "age": 60, "sex": "male"})
    )  # 88 umol/L read as mg/dL
    assert "needs sex female or male" in str(
        egfr.compute({"creatinine": 1.0, "age": 60, "sex": "unknown"})
    )
    assert "missing" in str(egfr.compute({"creatinine": 1.0, "age": 60}))


def test_an_unknown_formula_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"known formulas: .*body-mass-index"):
        formula("egfr-mdrd")


def test_the_schema_offers_exactly_the_registered_formulas() -> None:
    schema = json.loads((ROOT / "criteria" / "criteria.schema.json").read_text(encoding="utf-8"))
    computed = schema["$defs"]["resourceAtom"]["properties"]["computed"]
    assert sorted(computed["properties"]["formula"]["enum"]) == sorted(FORMULAS)
