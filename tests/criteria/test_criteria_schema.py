"""criteria/criteria.schema.json: a valid 2020-12 schema that agrees with the loader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator

from engine.criteria.loader import EXPRESSION_KEYS, schema_validator
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
