"""Compiled value tests: thresholds in the concept's unit, reference limits, coded answers,
censored results; each check answers True, False or the reason it cannot.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple

from engine.criteria.model import (
    AnswerTest,
    AnyValueTest,
    Comparator,
    PerUnitTest,
    QuantityTest,
    RangeTest,
    ReferenceLimitTest,
    ValueTest,
)
from engine.errors import CriteriaError, Location, UnitError
from engine.normalise import Concept, Measurement, Terminology
from engine.normalise.units import convert

ValueCheck = Callable[[Measurement], bool | str]
"""True / False, or the reason the result cannot be tested."""

COMPARISONS: dict[Comparator, Callable[[float | Fraction, float | Fraction], bool]] = {
    Comparator.LESS: operator.lt,
    Comparator.LESS_OR_EQUAL: operator.le,
    Comparator.GREATER: operator.gt,
    Comparator.GREATER_OR_EQUAL: operator.ge,
    Comparator.EQUAL: operator.eq,
    Comparator.NOT_EQUAL: operator.ne,
}


# --------------------------------------------------------------------------- value tests


def compile_value_check(
    test: ValueTest, concept: Concept, terminology: Terminology, where: Location
) -> ValueCheck:
    if isinstance(test, AnyValueTest):
        return any_check(
            [compile_value_check(one, concept, terminology, where) for one in test.tests]
        )
    if isinstance(test, QuantityTest):
        return quantity_check(test, concept, where)
    if isinstance(test, PerUnitTest):
        return per_unit_check(test, concept, where)
    if isinstance(test, ReferenceLimitTest):
        return limit_check(test, concept)
    if isinstance(test, RangeTest):
        return range_check(test, concept, where)
    return answer_check(test, terminology, where)


def range_check(test: RangeTest, concept: Concept, where: Location) -> ValueCheck:
    """low <= value <= high, both bounds converted to the concept's unit."""
    low = quantity_check(test.low, concept, where)
    high = quantity_check(test.high, concept, where)
    low_value = _threshold(test.low, concept, where)
    high_value = _threshold(test.high, concept, where)
    if low_value > high_value:
        raise CriteriaError(
            f"'{test.text}': the low bound is above the high bound in {concept.unit}", where
        )

    def check(measurement: Measurement) -> bool | str:
        verdicts = (low(measurement), high(measurement))
        if False in verdicts:
            return False
        if verdicts == (True, True):
            return True
        return "; ".join(str(verdict) for verdict in verdicts if verdict is not True)

    return check


def any_check(checks: list[ValueCheck]) -> ValueCheck:
    """Passes if an applicable check passes; fails if the applicable ones fail; else a reason."""

    def check(measurement: Measurement) -> bool | str:
        reasons: list[str] = []
        failed = False
        for one in checks:
            verdict = one(measurement)
            if verdict is True:
                return True
            if verdict is False:
                failed = True
            else:
                reasons.append(str(verdict))
        return False if failed else "; ".join(reasons)

    return check


def quantity_check(test: QuantityTest, concept: Concept, where: Location) -> ValueCheck:
    threshold = _threshold(test, concept, where)

    def check(measurement: Measurement) -> bool | str:
        if measurement.value is None:
            return "no numeric value"
        return compare_result(measurement, test.comparator, threshold)

    return check


def per_unit_check(test: PerUnitTest, concept: Concept, where: Location) -> ValueCheck:
    """Each result against the cut-off in its unit of report (`PerUnitTest`), compared in
    that unit; a result in the concept's unit (or computed) against the cut-off in a unit it
    converts to without a molar mass, else the first. CriteriaError when two of the units
    convert into one another without a molar mass (which cut-off would apply is then moot)."""
    checks = [quantity_check(one, concept, where) for one in test.tests]  # each converts
    units = [one.unit for one in test.tests]
    for index, unit in enumerate(units):
        for other in units[index + 1 :]:
            assert unit is not None and other is not None
            if _plainly_convertible(unit, other):
                raise CriteriaError(
                    f"'{test.text}': {unit} and {other} convert into one another without a "
                    "molar mass; per_unit is for units of different kinds (mg/g, mg/mmol)",
                    where,
                )
    check_of = dict(zip(test.tests, checks, strict=True))

    def check(measurement: Measurement) -> bool | str:
        if measurement.value is None:
            return "no numeric value"
        reading = per_unit_reading(test, measurement, concept.unit)
        if not reading.as_reported:  # in the concept's unit, converted as usual
            return check_of[reading.test](measurement)
        as_reported = Measurement(
            reading.value,
            reading.unit,
            frozenset(),
            None,
            None,
            measurement.field,
            measurement.comparator,
        )
        return compare_result(as_reported, reading.test.comparator, reading.test.value)

    return check


class PerUnitReading(NamedTuple):
    """How a per-unit test reads a result: the number and unit it compares (the unit of
    report, or one it converts to without a molar mass: `as_reported`; else the concept's)
    and the cut-off it compares them with."""

    value: float
    unit: str
    test: QuantityTest
    as_reported: bool


def per_unit_reading(
    test: PerUnitTest, measurement: Measurement, concept_unit: str | None
) -> PerUnitReading:
    """The cut-off of a per-unit test that applies to a result with a numeric value, and
    the value as compared: in its unit of report when a cut-off is in that unit (or converts
    to it without a molar mass), else in the concept's unit against the cut-off in a unit the
    concept's converts to (else the first)."""
    assert measurement.value is not None
    reported = measurement.reported
    if reported is not None:
        number, unit = reported
        for one in test.tests:
            assert one.unit is not None
            if _plainly_convertible(unit, one.unit):
                return PerUnitReading(convert(number, unit, one.unit), one.unit, one, True)
    in_concept_unit = next(
        (
            one
            for one in test.tests
            if one.unit is not None
            and concept_unit is not None
            and _plainly_convertible(concept_unit, one.unit)
        ),
        test.tests[0],
    )
    return PerUnitReading(measurement.value, measurement.unit or "", in_concept_unit, False)


def _plainly_convertible(unit: str, other: str) -> bool:
    """Whether one unit converts to the other without a molar mass (mg/g and ug/mg do, mg/g
    and mg/mmol do not)."""
    try:
        convert(1.0, unit, other)
    except UnitError:
        return False
    return True


def _threshold(test: QuantityTest, concept: Concept, where: Location) -> float:
    """The test's number in the concept's unit; CriteriaError when it does not convert."""
    if test.unit is None:
        if concept.unit not in (None, "1"):
            raise CriteriaError(
                f"'{test.text}' has no unit, but {concept.id} is measured in {concept.unit}; "
                f"write the unit (e.g. '{test.text} {concept.unit}')",
                where,
            )
        threshold = test.value
    else:
        if concept.unit is None:
            raise CriteriaError(
                f"'{test.text}' has a unit, but concept {concept.id} has no canonical unit "
                "in the mappings",
                where,
            )
        try:
            threshold = convert(test.value, test.unit, concept.unit, concept.molar_mass)
        except UnitError as error:
            raise CriteriaError(f"'{test.text}': {error.message}", where) from None
    return threshold


def reference_limit(
    test: ReferenceLimitTest, concept: Concept, measurement: Measurement
) -> float | None:
    """The reference limit a test compares a result with (before its factor): the result's
    own, else the concept's default; None when neither is known."""
    if test.limit == "high":
        own, default = measurement.reference_high, concept.reference_high
    else:
        own, default = measurement.reference_low, concept.reference_low
    return own if own is not None else default


def limit_check(test: ReferenceLimitTest, concept: Concept) -> ValueCheck:
    name = "upper" if test.limit == "high" else "lower"

    def check(measurement: Measurement) -> bool | str:
        if measurement.value is None:
            return "no numeric value"
        limit = reference_limit(test, concept, measurement)
        if limit is None:
            return f"no {name} reference limit on the result and none in the mappings"
        return compare_result(measurement, test.comparator, test.factor * limit)

    return check


_Interval = tuple[float, bool, float, bool]
"""low, low included, high, high included."""

_RESULT_SIDE: dict[str, Callable[[float], _Interval]] = {
    "<": lambda value: (-math.inf, False, value, False),
    "<=": lambda value: (-math.inf, False, value, True),
    ">": lambda value: (value, False, math.inf, False),
    ">=": lambda value: (value, True, math.inf, False),
}


def compare_result(
    measurement: Measurement, comparator: Comparator, threshold: float
) -> bool | str:
    """Compare a result with a threshold; a censored result (`< 20`) decides only when every
    value it allows gives the same answer, else it says why it cannot."""
    value = measurement.value
    assert value is not None
    if measurement.comparator is None:
        return COMPARISONS[comparator](value, threshold)
    shown = f"{measurement.comparator} {value:g}"
    if comparator in (Comparator.EQUAL, Comparator.NOT_EQUAL):
        return f"the censored result {shown} cannot be tested for {comparator.value} {threshold:g}"
    result = _RESULT_SIDE[measurement.comparator](value)
    wanted = _RESULT_SIDE[comparator.value](threshold)
    if _inside(result, wanted):
        return True
    if _disjoint(result, wanted):
        return False
    return f"the censored result {shown} may or may not be {comparator.value} {threshold:g}"


def _inside(inner: _Interval, outer: _Interval) -> bool:
    low, low_in, high, high_in = inner
    outer_low, outer_low_in, outer_high, outer_high_in = outer
    above = low > outer_low or (low == outer_low and (outer_low_in or not low_in))
    below = high < outer_high or (high == outer_high and (outer_high_in or not high_in))
    return above and below


def _disjoint(first: _Interval, second: _Interval) -> bool:
    def before(left: _Interval, right: _Interval) -> bool:
        return left[2] < right[0] or (left[2] == right[0] and not (left[3] and right[1]))

    return before(first, second) or before(second, first)


INDETERMINATE = "indeterminate"
"""The answer concept of results that answer no question (equivocal, borderline)."""


def answer_check(test: AnswerTest, terminology: Terminology, where: Location) -> ValueCheck:
    if not terminology.has_concept(test.answer_concept):
        hint = terminology.unknown_concept_hint(test.answer_concept)
        raise CriteriaError(
            f"answer concept '{test.answer_concept}' is not defined in the mappings{hint}", where
        )
    wanted = test.answer_concept

    def check(measurement: Measurement) -> bool | str:
        answers = measurement.answer_concepts
        if wanted in answers:
            return True
        if INDETERMINATE in answers:
            return "an indeterminate result answers neither way"
        if answers:
            return False
        if measurement.value is not None:
            return f"a numeric result ({measurement.value:g}) where a coded answer was expected"
        return "no coded or text answer"

    return check


# --------------------------------------------------------------------------- shown numbers


def value_thresholds(test: ValueTest | None, concept: Concept | None) -> tuple[float, ...]:
    """The numbers a numeric test compares a value with, in the concept's unit (a range's
    two bounds; every member of an "any of" or a per-unit test that converts); none for a
    coded or a reference-limit test, whose limit is the result's own. For showing a value
    with the digits that decide (`deciding_number`); the test was compiled, so it converts."""
    if test is None or concept is None:
        return ()
    if isinstance(test, QuantityTest):
        try:
            return (_threshold(test, concept, Location()),)
        except CriteriaError:
            return ()
    if isinstance(test, RangeTest):
        return value_thresholds(test.low, concept) + value_thresholds(test.high, concept)
    if isinstance(test, AnyValueTest | PerUnitTest):
        return tuple(number for one in test.tests for number in value_thresholds(one, concept))
    return ()


_MOST_DECIMALS = 6


def deciding_number(value: float, thresholds: tuple[float, ...] = ()) -> str:
    """A computed or converted value as a clinician reads it: one decimal, or as many more
    as it takes for the number shown to fall on the same side of every threshold as the
    value itself (24.96 against 25 is `24.96`, never `25.0`; 42.03 is `42.0`), with no
    trailing zeros past the first decimal, and none at all for a whole number (a result of
    10.5 g/dL is 105 g/L, as a haematologist writes it); never exponent notation nor a
    float's last digits.

    >>> deciding_number(42.0312), deciding_number(24.6123, (25.0,)), deciding_number(24.96, (25.0,))
    ('42.0', '24.6', '24.96')
    >>> deciding_number(74.99996, (25.0, 75.0)), deciding_number(25.0, (25.0,))
    ('74.99996', '25')
    """
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.{_MOST_DECIMALS}f}"
    for decimals in range(1, _MOST_DECIMALS + 1):
        candidate = f"{value:.{decimals}f}"
        shown = float(candidate)
        if all(_side(shown, limit) == _side(value, limit) for limit in thresholds):
            text = candidate
            break
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    if not fraction and abs(value - round(value)) <= 1e-9 * max(1.0, abs(value)):
        return whole  # a whole number, as converted (10.5 g/dL is 105 g/L, not 105.0)
    return f"{whole}.{fraction or '0'}"


def _side(value: float, limit: float) -> int:
    return (value > limit) - (value < limit)
