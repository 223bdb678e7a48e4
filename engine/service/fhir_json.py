"""FHIR JSON a request carries, checked against the FHIR models before anything reads it.

A prefetched search Bundle, a prefetched Patient, an OperationOutcome given for a prefetch
key and an inline `bundle` of `POST /evaluate` are validated with the fhir.resources R4B models
(the models the service's output is validated with; R4B changed none of the resources the
criteria read). A value that is not what FHIR JSON allows (`"entry": {}`, `"coding": [5]`,
`"total": "x"`, an unknown element) is a 400 naming each element at fault
(`prefetch.condition.entry[0].resource.code.coding[0]`), never read as "no data": the engine
reads FHIR JSON leniently (an element of the wrong shape is skipped), which is right for files
a site already holds and wrong for a request whose answer a clinician acts on.

`null` as the value of an element is refused as well (FHIR R4 JSON, 2.6.2: "JSON objects ...
SHALL NOT have null values"; CDS Hooks 2.0, "Use of JSON": "JSON elements SHALL NOT be null");
the models alone would take `"entry": null` for no entries. A `null` inside an array is
allowed: FHIR JSON uses it to line up a repeating primitive with its `_element` extensions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from engine.service.problems import ApiError, Issue
from engine.sources.bundle import json_kind

MAX_ISSUES = 10
"""At most this many elements are named in one answer."""


def check_fhir_resource(value: Mapping[str, Any], field: str) -> None:
    """400 naming the elements of `value` (a resource in the request field `field`) that are
    not FHIR JSON: a null, an unknown resourceType, or what the R4B model of the type refuses.
    """
    nulls = [f"{field}{path}" for path in _null_values(value)][:MAX_ISSUES]
    if nulls:
        raise ApiError(
            400,
            [
                Issue(
                    "invalid",
                    f"{path} is null; FHIR JSON leaves an element out instead "
                    "(R4 2.6.2; CDS Hooks 2.0, Use of JSON: elements SHALL NOT be null)",
                    (path,),
                )
                for path in nulls
            ],
        )
    resource_type = value.get("resourceType")
    if not isinstance(resource_type, str):
        raise ApiError.of(
            400,
            "invalid",
            f"{field}.resourceType must be a FHIR resource type, found {json_kind(resource_type)}",
            f"{field}.resourceType",
        )
    try:
        model = get_fhir_model_class(resource_type)
    except KeyError:
        raise ApiError.of(
            400,
            "invalid",
            f"{field}.resourceType {resource_type[:64]!r} is not a FHIR resource type",
            f"{field}.resourceType",
        ) from None
    try:
        model.model_validate(value)
    except ValidationError as error:
        issues = [_issue(field, item) for item in error.errors()[:MAX_ISSUES]]
        raise ApiError(400, issues) from None


def _null_values(value: Any, path: str = "") -> Iterator[str]:
    """Paths (`.entry`, `.entry[0].resource.code`) of the object members whose value is null."""
    if isinstance(value, dict):
        for name, item in value.items():
            if item is None:
                yield f"{path}.{name}"
            else:
                yield from _null_values(item, f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _null_values(item, f"{path}[{index}]")


def _issue(field: str, error: Any) -> Issue:
    """A model error as an issue naming the element (`prefetch.condition.entry[0].search`)."""
    path = field
    for part in error.get("loc", ()):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "root" and not any(character in part for character in "[(-"):
            path += f".{part}"
    kind = error.get("type", "")
    found = json_kind(error.get("input"))
    if kind == "model_validation_format":
        message = f"must be a JSON object, found {found}"
    elif kind == "extra_forbidden":
        message = "is not an element of this FHIR type"
    elif kind == "missing":
        message = "is required"
    else:
        message = f"{error.get('msg', 'is not valid')} (found {found})"
    return Issue("invalid", f"{path}: {message}", (path,))
