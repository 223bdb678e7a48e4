"""The JSON Schemas of criteria and mapping files, shipped inside the package.

The two files here are symbolic links to `criteria/criteria.schema.json` and
`mappings/mappings.schema.json`, the copies editors find next to the YAML files (their first
line is `# yaml-language-server: $schema=...`): one file to edit, and building a wheel or an
sdist copies the content, so an installed engine reads its schemas from inside the package.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

__all__ = ["CRITERIA_SCHEMA", "MAPPINGS_SCHEMA", "load_schema", "schema_resource"]

CRITERIA_SCHEMA = "criteria.schema.json"
MAPPINGS_SCHEMA = "mappings.schema.json"


def schema_resource(name: str) -> Traversable:
    """The packaged schema file `name` (`CRITERIA_SCHEMA` or `MAPPINGS_SCHEMA`)."""
    return resources.files(__name__).joinpath(name)


def load_schema(name: str) -> dict[str, Any]:
    """The packaged schema `name`, parsed."""
    schema: dict[str, Any] = json.loads(schema_resource(name).read_text(encoding="utf-8"))
    return schema
