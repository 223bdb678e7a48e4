"""Tiny builders of FHIR R4 resources (plain dicts) for the hand-written NCT03036150 patients.

Every builder returns one resource without a subject; `bundle()` puts the resources in a
collection Bundle with `urn:uuid` fullUrls and points every subject / patient reference at the
Bundle's Patient. Days are written relative to the as-of day 2026-11-01 (`days_ago`); a bare
day given for a dateTime field gets a time and the site's time zone.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import uuid
from typing import Any

Resource = dict[str, Any]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"

AS_OF = dt.date(2026, 11, 1)
TIME_OF_DAY = "T09:15:00-05:00"
_NAMESPACE = uuid.UUID("0b9f3a52-7c1e-4d1a-8f7e-3f6d2c5b1a90")
_BARE_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
_SUBJECT_FIELD = {
    "Observation": "subject",
    "Condition": "subject",
    "Procedure": "subject",
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "MedicationAdministration": "subject",
    "AllergyIntolerance": "patient",
}


def days_ago(days: int) -> str:
    """The day `days` before the as-of day, as YYYY-MM-DD."""
    return (AS_OF - dt.timedelta(days=days)).isoformat()


def date_time(value: str) -> str:
    return value + TIME_OF_DAY if _BARE_DAY.match(value) else value


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
        "clinicalStatus": codeable(_CONDITION_CLINICAL, clinical_status),
        "verificationStatus": codeable(_CONDITION_VERIFICATION, "confirmed"),
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
        "clinicalStatus": codeable(_ALLERGY_CLINICAL, "active"),
        "type": "intolerance",
        "category": ["medication"],
        "code": codeable(system, code),
        "recordedDate": date_time(recorded),
    }
    return _identified("AllergyIntolerance", id, fields)


def full_url(resource: Resource) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, resource['resourceType'] + '/' + resource['id'])}"


def bundle(*resources: Resource, bundle_type: str = "collection") -> Resource:
    """A Bundle of one patient's resources (exactly one Patient); inputs are not modified."""
    patients = [resource for resource in resources if resource["resourceType"] == "Patient"]
    if len(patients) != 1:
        raise ValueError(f"a patient Bundle needs exactly one Patient, found {len(patients)}")
    patient_url = full_url(patients[0])
    entries: list[Resource] = []
    for original in resources:
        resource = copy.deepcopy(original)
        field = _SUBJECT_FIELD.get(resource["resourceType"])
        if field is not None:
            resource[field] = {"reference": patient_url}
        entry: Resource = {"fullUrl": full_url(resource), "resource": resource}
        if bundle_type == "transaction":
            entry["request"] = {"method": "POST", "url": resource["resourceType"]}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}
