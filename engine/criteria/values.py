"""The value-test grammar: `< 100 g/L`, `<= 2`, `> 1.5 x ULN`, `> 20% above ULN`, `is positive`.

    value-test  = comparator number [unit]
                | comparator [number times] limit
                | comparator number "%" ("above" | "below") limit
                | "is" concept-id
    comparator  = "<" | "<=" | ">" | ">=" | "=" | "!="
    number      = ["-"] digits ["." digits] | "." digits        (no exponent, no decimal comma)
    times       = "x" | "×" | "*"
    limit       = "ULN" | "LLN"
    unit        = the rest of the text: one UCUM unit, no spaces

Blanks (spaces, tabs) are allowed between all parts and around the test. Keywords are case
sensitive (`ULN`, `above`, `is`). `> ULN` means `> 1 x ULN`. `> P% above L` means
`> (1 + P/100) x L`; `> P% below L` means `< (1 - P/100) x L` (the comparator turns round:
"more than 10% below" is "less than 0.9 times").

`criteria/criteria.schema.json` carries a regular expression for the same grammar (a superset:
it does not check units or exponents); keep the two in step.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from decimal import Decimal
from typing import Literal

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
from engine.normalise.units import is_valid_ucum, ucum_suggestion

CONCEPT_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")
"""A concept id, as `mappings/mappings.schema.json` defines it."""

_BLANKS = " \t"
_COMPARATOR = re.compile(r"<=|>=|!=|<|>|=")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
_TIMES_SIGNS = ("x", "×", "*")
_LIMITS: dict[str, Literal["high", "low"]] = {"ULN": "high", "LLN": "low"}
_LIMIT_NAMES = {"high": "ULN", "low": "LLN"}
_EXPONENT = re.compile(r"[eE][+-]?[0-9]")
_TIMES_LIMIT = re.compile(r"[x×*][ \t]*(?P<limit>ULN|LLN)")
_PERCENT_LIMIT = re.compile(r"%[ \t]*(?P<direction>above|below)[ \t]+(?P<limit>ULN|LLN)")
_MIRRORED = {
    Comparator.LESS: Comparator.GREATER,
    Comparator.LESS_OR_EQUAL: Comparator.GREATER_OR_EQUAL,
    Comparator.GREATER: Comparator.LESS,
    Comparator.GREATER_OR_EQUAL: Comparator.LESS_OR_EQUAL,
    Comparator.EQUAL: Comparator.EQUAL,
    Comparator.NOT_EQUAL: Comparator.NOT_EQUAL,
}
_COMPARATOR_HINTS = {
    "==": "=",
    "=<": "<=",
    "=>": ">=",
    "<>": "!=",
    "≤": "<=",
    "≥": ">=",
    "≠": "!=",
}
_FORMS = "'< 100 g/L', '<= 2', '> 1.5 x ULN', '> 20% above ULN', 'is positive', 'is <concept>'"


def parse_value_test(text: str) -> ValueTest:
    """Read one value test; raise ValueError saying precisely what is wrong.

    >>> parse_value_test("< 100 g/L")
    QuantityTest(comparator=<Comparator.LESS: '<'>, value=100.0, unit='g/L', text='< 100 g/L')
    >>> parse_value_test("> 20% above ULN").factor
    1.2
    >>> parse_value_test("=< 2")
    Traceback (most recent call last):
    ...
    ValueError: comparator '=<' is not known; write '<='
    """
    stripped = text.strip(_BLANKS)
    if not stripped:
        raise ValueError(f"empty value test; write one of {_FORMS}")
    if stripped == "is" or stripped.startswith(("is ", "is\t")):
        return _parse_answer(stripped)
    comparator, rest = _split_comparator(stripped)
    if rest in _LIMITS:
        return ReferenceLimitTest(comparator, 1.0, _limit(rest), stripped)
    number_text, after = _split_number(rest, comparator)
    if not after:
        return QuantityTest(comparator, float(number_text), None, stripped)
    if after.startswith(_TIMES_SIGNS) and (
        _TIMES_LIMIT.fullmatch(after) or after[1:].strip(_BLANKS).upper() in _LIMITS
    ):
        return _parse_times_limit(comparator, number_text, after, stripped)
    if after.startswith("%") and any(blank in after for blank in _BLANKS):
        return _parse_percent_limit(comparator, number_text, after, stripped)
    return QuantityTest(comparator, float(number_text), _checked_unit(after), stripped)


def parse_range_test(low_text: str, high_text: str) -> RangeTest:
    """Read `{between: [low, high]}`: two quantities (a number and an optional UCUM unit),
    low <= value <= high, both inclusive. Raise ValueError saying what is wrong."""
    bounds: list[QuantityTest] = []
    for name, text in (("low", low_text), ("high", high_text)):
        stripped = text.strip(_BLANKS)
        if stripped[:1] in ("<", ">", "=", "!"):
            raise ValueError(
                f"the {name} bound '{stripped}' has a comparator; write the quantity alone "
                "(both bounds are inclusive)"
            )
        try:
            parsed = parse_value_test(f">= {stripped}" if name == "low" else f"<= {stripped}")
        except ValueError as error:
            raise ValueError(f"the {name} bound '{stripped}': {error}") from None
        if not isinstance(parsed, QuantityTest):
            raise ValueError(
                f"the {name} bound '{stripped}' is not a quantity (a number and a UCUM unit)"
            )
        bounds.append(replace(parsed, text=stripped))
    low, high = bounds
    if low.unit == high.unit and low.value > high.value:
        raise ValueError(f"the low bound {low.text} is above the high bound {high.text}")
    return RangeTest(low, high, f"between {low.text} and {high.text}")


def parse_per_unit_test(texts: list[str]) -> PerUnitTest:
    """Read `{per_unit: [test, ...]}`: two or more quantity tests, each with a unit. Raise
    ValueError saying what is wrong (units that convert into one another without a molar
    mass are refused when the criteria are compiled against the concept)."""
    if len(texts) < 2:
        raise ValueError("per_unit needs two or more tests, one per unit")
    tests: list[QuantityTest] = []
    for text in texts:
        try:
            parsed = parse_value_test(text)
        except ValueError as error:
            raise ValueError(f"'{text}': {error}") from None
        if not isinstance(parsed, QuantityTest) or parsed.unit is None:
            raise ValueError(f"'{text}' is not a quantity test with a unit ('>= 30 mg/g')")
        tests.append(parsed)
    if len({test.unit for test in tests}) < len(tests):
        raise ValueError("per_unit gives two tests in one unit")
    return PerUnitTest(tuple(tests), " or ".join(test.text for test in tests))


def format_value_test(test: ValueTest) -> str:
    """Write a value test in canonical form; `parse_value_test` reads a single test back.

    A list of tests (AnyValueTest) is written joined by " or ", for explanations.

    >>> format_value_test(parse_value_test("> 20% above ULN"))
    '> 1.2 x ULN'
    """
    if isinstance(test, AnyValueTest):
        return " or ".join(format_value_test(one) for one in test.tests)
    if isinstance(test, PerUnitTest):
        return " or ".join(format_value_test(one) for one in test.tests) + " (per unit)"
    if isinstance(test, AnswerTest):
        return f"is {test.answer_concept}"
    if isinstance(test, RangeTest):
        low, high = (format_value_test(bound)[3:] for bound in (test.low, test.high))
        return f"between {low} and {high}"
    if isinstance(test, ReferenceLimitTest):
        return f"{test.comparator} {_format_number(test.factor)} x {_LIMIT_NAMES[test.limit]}"
    quantity = f"{test.comparator} {_format_number(test.value)}"
    return f"{quantity} {test.unit}" if test.unit else quantity


def _parse_answer(text: str) -> AnswerTest:
    concept = text[2:].strip(_BLANKS)
    if not concept:
        raise ValueError(
            "'is' needs an answer concept: 'is positive', 'is negative' or 'is <concept>'"
        )
    if not CONCEPT_ID_PATTERN.fullmatch(concept):
        raise ValueError(
            f"'{concept}' is not a concept id (lower-case letters, digits and '-', one word)"
        )
    return AnswerTest(concept, text)


def _split_comparator(text: str) -> tuple[Comparator, str]:
    for wrong, right in _COMPARATOR_HINTS.items():
        if text.startswith(wrong):
            raise ValueError(f"comparator '{wrong}' is not known; write '{right}'")
    match = _COMPARATOR.match(text)
    if match is None:
        raise ValueError(
            "a value test starts with a comparator (<, <=, >, >=, =, !=) or 'is'; "
            f"write one of {_FORMS}"
        )
    rest = text[match.end() :].strip(_BLANKS)
    if not rest:
        raise ValueError(f"nothing follows the comparator '{match.group()}'; expected a number")
    return Comparator(match.group()), rest


def _split_number(text: str, comparator: Comparator) -> tuple[str, str]:
    """Split `1.5 10*9/L` into the number and what follows it (stripped)."""
    match = _NUMBER.match(text)
    if match is None:
        if text.upper() in _LIMITS:
            raise ValueError(f"write the limit in capitals: '{text.upper()}'")
        raise ValueError(f"expected a number after '{comparator}', found '{text}'")
    number_text, after = match.group(), text[match.end() :]
    if _EXPONENT.match(after):
        raise ValueError(f"write '{number_text}{after.split()[0]}' without an exponent")
    if after[:1] == "." or (after[:1] == "," and after[1:2].isdigit()):
        raise ValueError(
            f"cannot read the number '{number_text}{after.split()[0]}'; "
            "write decimals with a point and digits on both sides (1.5, 0.5, .5)"
        )
    if not math.isfinite(float(number_text)):
        raise ValueError(f"the number '{number_text}' is too large")
    return number_text, after.strip(_BLANKS)


def _parse_times_limit(
    comparator: Comparator, number_text: str, after: str, text: str
) -> ReferenceLimitTest:
    match = _TIMES_LIMIT.fullmatch(after)
    if match is None:
        limit = after[1:].strip(_BLANKS)
        raise ValueError(f"write the limit in capitals: '{limit.upper()}', not '{limit}'")
    factor = float(number_text)
    if factor <= 0:
        raise ValueError(f"the factor before '{after}' must be positive, not {number_text}")
    return ReferenceLimitTest(comparator, factor, _limit(match.group("limit")), text)


def _parse_percent_limit(
    comparator: Comparator, number_text: str, after: str, text: str
) -> ReferenceLimitTest:
    match = _PERCENT_LIMIT.fullmatch(after)
    if match is None:
        raise ValueError(
            f"cannot read '{number_text}{after}'; write '{number_text}% above ULN' "
            f"or '{number_text}% below LLN'"
        )
    percent = Decimal(number_text)
    if percent < 0:
        raise ValueError(f"the percentage must not be negative: {number_text}%")
    if match.group("direction") == "above":
        return ReferenceLimitTest(
            comparator, float(1 + percent / 100), _limit(match.group("limit")), text
        )
    if percent >= 100:
        raise ValueError(f"a value cannot be {number_text}% below a limit; use less than 100%")
    return ReferenceLimitTest(
        _MIRRORED[comparator], float(1 - percent / 100), _limit(match.group("limit")), text
    )


def _checked_unit(unit: str) -> str:
    if any(blank in unit for blank in _BLANKS):
        first = unit.split()[0]
        if first in _TIMES_SIGNS:
            raise ValueError(f"expected ULN or LLN after '{first}', found '{unit[1:].strip()}'")
        raise ValueError(
            f"unit '{unit}' is not UCUM: a UCUM unit has no spaces{ucum_suggestion(unit)}"
        )
    if not unit.isascii() or not unit.isprintable():
        raise ValueError(
            f"unit '{unit}' is not UCUM: UCUM units are plain ASCII (write 'u' for micro, 'ug/L')"
        )
    if not is_valid_ucum(unit):
        raise ValueError(f"unit '{unit}' is not UCUM{ucum_suggestion(unit)}")
    return unit


def _limit(name: str) -> Literal["high", "low"]:
    return _LIMITS[name]


def _format_number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"cannot write the number {value} in a value test")
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
