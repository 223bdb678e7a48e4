"""Value tests after compilation: reference-limit arithmetic and unit-converted thresholds."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.criteria.model import Comparator, QuantityTest, ReferenceLimitTest
from engine.errors import CriteriaError, Location
from engine.evaluate.values import deciding_number, limit_check, quantity_check, value_thresholds
from engine.normalise import Concept, Measurement

WHERE = Location(file="trial.yaml", line=1)
positive = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)


def concept(unit: str | None, low: float | None = None, high: float | None = None) -> Concept:
    return Concept(
        id="lab",
        display="Lab",
        unit=unit,
        reference_low=low,
        reference_high=high,
        molar_mass=113.12,
        value_path=None,
        source=WHERE,
    )


def measurement(
    value: float | None, low: float | None = None, high: float | None = None
) -> Measurement:
    return Measurement(value, "U/L", frozenset(), low, high, "valueQuantity")


def uln_test(factor: float) -> ReferenceLimitTest:
    return ReferenceLimitTest(Comparator.GREATER, factor, "high", f"> {factor} x ULN")


@given(positive, positive, st.floats(min_value=0.1, max_value=10))
def test_own_upper_limit_decides(value: float, limit: float, factor: float) -> None:
    assume(not math.isclose(value, factor * limit, rel_tol=1e-9))
    check = limit_check(uln_test(factor), concept("U/L", high=999.0))
    assert check(measurement(value, high=limit)) is (value > factor * limit)


@given(positive, positive, st.floats(min_value=0.1, max_value=10))
def test_default_upper_limit_is_the_fallback(value: float, default: float, factor: float) -> None:
    assume(not math.isclose(value, factor * default, rel_tol=1e-9))
    check = limit_check(uln_test(factor), concept("U/L", high=default))
    assert check(measurement(value)) is (value > factor * default)


@given(positive, positive)
def test_percent_below_lower_limit(value: float, lower: float) -> None:
    assume(not math.isclose(value, 0.9 * lower, rel_tol=1e-9))
    test = ReferenceLimitTest(Comparator.LESS, 0.9, "low", "> 10% below LLN")
    assert limit_check(test, concept("U/L"))(measurement(value, low=lower)) is (value < 0.9 * lower)


def test_no_limit_anywhere_is_a_reason_not_a_guess() -> None:
    verdict = limit_check(uln_test(1.5), concept("U/L"))(measurement(80.0))
    assert isinstance(verdict, str)
    assert "no upper reference limit" in verdict


def test_no_numeric_value_is_a_reason() -> None:
    assert (
        limit_check(uln_test(1.5), concept("U/L", high=40))(measurement(None)) == "no numeric value"
    )


@settings(deadline=None)  # the first call builds the UCUM registry once per process
@given(st.floats(min_value=1, max_value=300))
def test_threshold_is_converted_to_the_canonical_unit(value_in_grams_per_litre: float) -> None:
    assume(not math.isclose(value_in_grams_per_litre, 100.0, rel_tol=1e-9))
    test = QuantityTest(Comparator.LESS, 10.0, "g/dL", "< 10 g/dL")
    check = quantity_check(test, concept("g/L"), WHERE)
    assert check(measurement(value_in_grams_per_litre)) is (value_in_grams_per_litre < 100.0)


def test_mass_threshold_on_a_molar_concept_uses_the_molar_mass() -> None:
    test = QuantityTest(Comparator.GREATER, 1.5, "mg/dL", "> 1.5 mg/dL")
    check = quantity_check(test, concept("umol/L"), WHERE)  # creatinine: 1.5 mg/dL = 132.6 umol/L
    assert check(measurement(133.0)) is True
    assert check(measurement(132.0)) is False


@pytest.mark.parametrize(
    ("test", "unit", "message"),
    [
        (QuantityTest(Comparator.LESS, 100.0, None, "< 100"), "g/L", "has no unit"),
        (QuantityTest(Comparator.LESS, 100.0, "g/L", "< 100 g/L"), None, "no canonical unit"),
        (QuantityTest(Comparator.LESS, 100.0, "s", "< 100 s"), "g/L", "< 100 s"),
    ],
)
def test_impossible_thresholds_fail_at_compile_time(
    test: QuantityTest, unit: str | None, message: str
) -> None:
    with pytest.raises(CriteriaError) as caught:
        quantity_check(test, concept(unit), WHERE)
    assert message in str(caught.value)
    assert "trial.yaml:1" in str(caught.value)


class _AnswerConcepts:
    """Just enough terminology for answer tests: every answer concept exists."""

    def has_concept(self, concept_id: str) -> bool:
        return True


def _coded(*answers: str) -> Measurement:
    return Measurement(None, None, frozenset(answers), None, None, "valueCodeableConcept")


def test_a_list_of_tests_applies_each_to_the_results_it_fits() -> None:
    from engine.criteria.model import AnswerTest, AnyValueTest
    from engine.evaluate.values import compile_value_check

    test = AnyValueTest(
        (uln_test(1.0), AnswerTest("positive", "is positive")), "> 1 x ULN or is positive"
    )
    check = compile_value_check(test, concept("[IU]/mL", high=15.0), _AnswerConcepts(), WHERE)  # type: ignore[arg-type]
    assert check(measurement(2000.0)) is True  # a viral load above the limit
    assert check(measurement(10.0)) is False  # below the limit
    assert check(_coded("positive")) is True  # "detected"
    assert check(_coded("negative")) is False  # "not detected"
    unusable = check(Measurement(None, None, frozenset(), None, None, "valueString"))
    assert isinstance(unusable, str)
    assert "no numeric value" in unusable


comparators = st.sampled_from(["<", "<=", ">", ">="])
small = st.integers(min_value=-20, max_value=20).map(float)


@given(comparators, small, comparators, small, st.floats(min_value=0.01, max_value=5))
def test_a_censored_result_decides_only_when_every_allowed_value_agrees(
    result_side: str, value: float, test_side: str, threshold: float, step: float
) -> None:
    from engine.evaluate.values import COMPARISONS, compare_result

    censored = Measurement(value, "U/L", frozenset(), None, None, "valueQuantity", result_side)
    verdict = compare_result(censored, Comparator(test_side), threshold)
    # values the censored result allows: on its side of `value`, `value` itself if inclusive
    allowed = (
        [value - step, value - 100 * step]
        if "<" in result_side
        else [value + step, value + 100 * step]
    )
    if "=" in result_side:
        allowed.append(value)
    outcomes = {COMPARISONS[Comparator(test_side)](x, threshold) for x in allowed}
    if isinstance(verdict, bool):
        assert outcomes == {verdict}
    else:
        assert "censored result" in verdict


def test_an_indeterminate_result_answers_neither_way() -> None:
    from engine.criteria.model import AnswerTest
    from engine.evaluate.values import answer_check

    check = answer_check(AnswerTest("positive", "is positive"), _AnswerConcepts(), WHERE)  # type: ignore[arg-type]
    assert check(_coded("positive")) is True
    assert check(_coded("negative")) is False
    verdict = check(_coded("indeterminate"))
    assert isinstance(verdict, str)
    assert "indeterminate" in verdict


# A value shown in a reason has the digits that decide its test: never so rounded that it
# reads as the threshold it is on the other side of (24.996 as '25'), never a float's tail.


@pytest.mark.parametrize(
    ("value", "thresholds", "shown"),
    [
        (42.0312, (25.0, 75.0), "42.0"),
        (24.6123, (25.0, 75.0), "24.6"),
        (24.96, (25.0, 75.0), "24.96"),
        (24.9996, (25.0, 75.0), "24.9996"),
        (25.00353, (25.0, 75.0), "25.004"),
        (25.0, (25.0, 75.0), "25"),
        (105.0, (100.0,), "105"),  # a whole number converted (10.5 g/dL) stays whole
        (1.1 * 100, (100.0,), "110"),  # a float's tail: 110.00000000000001
        (75.04, (25.0, 75.0), "75.04"),
        (132.60309, (200.0, 5000.0), "132.6"),
        (199.97, (200.0, 5000.0), "199.97"),
        (18.92, (), "18.9"),
    ],
)
def test_a_value_is_shown_with_the_digits_that_decide(
    value: float, thresholds: tuple[float, ...], shown: str
) -> None:
    assert deciding_number(value, thresholds) == shown


@settings(max_examples=300)
@given(
    st.floats(min_value=0, max_value=1e4, allow_nan=False),
    st.floats(min_value=0, max_value=1e4, allow_nan=False),
)
def test_the_shown_value_compares_as_the_value_does(value: float, threshold: float) -> None:
    assume(abs(value - threshold) >= 1e-6)  # closer than the sixth decimal: not shown apart
    shown = float(deciding_number(value, (threshold,)))
    assert (shown < threshold) == (value < threshold)
    assert (shown > threshold) == (value > threshold)


def test_the_thresholds_of_a_test_are_in_the_concept_s_unit() -> None:
    creatinine = concept("umol/L")
    test = QuantityTest(Comparator.LESS, 1.5, "mg/dL", "< 1.5 mg/dL")
    assert value_thresholds(test, creatinine) == (pytest.approx(132.6, abs=0.01),)
    assert value_thresholds(None, creatinine) == ()
