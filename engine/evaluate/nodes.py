"""The evaluator's nodes: Kleene combinations, manual and patient atoms, resource queries.

Each node answers `evaluate(context) -> Outcome` over plain dicts; nodes are built once by
`engine.evaluate.compile` and shared by every patient.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

from engine.attestations import Attestation
from engine.criteria.model import (
    AnyValueTest,
    ManualAtom,
    PatientAtom,
    PerUnitTest,
    Relation,
    ResourceAtom,
    Window,
)
from engine.errors import DateProblem
from engine.evaluate.jsonpath_filter import JsonPathFilter
from engine.evaluate.outcome import (
    MET,
    NOT_MET,
    UNKNOWN,
    Cited,
    Outcome,
    Truth,
    combine,
    combine_all,
    is_shared,
    negate,
    shared,
    with_atom,
)
from engine.evaluate.status import StatusPredicate, status_alone, unreadable_status
from engine.evaluate.timing import (
    ONSET_FIELDS,
    UNCERTAIN_VERIFICATION,
    Span,
    age_in_years,
    clinical_status,
    day_before,
    parse_date_range,
    resource_span,
    undated_onset,
    verification_status,
)
from engine.evaluate.values import (
    PerUnitReading,
    ValueCheck,
    deciding_number,
    per_unit_reading,
    value_thresholds,
)
from engine.normalise import Concept, DataProblem, Measurement, Terminology, measure
from engine.normalise.medication_exposure import exposure_period, unknown_end_text, use_in_days
from engine.record import UNIDENTIFIED_CONCEPTS, PatientRecord
from engine.resource_types import (
    ADMINISTRATIVE_GENDERS,
    MEDICATION_REFERENCING_TYPES,
    MEDICATION_TYPES,
    NOT_ORDER_INTENTS,
    RESOURCE_TYPES,
    administrative_gender_problem,
)

EVIDENCE_LIMIT = 5
"""At most this many resources are cited per atom (the most recent first)."""

NOT_EXPORTED = "not exported by the server"
"""Why a type is unavailable when the source gave no reason (a Bulk export left it out)."""


@dataclass(frozen=True, init=False)
class EvaluationContext:
    """Everything one patient's evaluation reads: the record, the as-of day, the attestations."""

    record: PatientRecord
    as_of: dt.date
    attestations: Mapping[str, Attestation]
    terminology: Terminology
    anchor_days: dict[tuple[int, str], tuple[dt.date, dt.date] | Outcome] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Anchor atoms' event days (earliest and latest possible) for this patient
    (`ResourceNode.anchor_days`), memoised."""
    unavailable_types: frozenset[str] = frozenset()
    """Types the source could not provide (`CompiledCriteria.unavailable_types`, and the
    record's `unavailable_types`)."""
    unavailable_reasons: Mapping[str, str] = field(default_factory=dict)
    """Why each unavailable type is, as a phrase after the type's name ("not available from
    the server (HTTP 403 Forbidden)"); a type without one was not exported by the server."""
    spans: dict[int, Span | DateProblem | None] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Each resource's span (or why it has none), by the resource's identity, once read:
    several atoms often read the same resources (40% of span reads were repeats)."""
    path_matches: dict[tuple[int, int], bool] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Whether a jsonpath filter (`where`, `where_not`) finds anything in a resource, by the
    identities of the compiled path and the resource, once run: atoms often share filters
    (compiled once per expression, `engine.evaluate.compile`)."""
    patient_citation: list[tuple[str, tuple[Cited, ...]]] = field(
        default_factory=list, compare=False, repr=False
    )
    """The Patient's reference and citation, once made (`patient_cited`)."""
    exposure_periods: dict[int, Any] = field(default_factory=dict, compare=False, repr=False)
    """Each medication resource's period of use (or why it has none), by the resource's
    identity, once read (`engine.evaluate.exposure`: several exposures read the same drugs)."""
    reaches: dict[str, tuple[dt.date, dt.date] | None] = field(
        default_factory=dict, compare=False, repr=False
    )
    """How late each concept's resources reach (`reach_of`), by concept, once worked out."""
    measurements: dict[int, tuple[Concept, Terminology, Measurement]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """The value an atom with a value test read last of a resource (by its identity), with
    the concept and terminology read for: what `_cite` gives the resources it cites."""
    computed_values: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """What each computed value's formula found for this patient before its value test, by
    the computation's key (`engine.evaluate.computed`), as JSON data: a cohort run stores
    it, so that a re-run after editing the test (a threshold) does not compute it again."""

    def __init__(
        self,
        record: PatientRecord,
        as_of: dt.date,
        attestations: Mapping[str, Attestation],
        terminology: Terminology,
        *,
        unavailable_types: frozenset[str] = frozenset(),
        unavailable_reasons: Mapping[str, str] | None = None,
        computed_values: dict[str, Any] | None = None,
    ) -> None:
        # Straight into the instance's dict, as `engine.dataclass_init.direct_init` makes
        # `Outcome`'s __init__ (written out here: fields made per context, one per patient).
        fields = self.__dict__
        fields["record"] = record
        fields["as_of"] = as_of
        fields["attestations"] = attestations
        fields["terminology"] = terminology
        fields["anchor_days"] = {}
        fields["unavailable_types"] = unavailable_types
        fields["unavailable_reasons"] = {} if unavailable_reasons is None else unavailable_reasons
        fields["spans"] = {}
        fields["path_matches"] = {}
        fields["patient_citation"] = []
        fields["exposure_periods"] = {}
        fields["reaches"] = {}
        fields["measurements"] = {}
        fields["computed_values"] = {} if computed_values is None else computed_values

    def span_of(self, resource: dict[str, Any]) -> Span | DateProblem | None:
        """The resource's span (None: undated; a DateProblem: why its dates cannot be read),
        read once per patient (`spans`)."""
        spans = self.spans
        span = spans.get(id(resource), _UNREAD)
        if span is _UNREAD:
            try:
                span = resource_span(resource)
            except DateProblem as problem:
                span = problem
            spans[id(resource)] = span
        return span  # type: ignore[no-any-return]

    def patient_cited(self) -> tuple[str, tuple[Cited, ...]]:
        """The Patient's reference and its citation, made once per patient (`patient_citation`:
        patient atoms and computed values reading age or sex cite the Patient)."""
        citation = self.patient_citation
        if citation:
            return citation[0]
        reference, patient = self.record.cited_patient()
        made = (reference, (Cited(reference, patient),))
        citation.append(made)
        return made

    def reach_of(self, concept_id: str) -> tuple[dt.date, dt.date] | None:
        """The latest day any resource of the concept may have ended and the latest it may
        have begun, when each has a readable span with a start and an end (None otherwise):
        a window beginning after it holds none of them, and none is a problem there. Worked
        out once per patient and concept (several atoms read the same results, and most of
        them are older than a screening window)."""
        reaches = self.reaches
        if concept_id in reaches:
            return reaches[concept_id]
        latest_end = latest_start = None
        reach: tuple[dt.date, dt.date] | None = None
        for resource in self.record.resources_of_concept(concept_id):
            span = self.span_of(resource)
            if type(span) is not Span or span.start is None or span.end is None:
                break
            began = span.latest_start or span.start
            if latest_end is None or span.end > latest_end:
                latest_end = span.end
            if latest_start is None or began > latest_start:
                latest_start = began
        else:
            if latest_end is not None and latest_start is not None:
                reach = (latest_end, latest_start)
        reaches[concept_id] = reach
        return reach


class Node(Protocol):
    def evaluate(self, context: EvaluationContext) -> Outcome: ...


@dataclass(frozen=True)
class Reads:
    """What a part of a criterion reads, when that part answers the same for every patient
    whose record holds none of it: each atom is a resource atom (with `before:`/`after:` the
    as-of date only), a medication use (`engine.evaluate.exposure`) or a manual item. A
    resource atom or medication use with a concept reads that concept's resources, one
    without a concept (`resource:` and filters only) every resource of its types. A record
    with no resource of these concepts, none of these whole types, no answer to these manual
    items and every type available gets the same (shared) outcome as every other such
    record, so it is made once per as-of day."""

    concepts: frozenset[str]
    types: frozenset[str]
    manual_ids: frozenset[str]
    whole_types: frozenset[str] = frozenset()
    """The types read whatever their code (atoms without a concept)."""

    def unread_by(self, context: EvaluationContext) -> bool:
        """Whether the context's patient holds nothing this part reads (see the class)."""
        if context.attestations and not self.manual_ids.isdisjoint(context.attestations):
            return False
        if context.unavailable_types and not self.types.isdisjoint(context.unavailable_types):
            return False
        record = context.record
        if self.whole_types and any(map(record.resources_of_type, self.whole_types)):
            return False
        return not record.holds_any_of(self.concepts)


def reads_of(operands: Iterable[Node]) -> Reads | None:
    """What the operands read, when each answers the same for every patient that holds none
    of it (`Reads`); None otherwise."""
    concepts: set[str] = set()
    types: set[str] = set()
    manual_ids: set[str] = set()
    whole_types: set[str] = set()
    for operand in operands:
        if type(operand) is ManualNode:
            manual_ids.add(operand.atom.id)
            continue
        if type(operand) is ResourceNode:
            if not operand.as_of_anchored:
                return None
            if operand.concept is None:
                whole_types.update(operand.types)
            else:
                concepts.add(operand.concept.id)
                concepts.update(operand.unidentified_concepts)
            types.update(operand.types)
            continue
        reads = getattr(operand, "reads", None)
        if type(reads) is not Reads:  # (a medication use knows its own: `ExposureNode.reads`)
            return None
        concepts.update(reads.concepts)
        types.update(reads.types)
        manual_ids.update(reads.manual_ids)
        whole_types.update(reads.whole_types)
    return Reads(
        frozenset(concepts), frozenset(types), frozenset(manual_ids), frozenset(whole_types)
    )


def _same_for_all(
    node: _OperandsNode | NotNode,
    context: EvaluationContext,
    make: Callable[[EvaluationContext], Outcome],
) -> Outcome:
    """The outcome of a node for a patient holding nothing it reads (`Reads.unread_by`):
    made once per as-of day (`make(context)`) and kept in the node's `unread` (when shared,
    as it always is unless the process's shared outcomes are at their limit)."""
    known = node.unread.get(context.as_of)
    if known is not None:
        return known
    outcome = make(context)
    if is_shared(outcome):
        node.unread[context.as_of] = outcome
    return outcome


# --------------------------------------------------------------------------- boolean nodes


@dataclass(frozen=True)
class _OperandsNode:
    """A node combining its operands' outcomes (Kleene: `deciding` wins), the same for every
    patient who holds nothing they read."""

    deciding: ClassVar[Truth]
    """The truth that decides: not met for `all`, met for `any`."""
    operands: tuple[Node, ...]
    label: str
    reads: Reads | None = field(default=None, init=False, compare=False, repr=False)
    """What the operands read, when they answer the same for every patient holding none of
    it (`Reads`)."""
    unread: dict[dt.date, Outcome] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """The outcome for a patient holding nothing of `reads`, by as-of day."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", reads_of(self.operands))

    def evaluate(self, context: EvaluationContext) -> Outcome:
        reads = self.reads
        if reads is not None and reads.unread_by(context):
            known = self.unread.get(context.as_of)  # `_same_for_all`'s, read inline
            return known if known is not None else _same_for_all(self, context, self._combined)
        outcomes = []
        for operand in self.operands:  # a loop, not a comprehension: no frame of its own
            outcomes.append(operand.evaluate(context))
        return combine(outcomes, self.label, self.deciding)

    def _combined(self, context: EvaluationContext) -> Outcome:
        outcomes = []
        for operand in self.operands:
            outcomes.append(operand.evaluate(context))
        return combine(outcomes, self.label, self.deciding)


@dataclass(frozen=True)
class AllNode(_OperandsNode):
    deciding = NOT_MET


@dataclass(frozen=True)
class AnyNode(_OperandsNode):
    deciding = MET


@dataclass(frozen=True)
class NotNode:
    operand: Node
    label: str
    reads: Reads | None = field(default=None, init=False, compare=False, repr=False)
    """What the operand reads (`_OperandsNode.reads`)."""
    unread: dict[dt.date, Outcome] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """The outcome for a patient holding nothing of `reads`, by as-of day."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", reads_of((self.operand,)))

    def evaluate(self, context: EvaluationContext) -> Outcome:
        reads = self.reads
        if reads is not None and reads.unread_by(context):
            return _same_for_all(self, context, self._negated)
        return self._negated(context)

    def _negated(self, context: EvaluationContext) -> Outcome:
        return negate(self.operand.evaluate(context), self.label)


# --------------------------------------------------------------------------- manual and patient


@dataclass(frozen=True)
class ManualNode:
    atom: ManualAtom
    label: str
    _unanswered: list[Outcome] = field(default_factory=list, init=False, repr=False, compare=False)
    """The outcome while no one has answered (the same for every patient), once made."""

    def evaluate(self, context: EvaluationContext) -> Outcome:
        attestation = context.attestations.get(self.atom.id)
        if attestation is None:
            if self._unanswered:  # shared when made (`shared` cannot share it later either)
                return self._unanswered[0]
            unanswered = shared(
                Outcome(
                    UNKNOWN,
                    f"manual review: {self.atom.question}",
                    self.label,
                    manual=(self.atom.id,),
                    atom=self.atom,
                )
            )
            self._unanswered.append(unanswered)
            return unanswered
        when = f" on {attestation.date.isoformat()}" if attestation.date else ""
        answer = "yes" if attestation.answer else "no"
        return Outcome(
            MET if attestation.answer else NOT_MET,
            f"{self.atom.question} {answer}, attested by {attestation.by}{when}",
            self.label,
            atom=self.atom,
        )


_AGES_LIMIT = 10_000
"""Age verdicts kept per patient atom (by birth date and as-of day; cleared when full)."""


@dataclass(frozen=True)
class PatientNode:
    atom: PatientAtom
    label: str
    _ages: dict[tuple[str, dt.date], tuple[Truth, str, tuple[str, ...], bool]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """The age part by birth date text and as-of day, when it names no patient: truth,
    reason, missing, whether it cites the Patient as evidence."""
    _genders_text: str = field(init=False, repr=False, compare=False)
    """The genders asked for, as the reasons say them ("female or male")."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_genders_text", " or ".join(self.atom.genders))

    def evaluate(self, context: EvaluationContext) -> Outcome:
        patient = context.record.patient
        citation = context.patient_citation
        reference, cited = citation[0] if citation else context.patient_cited()
        parts: list[Outcome] = []
        if self.atom.minimum_age is not None or self.atom.maximum_age is not None:
            parts.append(self._age(patient.get("birthDate"), context.as_of, reference, cited))
        if self.atom.genders:
            parts.append(self._gender(patient.get("gender"), reference, cited))
        return parts[0] if len(parts) == 1 else combine_all(parts, self.label)

    def _part(
        self,
        truth: Truth,
        reason: str,
        cited: tuple[Cited, ...],
        evidence: tuple[str, ...] = (),
        missing: tuple[str, ...] = (),
    ) -> Outcome:
        """One part's outcome (age or gender), with the atom and the Patient it cites."""
        return Outcome(truth, reason, self.label, evidence, missing, atom=self.atom, cited=cited)

    def _age(
        self, birth_date: object, as_of: dt.date, reference: str, cited: tuple[Cited, ...]
    ) -> Outcome:
        if type(birth_date) is str:
            known = self._ages.get((birth_date, as_of))
            if known is not None:
                truth, reason, missing, cites = known
                evidence = (reference,) if cites else ()
                return self._part(truth, reason, cited, evidence, missing)
        outcome = self._age_anew(birth_date, as_of, reference, cited)
        if type(birth_date) is str and reference not in outcome.reason:
            if len(self._ages) >= _AGES_LIMIT:
                self._ages.clear()
            cites = outcome.evidence == (reference,)
            self._ages[birth_date, as_of] = (outcome.truth, outcome.reason, outcome.missing, cites)
        return outcome

    def _age_anew(
        self, birth_date: object, as_of: dt.date, reference: str, cited: tuple[Cited, ...]
    ) -> Outcome:
        bounds = age_bounds_text(self.atom.minimum_age, self.atom.maximum_age)
        if birth_date is None:
            return self._part(
                UNKNOWN,
                f"{reference} has no birthDate; age {bounds} cannot be checked",
                cited,
                missing=("Patient.birthDate",),
            )
        try:
            earliest, latest, _ = parse_date_range(birth_date, "birthDate")
        except DateProblem as problem:
            return self._part(
                UNKNOWN, f"{reference}: {problem}", cited, missing=("Patient.birthDate",)
            )
        if earliest > as_of:
            return self._part(
                UNKNOWN,
                f"{reference}: implausible value: birthDate {birth_date} is after "
                f"{as_of.isoformat()}; age {bounds} cannot be checked",
                cited,
                missing=("Patient.birthDate",),
            )
        oldest, youngest = age_in_years(earliest, as_of), age_in_years(latest, as_of)
        verdicts = {self._age_within(oldest), self._age_within(youngest)}
        if len(verdicts) > 1:
            return self._part(
                UNKNOWN,
                f"birthDate {birth_date} is too coarse to tell whether age is {bounds}",
                cited,
                missing=("Patient.birthDate",),
            )
        inside = verdicts.pop()
        age_text = str(oldest) if oldest == youngest else f"{youngest}-{oldest}"
        return self._part(
            MET if inside else NOT_MET,
            f"age {age_text} on {as_of.isoformat()} is {'' if inside else 'not '}{bounds}",
            cited,
            evidence=(reference,),
        )

    def _age_within(self, age: int) -> bool:
        low, high = self.atom.minimum_age, self.atom.maximum_age
        return (low is None or age >= low) and (high is None or age <= high)

    def _gender(self, gender: object, reference: str, cited: tuple[Cited, ...]) -> Outcome:
        wanted = self._genders_text
        if gender is None:
            return self._part(
                UNKNOWN,
                f"{reference} has no gender; {wanted} cannot be checked",
                cited,
                missing=("Patient.gender",),
            )
        if not isinstance(gender, str) or gender not in ADMINISTRATIVE_GENDERS:  # "M", 42
            return self._part(
                UNKNOWN,
                f"{reference}: gender {administrative_gender_problem(gender)}; {wanted} cannot "
                "be checked",
                cited,
                missing=("Patient.gender",),
            )
        inside = gender in self.atom.genders
        if gender == UNKNOWN_GENDER and not inside:
            # FHIR R4 administrative-gender `unknown`: "The gender of the patient is unknown",
            # what an absent gender says too (`other` is a gender recorded: it answers)
            return self._part(
                UNKNOWN,
                f"{reference}: gender is recorded as unknown; {wanted} cannot be checked",
                cited,
                evidence=(reference,),
                missing=("Patient.gender",),
            )
        return self._part(
            MET if inside else NOT_MET,
            f"gender {gender} is {'' if inside else 'not '}{wanted}",
            cited,
            evidence=(reference,),
        )


UNKNOWN_GENDER = "unknown"
"""The administrative-gender code of a gender not known (FHIR R4 valueset-administrative-gender:
"The gender of the patient is unknown"): missing data to a gender test that does not list it."""


def age_bounds_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low}-{high} years"
    return f">= {low} years" if low is not None else f"<= {high} years"


# --------------------------------------------------------------------------- resource atoms


class _Candidate(NamedTuple):
    """A resource an atom may count, with its span and reference (a tuple: made per resource
    and atom, at a third of a frozen dataclass's cost)."""

    resource: dict[str, Any]
    span: Span | None
    reference: str


@dataclass(frozen=True)
class Anchoring:
    """A compiled `before:` / `after:`: the relation and the node of its anchor atom (None:
    the as-of date), with the name explanations use."""

    relation: Relation
    anchor: ResourceNode | None
    name: str


DISAGREE = "disagree: "
"""Starts what an atom with `select: latest` misses when the results that may each be the
latest disagree (in its `missing`, after the window): explanations ask for a newer result."""

OUTSIDE = "; outside the window: "
"""Starts what an anchored atom that finds nothing in its window says of the resources of its
concept outside it ("the earliest after it, 2026-08-02 (Observation/x), is too recent"), at
the end of its reason; explanations show it (`engine.report.explanation`)."""


def relation_distance_text(relation: Relation) -> str:
    """How far from its anchor a relation asks for, with a trailing space ("at least 3 months "),
    or nothing."""
    parts = []
    if relation.at_least is not None:
        parts.append(f"at least {relation.at_least.readable}")
    if relation.at_most is not None:
        parts.append(f"at most {relation.at_most.readable}")
    return f"{' and '.join(parts)} " if parts else ""


def relation_bounds(relation: Relation, day: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """The first and the last day a `before:` / `after:` relation to an anchor dated `day`
    keeps (None: it sets no bound on that side)."""
    if relation.direction == "before":
        latest = day_before(relation.at_least, day) if relation.at_least else day
        earliest = day_before(relation.at_most, day) if relation.at_most else None
        return earliest, latest
    earliest = relation.at_least.start_after(day) if relation.at_least else day
    return earliest, relation.at_most.start_after(day) if relation.at_most else None


def _relation_text(relation: Relation, name: str, days: str, as_of: bool) -> str:
    """`at least P3M before the as-of date 2026-11-01`, `after the first Albuminuria
    (diagnosis), 2026-05`."""
    named = f"{name} {days}" if as_of else f"{name}, {days}"
    return f"{relation_distance_text(relation)}{relation.direction} {named}"


class _WidestWindow(NamedTuple):
    """An anchored window's days at the widest, when an anchor is dated imprecisely (any
    of its possible days would give another window), with why (`ckd-dx is dated 2026-05
    only`)."""

    first_day: dt.date | None
    last_day: dt.date
    why: str


def _later(day: dt.date | None, other: dt.date | None) -> dt.date | None:
    """The later of two first days (None: no bound)."""
    if day is None:
        return other
    return day if other is None else max(day, other)


def _days_span_text(first_day: dt.date | None, last_day: dt.date) -> str:
    start = first_day.isoformat() if first_day is not None else "the start of the record"
    return f"from {start} to {last_day.isoformat()}"


def days_text(earliest: dt.date, latest: dt.date) -> str:
    """Days a date may stand for, as the record wrote it where it can: `2026-05-10`, a whole
    month `2026-05`, a whole year `2026`, else `some day 2026-05-03 to 2026-06-10`."""
    if earliest == latest:
        return earliest.isoformat()
    if earliest.day == 1 and (latest + dt.timedelta(days=1)).day == 1:
        if earliest.month == 1 and latest.month == 12 and earliest.year == latest.year:
            return str(earliest.year)
        if (earliest.year, earliest.month) == (latest.year, latest.month):
            return earliest.isoformat()[:7]
    return f"some day {earliest.isoformat()} to {latest.isoformat()}"


@dataclass(frozen=True)
class ResourceNode:
    atom: ResourceAtom
    label: str
    concept: Concept | None
    types: frozenset[str]
    status_predicates: Mapping[str, StatusPredicate]
    needs_current: bool
    filters: tuple[JsonPathFilter, ...]
    exclusions: tuple[JsonPathFilter, ...]
    value_check: ValueCheck | None
    subject: str
    onset: bool = False
    """`timing: onset`: a resource counts when its span began in the window."""
    anchorings: tuple[Anchoring, ...] = ()
    """`before:` / `after:`: the window narrowed around the as-of date or another atom."""
    _windows: dict[dt.date, tuple[dt.date | None, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """The window's first day and text by as-of day: the same for every patient of a run."""
    _as_of_windows: dict[dt.date, tuple[dt.date | None, dt.date, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """`_anchored_bounds` by as-of day, for an atom anchored on the as-of date only."""
    _nothing_found: dict[dt.date, Outcome] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """The outcome by as-of day when no resource qualifies (and none has a problem): it depends
    on the atom and the window only, and most atoms find nothing for most patients (shared
    when made)."""
    as_of_anchored: bool = field(init=False, repr=False, compare=False)
    """Whether every `before:` / `after:` is relative to the as-of date (not to another
    atom): the window is then the same for every patient, as without them."""
    unidentified_concepts: frozenset[str] = field(init=False, repr=False, compare=False)
    """For an atom with a concept over medications, Conditions or Procedures: the concepts the
    record indexes those of its types under when it cannot tell which drug, diagnosis or
    procedure they are (`engine.record.UNIDENTIFIED_CONCEPTS`); such a resource in its window
    keeps it unknown."""
    thresholds: tuple[float, ...] = field(init=False, repr=False, compare=False)
    """The value test's numbers in the concept's unit: a converted result is shown with the
    digits that decide against them (`deciding_number`)."""
    reads_use: bool = field(init=False, repr=False, compare=False)
    """A medication atom with `timing: active` (and no `status: [active]`, which is use on
    the as-of day): a medication is in a bounded window by its period of use, as `use:
    {within: ...}` reads it (`_use_in_window`), supply durations and unknown ends included."""

    def __post_init__(self) -> None:
        as_of_anchored = all(anchoring.anchor is None for anchoring in self.anchorings)
        object.__setattr__(self, "as_of_anchored", as_of_anchored)
        unidentified = (
            frozenset(
                UNIDENTIFIED_CONCEPTS[name] for name in self.types if name in UNIDENTIFIED_CONCEPTS
            )
            if self.concept is not None
            else frozenset()
        )
        object.__setattr__(self, "unidentified_concepts", unidentified)
        reads_use = not self.onset and not self.needs_current
        reads_use = reads_use and not self.types.isdisjoint(MEDICATION_TYPES)
        object.__setattr__(self, "reads_use", reads_use)
        object.__setattr__(self, "thresholds", value_thresholds(self.atom.value, self.concept))

    @property
    def reads_unidentified(self) -> bool:
        """Whether resources whose drug, diagnosis or procedure cannot be told may keep it
        unknown."""
        return bool(self.unidentified_concepts)

    def has_unidentified(self, record: PatientRecord) -> bool:
        """Whether the record holds a resource of the atom's types whose drug, diagnosis or
        procedure cannot be told (so that an atom finding none of its concept still looks)."""
        for concept in self.unidentified_concepts:  # (a loop: no generator frame)
            if record.resources_of_concept(concept, self.types):
                return True
        return False

    @property
    def open_world(self) -> bool:
        """Finding none means unknown (missing data) rather than not met: the atom's `absent`."""
        return self.atom.absence == "unknown"

    def evaluate(self, context: EvaluationContext) -> Outcome:
        """The atom's outcome; when some of its types are unavailable (not exported, refused by
        the server), unknown unless the types there are meet it."""
        if not context.unavailable_types or self.types.isdisjoint(context.unavailable_types):
            return self._evaluate_record(context)
        unavailable = self.types & context.unavailable_types
        if unavailable == self.types:
            return self.unavailable(unavailable, context)
        outcome = self._evaluate_record(context)
        if outcome.truth is MET:
            return outcome
        return self.unavailable(unavailable, context)

    def _evaluate_record(self, context: EvaluationContext) -> Outcome:
        anchorings = self.anchorings
        if anchorings and not self.as_of_anchored:
            bounds = self._anchored_bounds(context)
            if isinstance(bounds, Outcome):
                return bounds
            first_day, last_day, window_text, widest = bounds
            candidates, problems = self._candidates(context, first_day, last_day)
            if widest is not None:  # an anchor dated imprecisely: its window may be wider
                candidates, problems = self._maybe_in_window(context, candidates, widest)
                first_day, last_day = widest.first_day, widest.last_day
            outcome = self._decision(candidates, problems, window_text, context, first_day)
            if not candidates and not problems:
                outcome = _noted(outcome, self._outside(context, first_day, last_day))
                aside = self._set_aside(context, first_day, last_day)
                outcome = _status_noted(outcome, aside, self.atom.status)
            return self._cite(outcome, candidates, context)
        if (
            self.concept is not None
            and not context.record.resources_of_concept(self.concept.id)
            and not self.has_unidentified(context.record)
        ):
            nothing = self._nothing_found.get(context.as_of)
            if nothing is not None:  # nothing to look at: as when nothing qualifies
                return nothing
        if anchorings:  # `before:` / `after:` the as-of date only: the same for every patient
            first_day, last_day, window_text = self._as_of_bounds(context)
            candidates, problems = self._candidates(context, first_day, last_day)
        else:
            first_day, window_text = self._window(context.as_of)
            last_day = context.as_of
            candidates, problems = self._candidates(context, first_day)
        if not candidates and not problems:
            note = self._outside(context, first_day, last_day) if anchorings else ""
            aside = self._set_aside(context, first_day, last_day)
            if note or aside:  # this patient's resources the window holds none of: said
                outcome = self._decision(candidates, problems, window_text, context, first_day)
                outcome = _status_noted(_noted(outcome, note), aside, self.atom.status)
                return with_atom(outcome, self.atom)
            nothing = self._nothing_found.get(context.as_of)
            if nothing is None:
                nothing = self._nothing_found[context.as_of] = shared(
                    with_atom(
                        self._decision(candidates, problems, window_text, context, first_day),
                        self.atom,
                    )
                )
            return nothing
        outcome = self._decision(candidates, problems, window_text, context, first_day)
        return self._cite(outcome, candidates, context)

    def _cite(
        self, outcome: Outcome, candidates: list[_Candidate], context: EvaluationContext
    ) -> Outcome:
        """The outcome with its atom and the cited resources (for explanations), each with
        the value `_values` read of it for this atom's concept (`Cited.measured`)."""
        if not outcome.evidence:
            return with_atom(outcome, self.atom)
        record = context.record
        measurements = context.measurements
        by_reference = dict(zip(map(_reference_of, candidates), candidates, strict=True))
        cited = []
        for reference in outcome.evidence:
            candidate = by_reference.get(reference)
            if candidate is None:
                continue
            resource = candidate.resource
            medication = (
                record.medication_of(resource)
                if resource.get("resourceType") in MEDICATION_REFERENCING_TYPES
                else None
            )
            measured = measurements.get(id(resource)) if measurements else None
            if measured is not None and measured[0] is not self.concept:
                measured = None
            cited.append(Cited(reference, resource, medication, measured))
        return with_atom(outcome, self.atom, tuple(cited))

    def _decision(
        self,
        candidates: list[_Candidate],
        problems: list[str],
        window_text: str,
        context: EvaluationContext,
        first_day: dt.date | None,
    ) -> Outcome:
        if self.value_check is None:
            return self._presence(candidates, problems, window_text, first_day)
        return self._values(candidates, problems, window_text, context)

    # ------------------------------------------------------------ anchored windows

    def _anchored_bounds(
        self, context: EvaluationContext
    ) -> tuple[dt.date | None, dt.date, str, _WidestWindow | None] | Outcome:
        """The window narrowed by `before:` / `after:` (first day, last day, text), or the
        outcome when an anchor cannot date it.

        An anchor dated imprecisely (a diagnosis of `2026-05`: any day of May) gives a range
        of windows: the days returned are those every one of them holds (the window for
        certain, empty when none is), and the last item the days any of them holds, with why
        (None when every anchor is dated to the day)."""
        first_day, _ = self._window(context.as_of)
        last_day = context.as_of
        widest_first, widest_last = first_day, last_day
        described: list[str] = []
        vague: list[str] = []
        for anchoring in self.anchorings:
            relation = anchoring.relation
            if anchoring.anchor is None:
                early = late = context.as_of
            else:
                found = anchoring.anchor.anchor_days(context, relation.event)
                if isinstance(found, Outcome):
                    return self._undated(anchoring, found)
                early, late = found
            # A relation's first and last days move with the anchor's day: every day from the
            # earliest anchor day's first to the latest's last may be in the window, and the
            # days from the latest's first to the earliest's last surely are.
            widest_earliest, certain_latest = relation_bounds(relation, early)
            certain_earliest, widest_latest = relation_bounds(relation, late)
            first_day = _later(first_day, certain_earliest)
            widest_first = _later(widest_first, widest_earliest)
            if certain_latest is not None:
                last_day = min(last_day, certain_latest)
            if widest_latest is not None:
                widest_last = min(widest_last, widest_latest)
            days = days_text(early, late)
            described.append(
                _relation_text(relation, anchoring.name, days, anchoring.anchor is None)
            )
            if early != late:
                vague.append(f"{anchoring.name} is dated {days} only")
        how = "; ".join(described)
        if not vague:
            return first_day, last_day, f"{_days_span_text(first_day, last_day)} ({how})", None
        certain = (
            _days_span_text(first_day, last_day)
            if first_day is None or first_day <= last_day
            else "no day"
        )
        text = (
            f"{_days_span_text(widest_first, widest_last)} at the widest, {certain} for "
            f"certain ({how})"
        )
        widest = _WidestWindow(widest_first, widest_last, "; ".join(vague))
        return first_day, last_day, text, widest

    def _maybe_in_window(
        self, context: EvaluationContext, certain: list[_Candidate], widest: _WidestWindow
    ) -> tuple[list[_Candidate], list[str]]:
        """The candidates in the window for certain, and the problems of the widest window:
        its own, and each candidate in it but not surely in the window (the anchor's day
        decides whether it is, and the record does not give it)."""
        found, problems = self._candidates(context, widest.first_day, widest.last_day)
        surely = {id(candidate.resource) for candidate in certain}
        for candidate in found:
            if id(candidate.resource) not in surely:
                problems.append(
                    f"{candidate.reference} of {_day_text(candidate.span)}: {widest.why}, so "
                    "whether it falls in the window cannot be told"
                )
        return certain, problems

    def _as_of_bounds(self, context: EvaluationContext) -> tuple[dt.date | None, dt.date, str]:
        """`_anchored_bounds` when every anchor is the as-of date (`as_of_anchored`): worked
        out once per as-of day."""
        bounds = self._as_of_windows.get(context.as_of)
        if bounds is None:
            found = self._anchored_bounds(context)
            assert not isinstance(found, Outcome)  # the as-of date is always there
            bounds = self._as_of_windows[context.as_of] = found[:3]
        return bounds

    def _outside(
        self, context: EvaluationContext, first_day: dt.date | None, last_day: dt.date
    ) -> str:
        """What the record holds outside an anchored window, nearest first: results after it
        (too recent) and before it (too old); "" when none."""
        everything, _ = self._candidates(context, None, context.as_of)
        later: list[tuple[dt.date, str]] = []
        earlier: list[tuple[dt.date, str]] = []
        for candidate in everything:
            span = candidate.span
            if span is None or span.start is None:
                continue
            if span.start > last_day:
                later.append((span.start, candidate.reference))
                continue
            end = span.start if self.onset else span.end
            if first_day is not None and end is not None and end < first_day:
                earlier.append((span.start, candidate.reference))
        parts = []
        if later:
            day, reference = min(later)
            more = f" ({len(later)} after it in all)" if len(later) > 1 else ""
            parts.append(
                f"the earliest after it, {day.isoformat()} ({reference}), is too recent{more}"
            )
        if earlier:
            day, reference = max(earlier)
            more = f" ({len(earlier)} before it in all)" if len(earlier) > 1 else ""
            parts.append(f"the latest before it, {day.isoformat()} ({reference}), is too old{more}")
        return "; ".join(parts)

    def _set_aside(
        self, context: EvaluationContext, first_day: dt.date | None, last_day: dt.date
    ) -> str:
        """The resources of the atom's concept and types in its window that its status
        filter leaves out, counted by what they are ("2 completed", "1 active, not in use on
        2026-11-01"), or "": a reason that says "none on record" must not hide them."""
        concept = self.concept
        if concept is None:
            return ""
        if first_day is not None:
            reach = context.reach_of(concept.id)
            if reach is not None and reach[0] < first_day:
                return ""  # every one ended before the window
        counts: dict[str, int] = {}
        for resource in context.record.resources_of_concept(concept.id, self.types):
            predicate = self._read_by(context, resource)
            if predicate is None:
                continue
            span = context.span_of(resource)
            if isinstance(span, DateProblem) or (
                isinstance(span, Span) and not span.overlaps(first_day, last_day)
            ):
                continue
            if predicate(resource, span if isinstance(span, Span) else None, context.as_of):
                continue
            word = _status_word(resource, self.atom.status or (), context.as_of)
            counts[word] = counts.get(word, 0) + 1
        return ", ".join(f"{count} {word}" for word, count in counts.items())

    def _undated(self, anchoring: Anchoring, anchor: Outcome) -> Outcome:
        relation = anchoring.relation
        if anchor.truth is NOT_MET:
            return Outcome(
                NOT_MET,
                f"{self.subject} {relation.direction} {anchoring.name}: there is none to "
                f"date it ({anchor.reason})",
                self.label,
                evidence=anchor.evidence,
            )
        return Outcome(
            UNKNOWN,
            f"{self.subject} {relation.direction} {anchoring.name}: {anchoring.name} cannot be "
            f"dated ({anchor.reason})",
            self.label,
            evidence=anchor.evidence,
            missing=anchor.missing or (f"the date of {anchoring.name}",),
            manual=anchor.manual,
        )

    def anchor_days(
        self, context: EvaluationContext, event: str
    ) -> tuple[dt.date, dt.date] | Outcome:
        """The earliest and the latest day this atom's first (or latest) matching resource
        may have begun, for atoms anchored on it (one day, twice, when its date is a day; a
        partial date `2026-05` leaves every day of May); its outcome when it is not met (or
        nothing it matches has a date). Memoised per patient."""
        key = (id(self), event)
        known = context.anchor_days.get(key)
        if known is not None:
            return known
        outcome = self.evaluate(context)
        found: tuple[dt.date, dt.date] | Outcome = outcome
        if outcome.truth is MET:
            days = [
                (candidate.span.start, candidate.span.latest_start or candidate.span.start)
                for candidate in self._matching(context)
                if candidate.span is not None and candidate.span.start is not None
            ]
            if days:
                # the first event began between the earliest first day and the earliest
                # last day any of them may have begun on (the latest event: the latest ones)
                pick = min if event == "first" else max
                found = (pick(day for day, _ in days), pick(day for _, day in days))
            else:
                found = Outcome(
                    UNKNOWN,
                    f"{self.subject}: what matches has no date",
                    self.label,
                    evidence=outcome.evidence,
                    missing=(f"the date of {self.subject}",),
                )
        context.anchor_days[key] = found
        return found

    def _matching(self, context: EvaluationContext) -> list[_Candidate]:
        """The resources that make this atom met: in its window and passing its value test."""
        if self.anchorings:
            bounds = self._anchored_bounds(context)
            if isinstance(bounds, Outcome):
                return []
            first_day, last_day, _, _ = bounds  # (in the window for certain)
            candidates, _problems = self._candidates(context, first_day, last_day)
        else:
            candidates, _problems = self._candidates(context, self._window(context.as_of)[0])
        if self.value_check is None or self.concept is None:
            return candidates
        if self.atom.selection == "latest":
            candidates = may_be_latest(candidates)
        matching = []
        for candidate in candidates:
            result = measure(candidate.resource, self.concept, context.terminology)
            if not isinstance(result, DataProblem) and self.value_check(result) is True:
                matching.append(candidate)
        return matching

    def _counted(self, candidates: Sequence[_Candidate]) -> int:
        """How many count: all of them, or with `apart:` only those at least that long after
        the previous one counted (earliest first)."""
        apart = self.atom.apart
        if apart is None:
            return len(candidates)
        days = sorted(
            candidate.span.start
            for candidate in candidates
            if candidate.span is not None and candidate.span.start is not None
        )
        counted = 0
        next_allowed: dt.date | None = None
        for day in days:
            if next_allowed is None or day >= next_allowed:
                counted += 1
                next_allowed = apart.start_after(day)
        return counted

    def _window(self, as_of: dt.date) -> tuple[dt.date | None, str]:
        """The window's first day (None: no start) and its text, as of a day."""
        window = self._windows.get(as_of)
        if window is None:
            first_day = _window_start(self.atom.window, as_of)
            window = self._windows[as_of] = (
                first_day,
                _window_text(self.atom.window, first_day, as_of),
            )
        return window

    def _candidates(
        self,
        context: EvaluationContext,
        first_day: dt.date | None,
        last_day: dt.date | None = None,
    ) -> tuple[list[_Candidate], list[str]]:
        record = context.record
        if last_day is None:
            last_day = context.as_of
        if first_day is not None and first_day > last_day:
            return [], []
        pool: Iterable[dict[str, Any]]
        unidentified = (
            self._unidentified(context, first_day, last_day) if self.unidentified_concepts else []
        )
        if self.concept is not None:
            if first_day is not None:
                # Every resource of the concept ended (or, for `timing: onset`, began) before
                # the window, each with a readable span: none counts, none is a problem.
                # (Not for periods of use: a supply or an unknown end outlasts the dates.)
                reach = None if self.reads_use else context.reach_of(self.concept.id)
                if reach is not None and reach[1 if self.onset else 0] < first_day:
                    return [], unidentified
            pool = record.resources_of_concept(self.concept.id)
        else:
            pool = chain.from_iterable(map(record.resources_of_type, sorted(self.types)))
        kept: list[_Candidate] = []
        problems: list[str] = unidentified
        span_of = context.span_of
        path_matches = context.path_matches
        filters, exclusions = self.filters, self.exclusions
        for resource in pool:
            resource_type = resource.get("resourceType")
            predicate = self.status_predicates.get(resource_type)  # type: ignore[arg-type]
            if predicate is None:
                continue
            if (filters or exclusions) and not passes_filters(
                resource, filters, exclusions, path_matches
            ):
                continue
            span = span_of(resource)
            if isinstance(span, DateProblem):
                problems.append(f"{record.label(resource)} {span}")
                continue
            if (
                self.onset
                and resource_type in _RECORDED_TYPES
                and not any(name in resource for name in ONSET_FIELDS)
            ):
                # no dated onset: where onsetAge / onsetRange and recordedDate place it
                placed = _place_undated_onset(
                    resource, span, first_day, last_day, record.patient.get("birthDate")
                )
                if placed is None:
                    continue
                if placed:
                    if self.needs_current and not _may_be_current(
                        predicate, resource, span, context
                    ):
                        continue  # not active on the as-of day, which the atom asks: no matter
                    problems.append(f"{record.label(resource)} {placed}")
                    continue
            elif span is None:
                if first_day is not None or self.needs_current:
                    # an undated Condition is active on the as-of day as its clinicalStatus
                    # says (`status_alone`), whatever it was on an earlier day
                    now = status_alone(resource) if last_day == context.as_of else None
                    if now is None or (now is False and not self.needs_current):
                        problems.append(f"{record.label(resource)} has no date")
                        continue
                    if now is False:
                        continue  # not active on the as-of day, which the atom asks
            elif self.onset:
                if span.start is None:
                    if first_day is not None:
                        problems.append(f"{record.label(resource)} has no onset date")
                    continue
                latest_start = span.latest_start or span.start
                if span.start > last_day or (first_day is not None and latest_start < first_day):
                    continue
                if latest_start > last_day or (first_day is not None and span.start < first_day):
                    # a partial onset date (`2026`) reaching both inside and outside the window
                    problems.append(
                        f"{record.label(resource)} {_imprecise(span, first_day, context)}"
                    )
                    continue
            elif (
                self.reads_use
                and first_day is not None
                and (in_use := self._use_in_window(context, resource, first_day, last_day))
                is not None
            ):
                if in_use is not True:  # not in use in the window, or it may have been
                    if in_use:
                        problems.append(_MayHaveLasted(f"{record.label(resource)} {in_use}"))
                    continue
            elif not span.overlaps(first_day, last_day):
                continue
            elif not span.surely_overlaps(first_day, last_day):
                problems.append(
                    _ImpreciseDate(
                        f"{record.label(resource)} {_imprecise(span, first_day, context)}",
                        record.label(resource),
                        span.latest_start or span.end or span.start or context.as_of,
                    )
                )
                continue
            unreadable = unreadable_status(resource)
            if unreadable is not None:  # a status that is no code: cannot tell if it counts
                problems.append(f"{record.label(resource)}: {unreadable}")
                continue
            if not predicate(resource, span, context.as_of):
                if span is not None and predicate(resource, span.widest(), context.as_of):
                    # current only if a partial date resolves one way: cannot tell
                    problems.append(
                        f"{record.label(resource)} is dated too imprecisely to tell whether it "
                        f"is current on {context.as_of.isoformat()}"
                    )
                continue
            uncertain_words = UNCERTAIN_VERIFICATION.get(resource_type)  # type: ignore[arg-type]
            if uncertain_words is not None:
                uncertain = verification_status(resource)
                if uncertain in uncertain_words:  # not an established diagnosis or allergy
                    problems.append(
                        f"{record.label(resource)}: {uncertain_words[uncertain]} "
                        f"(verificationStatus {uncertain}): confirm"
                    )
                    continue
            kept.append(_Candidate(resource, span, record.label(resource)))
        kept.sort(key=_moment, reverse=True)
        return kept, problems

    def _read_by(
        self, context: EvaluationContext, resource: dict[str, Any]
    ) -> StatusPredicate | None:
        """The status predicate of the resource's type when the atom reads that type and the
        resource passes its `where` / `where_not`; None otherwise. (The candidates' loop,
        `_candidates`, makes the same two checks inline, for speed.)"""
        predicate = self.status_predicates.get(resource.get("resourceType", ""))
        if predicate is None:
            return None
        if (self.filters or self.exclusions) and not passes_filters(
            resource, self.filters, self.exclusions, context.path_matches
        ):
            return None
        return predicate

    def _unidentified(
        self, context: EvaluationContext, first_day: dt.date | None, last_day: dt.date
    ) -> list[str]:
        """Why each resource of the atom's types whose drug, diagnosis or procedure cannot be
        told (in its window, as its `timing` reads it; of its statuses and filters) may be the
        one it looks for."""
        record = context.record
        found: list[dict[str, Any]] = []
        for concept in sorted(self.unidentified_concepts):
            found += record.resources_of_concept(concept, self.types)
        if not found:
            return []
        problems: list[str] = []
        as_of = context.as_of
        for resource in found:
            predicate = self._read_by(context, resource)
            if predicate is None:
                continue
            span = context.span_of(resource)
            in_use = (
                self._use_in_window(context, resource, first_day, last_day)
                if self.reads_use and first_day is not None
                else None
            )
            if in_use is False:  # not in use in the window (by its period of use)
                continue
            if isinstance(span, Span):
                if self.onset and span.start is not None:  # began in the window?
                    latest_start = span.latest_start or span.start
                    if span.start > last_day or (
                        first_day is not None and latest_start < first_day
                    ):
                        continue
                elif in_use is None and not span.overlaps(first_day, last_day):
                    continue
                if not predicate(resource, span, as_of) and not predicate(
                    resource, span.widest(), as_of
                ):
                    continue
            elif span is None:
                if not predicate(resource, None, as_of):
                    continue
                if self.needs_current and status_alone(resource) is False:
                    continue  # undated, and its clinical status says it is over
            problems.append(unidentified_text(record, resource))
        return problems

    def _use_in_window(
        self,
        context: EvaluationContext,
        resource: dict[str, Any],
        first_day: dt.date,
        last_day: dt.date,
    ) -> bool | str | None:
        """Whether a medication resource is in use in the window by its period of use
        (`engine.normalise.medication_exposure`, as `use:` reads it): True, False, or why it
        may be (begun before the window, its end not known); None when it has no period of
        use (no full date: its dates decide, as for other types)."""
        if resource.get("resourceType") not in MEDICATION_TYPES:
            return None
        periods = context.exposure_periods
        period = periods.get(id(resource))
        if period is None:
            period = periods[id(resource)] = exposure_period(resource)
        if isinstance(period, str):
            return None
        in_use = use_in_days(period, first_day, last_day, context.as_of)
        return unknown_end_text(period) if in_use is None else in_use

    def _presence(
        self,
        candidates: list[_Candidate],
        problems: list[str],
        window_text: str,
        first_day: dt.date | None,
    ) -> Outcome:
        needed = self.atom.minimum_count if self.atom.selection == "count" else 1
        found = self._counted(candidates)
        evidence = tuple(map(_reference_of, candidates[:EVIDENCE_LIMIT]))
        if found >= needed:
            latest = _date_text(candidates[0].span, first_day)
            return Outcome(
                MET,
                f"{self.subject}: {found} found {window_text}{latest}",
                self.label,
                evidence=evidence,
            )
        if problems:
            return self._unusable(problems, window_text, evidence)
        if found == 0 and self.open_world:
            return self._missing(window_text)
        counted = f" ({needed} needed)" if needed > 1 else ""
        apart = self.atom.apart
        if apart is not None and found < len(candidates):  # found, but too close together
            days = ", ".join(_day_text(candidate.span) for candidate in reversed(candidates))
            counted = (
                f", on {days}: {'only ' if found else ''}{found} of them at least {apart.readable} "
                f"apart ({needed} needed)"
            )
            found = len(candidates)
        return Outcome(
            NOT_MET,
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
            # Only the latest dated result counts (or those that may each be it: the same
            # moment, or the same day when one gives no time), but a result whose date cannot
            # be read may be newer: such date problems (already in `problems`) keep the atom
            # unknown. One dated too imprecisely to place in the window (`2026-10` for a
            # window from 2026-10-04) whose every possible day is before the newest result
            # cannot be the latest, and does not count.
            candidates = may_be_latest(candidates)
            problems = _newer_problems(problems, candidates[0])
        passed: list[tuple[_Candidate, str]] = []
        failed: list[tuple[_Candidate, str]] = []
        values: list[tuple[Measurement, _Candidate, str]] = []
        values_shown: dict[str, str] = {}
        applied: dict[str, str] = {}
        """A per-unit test's cut-off that applies to each result, by its reference."""
        per_unit = self.atom.value if type(self.atom.value) is PerUnitTest else None
        concept, terminology = self.concept, context.terminology
        measurements = context.measurements
        for candidate in candidates:
            result = measure(candidate.resource, concept, terminology)
            if isinstance(result, DataProblem):
                problems.append(f"{candidate.reference} {result.field}: {result.message}")
                continue
            measurements[id(candidate.resource)] = (concept, terminology, result)
            if per_unit is not None and result.value is not None:
                # said in the unit it is compared in, against the cut-off that applies
                reading = per_unit_reading(per_unit, result, concept.unit)
                value_text = _per_unit_value_text(reading, result, self.thresholds)
                applied[candidate.reference] = reading.test.text
            else:
                value_text = _value_text(result, self.thresholds)
            values_shown[candidate.reference] = value_text
            shown = _measurement_text(value_text, candidate)
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
        if selection == "latest" and passed and failed and not problems:
            return self._disagreeing(passed, failed, values_shown, window_text, applied)
        return self._decide(passed, failed, problems, window_text, applied)

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
        applied: Mapping[str, str],
    ) -> Outcome:
        selection = self.atom.selection
        test_text = self.atom.value.text if self.atom.value else ""
        if selection == "all":
            if failed:
                first = failed[0]
                return self._verdict(
                    False, first[1], _references(failed), applied.get(first[0].reference)
                )
            if problems:
                return self._unusable(problems, window_text, _references(passed))
            if not passed:
                return self._missing(window_text) if self.open_world else self._absent(window_text)
            return self._verdict(True, f"all {len(passed)} {test_text}", _references(passed))
        if selection == "latest" and problems:
            return self._unusable(problems, window_text, _references(passed + failed))
        needed = self.atom.minimum_count if selection == "count" else 1
        counted = self._counted([candidate for candidate, _ in passed])
        if counted >= needed:
            if selection == "count":
                return Outcome(
                    MET,
                    f"{self.subject}: {self._count_text(passed, failed, counted)}",
                    self.label,
                    evidence=_references(passed),
                )
            first = passed[0]
            return self._verdict(
                True, first[1], _references(passed), applied.get(first[0].reference)
            )
        if problems:
            return self._unusable(problems, window_text, _references(passed + failed))
        if not passed and not failed:
            return self._missing(window_text) if self.open_world else self._absent(window_text)
        if selection == "count":
            # what was found and why it is too few, never "results < 100 g/L is not < 100"
            shown = self._count_text(passed, failed, counted)
            if self.atom.failing == "unknown":
                return Outcome(
                    UNKNOWN,
                    f"{self.subject}: {shown}, which does not rule it out: no {needed} results "
                    f"{window_text} are {test_text}",
                    self.label,
                    evidence=_references(passed + failed),
                    missing=(f"{self.subject} {window_text} {test_text} (failing: {shown})",),
                )
            return Outcome(
                NOT_MET,
                f"{self.subject}: {shown}",
                self.label,
                evidence=_references(passed + failed),
            )
        shown = failed[0][1] if failed else ""
        cut_off = applied.get(failed[0][0].reference) if failed else None
        if self.atom.failing == "unknown":  # failing results are no evidence against it
            return Outcome(
                UNKNOWN,
                f"{self.subject}: {shown} is not {cut_off or test_text}, which does not rule it "
                f"out: no result {window_text} is {test_text}",
                self.label,
                evidence=_references(failed or passed),
                missing=(f"{self.subject} {window_text} {test_text} (failing: {shown})",),
            )
        return self._verdict(False, shown, _references(failed or passed), cut_off)

    def _count_text(
        self,
        passed: list[tuple[_Candidate, str]],
        failed: list[tuple[_Candidate, str]],
        counted: int,
    ) -> str:
        """`select: count`: how many results pass and how many are needed, and with `apart:`
        which are too close together ("2 results < 100 g/L, on 2026-01-01 and 2026-03-31, 89
        days apart: fewer than 90 days (2 needed at least 90 days apart)")."""
        test_text = self.atom.value.text if self.atom.value else ""
        needed, apart = self.atom.minimum_count, self.atom.apart
        found = len(passed)
        spaced = f" at least {apart.readable} apart" if apart is not None else ""
        text = f"{_results(found)} {test_text}"
        if apart is not None and counted < found:
            days = sorted(
                candidate.span.start
                for candidate, _ in passed
                if candidate.span is not None and candidate.span.start is not None
            )
            if found == 2 and len(days) == 2:
                gap = (days[1] - days[0]).days
                text += (
                    f", on {days[0].isoformat()} and {days[1].isoformat()}, "
                    f"{gap} day{'s' if gap != 1 else ''} apart: less than {apart.readable}"
                )
            else:
                only = "" if counted >= needed else "only "
                text += f", on {', '.join(map(dt.date.isoformat, days))}: {only}{counted} of "
                text += f"them{spaced}"
            text += f" ({needed} needed{spaced if counted < needed else ''})"
        elif apart is not None and found > 1:
            text += f"{spaced} ({needed} needed)"
        else:
            text += f" ({needed} needed{spaced})"
        if failed and counted < needed:
            text += f"; {_results(len(failed))} not {test_text}"
        return text

    def _disagreeing(
        self,
        passed: list[tuple[_Candidate, str]],
        failed: list[tuple[_Candidate, str]],
        values_shown: Mapping[str, str],
        window_text: str,
        applied: Mapping[str, str],
    ) -> Outcome:
        """Unknown: results that may each be the latest (`may_be_latest`) pass and fail the
        test; which is the current value cannot be told, and guessing by the order the
        source gave them in would make the answer depend on that order."""
        test_text = self.atom.value.text if self.atom.value else ""
        if test_text.startswith("is "):  # answer tests: "is positive"
            test_text = test_text[3:]
        both = [candidate for candidate, _ in passed + failed]
        days = list(dict.fromkeys(_day_text(candidate.span) for candidate in both))
        dated = f"on {days[0]}" if len(days) == 1 else f"(dated {'; '.join(days)})"
        results = "two results" if len(both) == 2 else f"{len(both)} results"
        said = [
            f"{values_shown[candidate.reference]} ({candidate.reference}) is "
            f"{applied.get(candidate.reference, test_text)}"
            for candidate, _ in passed
        ]
        said += [
            f"{values_shown[candidate.reference]} ({candidate.reference}) is not"
            + (f" {applied[candidate.reference]}" if candidate.reference in applied else "")
            for candidate, _ in failed
        ]
        disagreement = f"{results} {dated} may each be the latest and disagree: {', '.join(said)}"
        return Outcome(
            UNKNOWN,
            f"{self.subject}: {disagreement}",
            self.label,
            evidence=_references(passed + failed),
            missing=(f"{self.subject} {window_text} ({DISAGREE}{disagreement})",),
        )

    def _verdict(
        self, met: bool, shown: str, evidence: tuple[str, ...], cut_off: str | None = None
    ) -> Outcome:
        """`cut_off`: the one test of a per-unit test that applied to the result shown."""
        test_text = cut_off or (self.atom.value.text if self.atom.value else "")
        relation = "" if met else "not "
        if cut_off is None and isinstance(self.atom.value, AnyValueTest | PerUnitTest):
            test_text = f"({test_text})" if not met else test_text
        elif test_text.startswith("is "):  # answer tests read "is positive" / "is not positive"
            test_text = test_text[3:]
        return Outcome(
            MET if met else NOT_MET,
            f"{self.subject}: {shown} is {relation}{test_text}",
            self.label,
            evidence=evidence,
        )

    def unavailable(self, unavailable: frozenset[str], context: EvaluationContext) -> Outcome:
        """Unknown: some of the atom's types did not come from the source (missing data),
        each with why ("MedicationStatement not exported by the server")."""
        text = unavailable_text(unavailable, context.unavailable_reasons)
        return Outcome(
            UNKNOWN,
            f"{self.subject}: {text}",
            self.label,
            missing=(f"{self.subject}: {text}",),
            atom=self.atom,
            unavailable=text,
        )

    def _missing(self, window_text: str) -> Outcome:
        return Outcome(
            UNKNOWN,
            f"{self.subject}: no result {window_text}",
            self.label,
            missing=(f"{self.subject} {window_text}",),
        )

    def _absent(self, window_text: str) -> Outcome:
        return Outcome(NOT_MET, f"{self.subject}: none on record {window_text}", self.label)

    def _unusable(
        self, problems: list[str], window_text: str, evidence: tuple[str, ...]
    ) -> Outcome:
        lasted = [problem for problem in problems if type(problem) is _MayHaveLasted]
        if lasted:  # a medication begun before the window may have been in use in it
            others = [problem for problem in problems if type(problem) is not _MayHaveLasted]
            return unknown_use(self.subject, window_text, lasted + others, self.label, evidence)
        return Outcome(
            UNKNOWN,
            f"{self.subject}: unusable data {window_text}: {first_problems(problems)}",
            self.label,
            evidence=evidence,
            missing=(f"{self.subject} {window_text} (unusable: {problems[0]})",),
        )


_RECORDED_TYPES = frozenset(
    name
    for name, known in RESOURCE_TYPES.items()
    if any(date_field.name == "recordedDate" for date_field in known.start_fields)
)
"""Types dated by onset[x], else recordedDate (Condition, AllergyIntolerance): with `timing:
onset`, their recordedDate is no onset (`undated_onset`)."""


def _may_be_current(
    predicate: StatusPredicate,
    resource: dict[str, Any],
    span: Span | None,
    context: EvaluationContext,
) -> bool:
    """Whether the status predicate may count the resource on the as-of day (its partial
    dates read as widely as they can be)."""
    if predicate(resource, span, context.as_of):
        return True
    return span is not None and predicate(resource, span.widest(), context.as_of)


def _place_undated_onset(
    resource: dict[str, Any],
    span: Span | None,
    first_day: dt.date | None,
    last_day: dt.date,
    birth_date: object,
) -> str | None:
    """Whether a resource without a dated onset began in the window: "" when surely (it
    counts), None when surely not, else why it cannot be told (a problem)."""
    earliest, latest, how = undated_onset(resource, span, birth_date)
    if earliest is not None and earliest > last_day:
        return None  # began after the window
    if first_day is not None and latest is not None and latest < first_day:
        return None  # began before it
    if first_day is None:  # `within: ever`: any onset up to the last day counts
        surely = latest is None or latest <= last_day
    else:
        surely = earliest is not None and latest is not None and first_day <= earliest
        surely = surely and latest is not None and latest <= last_day
    if surely:
        return ""
    return f"{how}: whether it began in the window cannot be told"


def unidentified_text(record: PatientRecord, resource: dict[str, Any]) -> str:
    """Why a resource's drug, diagnosis or procedure cannot be told, naming it as the record
    does (`unidentified_medication_text`, `unidentified_code_text`)."""
    resource_type: str = resource["resourceType"]
    if resource_type in MEDICATION_REFERENCING_TYPES:
        return unidentified_medication_text(record, resource)
    return unidentified_code_text(record, resource, _WHAT_IS_CODED.get(resource_type, "code"))


_WHAT_IS_CODED = {"Condition": "diagnosis", "Procedure": "procedure"}
"""What the `code` of each type a record indexes as unidentified says (medications apart)."""


def unidentified_code_text(record: PatientRecord, resource: dict[str, Any], what: str) -> str:
    """Why the `code` of a Condition (`what`: diagnosis) or a Procedure (procedure) cannot be
    told, naming it: `Condition/x: its diagnosis ('Immune thrombocytopenia (ITP), chronic,
    refractory') has no code the mappings know: which diagnosis it is cannot be told`,
    `Procedure/x: coded only as http://hospital.example/codes|SPL-01 ('Splenectomy'), ...`,
    `Condition/x has no code: ...`."""
    label = record.label(resource)
    cannot = f"which {what} it is cannot be told"
    code = resource.get("code")
    if not isinstance(code, dict):
        return f"{label} has no code: {cannot}"
    text = code.get("text")
    codings = code.get("coding")
    codes = [
        f"{coding.get('system') or '(no system)'}|{coding['code']}"
        for coding in (codings if isinstance(codings, list) else ())
        if isinstance(coding, dict) and isinstance(coding.get("code"), str) and coding["code"]
    ]
    if not isinstance(text, str) or not text:
        text = next(
            (
                coding["display"]
                for coding in (codings if isinstance(codings, list) else ())
                if isinstance(coding, dict) and isinstance(coding.get("display"), str)
            ),
            "",
        )
    named = f" ('{text}')" if text else ""
    if codes:
        return (
            f"{label}: coded only as {', '.join(codes)}{named}, in systems the mappings do not "
            f"know: {cannot}"
        )
    if text:
        return f"{label}: its {what}{named} has no code the mappings know: {cannot}"
    return f"{label} has no code: {cannot}"


def unidentified_medication_text(record: PatientRecord, resource: dict[str, Any]) -> str:
    """Why a medication resource's drug cannot be told, naming it as the record does:
    `MedicationRequest/x: its medication (Medication/farxiga-10, 'Farxiga 10 mg tablet
    (dapagliflozin)') is not in the record: which drug it is cannot be told`."""
    label = record.label(resource)
    cannot = "which drug it is cannot be told"
    concept = resource.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        text = concept.get("text")
        named = f"'{text}'" if isinstance(text, str) and text else "unnamed"
        return f"{label}: its medication ({named}) has no code the mappings know: {cannot}"
    holder = resource.get("medicationReference")
    if not isinstance(holder, dict):
        return f"{label}: it names no medication: {cannot}"
    target, display = holder.get("reference"), holder.get("display")
    shown = ", ".join(
        part
        for part in (
            target if isinstance(target, str) and target else None,
            f"'{display}'" if isinstance(display, str) and display else None,
        )
        if part
    )
    medication = (
        record.resolve(target, container=resource) if isinstance(target, str) and target else None
    )
    if medication is None:
        return f"{label}: its medication ({shown or 'no reference'}) is not in the record: {cannot}"
    if medication.get("resourceType") != "Medication":
        return f"{label}: its medication ({shown}) is a {medication.get('resourceType')}: {cannot}"
    code = medication.get("code")
    text = code.get("text") if isinstance(code, dict) else None
    named = f", '{text}'" if isinstance(text, str) and text and text != display else ""
    return f"{label}: its medication ({shown}{named}) has no code the mappings know: {cannot}"


def _noted(outcome: Outcome, note: str) -> Outcome:
    """The outcome with `note` (what lies outside its window) at the end of its reason."""
    if not note:
        return outcome
    return _with_reason(outcome, f"{outcome.reason}{OUTSIDE}{note}")


def _with_reason(outcome: Outcome, reason: str) -> Outcome:
    """The outcome with another reason."""
    return Outcome(
        outcome.truth,
        reason,
        outcome.label,
        outcome.evidence,
        outcome.missing,
        outcome.manual,
        outcome.children,
        outcome.atom,
        outcome.cited,
        outcome.unavailable,
    )


NOT_COUNTED = "; on record, not counted by status: "
"""Starts what an atom that counts nothing says of the resources of its concept in its window
that its status filter left out ("2 completed"), at the end of its reason; explanations show
it (`engine.report.explanation`)."""


def _status_noted(outcome: Outcome, aside: str, wanted: tuple[str, ...] | None) -> Outcome:
    """The outcome with what its status filter left out (`NOT_COUNTED`) after its reason,
    whose "none on record" / "no result" (`_absent`, `_presence`, `_missing`) then says
    which statuses count: the record is not empty."""
    if not aside:
        return outcome
    statuses = f"with status {' or '.join(wanted)}" if wanted else "with a status that counts"
    reason = outcome.reason
    for said, now in ((": none on record ", ": none "), (": no result ", ": no result ")):
        if said in reason:
            reason = reason.replace(said, f"{now}{statuses} ", 1)
            break
    return _with_reason(outcome, f"{reason}{NOT_COUNTED}{aside}")


def _status_word(resource: dict[str, Any], wanted: tuple[str, ...], as_of: dt.date) -> str:
    """What a resource a status filter left out is, in a word or two: its status (or
    clinical status), a refuted verification, an intent that is no order, or its status
    when that is the one asked for but not on the as-of day ("active, not current on
    2026-11-01")."""
    intent = resource.get("intent")
    if isinstance(intent, str) and intent in NOT_ORDER_INTENTS:
        return f"intent {intent}"
    verification = verification_status(resource)
    if verification in ("refuted", "entered-in-error"):
        return f"verification {verification}"
    status = resource.get("status")
    if not isinstance(status, str):
        status = clinical_status(resource)
    if status is None:
        return "with no status"
    if status in wanted:
        return f"{status}, not current on {as_of.isoformat()}"
    return status


def passes_filters(
    resource: dict[str, Any],
    filters: tuple[JsonPathFilter, ...],
    exclusions: tuple[JsonPathFilter, ...],
    matches: dict[tuple[int, int], bool],
) -> bool:
    """Whether every `where` filter finds something in the resource and no `where_not` does
    (`path_finds`: remembered in `matches`). Loops, not `all`/`any` over generators: no
    frame of their own per resource (Python 3.11)."""
    for path in filters:
        if not path_finds(path, resource, matches):
            return False
    for path in exclusions:  # noqa: SIM110  (a loop: `all` would take a generator's frame)
        if path_finds(path, resource, matches):
            return False
    return True


def path_finds(
    path: JsonPathFilter, resource: dict[str, Any], matches: dict[tuple[int, int], bool]
) -> bool:
    """Whether the compiled jsonpath finds anything in the resource, remembered in `matches`
    (`EvaluationContext.path_matches`)."""
    key = (id(path), id(resource))
    found = matches.get(key)
    if found is None:
        found = matches[key] = path.finds(resource)
    return found


def unavailable_text(types: Iterable[str], reasons: Mapping[str, str]) -> str:
    """Unavailable types with why, grouped by reason: "MedicationRequest/MedicationStatement
    not exported by the server; Condition not available from the server (HTTP 403 ...)"."""
    by_reason: dict[str, list[str]] = {}
    for resource_type in sorted(types):
        by_reason.setdefault(reasons.get(resource_type, NOT_EXPORTED), []).append(resource_type)
    return "; ".join(f"{'/'.join(grouped)} {reason}" for reason, grouped in by_reason.items())


def first_problems(problems: Sequence[str], shown: int = 3) -> str:
    """The first `shown` problems, `; `-separated, and how many more there are."""
    more = len(problems) - shown
    return "; ".join(problems[:shown]) + (f" (+{more} more)" if more > 0 else "")


_reference_of = attrgetter("reference")
"""A candidate's (or a medication use's) reference, read in C (`map`) rather than by a
comprehension's frame."""


def _moment(candidate: _Candidate) -> dt.datetime:
    return candidate.span.moment if candidate.span is not None else _EARLIEST


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
_UNREAD: Any = object()


def _references(items: Sequence[tuple[_Candidate, str]]) -> tuple[str, ...]:
    references = []
    for candidate, _ in items[:EVIDENCE_LIMIT]:  # a loop: no generator frame (Python 3.11)
        references.append(candidate.reference)
    return tuple(references)


def _date_text(span: Span | None, first_day: dt.date | None) -> str:
    if span is None or span.start is None:
        return ""
    if first_day is not None and span.start < first_day:
        # Active in the window, begun before it: say so rather than "found within ..., 1971".
        return f", latest began {_day_text(span)} (before the window) and active in it"
    return f", latest {_day_text(span)}"  # (a partial date as written: `2026-05`)


def _results(count: int) -> str:
    return f"{count} result" if count == 1 else f"{count} results"


def _value_text(measurement: Measurement, thresholds: tuple[float, ...] = ()) -> str:
    """A result's value as the reasons say it: `95 g/L`, `< 3 mg/mmol`, `positive`; one
    converted into the concept's unit with the digits that decide against the test's
    `thresholds` (`132.6 mg/g`, not `132.603 mg/g`), one in its unit of report as the
    laboratory gave it."""
    if measurement.value is not None:
        unit = f" {measurement.unit}" if measurement.unit and measurement.unit != "1" else ""
        censored = f"{measurement.comparator} " if measurement.comparator else ""
        if measurement.reported is None:
            return f"{censored}{measurement.value:g}{unit}"
        return f"{censored}{deciding_number(measurement.value, thresholds)}{unit}"
    return "/".join(sorted(measurement.answer_concepts)) or "a coded result"


def _per_unit_value_text(
    reading: PerUnitReading, measurement: Measurement, thresholds: tuple[float, ...] = ()
) -> str:
    """A result under a per-unit test, in the unit it is compared in: `3 mg/mmol (as
    reported)`, `30 mg/g (reported 30 ug/mg)`, or as usual in the concept's unit."""
    if not reading.as_reported or measurement.reported is None:
        return _value_text(measurement, thresholds)
    censored = f"{measurement.comparator} " if measurement.comparator else ""
    shown = f"{censored}{reading.value:g} {reading.unit}"
    number, unit = measurement.reported
    if unit == reading.unit:
        return f"{shown} (as reported)"
    return f"{shown} (reported {censored}{number:g} {unit})"


def _measurement_text(value_text: str, candidate: _Candidate) -> str:
    """A result's value with its day and reference: `95 g/L on 2026-10-20 (Observation/x)`."""
    day = (
        f" on {candidate.span.start.isoformat()}" if candidate.span and candidate.span.start else ""
    )
    return f"{value_text}{day} ({candidate.reference})"


def _day_text(span: Span | None) -> str:
    """The day (or the days, for a partial date) a span's start stands for (`days_text`)."""
    if span is None or span.start is None:
        return "an unknown day"
    return days_text(span.start, span.latest_start or span.start)


class Spanned(Protocol):
    """Anything dated by a span: an atom's candidate, a computed value's input read."""

    @property
    def span(self) -> Span | None: ...


SpannedT = TypeVar("SpannedT", bound=Spanned)


def may_be_latest(candidates: list[SpannedT]) -> list[SpannedT]:
    """The candidates (dated ones, in any order: an atom's `_candidates` are newest first,
    a computed value's input reads come in record order) that may each be the latest: none
    of the others is surely newer. Two times of day (with their time
    zones) are compared as instants; a result dated to the day only (or to a month) is
    compared by calendar days, each read in the time zone it was written in, so a result of
    some time on 2026-10-20 may be later than one at 08:00 that day, and one of October may
    be later than one of 20 October. The first of several is not a guess: each is returned,
    and an atom whose results disagree is unknown."""
    if len(candidates) < 2:
        return candidates
    newest_time: dt.datetime | None = None
    newest_day_untimed: dt.date | None = None
    newest_day: dt.date | None = None
    for candidate in candidates:
        span = candidate.span
        if span is None or span.start is None:
            continue
        if span.timed:
            if newest_time is None or span.moment > newest_time:
                newest_time = span.moment
        elif newest_day_untimed is None or span.start > newest_day_untimed:
            newest_day_untimed = span.start
        if newest_day is None or span.start > newest_day:
            newest_day = span.start
    contenders = []
    for candidate in candidates:
        span = candidate.span
        if span is None or span.start is None:
            continue
        if span.timed:
            surely_older = (newest_time is not None and span.moment < newest_time) or (
                newest_day_untimed is not None and newest_day_untimed > span.start
            )
        else:
            surely_older = newest_day is not None and newest_day > (span.latest_start or span.start)
        if not surely_older:
            contenders.append(candidate)
    return contenders or candidates[:1]


class _MayHaveLasted(str):
    """A problem: a medication begun before the window whose end is not in the record
    (`unknown_end_text`), so that it may have been in use in the window."""


def unknown_use(
    subject: str,
    window_text: str,
    reasons: Sequence[str],
    label: str,
    evidence: tuple[str, ...],
) -> Outcome:
    """Unknown: whether a medication was in use in the window, for `reasons` (first those of
    a period of use begun before it whose end is not known: `unknown_end_text`): "Lisinopril:
    use within 2026-09-06 to 2026-11-01 unknown: MedicationStatement/x (effectiveDateTime,
    stopped) began 2026-09-01, before the window, and its end is not known: it may have
    lasted into the window". `use: {within}` and a medication atom with `within:` (placed by
    its period of use) say it alike."""
    return Outcome(
        UNKNOWN,
        f"{subject}: use {window_text} unknown: {first_problems(reasons)}",
        label,
        evidence=evidence,
        missing=(f"{subject}: {reasons[0]}",),
    )


class _ImpreciseDate(str):
    """A problem: a resource dated too imprecisely to tell whether it is in the window
    (`_imprecise`), with its reference and the latest day it may be of."""

    reference: str
    latest_day: dt.date

    def __new__(cls, text: str, reference: str, latest_day: dt.date) -> _ImpreciseDate:
        problem = super().__new__(cls, text)
        problem.reference = reference
        problem.latest_day = latest_day
        return problem


def _newer_problems(problems: list[str], newest: _Candidate) -> list[str]:
    """With `select: latest`, the problems that may still concern the latest result: a
    resource dated imprecisely whose latest possible day is before the newest dated
    result's day cannot be newer, and is left out; one that may be newer says so."""
    if not problems or newest.span is None or newest.span.start is None:
        return problems
    day = newest.span.start
    kept: list[str] = []
    for problem in problems:
        if type(problem) is _ImpreciseDate:
            if problem.latest_day < day:
                continue  # every day it may be of is before the newest result
            problem = (
                f"{problem}; it may be the latest, newer than {newest.reference} of "
                f"{_day_text(newest.span)}"
            )
        kept.append(problem)
    return kept


def _imprecise(span: Span, first_day: dt.date | None, context: EvaluationContext) -> str:
    """Why a partial date cannot be placed inside the window (the atom stays unknown)."""
    window = f"{first_day.isoformat()} to " if first_day is not None else "up to "
    start = span.start.isoformat() if span.start else "?"
    latest = (span.latest_start or span.end or span.start or context.as_of).isoformat()
    return (
        f"is dated too imprecisely (some day {start} to {latest}) to tell whether it falls "
        f"within {window}{context.as_of.isoformat()}"
    )


def _window_start(window: Window, as_of: dt.date) -> dt.date | None:
    return day_before(window.duration, as_of) if window.duration is not None else None


def _window_text(window: Window, first_day: dt.date | None, as_of: dt.date) -> str:
    if first_day is None:
        return f"ever (up to {as_of.isoformat()})"
    name = f"{window.name} " if window.name else ""
    return f"within {name}{first_day.isoformat()} to {as_of.isoformat()}"
