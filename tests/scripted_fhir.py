"""Answers of a scripted FHIR server (respx) shared by the client and source tests: a
CapabilityStatement declaring chosen types, and searchset pages."""

from __future__ import annotations

from typing import Any

BASE = "http://fhir.test/fhir"
"""The scripted server's base URL."""


def capability_statement(
    declared: list[dict[str, Any]],
    *,
    everything: bool = False,
    patient_interactions: tuple[str, ...] = ("read",),
    version: str = "4.0.1",
) -> dict[str, Any]:
    """A server CapabilityStatement declaring `declared` (rest.resource entries) and, with
    `everything`, `Patient/$everything` on a Patient entry with `patient_interactions`."""
    resources = list(declared)
    if everything:
        patient: dict[str, Any] = {"type": "Patient"}
        if patient_interactions:
            patient["interaction"] = [{"code": code} for code in patient_interactions]
        patient["operation"] = [
            {
                "name": "everything",
                "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
            }
        ]
        resources.append(patient)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "fhirVersion": version,
        "format": ["json"],
        "rest": [{"mode": "server", "resource": resources}],
    }


def patient_search(resource_type: str, interactions: list[str]) -> dict[str, Any]:
    """A rest.resource entry: the type, its interactions and a `patient` reference search."""
    return {
        "type": resource_type,
        "interaction": [{"code": code} for code in interactions],
        "searchParam": [{"name": "patient", "type": "reference"}],
    }


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    """A searchset page of `resources`, with a `next` link when `next_url` is given."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": next_url}] if next_url else [],
        "entry": [
            {"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources
        ],
    }
