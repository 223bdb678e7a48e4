"""Request bodies, as pydantic models (they give the OpenAPI schema and field-level errors)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class AttestationEntry(BaseModel):
    """One person's answers for a patient: an entry of the attestations YAML file."""

    model_config = ConfigDict(extra="forbid")

    patient: str | None = Field(
        default=None, description="Patient.id; default: the patient evaluated."
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
        default=None, description="Patient id on the configured FHIR server."
    )
    bundle: dict[str, Any] | None = Field(
        default=None, description="The patient's data as a FHIR Bundle (instead of patient)."
    )
    as_of: dt.date | None = Field(default=None, alias="asOf")
    attestations: list[AttestationEntry] = Field(default_factory=list)
    write: bool = Field(
        default=False,
        description="Write the ResearchStudy, ResearchSubject and DetectedIssue to the server.",
    )


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
