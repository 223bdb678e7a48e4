"""Errors as HTTP answers: every 4xx and 5xx body is a FHIR OperationOutcome.

`ApiError` is what the service raises on purpose (status, issue code, diagnostics, the request
field at fault). `error_for` turns the engine's errors into one: unreadable patient data or
attestations are the caller's (400), a patient the server does not have is 404, a FHIR server
that fails or does not answer in time is 502 or 504, naming the server and the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import AttestationError, InputError, ServerError, TrialsieveError
from engine.sources.bundle import json_kind
from engine.sources.references import is_fhir_id

FHIR_JSON = "application/fhir+json"
"""The FHIR JSON media type (FHIR R4 http.html, "Content Types and encodings")."""
FHIR_JSON_ANSWER = f"{FHIR_JSON}; charset=utf-8"
JSON_ANSWER = "application/json; charset=utf-8"
"""The Content-Type of every JSON answer: FHIR's "FHIR uses UTF-8 for all request and
response bodies" (R4 http.html) said in the header (RFC 9110 8.3.1, the `charset` parameter),
so no client falls back to another encoding; an OperationOutcome (and every FHIR resource) as
FHIR JSON, the service's own answers (evaluation, cards, discovery, OpenAPI) as JSON."""


@dataclass
class Issue:
    """One OperationOutcome issue: FHIR issue-type `code`, a diagnostics sentence, and the
    request fields it is about (`expression`, e.g. `prefetch.patient`).
    """

    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def operation_outcome(issues: Sequence[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [issue.to_fhir() for issue in issues]}


def information(text: str) -> dict[str, Any]:
    """An OperationOutcome that only informs (for 2xx answers that carry no other body)."""
    return operation_outcome([Issue("informational", text, severity="information")])


@dataclass
class ApiError(Exception):
    """An HTTP error answer with an OperationOutcome body."""

    status: int
    issues: list[Issue]
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__("; ".join(issue.diagnostics for issue in self.issues))

    @classmethod
    def of(
        cls,
        status: int,
        code: str,
        diagnostics: str,
        *expression: str,
        headers: Mapping[str, str] | None = None,
    ) -> ApiError:
        return cls(status, [Issue(code, diagnostics, tuple(expression))], dict(headers or {}))

    def body(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def error_for(error: TrialsieveError, field_name: str | None = None) -> ApiError:
    """The HTTP error for an engine error met while serving a request.

    `field_name` names the request field the data came from (`bundle`, `attestations`).
    """
    expression = (field_name,) if field_name else ()
    if isinstance(error, ServerError):
        return _server_error(error)
    if isinstance(error, InputError | AttestationError):
        return ApiError(400, [Issue("invalid", str(error), expression)])
    return ApiError(500, [Issue("exception", str(error), expression)])


def _server_error(error: ServerError) -> ApiError:
    """404 when the server has no such patient; 504 when it did not answer in time; else 502.

    The diagnostics summarise (what was asked, what came back) without the server's address,
    the request's URL or the server's own words: a caller must not learn about networks it
    cannot see by naming them.
    """
    asked = _request_kind(error.request)
    if error.status in (404, 410):
        return ApiError.of(404, "not-found", f"the FHIR server has no such resource ({asked})")
    if error.timed_out:
        return ApiError.of(504, "timeout", f"the FHIR server did not answer in time ({asked})")
    return ApiError.of(
        502,
        "transient" if _retryable(error.status) else "exception",
        server_failure_summary(error),
    )


def server_failure_summary(error: ServerError) -> str:
    """`the FHIR server answered HTTP 403 (GET Patient)`: no address, no ids."""
    asked = _request_kind(error.request)
    if error.status is None:
        return f"the FHIR server could not be reached or gave no usable answer ({asked})"
    if error.status in (401, 403):
        return f"the FHIR server refused the request: HTTP {error.status} ({asked})"
    return f"the FHIR server failed: HTTP {error.status} ({asked})"


def _request_kind(request: str | None) -> str:
    """`GET Patient/p1/$everything` -> `GET Patient`: the method and resource type only."""
    if not request:
        return "request"
    method, _, path = request.partition(" ")
    first = path.split("/", 1)[0].split("?", 1)[0]
    kind = first if first.replace("$", "").replace("-", "").isalnum() else "request"
    return f"{method} {kind}".strip()


def _retryable(status: int | None) -> bool:
    return status is None or status == 429 or status >= 500


def found_text(value: Any, limit: int = 70) -> str:
    """A request value as an error says what it found: a string quoted, cut to `limit`
    characters; anything else by its JSON kind (`an array`)."""
    return repr(value[:limit]) if isinstance(value, str) else json_kind(value)


def check_fhir_id(identifier: Any, field_name: str) -> None:
    """400 naming `field_name` unless `identifier` is a FHIR id (R4 datatypes, `id`)."""
    if not is_fhir_id(identifier):
        shown = found_text(identifier)
        raise ApiError.of(
            400,
            "invalid",
            f"{field_name} must be a FHIR id (letters, digits, '-', '.'; at most 64), "
            f"found {shown}",
            field_name,
        )
