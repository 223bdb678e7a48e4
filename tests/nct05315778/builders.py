"""Tiny builders of FHIR R4 resources (plain dicts) for hand-written test patients.

Every builder returns one resource without a subject; `bundle()` puts the resources in a
Bundle with `urn:uuid` fullUrls and points every subject / patient / individual reference at
the Bundle's Patient. A bare day ("2026-10-20") given for a dateTime field becomes a
dateTime with a time and a time zone (FHIR requires the zone whenever there is a time); any
longer text is kept exactly as written, so a test can write a broken one.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from typing import Any

from trial_patients import (
    ALLERGY_CLINICAL,
    ALLERGY_VERIFICATION,
    CLINICALTRIALS,
    CONDITION_CLINICAL,
    CONDITION_VERIFICATION,
    LOINC,
    RXNORM,
    SNOMED,
    UCUM,
    Resource,
    Site,
    days_ago,
)

Coding = tuple[str, str]
"""(system URI, code)."""

SITE = Site(
    time_of_day="T08:30:00+08:00", namespace=uuid.UUID("6f1c1d1e-5b7a-4c53-9a0e-7d0c2f1e9b10")
)
"""Bare days in dateTime fields get 08:30 China Standard Time (the sites' time zone)."""
_NAMESPACE = SITE.namespace
date_time = SITE.date_time
full_url = SITE.full_url
bundle = SITE.bundle


SCREENING_DAY = days_ago(12)
"""A day well inside the 28-day screening window (2026-10-20)."""


# ---------------------------------------------------------------------------- data types


def codeable(system: str, code: str, text: str | None = None) -> Resource:
    concept: Resource = {"coding": [{"system": system, "code": code}]}
    if text is not None:
        concept["text"] = text
    return concept


def quantity(value: float, unit: str | None, ucum: bool = False) -> Resource:
    """A Quantity; `ucum=True` also writes the unit as a UCUM code, as most labs do."""
    result: Resource = {"value": value}
    if unit is not None:
        result["unit"] = unit
        if ucum:
            result.update(system=UCUM, code=unit)
    return result


def _identified(resource_type: str, resource_id: str | None, fields: Resource) -> Resource:
    resource: Resource = {"resourceType": resource_type}
    resource["id"] = resource_id or str(uuid.uuid5(_NAMESPACE, repr(sorted(fields.items()))))
    resource.update(fields)
    return resource


def _status(system: str, code: str | None) -> Resource | None:
    return None if code is None else {"coding": [{"system": system, "code": code}]}


def _without_none(fields: Resource) -> Resource:
    return {key: value for key, value in fields.items() if value is not None}


def amended(resource: Resource, **fields: Any) -> Resource:
    """A copy of the resource with top-level fields set (None removes the field)."""
    result = copy.deepcopy(resource)
    for key, value in fields.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


# ---------------------------------------------------------------------------- resources


def patient(
    birth_date: str | None = "1984-03-15", gender: str | None = "female", id: str = "patient"
) -> Resource:
    return _identified("Patient", id, _without_none({"gender": gender, "birthDate": birth_date}))


def condition(
    code_system: str,
    code: str,
    onset: str,
    clinical_status: str | None = "active",
    abatement: str | None = None,
    verification: str = "confirmed",
    id: str | None = None,
) -> Resource:
    fields = _without_none(
        {
            "clinicalStatus": _status(CONDITION_CLINICAL, clinical_status),
            "verificationStatus": _status(CONDITION_VERIFICATION, verification),
            "code": codeable(code_system, code),
            "onsetDateTime": date_time(onset),
            "abatementDateTime": date_time(abatement) if abatement is not None else None,
        }
    )
    return _identified("Condition", id, fields)


def component(loinc: str, value: float, unit: str) -> Resource:
    return {"code": codeable(LOINC, loinc), "valueQuantity": quantity(value, unit, ucum=True)}


def observation(
    loinc: str,
    value: float | str | bool | None = None,
    unit: str | None = None,
    date: str = SCREENING_DAY,
    reference_range: tuple[float | None, float | None] | None = None,
    coded: Coding | None = None,
    components: Sequence[Resource] = (),
    status: str = "final",
    ucum: bool = True,
    id: str | None = None,
) -> Resource:
    """An Observation dated `date` (a bare day gets a time and zone).

    The value is a Quantity when `unit` is given (with the UCUM code when `ucum`) and for a
    float without a unit (a unitless Quantity), else an integer, a string or a boolean;
    `coded` gives a valueCodeableConcept instead; no value at all leaves value[x] out.
    `reference_range` is (low, high) in the value's unit, either bound may be None.
    """
    fields: Resource = {"status": status, "code": codeable(LOINC, loinc)}
    fields["effectiveDateTime"] = date_time(date)
    if coded is not None:
        fields["valueCodeableConcept"] = codeable(*coded)
    elif unit is not None and isinstance(value, int | float) and not isinstance(value, bool):
        fields["valueQuantity"] = quantity(value, unit, ucum=ucum)
    elif isinstance(value, bool):
        fields["valueBoolean"] = value
    elif isinstance(value, int):
        fields["valueInteger"] = value
    elif isinstance(value, float):
        fields["valueQuantity"] = quantity(value, None)
    elif isinstance(value, str):
        fields["valueString"] = value
    if reference_range is not None:
        low, high = reference_range
        bounds = {"low": low, "high": high}
        fields["referenceRange"] = [
            {
                name: quantity(bound, unit, ucum=ucum)
                for name, bound in bounds.items()
                if bound is not None
            }
        ]
    if components:
        fields["component"] = list(components)
    return _identified("Observation", id, fields)


def medication_request(
    code: str,
    status: str,
    authored_on: str,
    system: str = RXNORM,
    validity: tuple[str, str] | None = None,
    id: str | None = None,
) -> Resource:
    fields: Resource = {
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": codeable(system, code),
        "authoredOn": date_time(authored_on),
    }
    if validity is not None:
        start, end = validity
        fields["dispenseRequest"] = {"validityPeriod": {"start": start, "end": end}}
    return _identified("MedicationRequest", id, fields)


def medication_administration(
    code: str, status: str, start: str, system: str = RXNORM, id: str | None = None
) -> Resource:
    fields: Resource = {
        "status": status,
        "medicationCodeableConcept": codeable(system, code),
        "effectivePeriod": {"start": date_time(start)},
    }
    return _identified("MedicationAdministration", id, fields)


def procedure(
    code_system: str,
    code: str,
    performed: str,
    status: str = "completed",
    id: str | None = None,
) -> Resource:
    fields: Resource = {
        "status": status,
        "code": codeable(code_system, code),
        "performedDateTime": date_time(performed),
    }
    return _identified("Procedure", id, fields)


def allergy(
    code_system: str,
    code: str,
    recorded: str,
    category: str | None = "medication",
    criticality: str | None = None,
    reaction_severity: str | None = None,
    reaction_substance: Coding | None = None,
    clinical_status: str | None = "active",
    verification: str = "confirmed",
    id: str | None = None,
) -> Resource:
    fields = _without_none(
        {
            "clinicalStatus": _status(ALLERGY_CLINICAL, clinical_status),
            "verificationStatus": _status(ALLERGY_VERIFICATION, verification),
            "category": [category] if category is not None else None,
            "criticality": criticality,
            "code": codeable(code_system, code),
            "recordedDate": date_time(recorded),
        }
    )
    if reaction_severity is not None or reaction_substance is not None:
        reaction: Resource = {"manifestation": [codeable(SNOMED, "271807003", "Rash")]}
        if reaction_severity is not None:
            reaction["severity"] = reaction_severity
        if reaction_substance is not None:
            reaction["substance"] = codeable(*reaction_substance)
        fields["reaction"] = [reaction]
    return _identified("AllergyIntolerance", id, fields)


def research_subject(
    study_nct: str,
    status: str,
    start: str,
    end: str | None = None,
    identifier_system: str | None = None,
    id: str | None = None,
) -> Resource:
    """A ResearchSubject of the study `study_nct`; `identifier_system` marks who wrote it."""
    period = _without_none({"start": start, "end": end})
    fields: Resource = {
        "status": status,
        "period": period,
        "study": {"identifier": {"system": CLINICALTRIALS, "value": study_nct}},
    }
    if identifier_system is not None:
        fields["identifier"] = [{"system": identifier_system, "value": f"{study_nct}-subject"}]
    return _identified("ResearchSubject", id, fields)
