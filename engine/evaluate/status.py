"""Status predicates per resource type: which resources count, by status and by date."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from engine.evaluate.timing import (
    Span,
    clinical_status,
    verification_status,
)

# --------------------------------------------------------------------------- status predicates
StatusPredicate = Callable[[dict[str, Any], Span | None, dt.date], bool]
"""Does a resource (with its span) count on the as-of day?"""

_OBSERVATION_DEFAULT = frozenset({"final", "amended", "corrected"})
_REFUTED = frozenset({"refuted", "entered-in-error"})
_CONDITION_ACTIVE = frozenset({"active", "recurrence", "relapse"})
_MEDICATION_EXCLUDED = frozenset(
    {"entered-in-error", "cancelled", "not-taken", "not-done", "draft"}
)
_MEDICATION_ACTIVE = {
    "MedicationStatement": frozenset({"active"}),
    "MedicationRequest": frozenset({"active"}),
    "MedicationAdministration": frozenset({"in-progress"}),
}
_PARTICIPATION = frozenset(
    {
        "on-study",
        "on-study-intervention",
        "on-study-observation",
        "off-study",
        "follow-up",
        "off-study-follow-up",
        "pending-on-study",
    }
)
TRIALSIEVE_IDENTIFIER_SYSTEM = "https://trialsieve.org/fhir/identifier"


def _covers_as_of(span: Span | None, as_of: dt.date) -> bool:
    return span is not None and span.overlaps(as_of, as_of)


def status_predicate(resource_type: str, statuses: tuple[str, ...] | None) -> StatusPredicate:
    wanted = frozenset(statuses or ())
    if resource_type == "Observation":
        allowed = wanted or _OBSERVATION_DEFAULT
        return lambda resource, span, as_of: resource.get("status") in allowed
    if resource_type == "Condition":
        return _condition_predicate(wanted)
    if resource_type == "Procedure":
        allowed = wanted or frozenset({"completed"})
        return lambda resource, span, as_of: resource.get("status") in allowed
    if resource_type in _MEDICATION_ACTIVE:
        return _medication_predicate(resource_type, wanted)
    if resource_type == "AllergyIntolerance":
        return _allergy_predicate(wanted)
    if resource_type == "ResearchSubject":
        allowed = wanted or _PARTICIPATION
        return lambda resource, span, as_of: (
            resource.get("status") in allowed and not _written_by_trialsieve(resource)
        )
    raise ValueError(f"resource type {resource_type} is not supported")


def _condition_predicate(wanted: frozenset[str]) -> StatusPredicate:
    literal = wanted - {"active"}

    def predicate(resource: dict[str, Any], span: Span | None, as_of: dt.date) -> bool:
        if verification_status(resource) in _REFUTED:
            return False
        if not wanted:
            return True
        status = clinical_status(resource)
        if status in literal:
            return True
        if "active" not in wanted:
            return False
        has_abatement = "abatementDateTime" in resource or "abatementPeriod" in resource
        if has_abatement:
            return _covers_as_of(span, as_of)
        return status is None or status in _CONDITION_ACTIVE

    return predicate


def _medication_predicate(resource_type: str, wanted: frozenset[str]) -> StatusPredicate:
    literal = wanted - {"active"}
    active_codes = _MEDICATION_ACTIVE[resource_type]

    def predicate(resource: dict[str, Any], span: Span | None, as_of: dt.date) -> bool:
        status = resource.get("status")
        if not wanted:
            return status not in _MEDICATION_EXCLUDED
        if status in literal:
            return True
        return "active" in wanted and status in active_codes and _covers_as_of(span, as_of)

    return predicate


def _allergy_predicate(wanted: frozenset[str]) -> StatusPredicate:
    def predicate(resource: dict[str, Any], span: Span | None, as_of: dt.date) -> bool:
        if verification_status(resource) in _REFUTED:
            return False
        return not wanted or clinical_status(resource) in wanted

    return predicate


def _written_by_trialsieve(resource: dict[str, Any]) -> bool:
    return any(
        isinstance(identifier, dict)
        and str(identifier.get("system", "")).startswith(TRIALSIEVE_IDENTIFIER_SYSTEM)
        for identifier in resource.get("identifier") or ()
    )
