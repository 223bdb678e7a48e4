"""Property tests: the inclusive range form and the stricter unit commensurability."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.criteria.model import Comparator
from engine.criteria.values import format_value_test, parse_range_test
from engine.errors import Location, UnitError
from engine.evaluate.values import range_check
from engine.normalise import Concept, Measurement, convert

numbers = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False).map(float)
units = st.sampled_from(["%", "g/L", "mg/dL", "mmol/mol", "mL/min/{1.73_m2}", ""])


@given(numbers, numbers, units)
def test_a_range_reads_back_from_its_canonical_form(low: float, high: float, unit: str) -> None:
    low, high = min(low, high), max(low, high)
    suffix = f" {unit}" if unit else ""
    test = parse_range_test(f"{low:g}{suffix}", f"{high:g}{suffix}")
    assert test.low.comparator is Comparator.GREATER_OR_EQUAL
    assert test.high.comparator is Comparator.LESS_OR_EQUAL
    assert (test.low.value, test.high.value) == (float(f"{low:g}"), float(f"{high:g}"))
    assert format_value_test(test).startswith("between ")


@given(numbers, numbers)
def test_a_range_upside_down_in_one_unit_is_refused(low: float, high: float) -> None:
    if low <= high:
        return
    with pytest.raises(ValueError, match="above the high bound"):
        parse_range_test(f"{low:g} g/L", f"{high:g} g/L")


@settings(deadline=None)
@given(numbers, numbers, numbers)
def test_the_range_check_is_inclusive_at_both_ends(low: float, high: float, value: float) -> None:
    low, high = min(low, high), max(low, high)
    concept = Concept("lab", "Lab", "g/L", None, None, None, None, Location())
    check = range_check(parse_range_test(f"{low:g} g/L", f"{high:g} g/L"), concept, Location())
    low, high = float(f"{low:g}"), float(f"{high:g}")
    measurement = Measurement(value, "g/L", frozenset(), None, None, "valueQuantity")
    assert check(measurement) is (low <= value <= high)


@settings(deadline=None)
@given(st.sampled_from(["mL/min", "L/h", "mL/s"]), st.sampled_from(["{1.73_m2}", "{BSA}"]))
def test_a_denominator_annotation_never_converts_away(unit: str, annotation: str) -> None:
    with pytest.raises(UnitError, match="annotation in a denominator"):
        convert(1.0, unit, f"{unit}/{annotation}")
    with pytest.raises(UnitError, match="annotation in a denominator"):
        convert(1.0, f"{unit}/{annotation}", unit)


@settings(deadline=None)
@given(
    st.floats(min_value=0.001, max_value=1e6), st.sampled_from(["mL/min/{1.73_m2}", "{cells}/uL"])
)
def test_same_annotations_still_convert_by_ucum(value: float, unit: str) -> None:
    target = "L/h/{1.73_m2}" if "1.73" in unit else "10*9/L"
    back = convert(convert(value, unit, target), target, unit)
    assert math.isclose(back, value, rel_tol=1e-9)
