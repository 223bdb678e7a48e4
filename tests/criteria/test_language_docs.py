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


# ------------------------------------------------------------------ runnable examples

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def _yaml_blocks() -> list[tuple[int, list[Any]]]:
    """Every YAML block of the page (its line and documents); a block that lists
    alternatives line by line (`before: ...` twice) is read line by line."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"```yaml\n(.*?)```", text, re.S):
        line = text[: match.start()].count("\n") + 2
        try:
            documents = list(YAML(typ="safe").load_all(match.group(1)))
        except Exception:  # alternatives with the same key: each line on its own
            documents = [
                YAML(typ="safe").load(each)
                for each in match.group(1).splitlines()
                if each.strip() and not each.lstrip().startswith("#")
            ]
        blocks.append((line, documents))
    return blocks


def _concepts(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["concept"]] if isinstance(node.get("concept"), str) else []
        return found + [
            c for key, value in node.items() if key != "concept" for c in _concepts(value)
        ]
    if isinstance(node, list):
        return [concept for item in node for concept in _concepts(item)]
    return []


def test_every_concept_the_page_names_is_in_the_shipped_mappings() -> None:
    """An example a reader copies must lint: `concept: uacr` drew 'unknown concept'."""
    from engine.normalise import load_terminology

    terminology = load_terminology([MAPPINGS])
    missing = [
        (line, concept)
        for line, documents in _yaml_blocks()
        for document in documents
        if not (isinstance(document, dict) and "concepts" in document)  # a mapping example
        for concept in _concepts(document)
        if not terminology.has_concept(concept)
    ]
    assert not missing, missing


def _event_relative_example() -> Any:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Event-relative windows") : text.index("**At least N results")]
    [block] = re.findall(r"```yaml\n(- id: .*?)```", section, re.S)
    return YAML(typ="safe").load(block)


def test_the_event_relative_example_lints_and_runs(tmp_path: Path) -> None:
    import datetime as dt

    from engine.lint import has_errors, lint_paths
    from engine.screening import screen_patient
    from engine.sources.base import PatientResources
    from engine.trial import load_trial

    criteria = tmp_path / "trial.yaml"
    document = {
        "trial": {"id": "NCT00000000", "title": "Docs example"},
        "mappings": [str(MAPPINGS)],
        "criteria": _event_relative_example(),
    }
    with criteria.open("w", encoding="utf-8") as file:
        YAML(typ="safe").dump(document, file)
    problems = lint_paths([criteria])
    assert not has_errors(problems), problems
    trial = load_trial(criteria)

    def outcome(uacr_day: str) -> str:
        ckd = {
            "resourceType": "Condition",
            "id": "ckd",
            "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "433144002"}]},
            "onsetDateTime": "2026-03-01",
        }
        uacr = {
            "resourceType": "Observation",
            "id": "uacr",
            "status": "final",
            "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "9318-7"}]},
            "effectiveDateTime": uacr_day,
            "valueQuantity": {"value": 300, "unit": "mg/g", "code": "mg/g"},
        }
        patient = {"resourceType": "Patient", "id": "p", "birthDate": "1960-01-01"}
        listed = [patient, ckd, uacr]
        source = PatientResources("p", listed, [None] * 3, "docs")
        [result] = screen_patient(trial, source, dt.date(2026, 11, 1)).evaluation.results
        return result.outcome.truth.value

    assert outcome("2026-06-01") == "met"  # UACR 300 mg/g after a CKD stage 3 diagnosis
    assert outcome("2026-01-15") == "unknown"  # only before it: none after (open world)


# ------------------------------------------------------------------ rules the page states


@pytest.mark.parametrize(
    ("duration", "as_of", "first_day"),
    [
        ("P1M", "2026-11-15", "2026-10-15"),
        ("P1M", "2026-03-31", "2026-02-28"),
        ("P1M", "2028-03-31", "2028-02-29"),
        ("P1M", "2026-05-31", "2026-04-30"),
        ("P1Y", "2028-02-29", "2027-02-28"),
        ("P4W", "2026-03-31", "2026-03-03"),
        ("P1M2D", "2026-03-31", "2026-02-26"),
    ],
)
def test_months_are_calendar_months_clamped_to_the_month_end(
    duration: str, as_of: str, first_day: str
) -> None:
    import datetime as dt

    from engine.criteria.loader import parse_iso_duration

    window = parse_iso_duration(duration)
    assert window.start_before(dt.date.fromisoformat(as_of)).isoformat() == first_day


def test_a_month_after_the_31st_is_the_end_of_the_next_month() -> None:
    import datetime as dt

    from engine.criteria.loader import parse_iso_duration

    assert parse_iso_duration("P1M").start_after(dt.date(2026, 1, 31)) == dt.date(2026, 2, 28)


@pytest.mark.parametrize(
    ("written", "day"),
    [
        ("2026-11-01T23:30:00-05:00", "2026-11-01"),  # 2 November in UTC
        ("2026-10-03T22:00:00-05:00", "2026-10-03"),  # 4 October in UTC
        ("2026-11-02T00:30:00+09:00", "2026-11-02"),  # 1 November in UTC
    ],
)
def test_a_time_falls_on_its_calendar_day_where_it_was_written(written: str, day: str) -> None:
    from engine.evaluate.timing import parse_date_range

    first, last, _moment = parse_date_range(written, "effectiveDateTime")
    assert first.isoformat() == last.isoformat() == day
