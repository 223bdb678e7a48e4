"""Computed values: an Observation atom whose value may come from a registered formula.

`ComputedNode` wraps the atom's ordinary `ResourceNode` (the measured value) and a formula
from `engine.normalise.formulas`. With `prefer: measured` the measured value decides when the
window holds one, else the computed value; with `prefer: computed` the other way round. A
computed value takes each measured input as the latest usable result of its concept in the
input's window (the atom's window unless `computed.inputs` names another), the age on the
day of the formula's first measured input, and Patient.gender; every input is cited as
evidence. Results that may each be an input's latest (`may_be_latest`) are each computed, in
the order of their references: values on one side of the test decide together, values that
disagree leave it unknown, naming each. An input that is missing, only older than its
window (stale), unusable or implausible makes the computed value unknown, with that reason;
so does an input type the source could not provide (`EvaluationContext.unavailable_types`:
"Observation not exported by the server", or the server's refusal), whatever the record
holds, as an atom over that type only.

What the formula finds (`_Value`: the value, or why there is none, and the results read) is
worked out apart from the value test and kept in `EvaluationContext.computed_values` under
`computation_key`, which leaves the test out: a cohort run stores it, and a re-run after a
threshold edit tests the stored value instead of reading the inputs again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any, NamedTuple

from engine.criteria.model import ComputedValue, ResourceAtom, Window
from engine.errors import CriteriaError, DateProblem, Location, UnitError
from engine.evaluate.nodes import (
    EVIDENCE_LIMIT,
    EvaluationContext,
    Reads,
    ResourceNode,
    may_be_latest,
    unavailable_text,
)
from engine.evaluate.outcome import (
    MET,
    NOT_MET,
    UNKNOWN,
    Cited,
    Outcome,
    is_shared,
    shared,
    with_atom,
)
from engine.evaluate.status import status_predicate
from engine.evaluate.timing import (
    Span,
    age_in_years,
    day_before,
    parse_date_range,
)
from engine.evaluate.values import ValueCheck, deciding_number, value_thresholds
from engine.normalise import Concept, DataProblem, Measurement, Terminology, convert, measure
from engine.normalise.formulas import FORMULAS, Formula, FormulaInput, InputKind

__all__ = ["ComputedNode", "compile_computed", "computation_key"]

_INPUT_TYPE = "Observation"
"""The type every measured input is read from (`_latest`)."""
_OBSERVATION_STATUS = status_predicate(_INPUT_TYPE, None)
_AGE, _SEX = InputKind.AGE, InputKind.SEX
"""Read as globals (an enum class's member is a lookup through its metaclass in Python 3.11)."""


@dataclass(frozen=True)
class _Input:
    spec: FormulaInput
    concept: Concept
    window: Window
    window_text: str = field(init=False, repr=False, compare=False)
    """How the window is named when no result is in it (its name, duration, or "ever")."""

    def __post_init__(self) -> None:
        window = self.window
        text = window.name or (window.duration.readable if window.duration else "ever")
        object.__setattr__(self, "window_text", text)


class _Read(NamedTuple):
    """One input read from the record: its value in the formula's unit, or why not (a
    tuple: made per input and patient, at a third of a frozen dataclass's cost)."""

    value: float | None
    shown: str
    reference: str | None
    day: dt.date | None
    problem: str | None = None
    resource: dict[str, Any] | None = None


class _Dated(NamedTuple):
    """An input's result in its window, with its span (what `may_be_latest` compares)."""

    resource: dict[str, Any]
    span: Span


class _Value(NamedTuple):
    """What the formula found for one choice of input results, before the value test: the
    value in the formula's unit, or why it is unusable (the formula's own words), or None
    with the `problems` that kept it from being computed; whether the inputs are from
    different samples (`same_sample`); the references read (inputs, then the Patient) and
    the inputs as shown ("creatinine 2 mg/dL on 2026-10-25 (Observation/x)", "age 60",
    "male"). As JSON data it is what a cohort run stores (`EvaluationContext.computed_values`)."""

    result: float | str | None
    problems: tuple[str, ...]
    apart: bool
    evidence: tuple[str, ...]
    shown: tuple[str, ...]


class _Computation(NamedTuple):
    """The computed value of one choice of input results: its outcome, the value ("37.1
    mL/min/{1.73_m2}"; "" when it could not be computed), the inputs it came from
    ("creatinine 2 mg/dL on 2026-10-25 (Observation/x), age 60, male"), and whether they are
    from different samples (`same_sample`)."""

    outcome: Outcome
    value_text: str = ""
    inputs_text: str = ""
    apart: bool = False


def compile_computed(
    measured: ResourceNode,
    computed: ComputedValue,
    terminology: Terminology,
    where: Location,
) -> ComputedNode:
    """The node for an atom with `computed:`; CriteriaError (naming `where`) if the formula's
    inputs are not in the mappings or its unit does not convert to the atom concept's."""
    formula = FORMULAS[computed.formula]
    concept = measured.concept
    assert concept is not None and measured.value_check is not None
    if concept.unit is None:
        raise CriteriaError(
            f"concept {concept.id} has no unit, but formula {formula.id} gives {formula.unit}",
            where,
        )
    try:
        convert(1.0, formula.unit, concept.unit, concept.molar_mass)
    except UnitError as error:
        raise CriteriaError(
            f"formula {formula.id} gives {formula.unit}, which does not convert to "
            f"{concept.id}'s unit {concept.unit}: {error.message}",
            where,
        ) from None
    windows = dict(computed.input_windows)
    inputs: list[_Input] = []
    for spec in formula.measurement_inputs:
        assert spec.concept is not None and spec.unit is not None
        if not terminology.has_concept(spec.concept):
            raise CriteriaError(
                f"formula {formula.id} needs concept '{spec.concept}' (input {spec.name}), "
                "which the mappings do not define",
                where,
            )
        input_concept = terminology.concept(spec.concept)
        try:
            convert(1.0, input_concept.unit or "1", spec.unit, input_concept.molar_mass)
        except UnitError as error:
            raise CriteriaError(
                f"formula {formula.id} reads {spec.name} in {spec.unit}, but concept "
                f"{spec.concept} is in {input_concept.unit}: {error.message}",
                where,
            ) from None
        inputs.append(_Input(spec, input_concept, windows.get(spec.name, measured.atom.window)))
    return ComputedNode(
        measured=measured,
        formula=formula,
        prefer=computed.prefer,
        inputs=tuple(inputs),
        same_sample=computed.same_sample,
        label=measured.label,
        value_check=measured.value_check,
        thresholds=value_thresholds(measured.atom.value, concept),
        key=computation_key(measured.atom),
    )


_KEY_FORMAT = 1
"""Changed whenever what a stored computation holds, or how it is read, changes."""


def computation_key(atom: ResourceAtom) -> str:
    """What the formula of an atom with `computed:` finds depends on, as a hash: the formula,
    each input's concept and window, whether the inputs must be one sample. Not the value
    test: editing a threshold keeps the key, so a re-run reads back what the formula found
    (`_Value`). The concepts' definitions (mappings), the as-of day and the data are in a
    cohort store's own key; the formulas' code is in its trialsieve version."""
    computed = atom.computed
    assert computed is not None
    formula = FORMULAS[computed.formula]
    windows = dict(computed.input_windows)
    inputs = tuple(
        (spec.name, spec.concept, windows.get(spec.name, atom.window))
        for spec in formula.measurement_inputs
    )
    text = repr((_KEY_FORMAT, formula.id, computed.same_sample, inputs))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ComputedNode:
    measured: ResourceNode
    formula: Formula
    prefer: str
    inputs: tuple[_Input, ...]
    label: str
    value_check: ValueCheck
    same_sample: bool = False
    """`computed.same_sample`: the measured inputs must come from one specimen."""
    thresholds: tuple[float, ...] = ()
    """The value test's numbers in the concept's unit: the computed value is shown with the
    digits that decide against them (`deciding_number`)."""
    key: str = ""
    """`computation_key`: what the formula finds for a patient is kept under it
    (`EvaluationContext.computed_values`)."""
    reads_patient: bool = field(init=False, repr=False, compare=False)
    """Whether the formula reads the Patient (age or sex), which it then cites."""
    reads: Reads | None = field(init=False, repr=False, compare=False)
    """What the value reads when it answers the same for every patient holding none of it
    (`Reads`): a formula that does not read the Patient, over a measured atom with a
    concept whose window is the as-of date's. Such a patient has no measured value (the
    atom's shared nothing-found outcome) and no input (each "no ... within" its window),
    and nothing is cited, so the outcome is made once per as-of day (`_unread`), shared."""
    _unread: dict[dt.date, Outcome] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """The outcome for a patient holding nothing of `reads`, by as-of day."""

    def __post_init__(self) -> None:
        reads_patient = any(spec.kind is not InputKind.MEASUREMENT for spec in self.formula.inputs)
        object.__setattr__(self, "reads_patient", reads_patient)
        measured = self.measured
        reads = None
        if not reads_patient and measured.as_of_anchored and measured.concept is not None:
            concepts = {measured.concept.id, *(item.concept.id for item in self.inputs)}
            types = measured.types | {_INPUT_TYPE} if self.inputs else measured.types
            reads = Reads(frozenset(concepts), frozenset(types), frozenset())
        object.__setattr__(self, "reads", reads)

    def evaluate(self, context: EvaluationContext) -> Outcome:
        reads = self.reads
        if reads is not None and reads.unread_by(context):
            known = self._unread.get(context.as_of)
            if known is None:
                memo = context.computed_values
                kept = len(memo)
                known = shared(self._evaluate(context))
                if is_shared(known):
                    self._unread[context.as_of] = known
                    # what the formula found of nothing is stored for no patient: the first
                    # patient holding nothing is stored as every later one, who gets the
                    # shared outcome (a cohort run's stored outcomes do not depend on
                    # which patient its process met first)
                    for key in list(memo)[kept:]:
                        del memo[key]
            return known
        return self._evaluate(context)

    def _evaluate(self, context: EvaluationContext) -> Outcome:
        reads: list[_Read] = []
        also: list[Cited] = []
        outcome = self._decide(context, reads, also)
        if outcome.atom is not None:  # decided by the measured value: cited already
            return outcome
        if not reads:  # the formula did not read them
            for item in self.inputs:  # a loop: a comprehension would make `context` a cell
                reads.extend(_latest(item, context))
        evidence = outcome.evidence
        cited = []
        for read in reads:  # a loop, not a comprehension: no frame of its own (Python 3.11)
            resource = read.resource
            if resource is not None and read.reference in evidence:
                cited.append(Cited(read.reference, resource))  # (its label: `_latest`)
        patient_reference, patient_cited = context.patient_cited()
        if patient_reference in evidence:
            cited.extend(patient_cited)
        cited.extend(also)
        return with_atom(outcome, self.measured.atom, tuple(cited))

    def _decide(self, context: EvaluationContext, reads: list[_Read], also: list[Cited]) -> Outcome:
        """The outcome; `reads` gets the inputs' reads when the formula reads them, `also` the
        measured value's cited resources when both values are given (`prefer: latest`)."""
        if self.prefer == "latest":
            return self._newest(context, reads, also)
        if self.prefer == "measured":
            first = self.measured.evaluate(context)
            if first.truth is not UNKNOWN:
                return first
            second = self._computed(context, reads)
        else:
            first = self._computed(context, reads)
            if first.truth is not UNKNOWN:
                return first
            second = self.measured.evaluate(context)
        if second.truth is not UNKNOWN:
            return Outcome(
                second.truth,
                f"{second.reason} ({first.reason})",
                self.label,
                evidence=second.evidence,
            )
        return self._both_unknown(first, second)

    def _both_unknown(self, first: Outcome, second: Outcome) -> Outcome:
        """Unknown: neither value decides; both reasons, evidence and missing data."""
        return Outcome(
            UNKNOWN,
            f"{first.reason}; {second.reason}",
            self.label,
            evidence=first.evidence + second.evidence,
            missing=first.missing + second.missing,
            unavailable=first.unavailable or second.unavailable,
        )

    def _cannot_decide(
        self, reason: str, problem: str, evidence: Sequence[str] = (), unavailable: bool = False
    ) -> Outcome:
        """Unknown: the computed value cannot decide, because `reason` (with the inputs'
        `evidence`); its missing item names the value, the formula and the `problem`:
        `eGFR computed by ckd-epi-2021 (<problem>)`, or, when the problem is that the inputs'
        type is `unavailable` (not exported, refused), `eGFR computed by ckd-epi-2021: <why>`."""
        computed_by = f"{self.measured.subject} computed by {self.formula.id}"
        return Outcome(
            UNKNOWN,
            reason,
            self.label,
            evidence=tuple(evidence),
            missing=(f"{computed_by}: {problem}" if unavailable else f"{computed_by} ({problem})",),
            unavailable=problem if unavailable else "",
        )

    def _newest(self, context: EvaluationContext, reads: list[_Read], also: list[Cited]) -> Outcome:
        """`prefer: latest`: the newer of the latest measured value and the computed one
        decides (the measured one on the same day); the computed value is dated by its oldest
        measured input. The other value, when there is one, is shown beside it."""
        measured = self.measured.evaluate(context)
        computed = self._computed(context, reads)
        if measured.truth is UNKNOWN or computed.truth is UNKNOWN:
            first, second = (
                (measured, computed) if measured.truth is not UNKNOWN else (computed, measured)
            )
            if first.truth is UNKNOWN:
                return self._both_unknown(measured, computed)
            if first is measured:
                also.extend(measured.cited)
                # why the computed value cannot decide, when the window holds an input
                read = any(read.reference is not None for read in reads)
            else:  # why the measured one cannot, when the window holds one (unusable)
                read = bool(measured.evidence) or any("(unusable: " in m for m in measured.missing)
            return Outcome(
                first.truth,
                f"{first.reason} ({second.reason})" if read else first.reason,
                self.label,
                evidence=first.evidence,
            )
        measured_day = None
        if measured.cited:
            span = context.span_of(dict(measured.cited[0].resource))
            if isinstance(span, Span):
                measured_day = span.start
        days = [read.day for read in reads if read.day is not None]
        computed_day = min(days) if days else None
        also.extend(measured.cited)
        if computed_day is not None and (measured_day is None or computed_day > measured_day):
            newer, older, kind = computed, measured, "measured"
        else:
            newer, older, kind = measured, computed, "computed"
        disagree = " and says otherwise" if older.truth is not newer.truth else ""
        same_day = computed_day == measured_day
        when = "of the same day" if same_day else "older"
        rule = " (the measured one on the same day)" if same_day else ""
        return Outcome(
            newer.truth,
            f"{newer.reason}; the newest value in the window decides{rule}, and the {kind} one "
            f"is {when}{disagree} ({_without_subject(older.reason)})",
            self.label,
            evidence=newer.evidence + older.evidence,
        )

    def _computed(self, context: EvaluationContext, reads: list[_Read]) -> Outcome:
        subject = self.measured.subject
        if self.inputs and _INPUT_TYPE in context.unavailable_types:
            reason = unavailable_text({_INPUT_TYPE}, context.unavailable_reasons)
            return self._cannot_decide(
                f"{subject}: cannot compute {self.formula.display}: {reason}",
                reason,
                unavailable=True,
            )
        memo = context.computed_values
        known = _stored_values(memo.get(self.key), self.inputs, context)
        if known is None:
            tied: list[tuple[_Read, ...]] = [_latest(item, context) for item in self.inputs]
            # Results that may each be an input's latest (`may_be_latest`): every choice of
            # them is computed, in the order of their references, so that the source's order
            # of them never decides.
            values = [self._value(context, choice) for choice in product(*tied)]
            stored = _stored_form(tied, values)
            if stored is not None:
                memo[self.key] = stored
        else:
            tied, values = known
        for item_reads in tied:
            reads.extend(item_reads)
        if len(values) == 1:  # one latest result each
            return self._tested(values[0]).outcome
        computations = [self._tested(value) for value in values]
        together = [computation for computation in computations if not computation.apart]
        if not together:  # no choice is one sample: the first says why
            return computations[0].outcome
        for computation in together:
            if computation.outcome.truth is UNKNOWN:  # a result that may be the latest is unusable
                return computation.outcome
        if len(together) == 1:
            return together[0].outcome
        return self._tied(together, tied)

    def _tied(self, computations: list[_Computation], tied: list[tuple[_Read, ...]]) -> Outcome:
        """The outcome of computed values from input results that may each be the latest:
        decided when every value is on the same side of the test, else unknown, naming each
        value and the results it came from."""
        subject = self.measured.subject
        truths = {computation.outcome.truth for computation in computations}
        which = " and ".join(
            f"{_count_words(len(item_reads))} {_input_words(item)} results"
            for item, item_reads in zip(self.inputs, tied, strict=True)
            if len(item_reads) > 1
        )
        test = self.measured.atom.value.text if self.measured.atom.value is not None else ""
        evidence = tuple(
            dict.fromkeys(
                reference
                for computation in computations
                for reference in computation.outcome.evidence
            )
        )[:EVIDENCE_LIMIT]
        name = self.formula.display
        if len(truths) == 1:
            relation = "" if MET in truths else "not "
            values = "; ".join(
                f"{computation.value_text} from {computation.inputs_text}"
                for computation in computations
            )
            return Outcome(
                MET if MET in truths else NOT_MET,
                f"{subject} computed: {which} may each be the latest, and each value computed "
                f"by {name} is {relation}{test}: {values}",
                self.label,
                evidence=evidence,
            )
        said = "; ".join(
            f"{computation.value_text}, which is "
            f"{'' if computation.outcome.truth is MET else 'not '}{test}, from "
            f"{computation.inputs_text}"
            for computation in computations
        )
        return self._cannot_decide(
            f"{subject}: {which} may each be the latest, and the values computed by {name} "
            f"disagree: {said}",
            f"{which} that may each be the latest disagree: a newer result, or a correction of "
            "them, settles it",
            evidence,
        )

    def _value(self, context: EvaluationContext, chosen: Sequence[_Read]) -> _Value:
        """What the formula finds from one result of each input (`chosen`, in the order of
        `self.inputs`) and the Patient's age and sex."""
        values: dict[str, float | str] = {}
        shown: list[str] = []
        evidence: list[str] = []
        problems: list[str] = []
        first_day: dt.date | None = None
        for item, read in zip(self.inputs, chosen, strict=True):
            if read.problem is not None:
                problems.append(read.problem)
                continue
            assert read.value is not None
            values[item.spec.name] = read.value
            shown.append(read.shown)
            if read.reference is not None:
                evidence.append(read.reference)
            if first_day is None:
                first_day = read.day
        apart = None
        if self.same_sample and not problems:
            apart = _not_same_sample(self.inputs, chosen)
            if apart is not None:
                problems.append(apart)
        patient = context.record.patient
        patient_reference, _ = context.patient_cited()
        for spec in self.formula.inputs if self.reads_patient else ():
            if spec.kind is _AGE:
                age = _age(patient, first_day or context.as_of)
                if isinstance(age, str):
                    problems.append(age)
                else:
                    values[spec.name] = age
                    shown.append(f"age {age}")
            elif spec.kind is _SEX:
                gender = patient.get("gender")
                if not isinstance(gender, str):
                    problems.append(f"{patient_reference} has no gender")
                else:
                    values[spec.name] = gender
                    shown.append(gender)
        if self.reads_patient:
            evidence.append(patient_reference)
        result = None if problems else self.formula.compute(values)
        return _Value(result, tuple(problems), apart is not None, tuple(evidence), tuple(shown))

    def _tested(self, found: _Value) -> _Computation:
        """The computed value's outcome: its value test, or why it cannot decide."""
        subject = self.measured.subject
        name = self.formula.display
        result, problems, apart, evidence, shown = found
        if problems:
            return _Computation(
                self._cannot_decide(
                    f"{subject}: cannot compute {name}: {'; '.join(problems)}",
                    problems[0],
                    evidence[:EVIDENCE_LIMIT],
                ),
                apart=apart,
            )
        assert result is not None
        if isinstance(result, str):
            return _Computation(
                self._cannot_decide(
                    f"{subject}: {name} from {', '.join(shown)} is unusable: {result}",
                    result,
                    evidence,
                ),
            )
        concept = self.measured.concept
        assert concept is not None and concept.unit is not None
        value = convert(result, self.formula.unit, concept.unit, concept.molar_mass)
        measurement = Measurement(value, concept.unit, frozenset(), None, None, "computed")
        verdict = self.value_check(measurement)
        test = self.measured.atom.value.text if self.measured.atom.value is not None else ""
        value_text = f"{deciding_number(value, self.thresholds)} {concept.unit}"
        inputs_text = ", ".join(shown)
        computed_text = f"{value_text} by {name} from {inputs_text}"
        if isinstance(verdict, str):
            return _Computation(
                self._cannot_decide(f"{subject}: {computed_text}: {verdict}", verdict, evidence),
                value_text,
                inputs_text,
            )
        relation = "" if verdict else "not "
        return _Computation(
            Outcome(
                MET if verdict else NOT_MET,
                f"{subject} computed: {computed_text} is {relation}{test}",
                self.label,
                evidence=tuple(evidence),
            ),
            value_text,
            inputs_text,
        )


def _stored_form(tied: Sequence[tuple[_Read, ...]], values: Sequence[_Value]) -> list[Any] | None:
    """What the formula found for a patient as JSON data (`computed_values`): each input's
    reads (reference, day, whether a resource is cited) and the value of each choice of
    them; None for a value JSON cannot hold (not finite), which is then not kept."""
    found = []
    for value in values:
        result = value.result
        if type(result) is float and not math.isfinite(result):
            return None
        found.append(
            [result, list(value.problems), value.apart, list(value.evidence), list(value.shown)]
        )
    reads = [
        [
            [
                read.reference,
                None if read.day is None else read.day.isoformat(),
                read.resource is not None,
            ]
            for read in item_reads
        ]
        for item_reads in tied
    ]
    return [reads, found]


def _stored_values(
    stored: Any, inputs: Sequence[_Input], context: EvaluationContext
) -> tuple[list[tuple[_Read, ...]], list[_Value]] | None:
    """The reads and values of `_stored_form` read back, each cited resource found again in
    the patient's record by its reference; None when nothing is stored, or when what is
    stored is not of that form or names a result the record does not hold (then it is
    computed again)."""
    if type(stored) is not list or len(stored) != 2:
        return None
    stored_reads, stored_values = stored
    if type(stored_reads) is not list or len(stored_reads) != len(inputs):
        return None
    tied: list[tuple[_Read, ...]] = []
    choices = 1
    for item, item_reads in zip(inputs, stored_reads, strict=True):
        if type(item_reads) is not list or not item_reads:
            return None
        reads = []
        by_reference: dict[str, dict[str, Any]] | None = None
        for entry in item_reads:
            if type(entry) is not list or len(entry) != 3:
                return None
            reference, day, cited = entry
            if (
                not _TEXT_OR_NONE.issuperset((type(reference), type(day)))
                or type(cited) is not bool
            ):
                return None
            try:
                read_day = None if day is None else dt.date.fromisoformat(day)
            except ValueError:
                return None
            resource = None
            if cited:
                if by_reference is None:
                    record = context.record
                    by_reference = {
                        record.label(each): each
                        for each in record.resources_of_concept(item.concept.id)
                        if each.get("resourceType") == _INPUT_TYPE
                    }
                resource = by_reference.get(reference) if reference is not None else None
                if resource is None:
                    return None
            reads.append(_Read(None, "", reference, read_day, None, resource))
        tied.append(tuple(reads))
        choices *= len(reads)
    if type(stored_values) is not list or len(stored_values) != choices:
        return None
    values = []
    for entry in stored_values:
        if type(entry) is not list or len(entry) != 5:
            return None
        result, problems, apart, evidence, shown = entry
        if type(result) not in (float, int, str) and result is not None:
            return None
        if (result is None) != bool(problems) or type(apart) is not bool:
            return None
        if not (_texts(problems) and _texts(evidence) and _texts(shown)):
            return None
        values.append(_Value(result, tuple(problems), apart, tuple(evidence), tuple(shown)))
    return tied, values


_TEXT_OR_NONE = frozenset({str, type(None)})
_TEXT = frozenset({str})


def _texts(value: Any) -> bool:
    """Whether a stored value is a list of texts."""
    return type(value) is list and _TEXT.issuperset(map(type, value))


def _latest(item: _Input, context: EvaluationContext) -> tuple[_Read, ...]:
    """The latest result of the input's concept in its window, in the formula's unit; or the
    results that may each be the latest (`may_be_latest`: the same instant, or the same day
    when one gives no time), in the order of their references; or one read saying why there
    is none."""
    record = context.record
    name = item.spec.name
    first_day = day_before(item.window.duration, context.as_of) if item.window.duration else None
    in_window: list[_Dated] = []
    older: Span | None = None
    for resource in record.resources_of_concept(item.concept.id):
        if resource.get("resourceType") != _INPUT_TYPE:
            continue
        span = context.span_of(resource)
        if isinstance(span, DateProblem):
            return (_Read(None, "", None, None, f"{name}: {record.label(resource)} {span}"),)
        if span is None or span.start is None or span.start > context.as_of:
            continue
        if not _OBSERVATION_STATUS(resource, span, context.as_of):
            continue
        if first_day is not None and (span.end or span.start) < first_day:
            if older is None or span.moment > older.moment:
                older = span
            continue
        in_window.append(_Dated(resource, span))
    window = item.window_text
    if not in_window:
        if older is not None and older.start is not None:
            return (
                _Read(
                    None,
                    "",
                    None,
                    None,
                    f"{name} ({item.concept.display}) is stale: the latest, on "
                    f"{older.start.isoformat()}, is before the window {window}",
                ),
            )
        return (_Read(None, "", None, None, f"no {name} ({item.concept.display}) within {window}"),)
    if len(in_window) == 1:
        return (_read(item, in_window[0], context),)
    reads = [_read(item, dated, context) for dated in may_be_latest(in_window)]
    return tuple(sorted(reads, key=lambda read: read.reference or ""))


def _read(item: _Input, dated: _Dated, context: EvaluationContext) -> _Read:
    """One result of an input, in the formula's unit, or why it is unusable."""
    name = item.spec.name
    resource, span = dated
    reference = context.record.label(resource)
    measured = measure(resource, item.concept, context.terminology)
    if isinstance(measured, DataProblem):
        return _Read(None, "", reference, None, f"{name}: {reference} {measured.message}", resource)
    if measured.value is None or measured.comparator is not None:
        why = "a censored value" if measured.comparator else "no numeric value"
        return _Read(None, "", reference, None, f"{name}: {reference} has {why}", resource)
    unit = item.spec.unit
    assert unit is not None
    value = convert(measured.value, measured.unit or "1", unit, item.concept.molar_mass)
    day = span.start
    shown = f"{name} {value:.4g} {unit} on {day.isoformat() if day else '?'} ({reference})"
    return _Read(value, shown, reference, day, resource=resource)


def _count_words(count: int) -> str:
    return "two" if count == 2 else str(count)


def _without_subject(reason: str) -> str:
    """A reason without its leading "<subject>: " (shown inside another reason)."""
    return reason.split(": ", 1)[1] if ": " in reason else reason


def _not_same_sample(inputs: tuple[_Input, ...], reads: Sequence[_Read]) -> str | None:
    """Why the inputs' results are not from one specimen, or None when they are.

    Two results are from one sample when both name a `specimen` and it is the same reference;
    when either names none, when both are collected at the same minute (`effectiveDateTime` /
    `effectiveInstant`, compared in UTC), or on the same day when either gives no time of day
    (the record then cannot tell two samples of one day apart: said in the reason). Different
    specimens, times or days, or a collection date less precise than a day, are not."""
    first_input, first = inputs[0], reads[0]
    assert first.resource is not None
    for item, read in zip(inputs[1:], reads[1:], strict=True):
        assert read.resource is not None
        one, other = _specimen(first.resource), _specimen(read.resource)
        if one is not None and other is not None:
            if one == other:
                continue
            return (
                f"{_input_words(first_input)} ({first.reference}, specimen {one}) and "
                f"{_input_words(item)} ({read.reference}, specimen {other}) are not from the "
                "same sample"
            )
        moment, day = _collected(first.resource), _collected(read.resource)
        same = (
            moment[0] == day[0]
            if moment[0] is not None and day[0] is not None
            else moment[1] is not None and moment[1] == day[1]
        )
        if not same:
            one_day, other_day = moment[1], day[1]
            same_day = one_day is not None and one_day == other_day
            return (
                f"{_input_words(first_input)} on {moment[2] if same_day else moment[3]} and "
                f"{_input_words(item)} on {day[2] if same_day else day[3]} are not from the "
                "same sample"
            )
    return None


def _input_words(item: _Input) -> str:
    return item.spec.name.replace("_", " ")


def _specimen(resource: dict[str, Any]) -> str | None:
    specimen = resource.get("specimen")
    reference = specimen.get("reference") if isinstance(specimen, dict) else None
    return reference if isinstance(reference, str) and reference else None


def _collected(
    resource: dict[str, Any],
) -> tuple[dt.datetime | None, dt.date | None, str, str]:
    """When a sample was collected: the minute (UTC; None without a time of day or zone), the
    day (None when the date is less precise than a day), the day and time as written, and the
    day alone."""
    value = resource.get("effectiveDateTime") or resource.get("effectiveInstant")
    if not isinstance(value, str):
        period = resource.get("effectivePeriod")
        value = period.get("start") if isinstance(period, dict) else None
    if not isinstance(value, str):
        return None, None, "an unknown date", "an unknown date"
    try:
        day = dt.date.fromisoformat(value[:10])
    except ValueError:
        return None, None, value, value
    if "T" not in value:
        return None, day, value, value
    shown = f"{value[:10]} {value[11:16]}"
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None, day, shown, value[:10]
    if moment.tzinfo is None:
        return None, day, shown, value[:10]
    return moment.astimezone(dt.UTC).replace(second=0, microsecond=0), day, shown, value[:10]


def _age(patient: dict[str, Any], on: dt.date) -> int | str:
    birth_date = patient.get("birthDate")
    if birth_date is None:
        return "the Patient has no birthDate"
    try:
        earliest, latest, _ = parse_date_range(birth_date, "birthDate")
    except DateProblem as problem:
        return f"Patient {problem}"
    oldest, youngest = age_in_years(earliest, on), age_in_years(latest, on)
    if oldest != youngest:
        return f"birthDate {birth_date} is too coarse for an age"
    return oldest
