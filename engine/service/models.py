"""Request bodies, as pydantic models (they give the OpenAPI schema and field-level errors)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

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
    write: bool = Field(
        default=False,
        description="Write the ResearchStudy, ResearchSubject and DetectedIssue to the server.",
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


class FhirAuthorization(BaseModel):
    """CDS Hooks `fhirAuthorization`: the token to read the EHR's FHIR server with."""

    model_config = ConfigDict(extra="allow")

    access_token: str = Field(min_length=1)
    token_type: str = "Bearer"
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None


class CdsHookRequest(BaseModel):
    """A CDS Hooks service call (1.0 and 2.0)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    hook: str
    hook_instance: str = Field(alias="hookInstance", min_length=1)
    fhir_server: str | None = Field(default=None, alias="fhirServer")
    fhir_authorization: FhirAuthorization | None = Field(default=None, alias="fhirAuthorization")
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None


class CdsOverrideReason(BaseModel):
    """Why a clinician overrode a card (CDS Hooks 2.0, Feedback: overrideReason)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    reason: dict[str, Any] | None = None
    user_comment: str | None = Field(default=None, alias="userComment")


class CdsFeedbackItem(BaseModel):
    """One card's outcome (CDS Hooks 2.0, "Feedback")."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    card: str = Field(min_length=1, description="The uuid of the card the feedback is about.")
    outcome: str = Field(pattern="^(accepted|overridden)$")
    outcome_timestamp: str = Field(alias="outcomeTimestamp", min_length=1)
    accepted_suggestions: list[dict[str, Any]] | None = Field(
        default=None, alias="acceptedSuggestions"
    )
    override_reason: CdsOverrideReason | None = Field(default=None, alias="overrideReason")


class CdsFeedback(BaseModel):
    """`POST /cds-services/{id}/feedback`: the outcome of one or more cards."""

    model_config = ConfigDict(extra="allow")

    feedback: list[CdsFeedbackItem] = Field(min_length=1)
