"""The recipes of docs/criteria-language.md are valid criteria expressions (by the schema)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from engine.schemas import CRITERIA_SCHEMA, load_schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "criteria-language.md"


def recipe_expressions() -> list[Any]:
    text = DOCS.read_text(encoding="utf-8")
    recipes = text[text.index("## Recipes") :]
    blocks = [
        YAML(typ="safe").load(block) for block in re.findall(r"```yaml\n(.*?)```", recipes, re.S)
    ]
    return [block for block in blocks if isinstance(block, dict) and "concepts" not in block]


@pytest.mark.parametrize("expression", recipe_expressions())
def test_every_recipe_is_a_valid_expression(expression: Any) -> None:
    schema = load_schema(CRITERIA_SCHEMA)
    validator = Draft202012Validator({"$ref": "#/$defs/expression", "$defs": schema["$defs"]})
    problems = [error.message for error in validator.iter_errors(expression)]
    assert not problems, problems


def test_there_are_recipes() -> None:
    assert len(recipe_expressions()) >= 8
