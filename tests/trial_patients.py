"""What the per-trial hand-written patient tests (`tests/<nct id>/`) share.

Each trial folder keeps its own resource builders (`*builders.py`), its baseline patient and
manual answers (`*baseline.py`) and its cases (`*cases.py`); this module holds the machinery
they have in common:

- code system URIs, the as-of day and `days_ago`;
- `Site`: a trial's time zone and fullUrl namespace, giving `date_time`, `full_url`, `bundle`
  (one patient's resources in a Bundle) and `evaluate` (the Bundle read and evaluated as the
  engine reads a file);
- `attest` and `variant_of` (a baseline plus or minus a few resources);
- `Case`, `Cases` and `short_id`: one hand-written patient per criterion and its verdict.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict, Unpack

import orjson

from engine.attestations import Attestation
from engine.criteria.model import CriterionKind
from engine.evaluate import CompiledCriteria, CriterionVerdict, PatientEvaluation, evaluate_patient
from engine.record import build_record
from engine.sources import parse_bundle

Resource = dict[str, Any]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
CPT = "http://www.ama-assn.org/go/cpt"
UCUM = "http://unitsofmeasure.org"
CLINICALTRIALS = "https://clinicaltrials.gov"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

AS_OF = dt.date(2026, 11, 1)
"""The day every test evaluates on."""

SUBJECT_FIELD = {
    "Observation": "subject",
    "Condition": "subject",
    "Procedure": "subject",
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "MedicationAdministration": "subject",
    "AllergyIntolerance": "patient",
    "ResearchSubject": "individual",
}
"""The field of each resource type that refers to the patient."""

_BARE_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def days_ago(days: int) -> str:
    """The day `days` before the as-of day, as YYYY-MM-DD."""
    return (AS_OF - dt.timedelta(days=days)).isoformat()


def attest(answers: Mapping[str, bool]) -> dict[str, Attestation]:
    """Attestations (manual id -> answer) by one investigator on the day after the as-of day."""
    day = AS_OF + dt.timedelta(days=1)
    return {
        manual_id: Attestation(manual_id, answer, "Dr. Test Investigator", day)
        for manual_id, answer in answers.items()
    }


def variant_of(
    baseline: Iterable[Resource],
    add: Iterable[Resource] = (),
    remove: Iterable[str] = (),
    replace_patient: Resource | None = None,
) -> list[Resource]:
    """The baseline without the resources whose ids are in `remove`, plus `add`.

    `replace_patient` swaps the baseline Patient for another one (same id).
    """
    baseline = tuple(baseline)
    removed = frozenset(remove)
    unknown = removed - {resource["id"] for resource in baseline}
    if unknown:
        raise ValueError(f"not in the baseline: {sorted(unknown)}")
    resources = [resource for resource in baseline if resource["id"] not in removed]
    if replace_patient is not None:
        resources = [replace_patient if r["resourceType"] == "Patient" else r for r in resources]
    return [*resources, *add]


@dataclass(frozen=True)
class Site:
    """A trial site's time of day for bare days and the namespace of its fullUrls."""

    time_of_day: str
    namespace: uuid.UUID

    def date_time(self, value: str) -> str:
        """A FHIR dateTime: a bare day gets the time and time zone; anything else is kept."""
        return value + self.time_of_day if _BARE_DAY.match(value) else value

    def full_url(self, resource: Resource) -> str:
        """The resource's `urn:uuid` fullUrl, derived from its type and id."""
        key = f"{resource['resourceType']}/{resource['id']}"
        return f"urn:uuid:{uuid.uuid5(self.namespace, key)}"

    def bundle(self, *resources: Resource, bundle_type: str = "collection") -> Resource:
        """A collection (or transaction) Bundle of one patient's resources.

        Exactly one resource must be the Patient; every other resource gets a reference to it
        (`subject`, `patient` or `individual`, by type). The inputs are not modified.
        """
        patients = [resource for resource in resources if resource["resourceType"] == "Patient"]
        if len(patients) != 1:
            raise ValueError(f"a patient Bundle needs exactly one Patient, found {len(patients)}")
        patient_url = self.full_url(patients[0])
        entries: list[Resource] = []
        for original in resources:
            resource = copy.deepcopy(original)
            subject_field = SUBJECT_FIELD.get(resource["resourceType"])
            if subject_field is not None:
                resource[subject_field] = {"reference": patient_url}
            entry: Resource = {"fullUrl": self.full_url(resource), "resource": resource}
            if bundle_type == "transaction":
                entry["request"] = {"method": "POST", "url": resource["resourceType"]}
            entries.append(entry)
        return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}

    def evaluate(
        self,
        trial: CompiledCriteria,
        resources: Iterable[Resource],
        answers: Mapping[str, bool] | None = None,
        bundle_type: str = "collection",
    ) -> PatientEvaluation:
        """Bundle the resources, read the Bundle as the engine reads a file, evaluate as of
        AS_OF with the answers attested."""
        document = self.bundle(*resources, bundle_type=bundle_type)
        source = parse_bundle(orjson.dumps(document), origin="test-patient.json")
        record = build_record(source, trial.terminology)
        return evaluate_patient(trial, record, AS_OF, attest(answers or {}))


# ---------------------------------------------------------------------------- cases

CLEAR = CriterionVerdict.CLEAR
FAILS = CriterionVerdict.FAILS
MISSING = CriterionVerdict.MISSING_DATA
MANUAL = CriterionVerdict.MANUAL_REVIEW


class Role(StrEnum):
    MEETS = "meets"
    FAILS = "fails"
    SILENT = "silent"


@dataclass(frozen=True)
class Case:
    """One hand-written patient for one criterion and the verdict expected for it."""

    criterion: str
    name: str
    role: Role
    expected: CriterionVerdict
    add: tuple[Resource, ...] = ()
    remove: tuple[str, ...] = ()
    answers: Mapping[str, bool] = field(default_factory=dict)
    patient: Resource | None = None
    reason: tuple[str, ...] = ()
    """Texts the criterion's reason must contain (what decided: a value, a field, a resource)."""
    evidence: tuple[str, ...] = ()
    """References the criterion's evidence must contain."""
    xfail: str | None = None
    """Why the engine does not behave like this yet (the test is then a strict xfail)."""

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"{self.criterion}:{slug}"


def short_id(criterion_id: str) -> str:
    """`exclusion-7-screening-blood-counts` -> `exclusion-7` (how cases name criteria)."""
    found = re.match(r"^(inclusion|exclusion)-\d+", criterion_id)
    assert found, f"criterion id {criterion_id} does not start with inclusion-N / exclusion-N"
    return found.group(0)


class Details(TypedDict, total=False):
    """The optional fields of a Case, as keyword arguments."""

    add: tuple[Resource, ...]
    remove: tuple[str, ...]
    answers: Mapping[str, bool]
    patient: Resource
    reason: tuple[str, ...]
    evidence: tuple[str, ...]
    xfail: str


@dataclass(frozen=True)
class Cases:
    """Case constructors for one criterion: `meets` expects clear, `fails` expects fails.

    `default_answers` are the attestations of a case that gives none.
    """

    criterion: str
    default_answers: Mapping[str, bool] = field(default_factory=dict)

    def _case(self, name: str, role: Role, expected: CriterionVerdict, details: Details) -> Case:
        answers = details.pop("answers", dict(self.default_answers))
        return Case(self.criterion, name, role, expected, answers=answers, **details)

    def meets(self, name: str, **details: Unpack[Details]) -> Case:
        return self._case(name, Role.MEETS, CLEAR, details)

    def fails(self, name: str, **details: Unpack[Details]) -> Case:
        return self._case(name, Role.FAILS, FAILS, details)

    def silent(self, name: str, expected: CriterionVerdict, **details: Unpack[Details]) -> Case:
        return self._case(name, Role.SILENT, expected, details)

    def manual(self, manual_id: str, kind: CriterionKind) -> list[Case]:
        """A pure manual criterion: unattested, attested yes, attested no."""
        inclusion = kind is CriterionKind.INCLUSION
        yes, no = (self.meets, self.fails) if inclusion else (self.fails, self.meets)
        others = {key: value for key, value in self.default_answers.items() if key != manual_id}
        return [
            self.silent("unattested", MANUAL, answers=others, reason=("manual review",)),
            yes("attested yes", answers={**others, manual_id: True}),
            no("attested no", answers={**others, manual_id: False}),
        ]


def example_with_patient_fields(path: Path, **fields: Any) -> dict[str, Any]:
    """A shipped example's Bundle (`path`) with `fields` set on its Patient (a copy)."""
    bundle: dict[str, Any] = copy.deepcopy(orjson.loads(path.read_bytes()))
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"].update(fields)
    return bundle
