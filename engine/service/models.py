"""Request bodies, as pydantic models (they give the OpenAPI schema and field-level errors)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from engine.evaluate.patient import as_of_problem
from engine.sources.references import is_fhir_id

FHIR_ID_PATTERN = r"^(?!\.+$)[A-Za-z0-9\-.]{1,64}$"
"""A FHIR id that is safe as a URL path segment (`.` and `..` are refused)."""
AS_OF_PATTERN = r"^(19[0-9]{2}|2[01][0-9]{2})-[0-9]{2}-[0-9]{2}$"
"""An as-of day between 1900 and 2199 (`engine.evaluate.patient.as_of_problem`)."""


class AttestationEntry(BaseModel):
    """One person's answers for a patient: an entry of the attestations YAML file."""

    model_config = ConfigDict(extra="forbid")

    patient: str | None = Field(
        default=None,
        description="Patient.id; default: the patient evaluated.",
        json_schema_extra={"pattern": FHIR_ID_PATTERN},
    )
    by: str = Field(min_length=1, description="Who attests.")
    date: dt.date | None = None
    answers: dict[str, StrictBool] = Field(
        min_length=1, description="Manual item id -> the truth of its question."
    )


class EvaluateRequest(BaseModel):
    """`POST /evaluate`: a patient on the configured server, or an inline Bundle."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    trial: str | None = Field(
        default=None, description="Trial id; optional when one trial is loaded."
    )
    patient: str | None = Field(
        default=None,
        description="Patient id on the configured FHIR server.",
        json_schema_extra={"pattern": FHIR_ID_PATTERN},
    )
    bundle: dict[str, Any] | None = Field(
        default=None, description="The patient's data as a FHIR Bundle (instead of patient)."
    )
    as_of: dt.date | None = Field(
        default=None,
        alias="asOf",
        description="Evaluate as of this day (1900-01-01 to 2199-12-31); default: today.",
        json_schema_extra={"pattern": AS_OF_PATTERN},
    )
    attestations: list[AttestationEntry] = Field(default_factory=list)
    write: StrictBool = Field(
        default=False,
        description="Write the ResearchStudy, ResearchSubject and DetectedIssue to the server "
        "(JSON true or false only: a field with a side effect is not guessed from "
        '"yes", "1" or 1).',
    )

    @field_validator("patient")
    @classmethod
    def _patient_is_an_id(cls, value: str | None) -> str | None:
        if value is not None and not is_fhir_id(value):
            raise ValueError(
                "must be a FHIR id (letters, digits, '-', '.'; 1 to 64; not only dots)"
            )
        return value

    @field_validator("as_of")
    @classmethod
    def _as_of_within_bounds(cls, value: dt.date | None) -> dt.date | None:
        problem = as_of_problem(value) if value is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value


UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
"""A UUID in its string form (RFC 9562 section 4: 8-4-4-4-12 hexadecimal digits, either case)."""
UTC_TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|\+00:00)$"
)
"""An RFC 3339 (section 5.6) date-time in UTC: `Z`, or the offset `+00:00`."""


def _uuid(value: str) -> str:
    """`value` if it is a UUID (`UUID_PATTERN`), else ValueError."""
    if re.fullmatch(UUID_PATTERN, value) is None:
        raise ValueError("must be a UUID (8-4-4-4-12 hexadecimal digits)")
    return value


class FhirAuthorization(BaseModel):
    """CDS Hooks 2.0 `fhirAuthorization` ("Passing the Access Token to the CDS Service"): the
    token to read the EHR's FHIR server with; every field but `patient` is REQUIRED."""

    model_config = ConfigDict(extra="allow")

    access_token: str = Field(
        min_length=1, description="The OAuth 2.0 access token to the FHIR server."
    )
    token_type: Literal["Bearer"] = Field(description="Fixed value: Bearer.")
    expires_in: StrictInt = Field(description="The lifetime in seconds of the access token.")
    scope: str = Field(min_length=1, description="The scopes the access token grants.")
    subject: str = Field(
        min_length=1,
        description="The OAuth 2.0 client identifier of the CDS Service, as registered with "
        "the CDS Client's authorization server.",
    )
    patient: str | None = Field(
        default=None,
        description="The FHIR id of the patient the token is restricted to (patient scopes).",
    )


class CdsHookRequest(BaseModel):
    """A CDS Hooks service call (1.0 and 2.0)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    hook: str
    hook_instance: str = Field(
        alias="hookInstance",
        description="A universally unique identifier (UUID) for this particular hook call.",
        json_schema_extra={"pattern": UUID_PATTERN},
    )
    fhir_server: str | None = Field(default=None, alias="fhirServer")
    fhir_authorization: FhirAuthorization | None = Field(default=None, alias="fhirAuthorization")
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = Field(
        default=None,
        description='Extensions (CDS Hooks 2.0, "Extensions"): a JSON object whose members '
        "the CDS Client and Service agree on; read by nothing here.",
    )

    @field_validator("hook_instance")
    @classmethod
    def _hook_instance_is_a_uuid(cls, value: str) -> str:
        return _uuid(value)


class CdsCoding(BaseModel):
    """A CDS Hooks Coding (2.0, "Data Types"): `code` and `system` REQUIRED."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(min_length=1)
    system: str = Field(min_length=1)
    display: str | None = None


class CdsOverrideReason(BaseModel):
    """Why a clinician overrode a card (CDS Hooks 2.0, Feedback: OverrideReason)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    reason: CdsCoding | None = Field(
        default=None, description="The override reason the clinician chose, as a Coding."
    )
    user_comment: str | None = Field(default=None, alias="userComment")


class CdsAcceptedSuggestion(BaseModel):
    """One accepted suggestion (CDS Hooks 2.0, Feedback: AcceptedSuggestion)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(
        min_length=1,
        description="The card.suggestion.uuid. This service's cards carry no suggestions, so "
        "no id names one: a feedback naming one is refused (400).",
    )


class CdsFeedbackItem(BaseModel):
    """One card's outcome (CDS Hooks 2.0, "Feedback"). `acceptedSuggestions` is required for
    an `accepted` outcome, `overrideReason` goes with `overridden` (the schema's if/then)."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "properties": {"outcome": {"const": "accepted"}},
                        "required": ["outcome"],
                    },
                    "then": {
                        "required": ["acceptedSuggestions"],
                        "properties": {"acceptedSuggestions": {"type": "array"}},
                    },
                },
                {
                    "if": {"required": ["overrideReason"]},
                    "then": {"properties": {"outcome": {"const": "overridden"}}},
                },
            ]
        },
    )

    card: str = Field(
        description="The card.uuid of the card the feedback is about (a UUID: this service's "
        "cards always carry one).",
        json_schema_extra={"pattern": UUID_PATTERN},
    )
    outcome: Literal["accepted", "overridden"]
    outcome_timestamp: str = Field(
        alias="outcomeTimestamp",
        description="When the clinician acted on the card: an RFC 3339 date-time in UTC.",
        json_schema_extra={"format": "date-time", "pattern": UTC_TIMESTAMP_PATTERN},
    )
    accepted_suggestions: list[CdsAcceptedSuggestion] | None = Field(
        default=None,
        alias="acceptedSuggestions",
        min_length=1,
        description="The suggestions accepted; required for an accepted outcome.",
    )
    override_reason: CdsOverrideReason | None = Field(
        default=None,
        alias="overrideReason",
        description="Why the card was overridden (with an overridden outcome only).",
    )

    @field_validator("card")
    @classmethod
    def _card_is_a_uuid(cls, value: str) -> str:
        return _uuid(value)

    @field_validator("outcome_timestamp")
    @classmethod
    def _outcome_timestamp_in_utc(cls, value: str) -> str:
        if re.fullmatch(UTC_TIMESTAMP_PATTERN, value) is None:
            raise ValueError(
                "must be an ISO 8601 date-time in UTC (RFC 3339, as 2026-11-01T10:00:00Z)"
            )
        try:
            dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError as error:
            raise ValueError(f"is not a date-time: {error}") from None
        return value


class CdsFeedback(BaseModel):
    """`POST /cds-services/{id}/feedback`: the outcome of one or more cards."""

    model_config = ConfigDict(extra="allow")

    feedback: list[CdsFeedbackItem] = Field(min_length=1)
