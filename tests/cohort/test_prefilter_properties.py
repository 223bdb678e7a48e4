"""Property: a patient the pre-filter settles gets, from their preview alone, exactly the
outcome a full evaluation gives on every criterion the preview answers, and the same status.

Patients are generated from codes of every concept a Condition or Procedure atom of the
criteria uses (ITP and its look-alikes, malignancies, cardiovascular disease, ...), with
random statuses and dates, plus Observations and MedicationRequests the preview leaves out.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cohort.prefilter import PREFILTER_TYPES, Prefilter, preview_of
from engine.criteria.model import ResourceAtom, iter_atoms
from engine.evaluate import CompiledCriteria, evaluate_patient
from engine.record import build_record
from engine.sources import PatientResources

AS_OF = dt.date(2026, 11, 1)
CLINICAL_STATUSES = ("active", "recurrence", "relapse", "inactive", "remission", "resolved")
VERIFICATION_STATUSES = ("confirmed", "provisional", "unconfirmed", "refuted", "entered-in-error")
MEASUREMENTS = (
    ("718-7", "g/dL", 18),  # haemoglobin
    ("751-8", "10*3/uL", 10),  # neutrophils
    ("777-3", "10*3/uL", 400),  # platelets
)
"""(LOINC, UCUM unit, highest value) of measurements the screening criteria read."""


def coded_pool(trial: CompiledCriteria) -> list[tuple[str, str]]:
    """(system, code) of every concept a Condition/Procedure atom reads, and unrelated codes."""
    pool: set[tuple[str, str]] = {
        ("http://snomed.info/sct", "38341003"),  # hypertension: in no concept here
        ("http://hl7.org/fhir/sid/icd-10-cm", "J45.909"),
        ("urn:hospital:problem-list", "ITP-01"),  # a diagnosis that cannot be told
    }
    for criterion in trial.criteria:
        for atom in iter_atoms(criterion.criterion.expression):
            if not isinstance(atom, ResourceAtom) or atom.concept is None:
                continue
            if not set(atom.resource_types) & PREFILTER_TYPES:
                continue
            concept = trial.terminology.concept(atom.concept)
            for system, codes in concept.codes.items():
                pool.update((system, code) for code in sorted(codes)[:3])
    return sorted(pool)


def dates() -> st.SearchStrategy[str]:
    return st.dates(dt.date(1990, 1, 1), dt.date(2026, 12, 31)).map(dt.date.isoformat)


@st.composite
def patients(draw: st.DrawFn, pool: list[tuple[str, str]]) -> PatientResources:
    patient_id = "p"
    subject = {"reference": f"Patient/{patient_id}"}
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": patient_id,
            "gender": draw(st.sampled_from(["female", "male", "other", "unknown"])),
            "birthDate": draw(st.dates(dt.date(1940, 1, 1), dt.date(2015, 1, 1))).isoformat(),
        }
    ]
    for number in range(draw(st.integers(0, 6))):
        system, code = draw(st.sampled_from(pool))
        resource_type = draw(st.sampled_from(["Condition", "Procedure"]))
        resource: dict[str, Any] = {
            "resourceType": resource_type,
            "id": f"{resource_type.lower()}-{number}",
            "subject": subject,
            "code": {"coding": [{"system": system, "code": code}]},
        }
        if resource_type == "Condition":
            status = draw(st.sampled_from(CLINICAL_STATUSES))
            verification = draw(st.sampled_from(VERIFICATION_STATUSES))
            resource["clinicalStatus"] = {"coding": [{"code": status}]}
            resource["verificationStatus"] = {"coding": [{"code": verification}]}
            resource["onsetDateTime"] = draw(dates())
            if draw(st.booleans()):
                resource["abatementDateTime"] = draw(dates())
        else:
            resource["status"] = draw(st.sampled_from(["completed", "in-progress", "not-done"]))
            resource["performedDateTime"] = draw(dates())
        resources.append(resource)
    for number in range(draw(st.integers(0, 4))):
        loinc, unit, highest = draw(st.sampled_from(MEASUREMENTS))
        resources.append(
            {
                "resourceType": "Observation",
                "id": f"observation-{number}",
                "status": "final",
                "subject": subject,
                "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                # Mostly in the screening window (28 days): the preview must not answer there.
                "effectiveDateTime": draw(
                    st.dates(AS_OF - dt.timedelta(days=40), AS_OF).map(dt.date.isoformat)
                ),
                "valueQuantity": {
                    "value": draw(st.integers(1, highest)),
                    "unit": unit,
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                },
            }
        )
    if draw(st.booleans()):
        resources.append(
            {
                "resourceType": "MedicationRequest",
                "id": "request-0",
                "status": "active",
                "intent": "order",
                "subject": subject,
                "medicationCodeableConcept": {"text": "heparin"},
                "authoredOn": draw(dates()),
            }
        )
    draw(st.randoms()).shuffle(resources)
    return PatientResources(patient_id, resources, [None] * len(resources), "generated")


def test_a_settled_patient_s_preview_answers_as_the_full_record(
    trial: CompiledCriteria,
) -> None:
    prefilter = Prefilter.from_criteria(trial)
    pool = coded_pool(trial)

    @settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
    @given(patients(pool))
    def check(patient: PatientResources) -> None:
        full_record = build_record(patient, trial.terminology)
        full = evaluate_patient(trial, full_record, AS_OF)
        preview = build_record(preview_of(patient), trial.terminology)
        requirement = prefilter.settle(preview)
        assert prefilter.settling_criterion(full_record) == (
            None if requirement is None else requirement.criterion_id
        )
        if requirement is None:
            return
        settled = prefilter.evaluate_settled(trial, preview, AS_OF, requirement).evaluation
        assert settled.status is full.status
        outcomes = {result.id: result.outcome for result in full.results}
        for result in settled.results:
            if result.id in prefilter.evaluable:
                assert result.outcome == outcomes[result.id], result.id
            else:
                assert result.id == requirement.criterion_id
                assert result.outcome.truth is outcomes[result.id].truth
        evaluated = {result.id for result in settled.results}
        assert [c.id for c in settled.not_evaluated] == [
            c.id for c in trial.criteria if c.id not in evaluated
        ]

    check()


def test_a_diagnosis_that_cannot_be_told_settles_no_one(trial: CompiledCriteria) -> None:
    """A Condition in text only may be the required ITP: the patient is not settled, and a
    full evaluation leaves inclusion 1 unknown (haematology QA session 14, finding 3)."""
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "p", "birthDate": "1984-03-15", "gender": "female"},
        {
            "resourceType": "Condition",
            "id": "itp-text",
            "subject": {"reference": "Patient/p"},
            "code": {"text": "Immune thrombocytopenia (ITP), chronic, refractory"},
            "onsetDateTime": "2021-02-20",
        },
    ]
    source = PatientResources("p", resources, [None] * len(resources), "test")
    preview = build_record(preview_of(source), trial.terminology)
    assert Prefilter.from_criteria(trial).settle(preview) is None
    evaluation = evaluate_patient(trial, build_record(source, trial.terminology), AS_OF)
    inclusion = next(r for r in evaluation.results if r.id.startswith("inclusion-1"))
    assert inclusion.outcome.truth.value == "unknown"
    without = build_record(
        preview_of(PatientResources("p", resources[:1], [None], "t")), trial.terminology
    )
    assert Prefilter.from_criteria(trial).settle(without) is not None
