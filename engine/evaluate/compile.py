"""Compile a loaded criteria file into evaluators, once; evaluate many patients with them.

Compilation resolves every concept against the terminology, converts every threshold to the
concept's canonical unit, builds status predicates and jsonpath filters, and fails early (with
the criteria file's line) on anything that cannot work: an unknown concept, a unit that does not
convert, a value test on a resource type that has no value. Evaluation then only walks small
objects over plain dicts.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from jsonpath_ng.exceptions import JsonPathParserError
from jsonpath_ng.ext.parser import parse as parse_jsonpath

from engine.attestations import Attestation
from engine.criteria.model import (
    AllOf,
    AnswerTest,
    AnyOf,
    AnyValueTest,
    Comparator,
    CriteriaFile,
    Criterion,
    CriterionKind,
    Expression,
    ManualAtom,
    NotOf,
    PatientAtom,
    QuantityTest,
    ReferenceLimitTest,
    ResourceAtom,
    SourcePosition,
    Trial,
    ValueTest,
    Window,
)
from engine.errors import CriteriaError, ErrorCollection, Location, TrialsieveError, UnitError
from engine.evaluate.outcome import Outcome, Truth, combine_all, combine_any, negate
from engine.evaluate.timing import (
    DateProblem,
    Span,
    age_in_years,
    clinical_status,
    parse_date_range,
    resource_span,
    verification_status,
)
from engine.normalise import Concept, DataProblem, Measurement, Terminology, measure
from engine.normalise.units import convert
from engine.record import PatientRecord

EVIDENCE_LIMIT = 5
"""At most this many resources are cited per atom (the most recent first)."""

OPEN_WORLD_TYPES = frozenset({"Observation"})
"""Absence means "unknown (missing data)" for these types, "not present" for the others."""

_COMPARE: dict[Comparator, Callable[[float, float], bool]] = {
    Comparator.LESS: operator.lt,
    Comparator.LESS_OR_EQUAL: operator.le,
    Comparator.GREATER: operator.gt,
    Comparator.GREATER_OR_EQUAL: operator.ge,
    Comparator.EQUAL: operator.eq,
    Comparator.NOT_EQUAL: operator.ne,
}


@dataclass(frozen=True)
class EvaluationContext:
    """Everything one patient's evaluation reads: the record, the as-of day, the attestations."""

    record: PatientRecord
    as_of: dt.date
    attestations: Mapping[str, Attestation]
    terminology: Terminology


class Node(Protocol):
    def evaluate(self, context: EvaluationContext) -> Outcome: ...


@dataclass(frozen=True)
class CompiledCriterion:
    criterion: Criterion
    root: Node

    @property
    def id(self) -> str:
        return self.criterion.id

    @property
    def kind(self) -> CriterionKind:
        return self.criterion.kind


@dataclass(frozen=True)
class CompiledCriteria:
    """A trial's criteria ready to evaluate: compile once, evaluate many patients."""

    source: CriteriaFile
    terminology: Terminology
    criteria: tuple[CompiledCriterion, ...]

    @property
    def trial(self) -> Trial:
        return self.source.trial

    @property
    def manual_ids(self) -> frozenset[str]:
        return frozenset(self.source.manual_atoms)


# --------------------------------------------------------------------------- boolean nodes


@dataclass(frozen=True)
class AllNode:
    operands: tuple[Node, ...]
    label: str

    def evaluate(self, context: EvaluationContext) -> Outcome:
        return combine_all([operand.evaluate(context) for operand in self.operands], self.label)


@dataclass(frozen=True)
class AnyNode:
    operands: tuple[Node, ...]
    label: str

    def evaluate(self, context: EvaluationContext) -> Outcome:
        return combine_any([operand.evaluate(context) for operand in self.operands], self.label)


@dataclass(frozen=True)
class NotNode:
    operand: Node
    label: str

    def evaluate(self, context: EvaluationContext) -> Outcome:
        return negate(self.operand.evaluate(context), self.label)


# --------------------------------------------------------------------------- manual and patient


@dataclass(frozen=True)
class ManualNode:
    atom: ManualAtom
    label: str

    def evaluate(self, context: EvaluationContext) -> Outcome:
        attestation = context.attestations.get(self.atom.id)
        if attestation is None:
            return Outcome(
                Truth.UNKNOWN,
                f"manual review: {self.atom.question}",
                self.label,
                manual=(self.atom.id,),
            )
        when = f" on {attestation.date.isoformat()}" if attestation.date else ""
        answer = "yes" if attestation.answer else "no"
        return Outcome(
            Truth.MET if attestation.answer else Truth.NOT_MET,
            f"{self.atom.question} {answer}, attested by {attestation.by}{when}",
            self.label,
        )


@dataclass(frozen=True)
class PatientNode:
    atom: PatientAtom
    label: str

    def evaluate(self, context: EvaluationContext) -> Outcome:
        patient = context.record.patient
        reference = context.record.label(patient)
        parts: list[Outcome] = []
        if self.atom.minimum_age is not None or self.atom.maximum_age is not None:
            parts.append(self._age(patient.get("birthDate"), context.as_of, reference))
        if self.atom.genders:
            parts.append(self._gender(patient.get("gender"), reference))
        return parts[0] if len(parts) == 1 else combine_all(parts, self.label)

    def _age(self, birth_date: object, as_of: dt.date, reference: str) -> Outcome:
        bounds = _age_bounds_text(self.atom.minimum_age, self.atom.maximum_age)
        if birth_date is None:
            return Outcome(
                Truth.UNKNOWN,
                f"{reference} has no birthDate; age {bounds} cannot be checked",
                self.label,
                missing=("Patient.birthDate",),
            )
        try:
            earliest, latest, _ = parse_date_range(birth_date, "birthDate")
        except DateProblem as problem:
            return Outcome(
                Truth.UNKNOWN, f"{reference}: {problem}", self.label, missing=("Patient.birthDate",)
            )
        oldest, youngest = age_in_years(earliest, as_of), age_in_years(latest, as_of)
        verdicts = {self._age_within(oldest), self._age_within(youngest)}
        if len(verdicts) > 1:
            return Outcome(
                Truth.UNKNOWN,
                f"birthDate {birth_date} is too coarse to tell whether age is {bounds}",
                self.label,
                missing=("Patient.birthDate",),
            )
        inside = verdicts.pop()
        age_text = str(oldest) if oldest == youngest else f"{youngest}-{oldest}"
        return Outcome(
            Truth.MET if inside else Truth.NOT_MET,
            f"age {age_text} on {as_of.isoformat()} is {'' if inside else 'not '}{bounds}",
            self.label,
            evidence=(reference,),
        )

    def _age_within(self, age: int) -> bool:
        low, high = self.atom.minimum_age, self.atom.maximum_age
        return (low is None or age >= low) and (high is None or age <= high)

    def _gender(self, gender: object, reference: str) -> Outcome:
        wanted = " or ".join(self.atom.genders)
        if not isinstance(gender, str):
            return Outcome(
                Truth.UNKNOWN,
                f"{reference} has no gender; {wanted} cannot be checked",
                self.label,
                missing=("Patient.gender",),
            )
        inside = gender in self.atom.genders
        return Outcome(
            Truth.MET if inside else Truth.NOT_MET,
            f"gender {gender} is {'' if inside else 'not '}{wanted}",
            self.label,
            evidence=(reference,),
        )


def _age_bounds_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low}-{high} years"
    return f">= {low} years" if low is not None else f"<= {high} years"


# --------------------------------------------------------------------------- resource atoms

StatusPredicate = Callable[[dict[str, Any], "Span | None", dt.date], bool]
ValueCheck = Callable[[Measurement], "bool | str"]


@dataclass(frozen=True)
class _Candidate:
    resource: dict[str, Any]
    span: Span | None
    reference: str


@dataclass(frozen=True)
class ResourceNode:
    atom: ResourceAtom
    label: str
    concept: Concept | None
    types: frozenset[str]
    status_predicates: Mapping[str, StatusPredicate]
    needs_current: bool
    filters: tuple[Any, ...]
    exclusions: tuple[Any, ...]
    value_check: ValueCheck | None
    subject: str

    @property
    def open_world(self) -> bool:
        return self.types <= OPEN_WORLD_TYPES

    def evaluate(self, context: EvaluationContext) -> Outcome:
        first_day = _window_start(self.atom.window, context.as_of)
        candidates, problems = self._candidates(context, first_day)
        window_text = _window_text(self.atom.window, first_day, context.as_of)
        if self.value_check is None:
            return self._presence(candidates, problems, window_text)
        return self._values(candidates, problems, window_text, context)

    def _candidates(
        self, context: EvaluationContext, first_day: dt.date | None
    ) -> tuple[list[_Candidate], list[str]]:
        record = context.record
        pool: Iterable[dict[str, Any]]
        if self.concept is not None:
            pool = record.resources_of_concept(self.concept.id)
        else:
            pool = (r for t in sorted(self.types) for r in record.resources_of_type(t))
        kept: list[_Candidate] = []
        problems: list[str] = []
        for resource in pool:
            resource_type = resource.get("resourceType")
            predicate = self.status_predicates.get(resource_type)  # type: ignore[arg-type]
            if predicate is None:
                continue
            if self.filters and not all(path.find(resource) for path in self.filters):
                continue
            if self.exclusions and any(path.find(resource) for path in self.exclusions):
                continue
            reference = record.label(resource)
            try:
                span = resource_span(resource)
            except DateProblem as problem:
                problems.append(f"{reference} {problem}")
                continue
            if span is None:
                if first_day is not None or self.needs_current:
                    problems.append(f"{reference} has no date")
                    continue
            elif not span.overlaps(first_day, context.as_of):
                continue
            if not predicate(resource, span, context.as_of):
                continue
            kept.append(_Candidate(resource, span, reference))
        kept.sort(key=_moment, reverse=True)
        return kept, problems

    def _presence(
        self, candidates: list[_Candidate], problems: list[str], window_text: str
    ) -> Outcome:
        needed = self.atom.minimum_count if self.atom.selection == "count" else 1
        found = len(candidates)
        evidence = tuple(c.reference for c in candidates[:EVIDENCE_LIMIT])
        if found >= needed:
            latest = _date_text(candidates[0].span)
            return Outcome(
                Truth.MET,
                f"{self.subject}: {found} found {window_text}{latest}",
                self.label,
                evidence=evidence,
            )
        if problems:
            return self._unusable(problems, window_text, evidence)
        if found == 0 and self.open_world:
            return self._missing(window_text)
        counted = f" ({found} of the {needed} required)" if needed > 1 else ""
        return Outcome(
            Truth.NOT_MET,
            f"{self.subject}: none on record {window_text}{counted}"
            if found == 0
            else f"{self.subject}: {found} found {window_text}{counted}",
            self.label,
            evidence=evidence,
        )

    def _values(
        self,
        candidates: list[_Candidate],
        problems: list[str],
        window_text: str,
        context: EvaluationContext,
    ) -> Outcome:
        assert self.value_check is not None and self.concept is not None
        selection = self.atom.selection
        if selection == "latest" and candidates:
            # Only the latest dated result counts, but a result whose date cannot be read may
            # be newer: such date problems (already in `problems`) keep the atom unknown.
            candidates = candidates[:1]
        passed: list[tuple[_Candidate, str]] = []
        failed: list[tuple[_Candidate, str]] = []
        values: list[tuple[Measurement, _Candidate, str]] = []
        for candidate in candidates:
            result = measure(candidate.resource, self.concept, context.terminology)
            if isinstance(result, DataProblem):
                problems.append(f"{candidate.reference} {result.field}: {result.message}")
                continue
            shown = _measurement_text(result, candidate)
            if selection in ("min", "max"):
                if result.value is None:
                    problems.append(f"{candidate.reference}: no numeric value")
                    continue
                values.append((result, candidate, shown))
                continue
            verdict = self.value_check(result)
            if isinstance(verdict, str):
                problems.append(f"{candidate.reference}: {verdict}")
            elif verdict:
                passed.append((candidate, shown))
            else:
                failed.append((candidate, shown))
        if selection in ("min", "max"):
            return self._extreme(values, problems, window_text)
        return self._decide(passed, failed, problems, window_text)

    def _extreme(
        self,
        values: list[tuple[Measurement, _Candidate, str]],
        problems: list[str],
        window_text: str,
    ) -> Outcome:
        assert self.value_check is not None
        if problems:
            return self._unusable(problems, window_text, ())
        if not values:
            return self._missing(window_text) if self.open_world else self._absent(window_text)
        pick = min if self.atom.selection == "min" else max
        measurement, candidate, shown = pick(values, key=lambda item: item[0].value or 0.0)
        verdict = self.value_check(measurement)
        if isinstance(verdict, str):
            return self._unusable([f"{candidate.reference}: {verdict}"], window_text, ())
        return self._verdict(verdict, f"{self.atom.selection} {shown}", (candidate.reference,))

    def _decide(
        self,
        passed: list[tuple[_Candidate, str]],
        failed: list[tuple[_Candidate, str]],
        problems: list[str],
        window_text: str,
    ) -> Outcome:
        selection = self.atom.selection
        test_text = self.atom.value.text if self.atom.value else ""
        if selection == "all":
            if failed:
                return self._verdict(False, failed[0][1], _references(failed))
            if problems:
                return self._unusable(problems, window_text, _references(passed))
            if not passed:
                return self._missing(window_text) if self.open_world else self._absent(window_text)
            return self._verdict(True, f"all {len(passed)} {test_text}", _references(passed))
        if selection == "latest" and problems:
            return self._unusable(problems, window_text, _references(passed + failed))
        needed = self.atom.minimum_count if selection == "count" else 1
        if len(passed) >= needed:
            shown = passed[0][1] if needed == 1 else f"{len(passed)} results {test_text}"
            return self._verdict(True, shown, _references(passed))
        if problems:
            return self._unusable(problems, window_text, _references(passed + failed))
        if not passed and not failed:
            return self._missing(window_text) if self.open_world else self._absent(window_text)
        if needed > 1:
            shown = f"{len(passed)} of the {needed} required results {test_text}"
        else:
            shown = failed[0][1] if failed else ""
        return self._verdict(False, shown, _references(failed or passed))

    def _verdict(self, met: bool, shown: str, evidence: tuple[str, ...]) -> Outcome:
        test_text = self.atom.value.text if self.atom.value else ""
        relation = "" if met else "not "
        if isinstance(self.atom.value, AnyValueTest):
            test_text = f"({test_text})" if not met else test_text
        elif test_text.startswith("is "):  # answer tests read "is positive" / "is not positive"
            test_text = test_text[3:]
        return Outcome(
            Truth.MET if met else Truth.NOT_MET,
            f"{self.subject}: {shown} is {relation}{test_text}",
            self.label,
            evidence=evidence,
        )

    def _missing(self, window_text: str) -> Outcome:
        return Outcome(
            Truth.UNKNOWN,
            f"{self.subject}: no result {window_text}",
            self.label,
            missing=(f"{self.subject} {window_text}",),
        )

    def _absent(self, window_text: str) -> Outcome:
        return Outcome(Truth.NOT_MET, f"{self.subject}: none on record {window_text}", self.label)

    def _unusable(
        self, problems: list[str], window_text: str, evidence: tuple[str, ...]
    ) -> Outcome:
        shown = "; ".join(problems[:3]) + (
            f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        )
        return Outcome(
            Truth.UNKNOWN,
            f"{self.subject}: unusable data {window_text}: {shown}",
            self.label,
            evidence=evidence,
            missing=(f"{self.subject} {window_text} (unusable: {problems[0]})",),
        )


def _moment(candidate: _Candidate) -> dt.datetime:
    return candidate.span.moment if candidate.span is not None else _EARLIEST


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)


def _references(items: Sequence[tuple[_Candidate, str]]) -> tuple[str, ...]:
    return tuple(candidate.reference for candidate, _ in items[:EVIDENCE_LIMIT])


def _date_text(span: Span | None) -> str:
    if span is None or span.start is None:
        return ""
    return f", latest {span.start.isoformat()}"


def _measurement_text(measurement: Measurement, candidate: _Candidate) -> str:
    if measurement.value is not None:
        unit = f" {measurement.unit}" if measurement.unit and measurement.unit != "1" else ""
        censored = f"{measurement.comparator} " if measurement.comparator else ""
        shown = f"{censored}{measurement.value:g}{unit}"
    else:
        shown = "/".join(sorted(measurement.answer_concepts)) or "a coded result"
    day = (
        f" on {candidate.span.start.isoformat()}" if candidate.span and candidate.span.start else ""
    )
    return f"{shown}{day} ({candidate.reference})"


def _window_start(window: Window, as_of: dt.date) -> dt.date | None:
    return window.duration.start_before(as_of) if window.duration is not None else None


def _window_text(window: Window, first_day: dt.date | None, as_of: dt.date) -> str:
    if first_day is None:
        return f"ever (up to {as_of.isoformat()})"
    name = f"{window.name} " if window.name else ""
    return f"within {name}{first_day.isoformat()} to {as_of.isoformat()}"


# --------------------------------------------------------------------------- status predicates

_OBSERVATION_DEFAULT = frozenset({"final", "amended", "corrected"})
_REFUTED = frozenset({"refuted", "entered-in-error"})
_CONDITION_ACTIVE = frozenset({"active", "recurrence", "relapse"})
_MEDICATION_EXCLUDED = frozenset(
    {"entered-in-error", "cancelled", "not-taken", "not-done", "draft"}
)
_MEDICATION_ACTIVE = {
    "MedicationStatement": frozenset({"active"}),
    "MedicationRequest": frozenset({"active"}),
    "MedicationAdministration": frozenset({"in-progress"}),
}
_PARTICIPATION = frozenset(
    {
        "on-study",
        "on-study-intervention",
        "on-study-observation",
        "off-study",
        "follow-up",
        "off-study-follow-up",
        "pending-on-study",
    }
)
TRIALSIEVE_IDENTIFIER_SYSTEM = "https://trialsieve.org/fhir/identifier"


def _covers_as_of(span: Span | None, as_of: dt.date) -> bool:
    return span is not None and span.overlaps(as_of, as_of)


def _status_predicate(resource_type: str, statuses: tuple[str, ...] | None) -> StatusPredicate:
    wanted = frozenset(statuses or ())
    if resource_type == "Observation":
        allowed = wanted or _OBSERVATION_DEFAULT
        return lambda resource, span, as_of: resource.get("status") in allowed
    if resource_type == "Condition":
        return _condition_predicate(wanted)
    if resource_type == "Procedure":
        allowed = wanted or frozenset({"completed"})
        return lambda resource, span, as_of: resource.get("status") in allowed
    if resource_type in _MEDICATION_ACTIVE:
        return _medication_predicate(resource_type, wanted)
    if resource_type == "AllergyIntolerance":
        return _allergy_predicate(wanted)
    if resource_type == "ResearchSubject":
        allowed = wanted or _PARTICIPATION
        return lambda resource, span, as_of: (
            resource.get("status") in allowed and not _written_by_trialsieve(resource)
        )
    raise ValueError(f"resource type {resource_type} is not supported")


def _condition_predicate(wanted: frozenset[str]) -> StatusPredicate:
    literal = wanted - {"active"}

    def predicate(resource: dict[str, Any], span: Span | None, as_of: dt.date) -> bool:
        if verification_status(resource) in _REFUTED:
            return False
        if not wanted:
            return True
        status = clinical_status(resource)
        if status in literal:
            return True
        if "active" not in wanted:
            return False
        has_abatement = "abatementDateTime" in resource or "abatementPeriod" in resource
        if has_abatement:
            return _covers_as_of(span, as_of)
        return status is None or status in _CONDITION_ACTIVE

    return predicate


def _medication_predicate(resource_type: str, wanted: frozenset[str]) -> StatusPredicate:
    literal = wanted - {"active"}
    active_codes = _MEDICATION_ACTIVE[resource_type]

    def predicate(resource: dict[str, Any], span: Span | None, as_of: dt.date) -> bool:
        status = resource.get("status")
        if not wanted:
            return status not in _MEDICATION_EXCLUDED
        if status in literal:
            return True
        return "active" in wanted and status in active_codes and _covers_as_of(span, as_of)

    return predicate


def _allergy_predicate(wanted: frozenset[str]) -> StatusPredicate:
    def predicate(resource: dict[str, Any], span: Span | None, as_of: dt.date) -> bool:
        if verification_status(resource) in _REFUTED:
            return False
        return not wanted or clinical_status(resource) in wanted

    return predicate


def _written_by_trialsieve(resource: dict[str, Any]) -> bool:
    return any(
        isinstance(identifier, dict)
        and str(identifier.get("system", "")).startswith(TRIALSIEVE_IDENTIFIER_SYSTEM)
        for identifier in resource.get("identifier") or ()
    )


# --------------------------------------------------------------------------- value tests


def _compile_value_check(
    test: ValueTest, concept: Concept, terminology: Terminology, where: Location
) -> ValueCheck:
    if isinstance(test, AnyValueTest):
        return _any_check(
            [_compile_value_check(one, concept, terminology, where) for one in test.tests]
        )
    if isinstance(test, QuantityTest):
        return _quantity_check(test, concept, where)
    if isinstance(test, ReferenceLimitTest):
        return _limit_check(test, concept)
    return _answer_check(test, terminology, where)


def _any_check(checks: list[ValueCheck]) -> ValueCheck:
    """Passes if an applicable check passes; fails if the applicable ones fail; else a reason."""

    def check(measurement: Measurement) -> bool | str:
        reasons: list[str] = []
        failed = False
        for one in checks:
            verdict = one(measurement)
            if verdict is True:
                return True
            if verdict is False:
                failed = True
            else:
                reasons.append(str(verdict))
        return False if failed else "; ".join(reasons)

    return check


def _quantity_check(test: QuantityTest, concept: Concept, where: Location) -> ValueCheck:
    if test.unit is None:
        if concept.unit not in (None, "1"):
            raise CriteriaError(
                f"'{test.text}' has no unit, but {concept.id} is measured in {concept.unit}; "
                f"write the unit (e.g. '{test.text} {concept.unit}')",
                where,
            )
        threshold = test.value
    else:
        if concept.unit is None:
            raise CriteriaError(
                f"'{test.text}' has a unit, but concept {concept.id} has no canonical unit "
                "in the mappings",
                where,
            )
        try:
            threshold = convert(test.value, test.unit, concept.unit, concept.molar_mass)
        except UnitError as error:
            raise CriteriaError(f"'{test.text}': {error.message}", where) from None

    def check(measurement: Measurement) -> bool | str:
        if measurement.value is None:
            return "no numeric value"
        return _compare_result(measurement, test.comparator, threshold)

    return check


def _limit_check(test: ReferenceLimitTest, concept: Concept) -> ValueCheck:
    default = concept.reference_high if test.limit == "high" else concept.reference_low
    name = "upper" if test.limit == "high" else "lower"

    def check(measurement: Measurement) -> bool | str:
        if measurement.value is None:
            return "no numeric value"
        own = measurement.reference_high if test.limit == "high" else measurement.reference_low
        limit = own if own is not None else default
        if limit is None:
            return f"no {name} reference limit on the result and none in the mappings"
        return _compare_result(measurement, test.comparator, test.factor * limit)

    return check


_Interval = tuple[float, bool, float, bool]
"""low, low included, high, high included."""

_RESULT_SIDE: dict[str, Callable[[float], _Interval]] = {
    "<": lambda value: (-math.inf, False, value, False),
    "<=": lambda value: (-math.inf, False, value, True),
    ">": lambda value: (value, False, math.inf, False),
    ">=": lambda value: (value, True, math.inf, False),
}


def _compare_result(
    measurement: Measurement, comparator: Comparator, threshold: float
) -> bool | str:
    """Compare a result with a threshold; a censored result (`< 20`) decides only when every
    value it allows gives the same answer, else it says why it cannot."""
    value = measurement.value
    assert value is not None
    if measurement.comparator is None:
        return _COMPARE[comparator](value, threshold)
    shown = f"{measurement.comparator} {value:g}"
    if comparator in (Comparator.EQUAL, Comparator.NOT_EQUAL):
        return f"the censored result {shown} cannot be tested for {comparator.value} {threshold:g}"
    result = _RESULT_SIDE[measurement.comparator](value)
    wanted = _RESULT_SIDE[comparator.value](threshold)
    if _inside(result, wanted):
        return True
    if _disjoint(result, wanted):
        return False
    return f"the censored result {shown} may or may not be {comparator.value} {threshold:g}"


def _inside(inner: _Interval, outer: _Interval) -> bool:
    low, low_in, high, high_in = inner
    outer_low, outer_low_in, outer_high, outer_high_in = outer
    above = low > outer_low or (low == outer_low and (outer_low_in or not low_in))
    below = high < outer_high or (high == outer_high and (outer_high_in or not high_in))
    return above and below


def _disjoint(first: _Interval, second: _Interval) -> bool:
    def before(left: _Interval, right: _Interval) -> bool:
        return left[2] < right[0] or (left[2] == right[0] and not (left[3] and right[1]))

    return before(first, second) or before(second, first)


INDETERMINATE = "indeterminate"
"""The answer concept of results that answer no question (equivocal, borderline)."""


def _answer_check(test: AnswerTest, terminology: Terminology, where: Location) -> ValueCheck:
    if not terminology.has_concept(test.answer_concept):
        raise CriteriaError(
            f"answer concept '{test.answer_concept}' is not defined in the mappings", where
        )
    wanted = test.answer_concept

    def check(measurement: Measurement) -> bool | str:
        answers = measurement.answer_concepts
        if wanted in answers:
            return True
        if INDETERMINATE in answers:
            return "an indeterminate result answers neither way"
        if answers:
            return False
        if measurement.value is not None:
            return f"a numeric result ({measurement.value:g}) where a coded answer was expected"
        return "no coded or text answer"

    return check


# --------------------------------------------------------------------------- compiler


def compile_criteria(source: CriteriaFile, terminology: Terminology) -> CompiledCriteria:
    """Compile every criterion; all problems are reported together (ErrorCollection)."""
    errors: list[TrialsieveError] = []
    compiled: list[CompiledCriterion] = []
    for criterion in source.criteria:
        try:
            root = _compile(criterion.expression, criterion, source, terminology)
        except ErrorCollection as collection:
            errors.extend(collection.errors)
            continue
        compiled.append(CompiledCriterion(criterion, root))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ErrorCollection(f"{len(errors)} problems in {source.path}", errors=errors)
    return CompiledCriteria(source, terminology, tuple(compiled))


def _location(
    position: SourcePosition | None, criterion: Criterion, source: CriteriaFile, field: str
) -> Location:
    if position is None:
        position = criterion.position
    return Location(
        file=position.file if position else source.path,
        line=position.line if position else None,
        column=position.column if position else None,
        criterion=criterion.id,
        field=field,
    )


def _compile(
    expression: Expression, criterion: Criterion, source: CriteriaFile, terminology: Terminology
) -> Node:
    errors: list[TrialsieveError] = []

    def visit(node: Expression) -> Node:
        label = node.label or ""
        if isinstance(node, AllOf | AnyOf):
            operands = tuple(visit(operand) for operand in node.operands)
            kind = AllNode if isinstance(node, AllOf) else AnyNode
            return kind(operands, label)
        if isinstance(node, NotOf):
            return NotNode(visit(node.operand), label)
        if isinstance(node, ManualAtom):
            return ManualNode(node, label or node.question)
        if isinstance(node, PatientAtom):
            return PatientNode(node, label or _patient_label(node))
        try:
            return _compile_resource(node, criterion, source, terminology)
        except TrialsieveError as error:
            errors.append(error)
            return ManualNode(ManualAtom("invalid", "invalid"), "invalid")

    root = visit(expression)
    if errors:
        raise ErrorCollection(f"criterion {criterion.id}", errors=errors)
    return root


def _patient_label(atom: PatientAtom) -> str:
    parts = []
    if atom.minimum_age is not None or atom.maximum_age is not None:
        parts.append(f"age {_age_bounds_text(atom.minimum_age, atom.maximum_age)}")
    if atom.genders:
        parts.append(" or ".join(atom.genders))
    return ", ".join(parts)


def _compile_resource(
    atom: ResourceAtom, criterion: Criterion, source: CriteriaFile, terminology: Terminology
) -> ResourceNode:
    concept: Concept | None = None
    if atom.concept is not None:
        if not terminology.has_concept(atom.concept):
            raise CriteriaError(
                f"concept '{atom.concept}' is not defined in the mappings",
                _location(atom.position, criterion, source, "concept"),
            )
        concept = terminology.concept(atom.concept)
    predicates = {t: _status_predicate(t, atom.status) for t in atom.resource_types}
    value_check = None
    if atom.value is not None:
        where = _location(atom.position, criterion, source, "value")
        if concept is None or set(atom.resource_types) != {"Observation"}:
            raise CriteriaError("a value test needs an Observation atom with a concept", where)
        value_check = _compile_value_check(atom.value, concept, terminology, where)
    subject = concept.display if concept is not None else " or ".join(atom.resource_types)
    return ResourceNode(
        atom=atom,
        label=atom.label or _resource_label(atom, subject),
        concept=concept,
        types=frozenset(atom.resource_types),
        status_predicates=predicates,
        needs_current="active" in (atom.status or ()),
        filters=_jsonpaths(atom.where, atom, criterion, source, "where"),
        exclusions=_jsonpaths(atom.where_not, atom, criterion, source, "where_not"),
        value_check=value_check,
        subject=subject,
    )


def _resource_label(atom: ResourceAtom, subject: str) -> str:
    value = f" {atom.value.text}" if atom.value is not None else ""
    window = (
        "ever"
        if atom.window.duration is None
        else f"within {atom.window.name or atom.window.duration.text}"
    )
    return f"{subject}{value} ({window})"


def _jsonpaths(
    expressions: tuple[str, ...],
    atom: ResourceAtom,
    criterion: Criterion,
    source: CriteriaFile,
    field: str,
) -> tuple[Any, ...]:
    compiled = []
    for expression in expressions:
        try:
            compiled.append(parse_jsonpath(expression))
        except (JsonPathParserError, Exception) as error:  # jsonpath-ng raises bare Exception
            raise CriteriaError(
                f"'{expression}' is not a valid jsonpath-ng expression: {error}",
                _location(atom.position, criterion, source, field),
            ) from None
    return tuple(compiled)
