"""Package data: the JSON Schemas ship inside `engine/`, with one source of truth.

`engine/schemas/*.schema.json` are symbolic links to the copies next to the YAML files
(`criteria/`, `mappings/`), which editors find through each file's
`# yaml-language-server: $schema=...` line. Building a wheel or an sdist copies the content.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.schemas import CRITERIA_SCHEMA, MAPPINGS_SCHEMA, load_schema, schema_resource

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "engine" / "schemas"


@pytest.mark.parametrize(
    ("name", "editor_copy"),
    [
        (CRITERIA_SCHEMA, ROOT / "criteria" / "criteria.schema.json"),
        (MAPPINGS_SCHEMA, ROOT / "mappings" / "mappings.schema.json"),
    ],
)
def test_packaged_schema_is_a_link_to_the_editors_copy(name: str, editor_copy: Path) -> None:
    packaged = SCHEMAS / name
    assert packaged.is_symlink(), f"{packaged} must stay a link to {editor_copy}, not a copy"
    assert packaged.resolve() == editor_copy.resolve()
    assert schema_resource(name).read_bytes() == editor_copy.read_bytes()
    assert load_schema(name)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("folder", ["criteria", "mappings"])
def test_schemas_named_by_yaml_files_exist_next_to_them(folder: str) -> None:
    prefix = "# yaml-language-server: $schema="
    named = 0
    for file in sorted((ROOT / folder).glob("*.yaml")):
        first_line = file.read_text(encoding="utf-8").partition("\n")[0]
        if first_line.startswith(prefix):
            named += 1
            schema = file.parent / first_line.removeprefix(prefix)
            assert schema.is_file(), f"{file}: {schema} does not exist"
            assert (SCHEMAS / schema.name).resolve() == schema.resolve()
    assert named, f"no file in {folder}/ names its schema"
