"""A `where` / `where_not` filter answers by the values of the top-level fields it reads,
once per distinct value (`engine.evaluate.jsonpath_filter`): the answer must be jsonpath-ng's
for every resource, and a filter that may read more must run jsonpath-ng every time."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonpath_ng.ext.parser import parse

from engine.evaluate.jsonpath_filter import JsonPathFilter, fields_read

EXPRESSIONS = {
    "category[?(@ == 'medication')]": ("category",),
    "$[?($.criticality == 'high')]": ("criticality",),
    "code.coding[?(@.system == 'http://www.nlm.nih.gov/research/umls/rxnorm')]": ("code",),
    "reaction[?(@.severity == 'severe')]": ("reaction",),
    "period.start": ("period",),
    "$.code.coding": ("code",),
    "$[?($.study.identifier.value == 'NCT05315778')]": ("study",),
    "$[?($.criticality == 'high' && $.category[0] == 'food')]": ("category", "criticality"),
    "component[?(@.valueQuantity.value > 0.21 && @.valueQuantity.value <= 1)]"
    ".code.coding[?(@.code == '3150-0')]": ("component",),
    "code.coding[?(@.code =~ '^[Ff]1[0-9]\\\\.?[129]1$')]": ("code",),
    "code..code": ("code",),
    "reaction[*].manifestation[0]": ("reaction",),
    # These may read more than one field's value: jsonpath-ng runs every time.
    "$": None,
    "$..code": None,
    "$..coding[?(@.code == 'x')]": None,
    "*": None,
    "*.coding": None,
    "$[?(@.code)]": None,
    "$[?($.criticality == $.severity)]": None,
    "code[?($.criticality == 'high')]": None,
    "code.`parent`.criticality": None,
    "category[?(@ == $.criticality)]": None,
    "code.coding[0].`len`": None,
}


@pytest.mark.parametrize("expression", list(EXPRESSIONS))
def test_the_fields_each_expression_reads(expression: str) -> None:
    assert fields_read(parse(expression)) == EXPRESSIONS[expression]


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.21, 0.5, 1.0, 21.0, 22.5]),
    st.sampled_from(["high", "low", "food", "medication", "severe", "3150-0", "F10.21", "None"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["coding", "code", "system", "value", "valueQuantity", "severity", "start"]
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)
RESOURCES = st.dictionaries(
    st.sampled_from(
        ["category", "criticality", "code", "reaction", "period", "component", "study", "id"]
    ),
    JSON_VALUES,
    max_size=5,
).map(lambda fields: {"resourceType": "AllergyIntolerance", **fields})


@settings(max_examples=300)
@given(st.lists(RESOURCES, min_size=1, max_size=8))
def test_every_answer_is_jsonpath_ngs(resources: list[dict[str, Any]]) -> None:
    for expression in EXPRESSIONS:
        path = parse(expression)
        compiled = JsonPathFilter(expression, path)
        for resource in resources + resources:  # the second time from what was kept
            assert compiled.finds(resource) == bool(path.find(resource)), (expression, resource)


def test_values_that_print_alike_in_json_are_told_apart() -> None:
    compiled = JsonPathFilter("$[?($.criticality == 1)]", parse("$[?($.criticality == 1)]"))
    answers = [compiled.finds({"criticality": value}) for value in (1, True, 1.0, "1", None)]
    path = parse("$[?($.criticality == 1)]")
    assert answers == [bool(path.find({"criticality": v})) for v in (1, True, 1.0, "1", None)]
    absent = JsonPathFilter("$[?($.x)]", parse("$[?($.x)]"))
    assert absent.finds({"x": None}) is bool(parse("$[?($.x)]").find({"x": None}))
    assert absent.finds({"y": 1}) is False
