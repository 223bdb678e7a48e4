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
from engine.resource_types import (
    NOT_ORDER_INTENTS,
    RESOURCE_TYPES,
    ResourceType,
    code_of,
    unreadable_code_elements,
)
from engine.sources.bundle import json_kind

# --------------------------------------------------------------------------- status predicates
StatusPredicate = Callable[[dict[str, Any], Span | None, dt.date], bool]
"""Does a resource (with its span) count on the as-of day?"""

TRIALSIEVE_IDENTIFIER_SYSTEM = "https://trialsieve.org/fhir/identifier"


def _covers_as_of(span: Span | None, as_of: dt.date) -> bool:
    """The span surely covers the as-of day (a partial date that may not is left to the
    caller, which asks again with `span.widest()` and reports the imprecision)."""
    return span is not None and span.surely_overlaps(as_of, as_of)


def status_predicate(resource_type: str, statuses: tuple[str, ...] | None) -> StatusPredicate:
    """Which resources of a type count, from the atom's `status` (None: the type's default,
    from `engine.resource_types`)."""
    known = RESOURCE_TYPES.get(resource_type)
    if known is None or not known.queryable:
        raise ValueError(f"resource type {resource_type} is not supported")
    wanted = frozenset(statuses or ())
    if known.status_field == "clinicalStatus":
        if known.active_statuses:
            return _condition_predicate(known, wanted)
        return _allergy_predicate(known, wanted)
    if known.medication:
        return _medication_predicate(known, wanted)
    allowed = wanted or known.default_statuses
    if resource_type == "ResearchSubject":
        return lambda resource, span, as_of: (
            code_of(resource, "status") in allowed and not _written_by_trialsieve(resource)
        )
    return lambda resource, span, as_of: code_of(resource, "status") in allowed


def _condition_predicate(known: ResourceType, wanted: frozenset[str]) -> StatusPredicate:
    literal = wanted - {"active"}
    refuted = known.excluded_statuses
    active = known.active_statuses
    end_fields = tuple(field.name for field in known.end_fields)

    def predicate(resource: dict[str, Any], span: Span | None, as_of: dt.date) -> bool:
        if verification_status(resource) in refuted:
            return False
        if not wanted:
            return True
        status = clinical_status(resource)
        if status in literal:
            return True
        if "active" not in wanted:
            return False
        for field in end_fields:  # a loop, not any() over a generator: no frame of its own
            if field in resource:  # an abatement
                return _covers_as_of(span, as_of)
        return status is None or status in active

    return predicate


def status_alone(resource: dict[str, Any]) -> bool | None:
    """Whether an undated resource is active on the as-of day by its status alone: for a
    Condition (a type whose `clinicalStatus` has active codes) with neither dates nor an
    abatement, True when its clinicalStatus says active, recurrence or relapse, False when it
    says inactive, remission or resolved; None otherwise (no clinical status, another type).
    FHIR R4 Condition.clinicalStatus is the condition's status now: nothing else dates it.
    Whether it was active on an earlier day cannot be told."""
    known = RESOURCE_TYPES.get(resource.get("resourceType", ""))
    if known is None or known.status_field != "clinicalStatus" or not known.active_statuses:
        return None
    for field in known.end_fields:  # a loop, not any() over a generator: no frame of its own
        if field.name in resource:  # an abatement that is no date (abatementString)
            return None
    status = clinical_status(resource)
    if status in known.active_statuses:
        return True
    return False if status in known.ended_statuses else None


def _medication_predicate(known: ResourceType, wanted: frozenset[str]) -> StatusPredicate:
    literal = wanted - {"active"}
    active_codes = known.active_statuses
    excluded = known.excluded_statuses

    def predicate(resource: dict[str, Any], span: Span | None, as_of: dt.date) -> bool:
        status = code_of(resource, "status")
        if status in literal:  # a status the atom names: as written
            return True
        if code_of(resource, "intent") in NOT_ORDER_INTENTS:  # a proposal or plan: no use
            return False
        if not wanted:
            return status not in excluded
        return "active" in wanted and status in active_codes and _covers_as_of(span, as_of)

    return predicate


def _allergy_predicate(known: ResourceType, wanted: frozenset[str]) -> StatusPredicate:
    refuted = known.excluded_statuses

    def predicate(resource: dict[str, Any], span: Span | None, as_of: dt.date) -> bool:
        if verification_status(resource) in refuted:
            return False
        return not wanted or clinical_status(resource) in wanted

    return predicate


def unreadable_status(resource: dict[str, Any]) -> str | None:
    """Why a resource's status (or intent) cannot be read, when it is present but not a code
    (a number, an object, a list: FHIR's `code` is a JSON string): "its status is an array,
    not a code, so whether it counts cannot be told". None when it can be read. The
    predicates read such a resource as having no status (never raising); the evaluator makes
    it a data problem, so the atom is unknown with this reason rather than "none on record".
    """
    names = unreadable_code_elements(resource)
    if not names:
        return None
    said = " and ".join(f"its {name} is {json_kind(resource[name])}" for name in names)
    return f"{said}, not a code, so whether it counts cannot be told"


def _written_by_trialsieve(resource: dict[str, Any]) -> bool:
    return any(
        isinstance(identifier, dict)
        and str(identifier.get("system", "")).startswith(TRIALSIEVE_IDENTIFIER_SYSTEM)
        for identifier in resource.get("identifier") or ()
    )
