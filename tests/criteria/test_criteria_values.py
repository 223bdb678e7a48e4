"""The value-test grammar: examples, error messages, and round-trip / robustness properties."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.criteria.model import (
    AnswerTest,
    Comparator,
    QuantityTest,
    ReferenceLimitTest,
    ValueTest,
)
from engine.criteria.values import format_value_test, parse_value_test

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "criteria" / "criteria.schema.json"
VALUE_TEST_PATTERN = re.compile(
    json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))["$defs"]["valueTest"]["pattern"]
)
UNITS = ["g/L", "10*9/L", "%", "mg/dL", "umol/L", "[IU]/mL", "mmol/L", "{score}", "/uL", "kg"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("< 100 g/L", QuantityTest(Comparator.LESS, 100.0, "g/L", "< 100 g/L")),
        ("<= 2", QuantityTest(Comparator.LESS_OR_EQUAL, 2.0, None, "<= 2")),
        ("< 1.5 10*9/L", QuantityTest(Comparator.LESS, 1.5, "10*9/L", "< 1.5 10*9/L")),
        ("  >=.5 mg/dL\t", QuantityTest(Comparator.GREATER_OR_EQUAL, 0.5, "mg/dL", ">=.5 mg/dL")),
        ("<100g/L", QuantityTest(Comparator.LESS, 100.0, "g/L", "<100g/L")),
        ("<= -2.5", QuantityTest(Comparator.LESS_OR_EQUAL, -2.5, None, "<= -2.5")),
        ("<= 50 %", QuantityTest(Comparator.LESS_OR_EQUAL, 50.0, "%", "<= 50 %")),
        ("!= 0", QuantityTest(Comparator.NOT_EQUAL, 0.0, None, "!= 0")),
        ("= 1", QuantityTest(Comparator.EQUAL, 1.0, None, "= 1")),
        ("> 1.5 x ULN", ReferenceLimitTest(Comparator.GREATER, 1.5, "high", "> 1.5 x ULN")),
        ("> 1.5×ULN", ReferenceLimitTest(Comparator.GREATER, 1.5, "high", "> 1.5×ULN")),
        ("> 3 * ULN", ReferenceLimitTest(Comparator.GREATER, 3.0, "high", "> 3 * ULN")),
        ("< 0.5 x LLN", ReferenceLimitTest(Comparator.LESS, 0.5, "low", "< 0.5 x LLN")),
        ("> ULN", ReferenceLimitTest(Comparator.GREATER, 1.0, "high", "> ULN")),
        ("> 20% above ULN", ReferenceLimitTest(Comparator.GREATER, 1.2, "high", "> 20% above ULN")),
        ("> 10% below LLN", ReferenceLimitTest(Comparator.LESS, 0.9, "low", "> 10% below LLN")),
        (
            "<= 5 % below LLN",
            ReferenceLimitTest(Comparator.GREATER_OR_EQUAL, 0.95, "low", "<= 5 % below LLN"),
        ),
        ("is positive", AnswerTest("positive", "is positive")),
        ("is   negative ", AnswerTest("negative", "is   negative")),
        ("is hbsag-detected", AnswerTest("hbsag-detected", "is hbsag-detected")),
    ],
)
def test_parses_every_documented_form(text: str, expected: ValueTest) -> None:
    assert parse_value_test(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty value test"),
        ("100 g/L", "starts with a comparator"),
        ("== 2", "write '='"),
        ("≤ 2", "write '<='"),
        ("<", "nothing follows the comparator"),
        ("< abc", "expected a number after '<'"),
        ("< 1e3", "without an exponent"),
        ("< 5.", "decimals with a point"),
        ("< 1,5 g/L", "decimals with a point"),
        ("< 100 g/LL", "unit 'g/LL' is not UCUM"),
        ("< 100 g / L", "has no spaces"),
        ("< 100 µg/L", "plain ASCII"),
        ("> 1.5 x uln", "capitals"),
        ("> uln", "capitals"),
        ("> 1.5 x foo", "expected ULN or LLN after 'x'"),
        ("> -1 x ULN", "must be positive"),
        ("> 0 x ULN", "must be positive"),
        ("> 20% above", "'20% above ULN'"),
        ("> 120% below LLN", "less than 100%"),
        ("is", "needs an answer concept"),
        ("is two words", "not a concept id"),
        ("< " + "9" * 400, "too large"),
    ],
)
def test_rejects_with_a_precise_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_value_test(text)


@pytest.mark.parametrize(
    ("test", "text"),
    [
        (QuantityTest(Comparator.LESS, 100.0, "g/L", ""), "< 100 g/L"),
        (QuantityTest(Comparator.LESS_OR_EQUAL, 2.0, None, ""), "<= 2"),
        (QuantityTest(Comparator.GREATER, 1e-7, "g/L", ""), "> 0.0000001 g/L"),
        (ReferenceLimitTest(Comparator.GREATER, 1.2, "high", ""), "> 1.2 x ULN"),
        (ReferenceLimitTest(Comparator.LESS, 0.9, "low", ""), "< 0.9 x LLN"),
        (AnswerTest("positive", ""), "is positive"),
    ],
)
def test_formats_in_canonical_form(test: ValueTest, text: str) -> None:
    assert format_value_test(test) == text


def test_format_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError, match="cannot write"):
        format_value_test(QuantityTest(Comparator.LESS, float("inf"), None, ""))


comparators = st.sampled_from(list(Comparator))
finite_numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)
positive_numbers = st.floats(min_value=1e-12, max_value=1e12, allow_nan=False)
concept_ids = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,20}\Z")
value_tests = st.one_of(
    st.builds(
        QuantityTest,
        comparator=comparators,
        value=finite_numbers,
        unit=st.one_of(st.none(), st.sampled_from(UNITS)),
        text=st.just(""),
    ),
    st.builds(
        ReferenceLimitTest,
        comparator=comparators,
        factor=positive_numbers,
        limit=st.sampled_from(["high", "low"]),
        text=st.just(""),
    ),
    st.builds(AnswerTest, answer_concept=concept_ids, text=st.just("")),
)


@given(value_tests)
def test_format_then_parse_round_trips(test: ValueTest) -> None:
    text = format_value_test(test)
    assert parse_value_test(text) == dataclasses.replace(test, text=text)


grammar_pieces = st.sampled_from(
    ["<", "<=", ">", ">=", "=", "!=", "==", " ", "\t", "1", "0", ".", "5", "-", "e", "x", "×",
     "*", "%", "ULN", "LLN", "uln", "above", "below", "is", "positive", "g/L", "10*9/L", "/",
     "µ", "{", "}", "[", "]", ",", "!", "é", "\n"]
)  # fmt: skip
grammar_like_text = st.lists(grammar_pieces, max_size=8).map("".join)


@given(st.one_of(st.text(max_size=40), grammar_like_text))
def test_garbage_raises_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_value_test(text)


@given(st.one_of(st.text(max_size=40), grammar_like_text))
def test_schema_pattern_accepts_everything_the_parser_accepts(text: str) -> None:
    try:
        parse_value_test(text)
    except ValueError:
        return
    assert VALUE_TEST_PATTERN.search(text), text


@given(value_tests)
def test_schema_pattern_accepts_every_formatted_test(test: ValueTest) -> None:
    assert VALUE_TEST_PATTERN.search(format_value_test(test))
