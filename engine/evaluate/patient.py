"""Evaluate one patient against compiled criteria and derive the ResearchSubject status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Any

from engine.attestations import Attestation
from engine.criteria.model import CriterionKind
from engine.dataclass_init import cached_attribute, direct_init
from engine.errors import DateProblem, InputError, Location
from engine.evaluate.compile import CompiledCriteria, CompiledCriterion, EvaluationContext
from engine.evaluate.outcome import MET, NOT_MET, UNKNOWN, Outcome, is_shared
from engine.evaluate.timing import parse_date_range
from engine.record import DATING_FIELDS, PatientRecord
from engine.resource_types import ADMINISTRATIVE_GENDERS, administrative_gender_problem

EARLIEST_AS_OF = dt.date(1900, 1, 1)
LATEST_AS_OF = dt.date(2199, 12, 31)
"""The as-of days screening accepts: windows of up to 200 years stay inside the calendar."""


def as_of_problem(day: dt.date) -> str | None:
    """Why `day` cannot be an as-of day (None when it can)."""
    if EARLIEST_AS_OF <= day <= LATEST_AS_OF:
        return None
    return (
        f"the as-of day {day.isoformat()} is outside {EARLIEST_AS_OF.isoformat()} to "
        f"{LATEST_AS_OF.isoformat()}"
    )


class SubjectStatus(StrEnum):
    """The ResearchSubject.status codes (FHIR R4) that screening can reach."""

    INELIGIBLE = "ineligible"
    POTENTIAL_CANDIDATE = "potential-candidate"
    CANDIDATE = "candidate"
    ELIGIBLE = "eligible"


class CriterionVerdict(StrEnum):
    """A criterion's outcome seen from the patient's side (what a screener wants to know)."""

    CLEAR = "clear"  # inclusion met, or exclusion not met
    FAILS = "fails"  # inclusion not met, or exclusion met
    MISSING_DATA = "missing-data"  # unknown: the record cannot answer yet
    MANUAL_REVIEW = "manual-review"  # unknown: only a person can answer


CLEAR, FAILS = CriterionVerdict.CLEAR, CriterionVerdict.FAILS
MISSING_DATA, MANUAL_REVIEW = CriterionVerdict.MISSING_DATA, CriterionVerdict.MANUAL_REVIEW
"""CriterionVerdict's members as module names, read as globals where it counts (see
`engine.evaluate.outcome.MET`)."""
_INCLUSION = CriterionKind.INCLUSION
"""Read as a global (see `engine.evaluate.outcome.MET`)."""


@direct_init
@dataclass(frozen=True)
class CriterionResult:
    """One criterion's outcome for one patient."""

    criterion: CompiledCriterion
    outcome: Outcome

    @property
    def id(self) -> str:
        return self.criterion.id

    @property
    def kind(self) -> CriterionKind:
        return self.criterion.kind

    @cached_attribute
    def verdict(self) -> CriterionVerdict:
        truth = self.outcome.truth
        if truth is UNKNOWN:
            # Missing data (`Outcome.unknown_reasons`) wins over manual review.
            return MISSING_DATA if self.outcome.missing else MANUAL_REVIEW
        clear_truth = MET if self.criterion.kind is _INCLUSION else NOT_MET
        return CLEAR if truth is clear_truth else FAILS


@direct_init
@dataclass(frozen=True)
class VitalStatus:
    """A patient whose record says they died (FHIR R4 Patient.deceased[x]), as of a day.

    `certain`: they died on or before the as-of day (`deceasedBoolean` true, or a
    `deceasedDateTime` whose every possible day is on or before it): not a candidate,
    whatever the criteria say (ResearchSubject.status `ineligible`). Otherwise the record
    cannot tell whether they were alive on the as-of day (a date as imprecise as a month
    holding it, or unreadable): the status is at best `potential-candidate` (data missing).
    `reason` says which, naming the field, for the DetectedIssue and explanations.
    """

    reason: str
    certain: bool


def vital_status(patient: Mapping[str, Any], as_of: dt.date) -> VitalStatus | None:
    """What the Patient's `deceased[x]` (FHIR R4 Patient.deceased[x]: "indicates if the
    individual is deceased or not") says as of a day; None when alive on it (no
    `deceased[x]`, `deceasedBoolean` false, or a `deceasedDateTime` after the as-of day)."""
    if patient.get("deceasedBoolean") is True:
        return VitalStatus(
            "deceased (Patient.deceasedBoolean true, no date): not a candidate", True
        )
    died = patient.get("deceasedDateTime")
    if died is None:
        return None
    try:
        earliest, latest, _ = parse_date_range(died, "deceasedDateTime")
    except DateProblem:
        return VitalStatus(
            f"Patient.deceasedDateTime {died!r} cannot be read: whether the patient was "
            f"alive on {as_of.isoformat()} cannot be told",
            False,
        )
    if earliest > as_of:  # died after the as-of day: alive on it
        return None
    day = died[:10] if isinstance(died, str) else str(died)
    if latest <= as_of:
        return VitalStatus(f"deceased on {day} (Patient.deceasedDateTime): not a candidate", True)
    return VitalStatus(
        f"deceased in {day} (Patient.deceasedDateTime): whether before or after "
        f"{as_of.isoformat()} cannot be told",
        False,
    )


def status_given_vital(status: SubjectStatus, vital: VitalStatus | None) -> SubjectStatus:
    """The criteria's status for a patient with this vital status: `ineligible` for one
    surely deceased on the as-of day, at best `potential-candidate` when unknown."""
    if vital is None or status is _INELIGIBLE:
        return status
    if vital.certain:
        return _INELIGIBLE
    return _POTENTIAL_CANDIDATE


@direct_init
@dataclass(frozen=True)
class PatientEvaluation:
    """Every criterion's result for one patient, and the status they add up to.

    `not_evaluated` lists the criteria left out (in protocol order) when a cohort pre-filter
    settled the patient from part of the record; `results` then holds the others. Empty for
    every full evaluation. `newest_data` is the latest clinical date in the record (a
    result, diagnosis, order, procedure...), for "how fresh is this" in reports.
    """

    criteria: CompiledCriteria
    patient_id: str
    patient_reference: str
    as_of: dt.date
    results: tuple[CriterionResult, ...]
    data_problems: tuple[str, ...] = field(default=())
    not_evaluated: tuple[CompiledCriterion, ...] = field(default=())
    newest_data: dt.date | None = field(default=None)
    vital: VitalStatus | None = field(default=None)
    """Set when the record says the patient died (`vital_status`): the criteria are still
    evaluated and reported, but a patient dead on the as-of day is not a candidate."""
    computed_values: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    """What computed values' formulas found before their value tests
    (`EvaluationContext.computed_values`): a cohort run stores it for its re-runs."""

    @cached_attribute
    def status(self) -> SubjectStatus:
        return status_given_vital(subject_status(self.results), self.vital)

    def results_with(self, verdict: CriterionVerdict) -> tuple[CriterionResult, ...]:
        return tuple(result for result in self.results if result.verdict is verdict)


_SHARED_RESULTS: dict[tuple[int, int], CriterionResult] = {}
"""Each criterion's result for a shared outcome (`engine.evaluate.outcome.shared`: the same
for every patient holding nothing the criterion reads, an unanswered manual item), by the
identities of the criterion and the outcome (both kept alive by the result): made once, so
that its verdict is worked out once too."""
_SHARED_RESULTS_LIMIT = 10_000


def criterion_result(criterion: CompiledCriterion, outcome: Outcome) -> CriterionResult:
    """The criterion's result with this outcome: one object per criterion and shared outcome
    (`_SHARED_RESULTS`), else a new one."""
    key = (id(criterion), id(outcome))
    known = _SHARED_RESULTS.get(key)  # (its outcome is alive: the id is this outcome's)
    if known is not None:
        return known
    result = CriterionResult(criterion, outcome)
    if is_shared(outcome):
        if len(_SHARED_RESULTS) >= _SHARED_RESULTS_LIMIT:
            _SHARED_RESULTS.clear()
        _SHARED_RESULTS[key] = result
    return result


def _patient_problems(record: PatientRecord, as_of: dt.date, label: str) -> tuple[str, ...]:
    """Data problems of the Patient resource itself (`label`: its reference): a null id, a
    gender outside FHIR's administrative-gender codes, a birth date that is no date or is
    after the as-of day (an implausible value: no age is computed from it)."""
    patient = record.patient
    problems: list[str] = []
    if "id" in patient and patient["id"] is None:
        problems.append(
            f"{label}, field id: null is not a FHIR value (the id was taken from the fullUrl)"
        )
    gender = patient.get("gender")
    if gender is not None and (not isinstance(gender, str) or gender not in ADMINISTRATIVE_GENDERS):
        problems.append(f"{label}, field gender: {administrative_gender_problem(gender)}")
    birth_date = patient.get("birthDate")
    try:
        earliest, _, _ = parse_date_range(birth_date, "birthDate")
    except DateProblem as problem:
        if birth_date is not None:
            problems.append(f"{label}, field {problem}; no age is computed from it")
        return tuple(problems)
    if earliest > as_of:
        problems.append(
            f"{label}, field birthDate: implausible value: {birth_date} is after the as-of day "
            f"{as_of.isoformat()}"
        )
    return tuple(problems)


def subject_status(results: tuple[CriterionResult, ...]) -> SubjectStatus:
    """ineligible if anything fails; potential-candidate if data is missing; candidate if only
    manual review remains; eligible when every criterion is clear (manual items attested)."""
    return status_of_verdicts(map(_verdict_of, results))


def status_of_verdicts(verdicts: Iterable[CriterionVerdict]) -> SubjectStatus:
    """`subject_status` of the criteria's verdicts."""
    found = set(verdicts)
    if FAILS in found:
        return _INELIGIBLE
    if MISSING_DATA in found:
        return _POTENTIAL_CANDIDATE
    if MANUAL_REVIEW in found:
        return _CANDIDATE
    return _ELIGIBLE


_verdict_of = attrgetter("verdict")
_INELIGIBLE, _POTENTIAL_CANDIDATE = SubjectStatus.INELIGIBLE, SubjectStatus.POTENTIAL_CANDIDATE
_CANDIDATE, _ELIGIBLE = SubjectStatus.CANDIDATE, SubjectStatus.ELIGIBLE


def evaluate_patient(
    criteria: CompiledCriteria,
    record: PatientRecord,
    as_of: dt.date,
    attestations: Mapping[str, Attestation] | None = None,
    *,
    only: Container[str] | None = None,
    decided: Mapping[str, Outcome] | None = None,
) -> PatientEvaluation:
    """Evaluate every criterion for one patient as of a day (deterministic for that day).

    `attestations` maps manual item ids to a person's answers for this patient.
    A cohort pre-filter evaluates part of the criteria on part of the record: `only` names
    the criteria to evaluate, `decided` gives outcomes known without evaluating; the rest
    become `not_evaluated`.
    """
    problem = as_of_problem(as_of)
    if problem is not None:
        raise InputError(problem, Location(field="as-of"))
    unavailable = record.unavailable_types
    context = EvaluationContext(
        record,
        as_of,
        attestations or {},
        criteria.terminology,
        unavailable_types=criteria.unavailable_types.union(unavailable)
        if unavailable
        else criteria.unavailable_types,
        unavailable_reasons=unavailable,
    )
    results: list[CriterionResult] = []
    skipped: list[CompiledCriterion] = []
    if decided is None and only is None:  # the usual case: every criterion evaluated
        for criterion in criteria.criteria:
            results.append(criterion_result(criterion, criterion.root.evaluate(context)))
    else:
        for criterion in criteria.criteria:
            known = decided.get(criterion.id) if decided is not None else None
            if known is not None:
                results.append(criterion_result(criterion, known))
            elif only is None or criterion.id in only:
                results.append(criterion_result(criterion, criterion.root.evaluate(context)))
            else:
                skipped.append(criterion)
    citation = context.patient_citation  # the Patient's reference, when an atom made it
    patient_reference = citation[0][0] if citation else record.label(record.patient)
    problems = (
        tuple(map(str, record.data_problems))
        + record.source_problems
        + _patient_problems(record, as_of, patient_reference)
    )
    if unavailable:
        problems += tuple(
            f"{resource_type} {why}: criteria over it are unknown"
            for resource_type, why in unavailable.items()
        )
    return PatientEvaluation(
        criteria=criteria,
        patient_id=record.patient_id,
        patient_reference=patient_reference,
        as_of=as_of,
        results=tuple(results),
        data_problems=problems,
        not_evaluated=tuple(skipped),
        newest_data=newest_data_date(record),
        vital=vital_status(record.patient, as_of),
        computed_values=context.computed_values,
    )


def newest_data_date(record: PatientRecord) -> dt.date | None:
    """The latest day any dating field of the record names (`engine.resource_types`; dates
    read as their `YYYY-MM-DD` part, partial dates ignored): `PatientRecord.newest_data_day`."""
    newest = record.newest_data_day()
    try:
        return dt.date.fromisoformat(newest) if newest else None
    except ValueError:
        return None


def data_day(resource: dict[str, Any]) -> str:
    """The latest first-ten-characters of the resource's dating fields (a Period's end, else
    its start), as `newest_data_date` compares them; empty when none is ten characters long."""
    newest = ""
    for container, name in DATING_FIELDS.get(resource.get("resourceType", ""), ()):
        if container is None:
            value = resource.get(name)
        else:
            holder = resource.get(container)
            value = holder.get(name) if type(holder) is dict else None
        if type(value) is dict:
            value = value.get("end") or value.get("start")
        if type(value) is str and len(value) >= 10 and value[:10] > newest:
            newest = value[:10]
    return newest
