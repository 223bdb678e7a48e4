"""The OpenAPI description is complete and the service keeps to it: schemathesis generates
requests (valid and invalid) for every operation from /openapi.json and runs every check
(status codes, content types, response schemas, headers, negative data rejection, positive
data acceptance, auth ignored, unsupported methods, ...) against the app in process.

Bounded: a few examples per operation, so the run stays well under a minute. The service runs
without a FHIR server (requests by patient id answer 409, documented) and with one API token.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS
from schemathesis.config import SchemathesisConfig
from service_support import AUTH, make_settings

from engine.service import create_app

APP = create_app(make_settings())
CONFIG = SchemathesisConfig.from_str(
    """
[checks]
enabled = true

# A schema-valid body can still be unusable FHIR: JSON Schema cannot say "one Patient per
# Bundle, every subject pointing at it" or "an attestation answers a manual item of this
# trial". For the operations that read patient data, such a body is a 400 naming the field,
# so 400 is an expected answer to schema-valid data there (every other status still is not).
# Likewise CDS Hooks feedback: an accepted suggestion's id must name a suggestion of the card,
# and this service's cards carry none (the schema says so in words, not in keywords).
[[operations]]
include-path-regex = "^/(evaluate|trials/[^/]+/evaluate|cds-services/[^/]+(/feedback)?)$"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "400", "401", "403", "404", "409", "429", "5xx"
]
"""
)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)
ALL_CHECKS = CHECKS.get_all()


def test_every_operation_documents_its_error_answers() -> None:
    document = APP.openapi()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "200" in responses, (method, path)
            if path not in ("/health", "/cds-services", "/ready"):
                for status in ("400", "401", "403", "413"):
                    content = responses[status]["content"]
                    schema = content["application/fhir+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/OperationOutcome"}
            if method == "post" and path != "/fhir-notify":
                assert "requestBody" in operation, (method, path)
    assert "/fhir-notify" in document["paths"]
    assert "requestBody" in document["paths"]["/fhir-notify"]["post"]


def test_operation_ids_are_unique_and_built_without_warnings() -> None:
    """OpenAPI 3.1 section 4.8.10 (Operation Object): operationId MUST be unique among all
    operations; the one route that takes PUT and POST is named per method."""
    app = create_app(make_settings())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        document = app.openapi()
    operation_ids = [
        operation["operationId"]
        for operations in document["paths"].values()
        for operation in operations.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))
    assert {"notify_resource_by_put", "notify_resource_by_post"} <= set(operation_ids)


def test_the_cds_hooks_requests_show_what_the_spec_requires() -> None:
    """CDS Hooks 2.0 in the schema: `hookInstance` a UUID ("HTTP Request"); every
    `fhirAuthorization` field but `patient` required, `token_type` the fixed `Bearer`,
    `expires_in` an integer ("Passing the Access Token to the CDS Service"); a feedback item's
    `card` a UUID, `outcome` accepted / overridden, `outcomeTimestamp` a UTC date-time,
    `acceptedSuggestions` required with `accepted`, `overrideReason` only with `overridden`
    ("Feedback"); an override reason a Coding with `code` and `system` ("Coding")."""
    schemas = APP.openapi()["components"]["schemas"]
    call = schemas["CdsHookRequest"]
    assert {"hook", "hookInstance", "context"} <= set(call["required"])
    uuid_pattern = call["properties"]["hookInstance"]["pattern"]
    assert re.fullmatch(uuid_pattern, "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea")
    assert not re.fullmatch(uuid_pattern, "h1")
    authorization = schemas["FhirAuthorization"]
    assert set(authorization["required"]) == {
        "access_token",
        "token_type",
        "expires_in",
        "scope",
        "subject",
    }
    assert authorization["properties"]["token_type"]["const"] == "Bearer"
    assert authorization["properties"]["expires_in"]["type"] == "integer"
    assert "patient" in authorization["properties"]
    item = schemas["CdsFeedbackItem"]
    assert set(item["required"]) == {"card", "outcome", "outcomeTimestamp"}
    assert item["properties"]["card"]["pattern"] == uuid_pattern
    assert item["properties"]["outcome"]["enum"] == ["accepted", "overridden"]
    timestamp = item["properties"]["outcomeTimestamp"]
    assert timestamp["format"] == "date-time"
    assert re.fullmatch(timestamp["pattern"], "2020-12-11T00:00:00Z")
    assert not re.fullmatch(timestamp["pattern"], "2020-12-11T01:00:00+01:00")
    accepted, overridden = item["allOf"]
    assert accepted["if"]["properties"]["outcome"] == {"const": "accepted"}
    assert accepted["then"]["required"] == ["acceptedSuggestions"]
    assert accepted["then"]["properties"]["acceptedSuggestions"] == {"type": "array"}
    assert overridden["if"] == {"required": ["overrideReason"]}
    assert overridden["then"]["properties"]["outcome"] == {"const": "overridden"}
    assert schemas["CdsAcceptedSuggestion"]["required"] == ["id"]
    assert (
        "carry no suggestions"
        in schemas["CdsAcceptedSuggestion"]["properties"]["id"]["description"]
    )
    assert set(schemas["CdsCoding"]["required"]) == {"code", "system"}


@SCHEMA.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_service_keeps_to_its_openapi_description(case: Any) -> None:
    case.call_and_validate(headers=AUTH, checks=ALL_CHECKS)


def test_the_run_includes_every_kind_of_check() -> None:
    """`--checks all`: the data, status, schema, auth and method checks are all in the run."""
    names = {check.__name__ for check in ALL_CHECKS}
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "ignored_auth",
        "unsupported_method",
        "missing_required_header",
    } <= names
