"""criteria/criteria.schema.json: a valid 2020-12 schema that agrees with the loader."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.criteria.loader import (
    EXPRESSION_KEYS,
    _read_document,
    schema_validator,
    valid_by_schema,
)
from engine.schemas import CRITERIA_SCHEMA, load_schema

SCHEMA: dict[str, Any] = load_schema(CRITERIA_SCHEMA)


def subschemas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from subschemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from subschemas(item)


def test_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)
    assert schema_validator().schema == SCHEMA


def test_expression_branches_are_in_the_order_the_loader_expects() -> None:
    branches = SCHEMA["$defs"]["expression"]["oneOf"]
    required = [SCHEMA["$defs"][branch["$ref"].split("/")[-1]]["required"] for branch in branches]
    assert required == [[key] for key in EXPRESSION_KEYS]
    oneof_users = [node for node in subschemas(SCHEMA) if "oneOf" in node]
    assert oneof_users == [SCHEMA["$defs"]["expression"]]  # the loader reads oneOf as expressions


def test_every_reference_resolves_and_every_definition_is_used() -> None:
    references = {
        node["$ref"].removeprefix("#/$defs/") for node in subschemas(SCHEMA) if "$ref" in node
    }
    assert references == set(SCHEMA["$defs"])


def test_every_pattern_explains_itself_and_objects_are_closed() -> None:
    for node in subschemas(SCHEMA):
        if "pattern" in node:
            assert node.get("patternErrorMessage"), node["pattern"]
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, sorted(node["properties"])


def test_status_enum_holds_the_codes_the_spec_names() -> None:
    codes = set(SCHEMA["$defs"]["statusCode"]["enum"])
    named_in_spec = {
        "final", "amended", "corrected", "completed", "entered-in-error", "cancelled",
        "not-taken", "not-done", "draft", "refuted", "active", "in-progress", "recurrence",
        "relapse",
    }  # fmt: skip
    assert named_in_spec <= codes


def test_schema_accepts_a_small_valid_document() -> None:
    document = {
        "trial": {"id": "NCT1", "title": "T"},
        "version": "1",
        "mappings": ["../mappings"],
        "windows": {"screening": {"within": "P28D", "description": "d"}},
        "criteria": [
            {
                "id": "inclusion-1",
                "kind": "inclusion",
                "text": "t",
                "expression": {
                    "all": [
                        {"patient": {"age": {"min": 18}}},
                        {"resource": "Observation", "concept": "hb", "value": "< 100 g/L"},
                        {"not": {"manual": {"id": "m", "question": "q"}}, "label": "l"},
                        {
                            "resource": ["Condition"],
                            "concept": "c",
                            "within": "P1Y2M",
                            "timing": "onset",
                        },
                    ]
                },
            }
        ],
    }
    assert list(schema_validator().iter_errors(document)) == []


_SHIPPED = [
    _read_document(str(path), path.read_bytes()).data
    for path in sorted((Path(__file__).resolve().parents[2] / "criteria").glob("*.yaml"))
]
_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.sampled_from(["", "x", "P28D", "P1Y2M", "< 100 g/L", "ever", "inclusion-1", "Observation"])
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "kind", "value", "concept", "resource", "all", "any", "not"])
            | st.text(max_size=6),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _places(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in children:
        yield from _places(child, (*path, key))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_fast_schema_check_accepts_nothing_jsonschema_refuses(data: st.DataObject) -> None:
    """`valid_by_schema` (jsonschema-rs) decides a criteria file's happy path alone: every
    document it accepts, jsonschema accepts too (shipped files with a value replaced,
    removed or added anywhere). It may refuse more (Python's `$` matches before a final
    newline): those are validated again with jsonschema."""
    document = copy.deepcopy(data.draw(st.sampled_from(_SHIPPED)))
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        *parent_path, last = data.draw(st.sampled_from(list(_places(document))[1:]))
        parent = document
        for key in parent_path:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[last] = data.draw(_VALUES)
        elif action == "remove":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][data.draw(st.text(max_size=8))] = data.draw(_VALUES)
        elif isinstance(parent[last], list):
            parent[last].append(data.draw(_VALUES))
    if valid_by_schema(document):
        assert list(schema_validator().iter_errors(document)) == []


def test_the_fast_schema_check_accepts_the_shipped_files() -> None:
    assert all(valid_by_schema(document) for document in _SHIPPED)


def test_the_schema_accepts_top_level_x_keys_and_nothing_else_unknown() -> None:
    """`x-` keys hold shared YAML fragments (`patternProperties`), as the loader allows."""
    document = {
        "trial": {"id": "NCT1", "title": "T"},
        "x-haemoglobin": {"resource": "Observation", "concept": "hb"},
        "x-anything": [1, "two"],
        "criteria": [
            {
                "id": "inclusion-1",
                "kind": "inclusion",
                "text": "t",
                "expression": {"resource": "Observation", "concept": "hb"},
            }
        ],
    }
    assert list(schema_validator().iter_errors(document)) == []
    assert valid_by_schema(document)
    for key in ("common", "X-haemoglobin", "xhaemoglobin"):
        refused = {**document, key: {}}
        assert list(schema_validator().iter_errors(refused)), key
        assert not valid_by_schema(refused), key
