"""Whatever the input, reading a Bundle succeeds or raises InputError, never anything else."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from engine.sources import PatientResources, parse_bundle

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

references = st.sampled_from(
    ["Patient/p1", "Patient/p2", "urn:uuid:1", "urn:uuid:9", "#c", "Group/g", "", "Patient?x=1"]
) | st.text(max_size=12)

resources = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Patient", "Observation", "Condition", ""]) | json_values},
    optional={
        "id": st.sampled_from(["p1", "p2", "o1"]) | json_values,
        "subject": st.fixed_dictionaries({"reference": references}) | json_values,
        "patient": st.fixed_dictionaries({"reference": references}) | json_values,
    },
)

entries = st.fixed_dictionaries(
    {},
    optional={
        "fullUrl": st.sampled_from(["urn:uuid:1", "urn:uuid:2", "Patient/p1"]) | json_values,
        "resource": resources | json_values,
        "search": st.fixed_dictionaries({"mode": st.sampled_from(["match", "include", "outcome"])}),
    },
)

bundles = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Bundle", "Patient"]) | json_values},
    optional={
        "type": st.sampled_from(["collection", "searchset", "transaction-response"]) | json_values,
        "entry": st.lists(entries | json_values, max_size=5) | json_values,
    },
)


def read_or_input_error(data: bytes) -> PatientResources | InputError:
    try:
        return parse_bundle(data, "generated.json")
    except InputError as error:
        assert error.location.file == "generated.json"
        return error


@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    read_or_input_error(data)


@given(json_values)
def test_any_json_value(value: Any) -> None:
    assert isinstance(read_or_input_error(orjson.dumps(value)), InputError)


@settings(max_examples=300)
@given(bundles)
def test_any_bundle_shaped_document(document: dict[str, Any]) -> None:
    result = read_or_input_error(orjson.dumps(document))
    if isinstance(result, PatientResources):
        assert sum(resource["resourceType"] == "Patient" for resource in result.resources) >= 1
        assert len(result.resources) == len(result.full_urls)


@given(bundles, st.data())
def test_truncated_json_points_inside_the_text(
    document: dict[str, Any], data: st.DataObject
) -> None:
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    cut = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    result = read_or_input_error(text[:cut])
    assert isinstance(result, InputError)
    lines = text[:cut].decode("utf-8", errors="replace").split("\n")
    assert result.location.line is not None and result.location.column is not None
    assert 1 <= result.location.line <= len(lines)
    assert 1 <= result.location.column <= len(lines[result.location.line - 1]) + 1
