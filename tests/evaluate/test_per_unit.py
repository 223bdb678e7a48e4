"""`value: {per_unit: [...]}`: a result is tested against the cut-off in its own unit of report
(KDIGO 2012 albuminuria categories: A2 is 30-300 mg/g or 3-30 mg/mmol, given per unit)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_computed_and_exposure import ROOT, observation, outcome_of, patient

from engine.criteria.values import parse_per_unit_test
from engine.errors import Location, TrialsieveError
from engine.evaluate import CompiledCriteria, Truth
from engine.evaluate.values import per_unit_check
from engine.normalise import Measurement, convert, load_terminology
from engine.trial import load_trial

_TERMINOLOGY = load_terminology([ROOT / "mappings"])

CRITERIA = """
trial: {id: NCT00000003, title: Per unit}
mappings: [MAPPINGS]
criteria:
  - id: inclusion-1-a2
    kind: inclusion
    text: UACR in KDIGO A2 or worse
    expression:
      resource: Observation
      concept: urine-albumin-creatinine-ratio
      select: any
      value: VALUE
"""

KDIGO_A2 = '{per_unit: [">= 30 mg/g", ">= 3 mg/mmol"]}'


def trial_at(tmp_path: Path, value: str = KDIGO_A2) -> Path:
    path = tmp_path / "trial.yaml"
    text = CRITERIA.replace("MAPPINGS", str(ROOT / "mappings")).replace("VALUE", value)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def a2(tmp_path_factory: pytest.TempPathFactory) -> CompiledCriteria:
    return load_trial(trial_at(tmp_path_factory.mktemp("per-unit")))


def uacr(value: float, unit: str, **more: Any) -> dict[str, Any]:
    resource = observation("14959-1", value, unit, "2025-09-27", "uacr")
    resource["valueQuantity"].update(more)
    return resource


def truth(trial: CompiledCriteria, resource: dict[str, Any]) -> Truth:
    return outcome_of(trial, "inclusion-1-a2", patient(), resource).truth


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (3.0, "mg/mmol", Truth.MET),  # 26.5 mg/g by molar mass, but A2 in mg/mmol
        (3.39, "mg/mmol", Truth.MET),
        (2.9, "mg/mmol", Truth.NOT_MET),
        (30, "mg/g", Truth.MET),
        (27, "mg/g", Truth.NOT_MET),  # 3.05 mg/mmol, but reported in mg/g: 27 < 30
        (30, "ug/mg", Truth.MET),  # ug/mg is mg/g
        (29, "ug/mg", Truth.NOT_MET),
        (0.03, "g/g", Truth.MET),  # g/g is mg/g x 1000 (was refused as "a plain number")
        (0.029, "g/g", Truth.NOT_MET),
    ],
)
def test_each_result_meets_the_cut_off_of_its_unit(
    a2: CompiledCriteria, value: float, unit: str, expected: Truth
) -> None:
    assert truth(a2, uacr(value, unit)) is expected


def test_a_censored_result_is_compared_in_its_unit(a2: CompiledCriteria) -> None:
    assert truth(a2, uacr(3, "mg/mmol", comparator="<")) is Truth.NOT_MET
    assert truth(a2, uacr(3, "mg/mmol", comparator=">")) is Truth.MET


def test_the_reason_says_the_result_and_its_cut_off_in_its_unit_of_report(
    a2: CompiledCriteria,
) -> None:
    """Not '26.5205 mg/g ... is >= 30 mg/g or >= 3 mg/mmol': read as '26.5 mg/g is >= 30'."""
    result = outcome_of(a2, "inclusion-1-a2", patient(), uacr(3.0, "mg/mmol"))
    assert "3 mg/mmol (as reported) on " in result.reason
    assert result.reason.endswith(") is >= 3 mg/mmol")
    assert "26.5" not in result.reason
    result = outcome_of(a2, "inclusion-1-a2", patient(), uacr(2.9, "mg/mmol"))
    assert result.truth is Truth.NOT_MET
    assert result.reason.endswith(") is not >= 3 mg/mmol")
    result = outcome_of(a2, "inclusion-1-a2", patient(), uacr(29, "mg/g"))
    assert result.reason.endswith(") is not >= 30 mg/g")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{per_unit: [">= 30 mg/g", ">= 30 ug/mg"]}', "convert into one another"),
        ('{per_unit: [">= 30 mg/g"]}', ""),
        ('{per_unit: [">= 30 mg/g", ">= 3"]}', ""),
        ('{per_unit: [">= 30 mg/g", ">= 3 mmol/L"]}', "mmol/L"),
    ],
)
def test_bad_per_unit_tests_are_load_errors(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(TrialsieveError) as raised:
        load_trial(trial_at(tmp_path, value))
    assert message in str(raised.value)


@settings(max_examples=200, deadline=None)
@given(
    number=st.floats(min_value=0, max_value=100_000, allow_nan=False),
    unit=st.sampled_from(["mg/g", "ug/mg", "mg/mmol"]),
)
def test_a_result_passes_exactly_when_its_own_unit_cut_off_says(number: float, unit: str) -> None:
    """Property: whatever the number, a result passes iff it reaches the cut-off of its unit
    of report (30 mg/g, the same in ug/mg; 3 mg/mmol), never by way of a conversion."""
    concept = _TERMINOLOGY.concept("urine-albumin-creatinine-ratio")
    test = parse_per_unit_test([">= 30 mg/g", ">= 3 mg/mmol"])
    check = per_unit_check(test, concept, Location(file="t"))
    in_concept_unit = convert(number, unit, "mg/g", concept.molar_mass)
    reported = (number, unit) if unit != "mg/g" else None
    measurement = Measurement(in_concept_unit, "mg/g", frozenset(), None, None, "v", None, reported)
    cut_off = 3 if unit == "mg/mmol" else 30
    assert check(measurement) is (number >= cut_off)
