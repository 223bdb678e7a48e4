"""Tiny builders of FHIR R4 resources (plain dicts) for the hand-written NCT03036150 patients.

Every builder returns one resource without a subject; `bundle()` puts the resources in a
collection Bundle with `urn:uuid` fullUrls and points every subject / patient reference at the
Bundle's Patient (`SITE`, from tests/trial_patients.py). Days are written relative to the as-of
day 2026-11-01 (`days_ago`); a bare day given for a dateTime field gets a time and the site's
time zone.
"""

from __future__ import annotations

import uuid

from trial_patients import (
    ALLERGY_CLINICAL,
    CONDITION_CLINICAL,
    CONDITION_VERIFICATION,
    LOINC,
    RXNORM,
    UCUM,
    Resource,
    Site,
)

SITE = Site(
    time_of_day="T09:15:00-05:00", namespace=uuid.UUID("0b9f3a52-7c1e-4d1a-8f7e-3f6d2c5b1a90")
)
"""Bare days in dateTime fields get 09:15 in the site's time zone (UTC-5)."""
date_time = SITE.date_time
full_url = SITE.full_url
bundle = SITE.bundle


def codeable(system: str, code: str, display: str | None = None) -> Resource:
    coding: Resource = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    return {"coding": [coding]}


def _identified(resource_type: str, resource_id: str, fields: Resource) -> Resource:
    return {"resourceType": resource_type, "id": resource_id, **fields}


def patient(birth_date: str = "1964-02-10", gender: str = "male") -> Resource:
    return _identified("Patient", "patient", {"gender": gender, "birthDate": birth_date})


def observation(
    id: str,
    loinc: str,
    value: float | None,
    unit: str | None,
    day: str,
    coded: tuple[str, str] | None = None,
) -> Resource:
    fields: Resource = {
        "status": "final",
        "code": codeable(LOINC, loinc),
        "effectiveDateTime": date_time(day),
    }
    if coded is not None:
        fields["valueCodeableConcept"] = codeable(*coded)
    elif value is not None:
        quantity: Resource = {"value": value}
        if unit is not None:
            quantity.update(unit=unit, system=UCUM, code=unit)
        fields["valueQuantity"] = quantity
    return _identified("Observation", id, fields)


def condition(
    id: str,
    system: str,
    code: str,
    onset: str,
    clinical_status: str = "active",
    abatement: str | None = None,
) -> Resource:
    fields: Resource = {
        "clinicalStatus": codeable(CONDITION_CLINICAL, clinical_status),
        "verificationStatus": codeable(CONDITION_VERIFICATION, "confirmed"),
        "code": codeable(system, code),
        "onsetDateTime": date_time(onset),
    }
    if abatement is not None:
        fields["abatementDateTime"] = date_time(abatement)
    return _identified("Condition", id, fields)


def procedure(id: str, system: str, code: str, performed: str) -> Resource:
    fields: Resource = {
        "status": "completed",
        "code": codeable(system, code),
        "performedDateTime": date_time(performed),
    }
    return _identified("Procedure", id, fields)


def daily_dosage(dose: float, unit: str | None = "mg", frequency: int = 1) -> Resource:
    quantity: Resource = {"value": dose}
    if unit is not None:
        quantity.update(unit=unit, system=UCUM, code=unit)
    return {
        "timing": {"repeat": {"frequency": frequency, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": quantity}],
    }


def medication_request(
    id: str,
    code: str,
    status: str,
    authored_on: str,
    system: str = RXNORM,
    display: str | None = None,
    supply_days: int | None = None,
    refills: int | None = None,
    dosage: Resource | None = None,
) -> Resource:
    fields: Resource = {
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": codeable(system, code, display),
        "authoredOn": date_time(authored_on),
    }
    if supply_days is not None:
        dispense: Resource = {
            "expectedSupplyDuration": {
                "value": supply_days,
                "unit": "days",
                "system": UCUM,
                "code": "d",
            }
        }
        if refills is not None:
            dispense["numberOfRepeatsAllowed"] = refills
        fields["dispenseRequest"] = dispense
    if dosage is not None:
        fields["dosageInstruction"] = [dosage]
    return _identified("MedicationRequest", id, fields)


def medication_statement(id: str, code: str, status: str, start: str, end: str | None) -> Resource:
    period = {"start": start} if end is None else {"start": start, "end": end}
    fields: Resource = {
        "status": status,
        "medicationCodeableConcept": codeable(RXNORM, code),
        "effectivePeriod": period,
    }
    return _identified("MedicationStatement", id, fields)


def allergy(id: str, system: str, code: str, recorded: str) -> Resource:
    fields: Resource = {
        "clinicalStatus": codeable(ALLERGY_CLINICAL, "active"),
        "type": "intolerance",
        "category": ["medication"],
        "code": codeable(system, code),
        "recordedDate": date_time(recorded),
    }
    return _identified("AllergyIntolerance", id, fields)
