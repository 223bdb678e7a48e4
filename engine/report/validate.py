"""Validate what we write with the fhir.resources R4B models (not what we read)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from engine.errors import Location, OutputValidationError


def validate_resource(resource: dict[str, Any]) -> None:
    """Raise OutputValidationError naming the resource and the fields that fail validation."""
    resource_type = resource.get("resourceType", "")
    model = get_fhir_model_class(resource_type)
    try:
        model.model_validate(resource)
    except ValidationError as error:
        fields = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise OutputValidationError(
            f"generated {resource_type} is not valid FHIR R4B: {fields}",
            Location(resource=f"{resource_type}/{resource.get('id', '?')}"),
        ) from None


def validate_bundle(bundle: dict[str, Any]) -> None:
    """Validate a Bundle and each resource in it."""
    for entry in bundle.get("entry", ()):
        validate_resource(entry["resource"])
    validate_resource(bundle)
