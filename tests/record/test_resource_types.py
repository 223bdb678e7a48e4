"""The resource-type table is the one list every stage reads."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from engine.evaluate.status import status_predicate
from engine.evaluate.timing import SPAN_READERS, resource_span
from engine.resource_types import (
    MEDICATION_TYPES,
    QUERYABLE_TYPES,
    RESOURCE_TYPES,
    default_absence,
    expand_resource_types,
    resource_types_to_pull,
)

SCHEMA = Path(__file__).resolve().parents[2] / "criteria" / "criteria.schema.json"


def test_the_schema_lists_exactly_the_queryable_types() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert tuple(schema["$defs"]["resourceType"]["enum"]) == QUERYABLE_TYPES


def test_every_queryable_type_is_dated_and_has_a_status_filter() -> None:
    for name in QUERYABLE_TYPES:
        assert name in SPAN_READERS
        status_predicate(name, None)  # raises for a type the evaluator cannot filter


def test_medication_statement_brings_the_other_medication_types() -> None:
    assert expand_resource_types(["Condition", "MedicationStatement", "MedicationRequest"]) == (
        "Condition",
        *MEDICATION_TYPES,
    )
    assert "Medication" in resource_types_to_pull({"MedicationRequest"})
    assert "Medication" not in resource_types_to_pull({"Observation"})


def test_absence_defaults_come_from_the_table() -> None:
    assert RESOURCE_TYPES["Observation"].absence == "unknown"
    assert default_absence(("Observation",)) == "unknown"
    assert default_absence(("Condition", "Procedure")) == "not-met"
    assert default_absence(("Observation", "Condition")) == "not-met"


def test_a_medication_dated_by_its_validity_period_reads_the_nested_field() -> None:
    span = resource_span(
        {
            "resourceType": "MedicationRequest",
            "status": "completed",
            "dispenseRequest": {"validityPeriod": {"start": "2024-01-01", "end": "2024-03-01"}},
        }
    )
    assert span is not None
    assert (span.start.isoformat() if span.start else None, str(span.end)) == (
        "2024-01-01",
        "2024-03-01",
    )


def _medication(resource_type: str, status: str, **fields: object) -> dict[str, object]:
    return {"resourceType": resource_type, "status": status, **fields}


def test_planned_and_held_medications_are_no_use_by_default() -> None:
    """FHIR R4: MedicationStatement `intended` "may be taken at some time in the future";
    MedicationRequest intent `proposal` / `plan` / `option` authorise nothing."""
    as_of = dt.date(2026, 11, 1)
    statement = status_predicate("MedicationStatement", None)
    request = status_predicate("MedicationRequest", None)
    assert not statement(_medication("MedicationStatement", "intended"), None, as_of)
    assert statement(_medication("MedicationStatement", "active"), None, as_of)
    for intent in ("proposal", "plan", "option"):
        assert not request(_medication("MedicationRequest", "active", intent=intent), None, as_of)
    for intent in ("order", "original-order", "reflex-order", "filler-order", "instance-order"):
        assert request(_medication("MedicationRequest", "active", intent=intent), None, as_of)
    # A status the atom names is read as written (planned drugs can be asked for).
    intended = status_predicate("MedicationStatement", ("intended",))
    assert intended(_medication("MedicationStatement", "intended"), None, as_of)


def test_a_held_medication_is_not_in_use_on_the_as_of_day() -> None:
    """`on-hold`: "temporarily halted" (FHIR R4): never ongoing, never `status: [active]`."""
    as_of = dt.date(2026, 11, 1)
    held = _medication(
        "MedicationRequest", "on-hold", intent="order", authoredOn="2026-09-01T10:00:00Z"
    )
    span = resource_span(held)
    assert span is not None and span.end is not None
    assert not status_predicate("MedicationRequest", ("active",))(held, span, as_of)
    assert status_predicate("MedicationRequest", None)(held, span, as_of)
