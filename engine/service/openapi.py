"""The service's OpenAPI description, complete: every route's request body and every status
it can answer, each error with the OperationOutcome schema (`application/fhir+json`).

The request bodies come from the pydantic models (engine/service/models.py); the notification
routes read raw FHIR JSON, so their bodies are described here. `describe_routes` replaces the
app's `openapi()` with one that adds the answer schemas and the error statuses.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from engine.service.problems import FHIR_JSON

# --------------------------------------------------------------------------- answer schemas


class OutcomeIssue(BaseModel):
    """One OperationOutcome issue."""

    severity: Literal["fatal", "error", "warning", "information"]
    code: str = Field(description="FHIR issue type (invalid, required, login, forbidden, ...).")
    diagnostics: str
    expression: list[str] | None = Field(
        default=None, description="The request fields at fault (`prefetch.patient`)."
    )


class OperationOutcome(BaseModel):
    """Every error answer (and the notification routes' answers): a FHIR OperationOutcome."""

    model_config = ConfigDict(title="OperationOutcome")

    resourceType: Literal["OperationOutcome"]
    issue: list[OutcomeIssue] = Field(min_length=1)


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    trials: list[str]
    fhirServer: Literal["reachable", "not configured"]


class CdsService(BaseModel):
    model_config = ConfigDict(extra="allow")

    hook: Literal["patient-view"]
    id: str
    title: str
    description: str
    prefetch: dict[str, str]


class CdsDiscovery(BaseModel):
    services: list[CdsService]


class CriterionAnswer(BaseModel):
    id: str
    number: str = Field(description="I1, E2...: the criterion's place in the protocol.")
    label: str = Field(description="The criteria file's label of the criterion.")
    text: str = Field(description="The protocol text.")
    kind: Literal["inclusion", "exclusion"]
    verdict: Literal["clear", "fails", "missing-data", "manual-review"]
    outcome: str = Field(description="The outcome in words (met, present: excludes...).")
    explanation: str = Field(description="Why, in clinical language (the evidence).")
    toSettle: list[str] = Field(description="The data that would settle an unknown.")
    questions: list[str] = Field(description="The manual questions still open.")
    truth: Literal["met", "not-met", "unknown"]
    reason: str
    evidence: list[str]
    missing: list[str]
    manual: list[str]


class WrittenAnswer(BaseModel):
    request: str
    status: str
    location: str | None = None


class EvaluationAnswer(BaseModel):
    """`POST /evaluate`: every criterion's outcome, the status, the resources written."""

    trial: str
    patient: str = Field(description="The patient's reference (Patient/id).")
    asOf: str
    newestData: str | None = Field(description="The newest date of the patient's data.")
    status: Literal["ineligible", "potential-candidate", "candidate", "eligible"]
    summary: str
    criteria: list[CriterionAnswer]
    dataProblems: list[str]
    researchSubject: dict[str, Any]
    detectedIssue: dict[str, Any]
    written: list[WrittenAnswer] | None = None


class Card(BaseModel):
    model_config = ConfigDict(extra="allow")

    uuid: str
    summary: str = Field(max_length=140)
    indicator: Literal["info", "warning", "critical"]
    detail: str
    source: dict[str, Any]
    links: list[dict[str, Any]] | None = None


class CdsAnswer(BaseModel):
    cards: list[Card]


# --------------------------------------------------------------------------- statuses

_MEANING = {
    200: "Done",
    202: "Accepted: re-evaluations queued",
    400: "Malformed request: the OperationOutcome names the field",
    401: "Missing or refused credentials",
    403: "The credentials do not allow this (scope), or fhirServer is not allow-listed",
    404: "Unknown trial or CDS service; the FHIR server has no such patient",
    405: "Method not allowed",
    409: "Needs a FHIR server, and the service has none configured",
    412: "CDS Hooks: the patient's data cannot be had: prefetch data is missing and the "
    "request names no fhirServer, or the fhirServer cannot give it",
    413: "Request body too large",
    415: "The body is not JSON (application/fhir+json or application/json, UTF-8), or has a "
    "content coding (Content-Encoding)",
    500: "Internal error (a bug: see the service log)",
    502: "The FHIR server failed or refused the service's request",
    503: "Not ready: the FHIR server does not answer",
    504: "The FHIR server did not answer in time",
}
_PROTECTED = (400, 401, 403, 413, 500)
_READS_JSON = (*_PROTECTED, 415)
_ERRORS_BY_ROUTE: Mapping[tuple[str, str], tuple[int, ...]] = {
    ("get", "/health"): (),
    ("get", "/ready"): (503,),
    ("get", "/cds-services"): (),
    ("post", "/evaluate"): (*_READS_JSON, 404, 409, 502, 504),
    ("post", "/trials/{trial_id}/evaluate"): (*_READS_JSON, 404, 409, 502, 504),
    ("post", "/cds-services/{service_id}"): (*_READS_JSON, 404, 412),
    ("post", "/cds-services/{service_id}/feedback"): (*_READS_JSON, 404),
    ("get", "/trials/{trial_id}/patients/{patient_id}/report"): (*_PROTECTED, 404, 409, 502, 504),
    ("put", "/fhir-notify/{resource_type}/{resource_id}"): (*_READS_JSON, 409),
    ("post", "/fhir-notify/{resource_type}/{resource_id}"): (*_READS_JSON, 409),
    ("post", "/fhir-notify"): (*_READS_JSON, 409),
}
_ANSWERS: Mapping[tuple[str, str], type[BaseModel]] = {
    ("get", "/health"): Health,
    ("get", "/ready"): Readiness,
    ("get", "/cds-services"): CdsDiscovery,
    ("post", "/evaluate"): EvaluationAnswer,
    ("post", "/trials/{trial_id}/evaluate"): EvaluationAnswer,
    ("post", "/cds-services/{service_id}"): CdsAnswer,
}
_NOTIFICATION_BODY = {
    "description": "The changed resource (R4 rest-hook with payload), a topic-based "
    "notification Bundle (R4 backport history or R4B/R5 subscription-notification), or "
    "nothing (a ping, or the path names the resource).",
    "required": False,
    "content": {
        media: {
            "schema": {
                "type": "object",
                "required": ["resourceType"],
                "properties": {"resourceType": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"}},
            }
        }
        for media in (FHIR_JSON, "application/json")
    },
}
_FHIR_ID = {"type": "string", "pattern": "^(?!\\.+$)[A-Za-z0-9\\-.]{1,64}$"}


def describe_routes(app: FastAPI) -> None:
    """Make `app.openapi()` the complete description (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                # FastAPI gives the PUT and POST of the one notification route one operationId
                # and warns; `complete` names them apart (notify_resource_by_put / _by_post).
                warnings.filterwarnings("ignore", "Duplicate Operation ID notify_resource")
                generated = get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    routes=app.routes,
                )
            app.openapi_schema = complete(generated)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add answer schemas, error statuses, the notification bodies and id patterns."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [OperationOutcome, *dict.fromkeys(_ANSWERS.values())]
    for model in models:
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(definition.pop("$defs", {}))
        schemas[model.__name__] = definition
    outcome = {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            key = (method, path)
            if path == "/fhir-notify/{resource_type}/{resource_id}":
                operation["operationId"] = f"notify_resource_by_{method}"
            responses: dict[str, Any] = {}
            answer = _ANSWERS.get(key)
            if path.endswith("/report"):
                responses["200"] = {
                    "description": "The patient's eligibility report page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            elif answer is not None:
                responses["200"] = {
                    "description": _MEANING[200],
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{answer.__name__}"}
                        }
                    },
                }
            else:
                for status in (200, 202):
                    responses[str(status)] = {
                        "description": _MEANING[status],
                        "content": {FHIR_JSON: outcome},
                    }
            for status in _ERRORS_BY_ROUTE.get(key, _PROTECTED):
                responses[str(status)] = {
                    "description": _MEANING[status],
                    "content": {FHIR_JSON: outcome},
                }
            operation["responses"] = responses
            if path.startswith("/fhir-notify"):
                operation["requestBody"] = _NOTIFICATION_BODY
            else:
                content = operation.get("requestBody", {}).get("content", {})
                if "application/json" in content:  # FHIR JSON is taken as well (media_types)
                    content.setdefault(FHIR_JSON, content["application/json"])
            for parameter in operation.get("parameters", ()):
                if parameter.get("name") in ("resource_id", "patient_id"):
                    parameter["schema"] = dict(_FHIR_ID)
                elif parameter.get("name") == "resource_type":
                    parameter["schema"] = {"type": "string", "pattern": "^[A-Z][A-Za-z]{1,63}$"}
                elif parameter.get("name") in ("trial_id", "service_id"):
                    parameter["schema"] = {"type": "string", "minLength": 1}
            if operation.get("security") is None and key not in (
                ("get", "/health"),
                ("get", "/ready"),
                ("get", "/cds-services"),
            ):
                operation["security"] = [{"bearer": []}]
    document["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A static API token, or a CDS Hooks client's JWT (evaluate only).",
        }
    }
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document
