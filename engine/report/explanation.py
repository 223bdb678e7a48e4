"""Explanations in clinical language: what each criterion found, for the people who screen.

One module for every place a person reads a result: `trialsieve evaluate --explain`, the
DetectedIssue narrative, the per-patient HTML report page and the CDS Hooks cards all show
the text built here. `explain(evaluation)` is a pure function from a `PatientEvaluation` to a
`PatientExplanation`: per criterion the protocol text and its label, the outcome, the evidence
as a clinician says it (the drug with its dose, status and dates; the result with readable
units, reference range and date; the diagnosis with onset and status), what was looked for
when nothing was found (the concept, the window in dates, the status and the `where`
filters), and for an unknown exactly what would settle it. `explanation_text` renders it as
plain text.

Units are shown readably (`x10^9/L`, `IU/mL`, `µmol/L`); the FHIR resources keep UCUM.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from operator import attrgetter
from typing import Any, Generic, TypeVar

from engine.criteria.model import (
    AS_OF,
    AllOf,
    AnswerTest,
    AnyOf,
    AnyValueTest,
    CriterionKind,
    Expression,
    ManualAtom,
    NotOf,
    PatientAtom,
    PerUnitTest,
    QuantityTest,
    RangeTest,
    ReferenceLimitTest,
    ResourceAtom,
    SingleValueTest,
    ValueTest,
)
from engine.dataclass_init import direct_init
from engine.evaluate.compile import CompiledCriteria, CompiledCriterion
from engine.evaluate.nodes import (
    DISAGREE,
    NOT_COUNTED,
    OUTSIDE,
    relation_bounds,
    relation_distance_text,
)
from engine.evaluate.outcome import MET, NOT_MET, UNKNOWN, Cited, Outcome, Truth
from engine.evaluate.patient import (
    CLEAR,
    FAILS,
    MANUAL_REVIEW,
    MISSING_DATA,
    CriterionResult,
    CriterionVerdict,
    PatientEvaluation,
    SubjectStatus,
)
from engine.evaluate.values import (
    deciding_number,
    per_unit_reading,
    reference_limit,
    value_thresholds,
)
from engine.normalise import Concept, DataProblem, Measurement, Terminology, measure
from engine.normalise.medication_exposure import MAY_HAVE_LASTED
from engine.report.validate import fhir_text

STATUS_TEXT = {
    SubjectStatus.INELIGIBLE: "not eligible",
    SubjectStatus.POTENTIAL_CANDIDATE: "may be eligible: data missing",
    SubjectStatus.CANDIDATE: "may be eligible: manual review pending",
    SubjectStatus.ELIGIBLE: "eligible: every criterion met",
}
"""The ResearchSubject status as a screening coordinator says it."""

TRUTH_TEXT = {MET: "yes", NOT_MET: "no", UNKNOWN: "unknown"}
FINDINGS_SHOWN = 3
"""At most this many findings are named per step (the most recent first)."""

NOT_EVALUATED_SUMMARY = (
    "not evaluated: the cohort pre-filter found the patient ineligible from their diagnoses "
    "and procedures alone"
)
_TYPE_WORDS = {
    "Condition": "diagnosis",
    "Procedure": "procedure",
    "Observation": "result",
    "MedicationStatement": "medication",
    "MedicationRequest": "medication order",
    "MedicationAdministration": "medication administration",
    "AllergyIntolerance": "allergy or intolerance",
    "ResearchSubject": "research study participation",
}
_SYSTEM_NAMES = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://www.whocc.no/atc": "ATC",
    "http://www.ama-assn.org/go/cpt": "CPT",
}
_OPERATOR_WORDS = {"==": "is", "=": "is", "!=": "is not"}
_OPERATOR_WORDS |= {">": ">", "<": "<", ">=": ">=", "<=": "<="}
_PERIOD_UNITS = {"s": "second", "min": "minute", "h": "hour", "d": "day", "wk": "week"}
_PERIOD_UNITS |= {"mo": "month", "a": "year"}


# --------------------------------------------------------------------------- data


@direct_init
@dataclass(frozen=True)
class Finding:
    """One cited resource as a clinician says it: `text` (`aspirin 81 mg, 1 tablet once
    daily; order active since 2025-02-14`) and the resource reference."""

    reference: str
    text: str


_text_of = attrgetter("text")


@direct_init
@dataclass(frozen=True)
class Step:
    """One node of a criterion's reasoning: a query, a demographic test, a question, or a
    combination of such steps.

    `says` is the sentence for the node's result; `looked_for` what a query searched (the
    concept, types, status and window in dates), `filters` its `where` / `where_not`
    conditions in words; `to_settle` what data or answer would turn an unknown into a
    yes or no.
    """

    label: str
    truth: Truth
    says: str
    combination: str = ""
    looked_for: str = ""
    filters: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    to_settle: tuple[str, ...] = ()
    question: str = ""
    relation: str = ""
    """For a query with findings: how they relate to the test (`not < 100 g/L`, `found`)."""
    children: tuple[Step, ...] = ()
    unavailable: str = ""
    """For an unknown query over types the source could not provide: which, and why
    ("MedicationStatement not exported by the server")."""
    needed: bool = True
    """False for an unknown operand of a combination its other operands already decide (an
    "any of" met, an "all of" not met): its open question or missing data changes nothing."""
    moot: str = ""
    """For an operand not needed because its "all of" does not apply to the patient (an age
    or gender test of the same "all of" is not met): why, in words ("does not apply (gender
    female: not male)"); shown instead of its findings."""


@dataclass(frozen=True)
class CriterionExplanation:
    """One criterion for one patient: protocol text, label, outcome, why, and what is open."""

    id: str
    number: str
    kind: CriterionKind
    label: str
    protocol_text: str
    verdict: CriterionVerdict | None
    """None when the criterion was not evaluated (a cohort pre-filter settled the patient)."""
    outcome_text: str
    summary: str
    step: Step | None
    findings: tuple[Finding, ...]
    questions: tuple[str, ...]
    to_settle: tuple[str, ...]


@dataclass(frozen=True)
class PatientExplanation:
    """A patient's screening for one trial, ready to show."""

    trial_id: str
    trial_title: str
    patient_id: str
    patient_reference: str
    as_of: dt.date
    newest_data: dt.date | None
    status: SubjectStatus
    status_text: str
    criteria: tuple[CriterionExplanation, ...]
    data_problems: tuple[str, ...]

    @property
    def open_questions(self) -> tuple[tuple[CriterionExplanation, str], ...]:
        """Every manual question still unanswered, with its criterion."""
        return tuple((c, question) for c in self.criteria for question in c.questions)

    @property
    def missing_data(self) -> tuple[tuple[CriterionExplanation, str], ...]:
        """Every piece of data that would settle a criterion now unknown."""
        return tuple((c, item) for c in self.criteria for item in c.to_settle)

    def with_verdict(self, verdict: CriterionVerdict) -> tuple[CriterionExplanation, ...]:
        return tuple(c for c in self.criteria if c.verdict is verdict)


# --------------------------------------------------------------------------- building


def explain(evaluation: PatientEvaluation) -> PatientExplanation:
    """The explanation of every criterion of one evaluation, in protocol order."""
    by_id = {result.id: result for result in evaluation.results}
    terminology = evaluation.criteria.terminology
    criteria = []
    kind_counts = {CriterionKind.INCLUSION: 0, CriterionKind.EXCLUSION: 0}
    for compiled in evaluation.criteria.criteria:
        kind_counts[compiled.kind] += 1
        number = f"{compiled.kind.value[0].upper()}{kind_counts[compiled.kind]}"
        result = by_id.get(compiled.id)
        if result is None:
            criterion = compiled.criterion
            criteria.append(
                CriterionExplanation(
                    id=criterion.id,
                    number=number,
                    kind=criterion.kind,
                    label=criterion_label(criterion.expression, criterion.id),
                    protocol_text=_protocol_text(criterion.text),
                    verdict=None,
                    outcome_text="not evaluated",
                    summary=NOT_EVALUATED_SUMMARY,
                    step=None,
                    findings=(),
                    questions=(),
                    to_settle=(),
                )
            )
            continue
        criteria.append(_criterion(result, number, evaluation.as_of, terminology))
    return PatientExplanation(
        trial_id=evaluation.criteria.trial.id,
        trial_title=evaluation.criteria.trial.title,
        patient_id=evaluation.patient_id,
        patient_reference=evaluation.patient_reference,
        as_of=evaluation.as_of,
        newest_data=evaluation.newest_data,
        status=evaluation.status,
        status_text=STATUS_TEXT[evaluation.status]
        + (f": {evaluation.vital.reason}" if evaluation.vital is not None else ""),
        criteria=tuple(criteria),
        data_problems=tuple(map(fhir_text, evaluation.data_problems)),
    )


def explain_criterion(
    result: CriterionResult, as_of: dt.date, terminology: Terminology
) -> CriterionExplanation:
    """One criterion's explanation (its `number` left empty: `explain` numbers them)."""
    return _criterion(result, "", as_of, terminology)


def outcome_text(kind: CriterionKind, verdict: CriterionVerdict) -> str:
    """The criterion's outcome from the patient's side: `clear`, `excludes the patient`, ..."""
    if verdict is CLEAR:
        return "met" if kind is CriterionKind.INCLUSION else "clear (not present)"
    if verdict is FAILS:
        return "not met" if kind is CriterionKind.INCLUSION else "present: excludes"
    if verdict is MISSING_DATA:
        return "unknown: data missing"
    return "unknown: manual review"


_CRITERION_CACHE_LIMIT = 4096
_Made = TypeVar("_Made")
_uncited_criteria: dict[
    tuple[int, str, dt.date, int, Outcome],
    tuple[CompiledCriterion, Terminology, CriterionExplanation],
] = {}
"""Explanations of criteria whose outcome cites nothing, anywhere in its tree (most criteria,
for most patients: "none on record ever" reads the same for everyone), by compiled criterion,
number, day, terminology and outcome (its truth, reason, evidence, missing and manual items,
unavailable types and children: everything the text is built from). The criterion and the
terminology are kept to check identity."""


def cites_nothing(outcome: Outcome) -> bool:
    """Whether no node of the outcome's tree cites a resource."""
    if outcome.cited:
        return False
    children = outcome.children  # most outcomes walked are leaves: no `all` and `map` then
    return not children or all(map(cites_nothing, children))


def _criterion(
    result: CriterionResult, number: str, as_of: dt.date, terminology: Terminology
) -> CriterionExplanation:
    outcome = result.outcome
    if not cites_nothing(outcome):
        return _build_criterion(result, number, as_of, terminology)
    compiled = result.criterion
    key = (id(compiled), number, as_of, id(terminology), outcome)
    return remembered(
        _uncited_criteria,
        key,
        compiled,
        terminology,
        lambda: _build_criterion(result, number, as_of, terminology),
    )


def remembered(
    cache: dict[Any, tuple[Any, Terminology, _Made]],
    key: tuple[Any, ...],
    owner: object,
    terminology: Terminology,
    build: Callable[[], _Made],
) -> _Made:
    """`build()`, kept in `cache` under `key`, which holds the ids of `owner` and
    `terminology`: a hit must be those very objects (an id is reused once its object is
    freed). A full cache is emptied."""
    known = cache.get(key)
    if known is not None and known[0] is owner and known[1] is terminology:
        return known[2]
    made = build()
    if len(cache) >= _CRITERION_CACHE_LIMIT:
        cache.clear()
    cache[key] = (owner, terminology, made)
    return made


def _build_criterion(
    result: CriterionResult, number: str, as_of: dt.date, terminology: Terminology
) -> CriterionExplanation:
    criterion = result.criterion.criterion
    step = _step(criterion.expression, result.outcome, as_of, terminology)
    deciding = _deciding_leaves(step)
    verdict = result.verdict
    questions = tuple(dict.fromkeys(leaf.question for leaf in deciding if leaf.question))
    to_settle = tuple(
        dict.fromkeys(item for leaf in deciding if not leaf.question for item in leaf.to_settle)
    )
    findings = tuple(
        {finding.reference: finding for leaf in deciding for finding in leaf.findings}.values()
    )
    return CriterionExplanation(
        id=criterion.id,
        number=number,
        kind=criterion.kind,
        label=criterion_label(criterion.expression, criterion.id),
        protocol_text=_protocol_text(criterion.text),
        verdict=verdict,
        outcome_text=outcome_text(criterion.kind, verdict),
        summary=fhir_text(_summary(verdict, deciding, step.says)),
        step=step,
        findings=findings,
        questions=questions,
        to_settle=to_settle,
    )


@functools.lru_cache(maxsize=1024)
def _protocol_text(text: str) -> str:
    """A criterion's protocol text on one line."""
    return " ".join(text.split())


def _summary(verdict: CriterionVerdict, deciding: list[Step], says: str) -> str:
    """A criterion's summary from its deciding leaves (`_deciding_leaves`) and what its
    top step says."""
    if verdict is MISSING_DATA:
        # one loop, not generators (a frame each in Python 3.11): the sentences of the leaves
        # whose types were unavailable, and what settles the others (manual items aside)
        unavailable: dict[str, None] = {}
        needs: dict[str, None] = {}
        for leaf in deciding:
            if leaf.unavailable:
                unavailable[_leaf_sentence(leaf)] = None
            elif not leaf.question:
                for item in leaf.to_settle:
                    needs[item] = None
        if unavailable:
            # the data may exist where the source could not reach: say why, not "Needs ..."
            summary = "Unknown: " + "; ".join(unavailable)
            return summary + ("; needs " + "; ".join(needs) if needs else "")
        return "Needs " + "; ".join(needs) if needs else says
    if verdict is MANUAL_REVIEW:
        questions: dict[str, None] = {}
        for leaf in deciding:
            if leaf.question:
                questions[leaf.question] = None
        return "Investigator to answer: " + " / ".join(questions)
    sentences = list(map(_leaf_sentence, deciding))  # (no comprehension frame)
    shown = sentences[:FINDINGS_SHOWN]
    more = len(sentences) - len(shown)
    return "; ".join(shown) + (f" (+{more} more)" if more else "")


def criterion_summary(
    result: CriterionResult, as_of: dt.date, terminology: Terminology, cites: bool = False
) -> str:
    """`explain_criterion(result, ...).summary`, building only the steps of the leaves that
    decide it (`_deciding_leaves`, found on the outcome tree): a cohort's report keeps
    only the summary, and a criterion citing a resource (the patient's age) would otherwise
    build the steps of every operand for every patient.

    `cites`: the caller knows that the outcome cites something (`cites_nothing` is false),
    so it is walked at once: only outcomes citing nothing are kept in `_uncited_deciding`."""
    expression = result.criterion.criterion.expression
    outcome = result.outcome
    deciding = (
        _walk_deciding(expression, outcome, as_of, terminology)
        if cites
        else _deciding_steps(expression, outcome, as_of, terminology)
    )
    combination = isinstance(expression, _COMBINATIONS)
    # what a combination's own step says; a leaf is its own deciding step
    says = TRUTH_TEXT[outcome.truth] if combination else deciding[0].says
    return fhir_text(_summary(result.verdict, deciding, says))


class OutcomeMemo(Generic[_Made]):
    """Values kept by the outcome object they were made of (its id; the outcome, the object
    they were made for, the day and the terminology kept to check that a hit is those very
    objects: an id is reused once its object is freed). A full memo is emptied."""

    def __init__(self, limit: int) -> None:
        self.entries: dict[int, tuple[Outcome, object, dt.date, Terminology, _Made]] = {}
        self.limit = limit

    def get(
        self, outcome: Outcome, owner: object, as_of: dt.date, terminology: Terminology
    ) -> _Made | None:
        """What was kept for these very objects, else None."""
        known = self.entries.get(id(outcome))
        if (
            known is not None
            and known[0] is outcome
            and known[1] is owner
            and known[2] == as_of
            and known[3] is terminology
        ):
            return known[4]
        return None

    def keep(
        self,
        outcome: Outcome,
        owner: object,
        as_of: dt.date,
        terminology: Terminology,
        made: _Made,
    ) -> None:
        if len(self.entries) >= self.limit:
            self.entries.clear()
        self.entries[id(outcome)] = (outcome, owner, as_of, terminology, made)


_uncited_deciding: OutcomeMemo[list[Step]] = OutcomeMemo(_CRITERION_CACHE_LIMIT)
"""`_deciding_steps` of combinations whose outcome cites nothing, by the outcome object (and
its expression): such outcomes are mostly one object for every patient
(`engine.evaluate.outcome`), met inside a criterion that cites something (a creatinine test
beside each gender test)."""


def _deciding_steps(
    expression: Expression, outcome: Outcome, as_of: dt.date, terminology: Terminology
) -> list[Step]:
    """`_deciding_leaves(_step(expression, outcome, ...))`, walking the outcome tree and
    building the deciding leaves' steps only (the list returned is not to be changed)."""
    if outcome.children:
        known = _uncited_deciding.get(outcome, expression, as_of, terminology)
        if known is not None:
            return known
        if cites_nothing(outcome):
            steps = _walk_deciding(expression, outcome, as_of, terminology)
            _uncited_deciding.keep(outcome, expression, as_of, terminology, steps)
            return steps
    return _walk_deciding(expression, outcome, as_of, terminology)


def _walk_deciding(
    expression: Expression, outcome: Outcome, as_of: dt.date, terminology: Terminology
) -> list[Step]:
    """`_deciding_steps` of an outcome found in no memo: one level, then each operand's."""
    if isinstance(expression, NotOf):
        return _deciding_steps(expression.operand, outcome.children[0], as_of, terminology)
    if isinstance(expression, _ALL_OR_ANY):
        children = outcome.children
        if not children or not expression.operands:  # a step without children: its own leaf
            return [_step(expression, outcome, as_of, terminology)]
        # the operands with the deciding truth (all of them when none decides); one loop, not
        # comprehensions (a frame each in Python 3.11)
        truth = outcome.truth
        if truth is UNKNOWN:
            deciding: Truth | None = UNKNOWN
        elif truth is MET:
            deciding = MET if isinstance(expression, AnyOf) else None
        else:
            deciding = NOT_MET if isinstance(expression, AllOf) else None
        guards = _failed_guards(expression, outcome) if truth is NOT_MET else ()
        pairs = list(zip(expression.operands, children, strict=False))
        if deciding is None:  # each operand decides, bar those for other patients (if any do)
            applying = [pair for pair in pairs if not _is_for_others(*pair)]
            pairs = applying or pairs
        leaves: list[Step] = []
        for index, (operand, child) in enumerate(pairs):
            if guards and index not in guards:  # the "all of" is for other patients
                continue
            if deciding is None or child.truth is deciding:
                leaves += _deciding_steps(operand, child, as_of, terminology)
        return leaves
    return [_step(expression, outcome, as_of, terminology)]


_ID_PREFIX = re.compile(r"^(inclusion|exclusion)-\d+-")
_ALL_OR_ANY = (AllOf, AnyOf)
_COMBINATIONS = (AllOf, AnyOf, NotOf)
_NUMBERS = (int, float)
"""isinstance's class tuples, made once (`AllOf | AnyOf` written in a call builds its union
at every call, twice the cost of the check; explanations check every node of every
outcome they walk)."""


@functools.lru_cache(maxsize=1024)
def _id_words(criterion_id: str) -> str:
    words = _ID_PREFIX.sub("", criterion_id).replace("-", " ")
    return words[:1].upper() + words[1:]


def criterion_label(expression: Expression, criterion_id: str) -> str:
    """The criteria file's label of the criterion, else its id in words."""
    if expression.label:
        return expression.label
    if isinstance(expression, ManualAtom):
        return expression.question
    return _id_words(criterion_id)


def criterion_labels(criteria: CompiledCriteria) -> list[str]:
    """Each criterion as `I1 Relapsed or refractory primary ITP`: number and label, in
    protocol order."""
    numbers = {CriterionKind.INCLUSION: 0, CriterionKind.EXCLUSION: 0}
    labels = []
    for compiled in criteria.criteria:
        numbers[compiled.kind] += 1
        number = f"{compiled.kind.value[0].upper()}{numbers[compiled.kind]}"
        label = criterion_label(compiled.criterion.expression, compiled.id)
        labels.append(f"{number} {label}")
    return labels


def _leaf_sentence(leaf: Step) -> str:
    return f"{leaf.label}: {leaf.says}" if leaf.label else leaf.says


def _deciding_leaves(step: Step) -> list[Step]:
    """The leaves that decide a step's truth: for a combination, the operands with the
    deciding truth (any of: the met ones; all of: the not met ones), else all of them."""
    if not step.children:
        return [step]
    if step.combination == "not":
        return _deciding_leaves(step.children[0])
    if step.truth is UNKNOWN:
        chosen = [child for child in step.children if child.truth is UNKNOWN]
    elif step.combination == "any of" and step.truth is MET:
        chosen = [child for child in step.children if child.truth is MET]
    elif step.combination == "all of" and step.truth is NOT_MET:
        chosen = [child for child in step.children if child.truth is NOT_MET and not child.moot]
    else:
        # an "any of" not met: each operand decides, bar those for other patients (an "all
        # of" whose age or gender test is not met), unless every one is such
        applying = [child for child in step.children if not _for_others(child)]
        chosen = applying or list(step.children)
    return [leaf for child in chosen for leaf in _deciding_leaves(child)]


def _for_others(step: Step) -> bool:
    """Whether a step is an "all of" for other patients (its age or gender test not met:
    its other operands are moot)."""
    return step.combination == "all of" and any(child.moot for child in step.children)


def _step(
    expression: Expression, outcome: Outcome, as_of: dt.date, terminology: Terminology
) -> Step:
    if isinstance(expression, _ALL_OR_ANY):
        return _combination_step(expression, outcome, as_of, terminology)
    if isinstance(expression, NotOf):
        child = _operand_step(expression.operand, outcome.children[0], as_of, terminology)
        return Step(
            label=expression.label or "",
            truth=outcome.truth,
            says=TRUTH_TEXT[outcome.truth],
            combination="not",
            children=(child,),
        )
    if isinstance(expression, ManualAtom):
        manual = expression
        return _cached_step(manual, outcome, as_of, _manual_step, manual, outcome)
    if isinstance(expression, PatientAtom):
        return _patient_step(expression, outcome, as_of)
    return _resource_step(expression, outcome, as_of, terminology)


def _combination_step(
    expression: AllOf | AnyOf, outcome: Outcome, as_of: dt.date, terminology: Terminology
) -> Step:
    """`_step` of an `all`/`any` (a function apart: its generators read `as_of` and
    `terminology`, which would be cells at every call of `_step`, mostly for leaves)."""
    word = "all of" if isinstance(expression, AllOf) else "any of"
    children = tuple(
        _operand_step(operand, child, as_of, terminology)
        for operand, child in zip(expression.operands, outcome.children, strict=False)
    )
    decided = MET if isinstance(expression, AnyOf) else NOT_MET
    if outcome.truth is decided:
        guards = _failed_guards(expression, outcome) if decided is NOT_MET else ()
        if guards:
            # an "all of" for other patients (`Woman, creatinine above 1.5 x the female
            # limit` for a man): its other operands do not apply, whatever they found
            moot = f"does not apply ({'; '.join(children[index].says for index in guards)})"
            children = tuple(
                child if index in guards else replace(child, needed=False, moot=moot)
                for index, child in enumerate(children)
            )
        else:
            children = tuple(
                replace(child, needed=False) if child.truth is UNKNOWN else child
                for child in children
            )
    return Step(
        label=expression.label or "",
        truth=outcome.truth,
        says=TRUTH_TEXT[outcome.truth],
        combination=word,
        children=children,
    )


def _failed_guards(expression: AllOf | AnyOf, outcome: Outcome) -> tuple[int, ...]:
    """The positions of an "all of"'s patient atoms (age, gender) that are not met: such
    an atom says whom the "all of" is for, and the patient is not one of them."""
    if not isinstance(expression, AllOf):
        return ()
    return tuple(
        index
        for index, (operand, child) in enumerate(
            zip(expression.operands, outcome.children, strict=False)
        )
        if isinstance(operand, PatientAtom) and child.truth is NOT_MET
    )


def _is_for_others(expression: Expression, outcome: Outcome) -> bool:
    """`_for_others` of the step an expression and its outcome make, without making it."""
    return (
        isinstance(expression, AllOf)
        and outcome.truth is NOT_MET
        and bool(_failed_guards(expression, outcome))
    )


_uncited_combinations: dict[
    tuple[int, dt.date, int, Outcome], tuple[Expression, Terminology, Step]
] = {}
"""Steps of combinations whose outcome cites nothing, anywhere in its tree, inside a criterion
that cites something (as `_uncited_criteria`, by expression, day, terminology, outcome)."""


def _operand_step(
    expression: Expression, outcome: Outcome, as_of: dt.date, terminology: Terminology
) -> Step:
    """`_step` of a combination's operand, from `_uncited_combinations` when it can be."""
    if not isinstance(expression, _COMBINATIONS) or not cites_nothing(outcome):
        return _step(expression, outcome, as_of, terminology)
    key = (id(expression), as_of, id(terminology), outcome)
    return remembered(
        _uncited_combinations,
        key,
        expression,
        terminology,
        lambda: _step(expression, outcome, as_of, terminology),
    )


def _manual_step(atom: ManualAtom, outcome: Outcome) -> Step:
    question = " ".join(atom.question.split())
    label = atom.label or "Investigator's answer"
    if outcome.truth is UNKNOWN:
        return Step(
            label=label,
            truth=outcome.truth,
            says=f"not answered yet: {question}",
            question=question,
            to_settle=(f"the investigator's answer to: {question}",),
        )
    answered = outcome.reason[len(atom.question) :].strip()
    return Step(label=label, truth=outcome.truth, says=f"{question} {answered}".strip())


def _patient_step(atom: PatientAtom, outcome: Outcome, as_of: dt.date) -> Step:
    parts = outcome.children if outcome.children else (outcome,)
    sentences = []
    to_settle: list[str] = []
    patient: Mapping[str, Any] = {}
    findings: list[Finding] = []
    checks_age = atom.minimum_age is not None or atom.maximum_age is not None
    relations: list[str] = []
    born, born_of = "", None  # the text of the Patient said first, and that Patient
    for part in parts:
        for cited in part.cited:
            patient = cited.resource
            if not findings:
                born, born_of = _patient_text(patient, as_of), patient
                gender = f"gender {patient.get('gender') or 'not recorded'}"
                text = (
                    f"{born}, {gender}"
                    if checks_age and atom.genders
                    else (born if checks_age else gender)
                )
                findings.append(Finding(cited.reference, text))
    if checks_age:
        bounds = _age_bounds(atom.minimum_age, atom.maximum_age)
        age_outcome = parts[0]
        if age_outcome.truth is UNKNOWN:
            sentences.append(f"age {bounds} cannot be checked: {age_outcome.reason}")
            to_settle.append("the patient's full date of birth (Patient.birthDate)")
        else:
            if born_of is not patient:  # the last Patient cited is another (or none)
                born = _patient_text(patient, as_of)
            sentences.append(born if age_outcome.truth is MET else f"{born}: not {bounds}")
            relations.append("yes" if age_outcome.truth is MET else f"not {bounds}")
    if atom.genders:
        wanted = " or ".join(atom.genders)
        gender_outcome = parts[-1]
        recorded_gender = patient.get("gender")
        if gender_outcome.truth is UNKNOWN:
            recorded = "recorded as unknown" if recorded_gender == "unknown" else "not recorded"
            sentences.append(f"gender {recorded} ({wanted} needed)")
            relations.append(sentences[-1])
            to_settle.append("the patient's administrative gender (Patient.gender)")
        else:
            inside = "" if gender_outcome.truth is MET else "not "
            sentences.append(f"gender {recorded_gender}: {inside}{wanted}")
            relations.append(f"{inside}{wanted}")
    default_label = "Age and gender" if checks_age and atom.genders else "Age" if checks_age else ""
    return Step(
        label=atom.label or default_label or "Gender (administrative)",
        truth=outcome.truth,
        says="; ".join(sentences),
        findings=tuple(findings),
        to_settle=tuple(to_settle),
        relation="; ".join(relations),
    )


def _age_bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"aged {low} to {high} years"
    return f"aged {low} years or more" if low is not None else f"aged {high} years or less"


def _patient_text(patient: Mapping[str, Any], as_of: dt.date) -> str:
    """The Patient's age on the day and birth date in words (`_birth_text`)."""
    birth = patient.get("birthDate")
    if type(birth) is not str:
        return _birth_text(birth, as_of)
    key = (birth, as_of)
    known = _birth_texts.get(key)
    if known is None:
        if len(_birth_texts) >= _STEP_CACHE_LIMIT:
            _birth_texts.clear()
        known = _birth_texts[key] = _birth_text(birth, as_of)
    return known


_birth_texts: dict[tuple[str, dt.date], str] = {}
"""`_birth_text` by birth date text and day: a pure function of the two, and a cohort's
patients share birth dates (every patient atom with an age says it)."""


def _birth_text(birth: Any, as_of: dt.date) -> str:
    if not isinstance(birth, str) or len(birth) < 10:
        return f"born {birth}" if birth else "date of birth not recorded"
    try:
        born = dt.date.fromisoformat(birth[:10])
    except ValueError:
        return f"born {birth}"
    age = as_of.year - born.year - ((as_of.month, as_of.day) < (born.month, born.day))
    return f"aged {age} on {as_of.isoformat()} (born {born.isoformat()})"


# --------------------------------------------------------------------------- resource atoms


_STEP_CACHE_LIMIT = 4096
_uncited_steps: dict[
    tuple[int, dt.date, Truth, tuple[str, ...], str, str], tuple[object, Step]
] = {}
"""Steps of atoms that cite nothing (most atoms, for most patients), and of unknown computed
values and medication uses (whose step does not say what they cite), by atom, day and
outcome (truth, missing data, reason, unavailable types): their text depends on nothing
else. The atom is kept to check identity."""


def _cached_step(
    atom: ManualAtom | ResourceAtom,
    outcome: Outcome,
    as_of: dt.date,
    build: Callable[..., Step],
    *arguments: Any,
) -> Step:
    """`build(*arguments)`, the atom's step for this outcome (its arguments passed rather
    than a closure made for every step), kept as `_uncited_steps` says."""
    if outcome.cited and not (outcome.truth is UNKNOWN and _is_derived(atom)):
        return build(*arguments)
    # An atom citing nothing, or an unknown computed value or medication use (whose step
    # says the outcome's reason and what settles it, never what it cites: `_derived_step`)
    key = (id(atom), as_of, outcome.truth, outcome.missing, outcome.reason, outcome.unavailable)
    known = _uncited_steps.get(key)
    if known is not None and known[0] is atom:
        return known[1]
    step = build(*arguments)
    if len(_uncited_steps) >= _STEP_CACHE_LIMIT:
        _uncited_steps.clear()
    _uncited_steps[key] = (atom, step)
    return step


def _is_derived(atom: ManualAtom | ResourceAtom) -> bool:
    """Whether the atom's step is `_derived_step`'s: a computed value or a medication use."""
    return type(atom) is ResourceAtom and (atom.computed is not None or atom.exposure is not None)


def _resource_step(
    atom: ResourceAtom, outcome: Outcome, as_of: dt.date, terminology: Terminology
) -> Step:
    return _cached_step(
        atom, outcome, as_of, _build_resource_step, atom, outcome, as_of, terminology
    )


def _build_resource_step(
    atom: ResourceAtom, outcome: Outcome, as_of: dt.date, terminology: Terminology
) -> Step:
    concept = (
        terminology.concept(atom.concept)
        if atom.concept is not None and terminology.has_concept(atom.concept)
        else None
    )
    looked_for, filters = _query_words(atom, concept, as_of)
    if atom.computed is not None or atom.exposure is not None:
        return _derived_step(atom, outcome, looked_for, filters)
    found = []
    for cited in outcome.cited:  # a loop, not a generator: no frame of its own (Python 3.11)
        found.append(_finding(cited, atom, concept, terminology))
    findings = tuple(found)
    label = atom.label or looked_for
    shown = "; ".join(map(_text_of, findings[:FINDINGS_SHOWN]))
    more = len(findings) - FINDINGS_SHOWN
    if more > 0:
        shown += f" (+{more} more)"
    if outcome.truth is UNKNOWN:
        settle = _what_settles(atom, concept, as_of, outcome, terminology)
        problem = _unusable_problem(outcome)
        disagreement = _disagreement(outcome)
        if problem:
            says = f"unusable data: {problem}"
        elif disagreement:
            says = disagreement
        elif _may_have_lasted(outcome):  # as `use: {within}` says it (`_derived_step`)
            says = readable_units_in(_without_subject(outcome.reason))
            settle = outcome.missing
        else:
            says = f"no result {window_words(atom, as_of)}"
        says += _outside_words(outcome) + _not_counted_words(outcome)
        failing = ""
        if atom.failing == "unknown" and atom.value is not None and findings and not problem:
            # results failing the test are no evidence against it (`failing: unknown`)
            test = value_test_text(atom.value)
            failing = (
                f"not {test}, which does not rule it out (no result "
                f"{window_words(atom, as_of)} is {test})"
            )
            says = f"{shown}: {failing}"
            settle = tuple(f"{item}, {test}" for item in settle)
        if outcome.unavailable:  # not "no result": the source could not give these types
            says = outcome.unavailable
            settle = tuple(f"{item}: {outcome.unavailable}" for item in settle)
        return Step(
            label=label,
            truth=outcome.truth,
            says=says,
            looked_for=looked_for,
            filters=filters,
            findings=findings,
            to_settle=settle,
            unavailable=outcome.unavailable,
            # with findings, the line above them says why they leave it unknown
            relation=failing or (says if findings else ""),
        )
    relation = ""
    if atom.value is not None:
        test = value_test_text(atom.value)
        if findings and atom.selection == "count":
            # how many pass, how many are needed, which are too close together: the
            # evaluator's own sentence (a count is not "< 100 g/L is not < 100 g/L")
            relation = readable_units_in(_without_subject(outcome.reason))
            says = f"{shown}: {relation}"
        elif findings:
            negation = "" if outcome.truth is MET else "not "
            if atom.selection == "all":  # "not every result is", never "every result not"
                selection, negation = f"{negation}every result is ", ""
            else:  # "the lowest is not < 100 x10^9/L", the result itself cited below
                selection = {"min": "the lowest is ", "max": "the highest is "}.get(
                    atom.selection, ""
                )
            if isinstance(atom.value, PerUnitTest):  # the cut-off in the deciding one's unit
                cited = outcome.cited[0]
                test = _per_unit_cut_off(atom.value, cited, concept, terminology) or test
            relation = f"{_count_words(outcome, atom)}{selection}{negation}{test}"
            says = f"{shown}: {relation}"
        else:
            says = _none_words(atom, as_of) + _outside_words(outcome) + _not_counted_words(outcome)
    elif outcome.truth is MET:
        relation = f"{_count_words(outcome, atom)}found"
        says = f"found: {shown}" if shown else "found"
    elif findings:
        relation = f"{_count_words(outcome, atom)}".rstrip(": ")
        says = f"{relation}: {shown}"
    else:
        says = _none_words(atom, as_of) + _outside_words(outcome) + _not_counted_words(outcome)
    return Step(
        label=label,
        truth=outcome.truth,
        says=says,
        looked_for=looked_for,
        filters=filters,
        findings=findings,
        relation=relation,
    )


_queries: dict[
    tuple[int, dt.date], tuple[ResourceAtom, Concept | None, tuple[str, tuple[str, ...]]]
] = {}
"""`describe_query` and `describe_filters` of each atom on each day (the atom and concept kept
to check identity): a step citing resources says them for every patient."""


def _query_words(
    atom: ResourceAtom, concept: Concept | None, as_of: dt.date
) -> tuple[str, tuple[str, ...]]:
    """What the atom's query looks for and its filters, in words (made once per atom and day)."""
    known = _queries.get((id(atom), as_of))
    if known is not None and known[0] is atom and known[1] is concept:
        return known[2]
    words = (describe_query(atom, concept, as_of), describe_filters(atom))
    if len(_queries) >= _STEP_CACHE_LIMIT:
        _queries.clear()
    _queries[id(atom), as_of] = (atom, concept, words)
    return words


def _derived_step(
    atom: ResourceAtom, outcome: Outcome, looked_for: str, filters: tuple[str, ...]
) -> Step:
    """A computed value or a medication exposure: the evaluator's own sentence, which names
    the formula or the periods of use, with every input cited."""
    says = outcome.reason.split(": ", 1)[1] if ": " in outcome.reason else outcome.reason
    says = readable_units_in(says)
    unknown = outcome.truth is UNKNOWN
    return Step(
        label=atom.label or looked_for,
        truth=outcome.truth,
        says=says,
        looked_for=looked_for,
        filters=filters,
        findings=tuple(map(Finding, outcome.evidence, outcome.evidence)) if not unknown else (),
        to_settle=outcome.missing if unknown else (),
        relation=says,
        unavailable=outcome.unavailable if unknown else "",
    )


def _not_counted_words(outcome: Outcome) -> str:
    """What an atom that counted nothing found of its concept that its status filter left
    out ("; on record, not counted by status: 2 completed"), or ""."""
    if NOT_COUNTED not in outcome.reason:
        return ""
    return f"{NOT_COUNTED}{outcome.reason.split(NOT_COUNTED, 1)[1]}"


def _without_subject(reason: str) -> str:
    """An atom's reason without the subject it starts with (`Haemoglobin: ...`)."""
    return reason.split(": ", 1)[1] if ": " in reason else reason


def _per_unit_cut_off(
    test: PerUnitTest, cited: Cited, concept: Concept | None, terminology: Terminology
) -> str:
    """The cut-off of a per-unit test that applied to a cited result (`>= 3 mg/mmol`), or
    "" when it has no numeric value."""
    if concept is None:
        return ""
    measured = cited.measured
    measurement = (
        measured[2]
        if measured is not None and measured[0] is concept and measured[1] is terminology
        else measure(cited.resource, concept, terminology)
    )
    if isinstance(measurement, DataProblem) or measurement.value is None:
        return ""
    return _single_test_text(per_unit_reading(test, measurement, concept.unit).test)


def _outside_words(outcome: Outcome) -> str:
    """What an anchored atom found outside its window ("; outside the window: the earliest
    after it, 2026-08-02 (Observation/x), is too recent"), or ""."""
    if OUTSIDE not in outcome.reason:
        return ""
    return f"{OUTSIDE}{outcome.reason.split(OUTSIDE, 1)[1]}"


def _none_words(atom: ResourceAtom, as_of: dt.date) -> str:
    window = window_words(atom, as_of)
    if window.startswith(("active on", "in use on")):
        return f"none {window}"
    return f"none on record {window}"


def _count_words(outcome: Outcome, atom: ResourceAtom) -> str:
    needed = atom.minimum_count if atom.selection == "count" else 1
    found = len(outcome.cited)
    if needed > 1:
        return f"{found} found, {needed} needed: "
    return ""


def _unusable_problem(outcome: Outcome) -> str:
    for item in outcome.missing:
        if "(unusable: " in item:
            return item.split("(unusable: ", 1)[1].rstrip(")")
    return ""


def _may_have_lasted(outcome: Outcome) -> bool:
    """Whether a medication begun before the window, its end not known, may have been in use
    in it (`engine.evaluate.nodes.unknown_use`)."""
    return any(item.endswith(MAY_HAVE_LASTED) for item in outcome.missing)


def _disagreement(outcome: Outcome) -> str:
    """Why results that may each be the latest leave the atom unknown (`DISAGREE`), or ""."""
    for item in outcome.missing:
        if f"({DISAGREE}" in item:
            return item.split(f"({DISAGREE}", 1)[1].removesuffix(")")
    return ""


def _what_settles(
    atom: ResourceAtom,
    concept: Concept | None,
    as_of: dt.date,
    outcome: Outcome,
    terminology: Terminology,
) -> tuple[str, ...]:
    what = concept.display if concept is not None else " or ".join(atom.resource_types)
    code = _example_code(concept, terminology)
    coded = f" ({code})" if code else ""
    if _disagreement(outcome):  # a newer result decides (or a correction of one of them)
        return (
            f"a newer {what} {_TYPE_WORDS.get(atom.resource_types[0], 'result')}{coded} "
            f"{window_words(atom, as_of)}, or a correction of the results that disagree",
        )
    usable = "a usable " if _unusable_problem(outcome) else ""
    kind = _TYPE_WORDS.get(atom.resource_types[0], atom.resource_types[0])
    return (f"{usable}{what} {kind}{coded} {window_words(atom, as_of)}",)


def _example_code(concept: Concept | None, terminology: Terminology) -> str:
    """A code of the concept to name in "to settle": the one its mapping lists first (the
    author's preferred code: LOINC 777-3 for platelets, not 13056-7, platelets in plasma; in
    the first system listed that has a name here), else the smallest of a known system (codes
    from a value set have no order), else, for a concept that only renames another (includes
    exactly one, as `creatinine-female-limits` includes `creatinine` with another default
    range), that one's (LOINC 2160-0). A group of several (anticoagulants and antiplatelets)
    names none: one member's code would read as the group's."""
    if concept is None:
        return ""
    for system, code in concept.first_codes.items():
        name = _SYSTEM_NAMES.get(system)
        if name is not None:
            return f"{name} {code}"
    for system, name in _SYSTEM_NAMES.items():
        codes = concept.codes.get(system)
        if codes:
            return f"{name} {min(codes)}"
    if len(concept.includes) == 1 and terminology.has_concept(concept.includes[0]):
        return _example_code(terminology.concept(concept.includes[0]), terminology)
    return ""  # (the loader refuses include cycles)


def describe_query(atom: ResourceAtom, concept: Concept | None, as_of: dt.date) -> str:
    """What a query looks for, in words: `a Haemoglobin result dated 2026-10-04 to
    2026-11-01 (screening window), the latest counts`."""
    what = concept.display if concept is not None else "any"
    kinds = " or ".join(dict.fromkeys(_TYPE_WORDS.get(name, name) for name in atom.resource_types))
    if all(name.startswith("Medication") for name in atom.resource_types):
        kinds = "medication (statement, order or administration)"
    text = f"{what} {kinds} {window_words(atom, as_of)}"
    statuses = [status for status in atom.status or () if status != "active"]
    if statuses:
        text += f", status {' or '.join(statuses)}"
    if atom.value is not None:
        selection = {
            "latest": "the latest result counts",
            "any": "any result counts",
            "all": "every result must pass",
            "min": "the lowest result counts",
            "max": "the highest result counts",
            "count": f"at least {atom.minimum_count} results must pass",
        }[atom.selection]
        if atom.apart is not None:
            selection += f" at least {atom.apart.readable} apart"
        text += f"; {selection}, tested {value_test_text(atom.value)}"
    elif atom.selection == "count" and atom.minimum_count > 1:
        apart = f", at least {atom.apart.readable} apart" if atom.apart is not None else ""
        text += f"; at least {atom.minimum_count} needed{apart}"
    return text


def window_words(atom: ResourceAtom, as_of: dt.date) -> str:
    """The window in dates: `dated 2026-10-04 to 2026-11-01 (screening window)`, or
    `active on 2026-11-01`, or `at any date up to 2026-11-01`."""
    active = "active" in (atom.status or ())
    window = atom.window
    if atom.relations:
        return _anchored_words(atom, as_of)
    if window.duration is None:
        if active:
            word = "in use" if atom.resource_types[0].startswith("Medication") else "active"
            return f"{word} on {as_of.isoformat()}"
        return f"at any date up to {as_of.isoformat()}"
    first = window.duration.start_before(as_of)
    name = f" ({window.name} window)" if window.name else ""
    active_words = ", active then" if active else ""
    dated = "with onset" if atom.timing == "onset" and not active else "dated"
    return f"{dated} {first.isoformat()} to {as_of.isoformat()}{name}{active_words}"


def _anchored_words(atom: ResourceAtom, as_of: dt.date) -> str:
    """A window narrowed by `before:` / `after:`, in dates where the anchor is the as-of date:
    `dated on or before 2026-08-01 (at least 3 months before the as-of date 2026-11-01)`. An
    anchor on another atom is named (its day is the patient's: the reason gives it)."""
    window = atom.window
    first = window.duration.start_before(as_of) if window.duration is not None else None
    last: dt.date | None = as_of
    described = []
    for relation in atom.relations:
        distance = relation_distance_text(relation)
        if relation.anchor != AS_OF:
            described.append(
                f"{distance}{relation.direction} the {relation.event} {relation.anchor}"
            )
            last = None
            continue
        described.append(f"{distance}{relation.direction} the as-of date {as_of.isoformat()}")
        earliest, latest = relation_bounds(relation, as_of)
        if last is not None and latest is not None:
            last = min(last, latest)
        if earliest is not None:
            first = earliest if first is None else max(first, earliest)
    dated = "with onset" if atom.timing == "onset" else "dated"
    how = "; ".join(described)
    if last is None:
        return f"{dated} {how} (up to {as_of.isoformat()})"
    if first is None:
        return f"{dated} on or before {last.isoformat()} ({how})"
    return f"{dated} {first.isoformat()} to {last.isoformat()} ({how})"


def describe_filters(atom: ResourceAtom) -> tuple[str, ...]:
    """The atom's `where` and `where_not` filters in words (the expression itself when it
    has no simple reading)."""
    shown = [f"only where {_filter_words(expression)}" for expression in atom.where]
    shown += [f"not where {_filter_words(expression)}" for expression in atom.where_not]
    return tuple(shown)


_ROOT_TEST = re.compile(r"^\$\[\?\(\$\.([\w.]+)\s*(==|!=|>=|<=|>|<)\s*'?([^')]*)'?\)\]$")
_LIST_EQUALS = re.compile(r"^([\w.]+)\[\?\(@\s*(==|!=)\s*'([^']*)'\)\]$")
_LIST_FIELD_TEST = re.compile(
    r"^([\w.]+)\[\?\(@\.([\w.]+)\s*(==|!=|>=|<=|>|<)\s*'?([^')]*)'?\)\](?:\.(.*))?$"
)
_FIELD_ONLY = re.compile(r"^[\w.]+$")


def _filter_words(expression: str) -> str:
    expression = expression.strip()
    match = _ROOT_TEST.match(expression)
    if match:
        path, operator, value = match.groups()
        return f"{path} {_OPERATOR_WORDS[operator]} {_value_words(value)}"
    match = _LIST_EQUALS.match(expression)
    if match:
        path, operator, value = match.groups()
        return f"{path} {'includes' if operator == '==' else 'has an entry other than'} {value}"
    match = _LIST_FIELD_TEST.match(expression)
    if match:
        path, field, operator, value, rest = match.groups()
        rest_words = _nested_filter_words(rest) if rest else ""
        return f"{path} has {_field_test(field, operator, value)}{rest_words}"
    if _FIELD_ONLY.match(expression):
        return f"{expression} is recorded"
    return f"`{expression}` matches"


def _nested_filter_words(rest: str) -> str:
    match = _LIST_FIELD_TEST.match(rest)
    if match:
        path, field, operator, value, _more = match.groups()
        return f" and {path} {_field_test(field, operator, value)}"
    return f" and {rest}"


def _field_test(field: str, operator: str, value: str) -> str:
    """`severity severe`, `valueQuantity.value > 0`, `status other than x`; a second test
    joined by `&&` in words (`valueQuantity.value > 0.21 and <= 1`, not `&& @.valueQuantity...`)."""
    if operator in ("==", "="):
        return f"{field} {_value_words(value)}"
    if operator == "!=":
        return f"{field} other than {_value_words(value)}"
    value = re.sub(rf"\s*&&\s*@\.{re.escape(field)}\s*", " and ", value)
    return f"{field} {operator} {value}"


def _value_words(value: str) -> str:
    return _SYSTEM_NAMES.get(value, value)


def value_test_text(test: ValueTest) -> str:
    """A value test with readable units: `< 1.5 x10^9/L`, `> 3 x ULN`, `positive`."""
    if isinstance(test, AnyValueTest):
        return " or ".join(_single_test_text(single) for single in test.tests)
    if isinstance(test, PerUnitTest):  # each in its own unit: say so
        return " or ".join(_single_test_text(single) for single in test.tests) + " (per unit)"
    return _single_test_text(test)


def _single_test_text(test: SingleValueTest) -> str:
    if isinstance(test, QuantityTest):
        unit = f" {readable_unit(test.unit)}" if test.unit and test.unit != "1" else ""
        return f"{test.comparator.value} {test.value:g}{unit}"
    if isinstance(test, ReferenceLimitTest):
        return test.text
    if isinstance(test, RangeTest):
        low, high = _single_test_text(test.low)[3:], _single_test_text(test.high)[3:]
        return f"between {low} and {high}"
    assert isinstance(test, AnswerTest)
    return test.text[3:] if test.text.startswith("is ") else test.text


# --------------------------------------------------------------------------- findings


def _finding(
    cited: Cited, atom: ResourceAtom, concept: Concept | None, terminology: Terminology
) -> Finding:
    resource = cited.resource
    kind = resource.get("resourceType")
    if kind == "Observation":
        measured = cited.measured
        measurement = (
            measured[2]
            if measured is not None and measured[0] is concept and measured[1] is terminology
            else None
        )
        text = _observation_text(resource, atom, concept, terminology, measurement)
    elif kind == "Condition":
        text = _condition_text(resource)
    elif kind == "Procedure":
        text = _procedure_text(resource)
    elif kind in ("MedicationStatement", "MedicationRequest", "MedicationAdministration"):
        text = _medication_text(resource, cited.medication)
    elif kind == "AllergyIntolerance":
        text = _allergy_text(resource)
    elif kind == "ResearchSubject":
        text = _research_subject_text(resource)
    else:
        text = str(kind)
    return Finding(cited.reference, text)


def concept_name(codeable: object) -> str:
    """What a CodeableConcept names: its text, else the first display, else system and code."""
    if not isinstance(codeable, Mapping):
        return "(no code)"
    text = codeable.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    codings = [c for c in codeable.get("coding") or () if isinstance(c, Mapping)]
    for coding in codings:
        display = coding.get("display")
        if isinstance(display, str) and display.strip():
            return display.strip()
    for coding in codings:
        system = _SYSTEM_NAMES.get(str(coding.get("system")), coding.get("system") or "")
        return f"{system} {coding.get('code')}".strip()
    return "(no code)"


def _status_code(codeable: object) -> str | None:
    if not isinstance(codeable, Mapping):
        return None
    for coding in codeable.get("coding") or ():
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            return str(coding["code"])
    return None


def _day(value: object) -> str | None:
    return value[:10] if isinstance(value, str) and len(value) >= 4 else None


def _period_words(period: object) -> str:
    if not isinstance(period, Mapping):
        return ""
    start, end = _day(period.get("start")), _day(period.get("end"))
    if start and end:
        return start if start == end else f"{start} to {end}"
    if start:
        return f"since {start}"
    return f"until {end}" if end else ""


def _condition_text(resource: Mapping[str, Any]) -> str:
    parts = [concept_name(resource.get("code"))]
    onset = _day(resource.get("onsetDateTime")) or _period_words(resource.get("onsetPeriod"))
    if onset:
        parts.append(f"onset {onset}")
    elif _day(resource.get("recordedDate")):
        parts.append(f"recorded {_day(resource.get('recordedDate'))}")
    status = _status_code(resource.get("clinicalStatus"))
    if status:
        undated = not any(name in resource for name in _CONDITION_DATES)
        parts.append(f"{status} (no date recorded)" if undated else status)
    abatement = _day(resource.get("abatementDateTime")) or _period_words(
        resource.get("abatementPeriod")
    )
    if abatement:
        parts.append(f"resolved {abatement}")
    verification = _status_code(resource.get("verificationStatus"))
    if verification and verification != "confirmed":
        parts.append(verification)
    return ", ".join(parts)


_CONDITION_DATES = (
    "onsetDateTime",
    "onsetPeriod",
    "onsetAge",
    "onsetRange",
    "onsetString",
    "recordedDate",
    "abatementDateTime",
    "abatementPeriod",
    "abatementAge",
    "abatementRange",
    "abatementString",
)
"""A Condition's fields that say when: one with none of them is undated."""


def _procedure_text(resource: Mapping[str, Any]) -> str:
    when = _day(resource.get("performedDateTime")) or _period_words(resource.get("performedPeriod"))
    status = resource.get("status")
    text = concept_name(resource.get("code"))
    if status and status != "completed":
        text += f", {status}"
    return f"{text}, performed {when}" if when else text


def _medication_text(resource: Mapping[str, Any], medication: Mapping[str, Any] | None) -> str:
    kind = resource.get("resourceType")
    drug = concept_name(medication) if medication is not None else "(drug not coded)"
    dosage: object = None
    if kind == "MedicationRequest":
        dosage = _first_item(resource.get("dosageInstruction"))
    elif kind == "MedicationStatement":
        dosage = _first_item(resource.get("dosage"))
    else:
        dosage = resource.get("dosage")
    dose = _dose_words(dosage)
    status = resource.get("status") or "no status"
    if kind == "MedicationRequest":
        dispense = resource.get("dispenseRequest")
        when = _period_words(
            dispense.get("validityPeriod") if isinstance(dispense, Mapping) else None
        )
        authored = _day(resource.get("authoredOn"))
        dates = f"ordered {authored}" if authored else ""
        if when:
            dates += f"{', ' if dates else ''}valid {when}"
        what = f"order {status}"
    elif kind == "MedicationAdministration":
        when = _day(resource.get("effectiveDateTime")) or _period_words(
            resource.get("effectivePeriod")
        )
        dates = f"given {when}" if when else ""
        what = f"administration {status}"
    else:
        when = _day(resource.get("effectiveDateTime")) or _period_words(
            resource.get("effectivePeriod")
        )
        asserted = _day(resource.get("dateAsserted"))
        dates = when or (f"asserted {asserted}" if asserted else "")
        what = f"statement {status}"
    return ", ".join(part for part in (drug, dose, what, dates) if part)


def _first_item(value: object) -> object:
    """A list's first item; None for an empty list or anything else (data of another shape
    than FHIR's is described as missing, never a crash)."""
    return value[0] if isinstance(value, list) and value else None


def _dose_words(dosage: object) -> str:
    """`81 mg once daily` from a Dosage: its text, else dose, timing and route."""
    if not isinstance(dosage, Mapping):
        return ""
    text = dosage.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    parts = []
    dose: object = dosage.get("dose")
    for rate in dosage.get("doseAndRate") or ():
        if isinstance(rate, Mapping) and isinstance(rate.get("doseQuantity"), Mapping):
            dose = rate["doseQuantity"]
            break
    if isinstance(dose, Mapping) and dose.get("value") is not None:
        unit = dose.get("unit") or readable_unit(dose.get("code"))
        value = dose["value"]
        amount = _number(value) if isinstance(value, _NUMBERS) else str(value)
        parts.append(f"{amount} {unit}".strip())
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, Mapping) else None
    if isinstance(repeat, Mapping) and repeat.get("frequency") and repeat.get("period"):
        unit = _PERIOD_UNITS.get(str(repeat.get("periodUnit")), str(repeat.get("periodUnit")))
        period = repeat["period"]
        every = f"every {period:g} {unit}s" if period != 1 else f"per {unit}"
        parts.append(
            f"{repeat['frequency']} times {every}"
            if repeat["frequency"] != 1
            else ("once daily" if unit == "day" and period == 1 else f"once {every}")
        )
    route = dosage.get("route")
    if isinstance(route, Mapping):
        parts.append(concept_name(route))
    return " ".join(parts)


def _allergy_text(resource: Mapping[str, Any]) -> str:
    substance = concept_name(resource.get("code"))
    parts = [f"allergy or intolerance to {substance}"]
    categories = [c for c in resource.get("category") or () if isinstance(c, str)]
    if categories:
        parts.append("/".join(categories))
    if resource.get("criticality"):
        parts.append(f"criticality {resource['criticality']}")
    for reaction in resource.get("reaction") or ():
        if not isinstance(reaction, Mapping):
            continue
        manifestations = [concept_name(m) for m in reaction.get("manifestation") or ()]
        severity = f" ({reaction['severity']})" if reaction.get("severity") else ""
        if manifestations or severity:
            parts.append(f"reaction {', '.join(manifestations) or 'recorded'}{severity}")
    status = _status_code(resource.get("clinicalStatus"))
    if status:
        parts.append(status)
    recorded = _day(resource.get("onsetDateTime")) or _day(resource.get("recordedDate"))
    if recorded:
        parts.append(f"since {recorded}")
    return ", ".join(parts)


def _research_subject_text(resource: Mapping[str, Any]) -> str:
    study: Mapping[str, Any] = resource.get("study") or {}
    if not isinstance(study, Mapping):
        study = {}
    identifier: Mapping[str, Any] = study.get("identifier") or {}
    if not isinstance(identifier, Mapping):
        identifier = {}
    name = identifier.get("value") or study.get("display") or study.get("reference") or "a study"
    period = _period_words(resource.get("period"))
    return f"participant of {name} ({resource.get('status')}){', ' + period if period else ''}"


def _observation_text(
    resource: Mapping[str, Any],
    atom: ResourceAtom,
    concept: Concept | None,
    terminology: Terminology,
    measured: Measurement | None = None,
) -> str:
    """What an Observation says for the atom's concept; `measured`: its value for that
    concept and terminology when evaluation read it already (`Cited.measured`)."""
    name = concept.display if concept is not None else concept_name(resource.get("code"))
    when = _day(resource.get("effectiveDateTime")) or _day(resource.get("effectiveInstant"))
    when = when or _period_words(resource.get("effectivePeriod")) or _day(resource.get("issued"))
    on = f" on {when}" if when else ""
    if concept is None:
        return f"{name}{on}"
    measurement = measured if measured is not None else measure(resource, concept, terminology)
    if isinstance(measurement, DataProblem):
        return f"{name}{on}: {measurement.message}"
    if measurement.value is None:
        answer = _answer_words(resource, measurement.answer_concepts, terminology)
        return f"{name} {answer}{on}"
    unit = readable_unit(measurement.unit)
    censored = f"{measurement.comparator} " if measurement.comparator else ""
    value = f"{censored}{_number(measurement.value)}{(' ' + unit) if unit else ''}"
    recorded = _recorded_quantity(resource)
    reading = (
        per_unit_reading(atom.value, measurement, concept.unit)
        if isinstance(atom.value, PerUnitTest)
        else None
    )
    if recorded and reading is not None and reading.as_reported:
        # a per-unit test compares it in its unit of report: say it in that unit, never as
        # converted through a molar mass (3 mg/mmol is A2; its 26.5 mg/g is not)
        value = f"{censored}{recorded[0]} {readable_unit(recorded[1])}"
        compared = readable_unit(reading.unit)
        if compared != readable_unit(recorded[1]):
            value += f" (= {_number(reading.value)} {compared}, compared in {compared})"
        else:
            value += " (compared as reported)"
    elif recorded and readable_unit(recorded[1]) != unit:
        # converted: the digits that decide, as the reasons give them (0.8 mg/dL is 70.7
        # umol/L, not 70.72: four digits from a result given to one)
        value = f"{censored}{recorded[0]} {readable_unit(recorded[1])}"
        readings = terminology.unit_readings(
            recorded[1]
        ) or terminology.unit_readings_ignoring_case(recorded[1])
        respelt = any(
            reading == concept.unit or readable_unit(reading) == unit for reading in readings
        )
        if not respelt:  # another unit (mg/dL, g/dL, mIU/mL), not the same one spelt otherwise
            converted = _number(measurement.value)
            shown = deciding_number(
                measurement.value, _thresholds_shown(atom, concept, measurement)
            )
            if abs(float(shown) - measurement.value) <= 0.01 * abs(measurement.value):
                converted = shown  # else one decimal loses too much (0.04): four digits
            value += f" (= {censored}{converted}{(' ' + unit) if unit else ''})"
        # else the unit only respelt (27.8 sec, 18 IU/L of ALT, 0.95 INR): the number as
        # recorded, the limits in the concept's unit beside it; "(= 27.8 s)" said nothing new
    limits = _range_words(atom, concept, measurement, unit)
    return f"{name} {value}{on}{limits}"


def _answer_words(
    resource: Mapping[str, Any], answers: frozenset[str], terminology: Terminology
) -> str:
    value = resource.get("valueCodeableConcept")
    if isinstance(value, Mapping):
        return concept_name(value).lower()
    if isinstance(resource.get("valueString"), str):
        return str(resource["valueString"])
    names = [
        terminology.concept(answer).display if terminology.has_concept(answer) else answer
        for answer in sorted(answers)
    ]
    return "/".join(names).lower() or "coded result"


def _recorded_quantity(resource: Mapping[str, Any]) -> tuple[str, str] | None:
    quantity = resource.get("valueQuantity")
    if not isinstance(quantity, Mapping) or quantity.get("value") is None:
        return None
    unit = quantity.get("code") or quantity.get("unit") or ""
    value = quantity["value"]
    return (_number(value) if isinstance(value, _NUMBERS) else str(value), str(unit))


def _thresholds_shown(
    atom: ResourceAtom, concept: Concept, measurement: Measurement
) -> tuple[float, ...]:
    """The numbers the atom's value test compares a converted result with: its thresholds,
    and a reference-limit test's limit times its factor (`reference_limit`, the limit the
    evaluator compares with)."""
    thresholds = value_thresholds(atom.value, concept)
    for test in _reference_limit_tests(atom):
        limit = reference_limit(test, concept, measurement)
        if limit is not None:
            thresholds += (limit * test.factor,)
    return thresholds


def _reference_limit_tests(atom: ResourceAtom) -> list[ReferenceLimitTest]:
    """The atom's tests against a reference limit ("> 3 x ULN"), alone or among others."""
    value = atom.value
    tests = value.tests if isinstance(value, AnyValueTest | PerUnitTest) else (value,)
    return [test for test in tests if isinstance(test, ReferenceLimitTest)]


def _range_words(atom: ResourceAtom, concept: Concept, measurement: Measurement, unit: str) -> str:
    """The reference limits beside a result: its own; the concept's default for a result
    with none, and, per limit, for each limit a reference-limit test compares with that the
    result lacks (`reference_limit`, as the evaluator chooses: a result with only a lower
    limit, tested against the ULN, is compared with the default upper limit, and says so);
    then each such test's factor times the limit it used ("3 x ULN = 120 U/L")."""
    tests = _reference_limit_tests(atom)
    own = {"low": measurement.reference_low, "high": measurement.reference_high}
    defaults = {"low": concept.reference_low, "high": concept.reference_high}
    if own["low"] is None and own["high"] is None:
        shown = {side: (value, True) for side, value in defaults.items()}
    else:
        shown = {side: (value, False) for side, value in own.items()}
        for test in tests:
            if own[test.limit] is None:
                shown[test.limit] = (defaults[test.limit], True)
    suffix = f" {unit}" if unit else ""
    (low, low_default), (high, high_default) = shown["low"], shown["high"]
    if low is not None and high is not None and low_default == high_default:
        default = "default " if low_default else ""
        text = f"{default}reference range {_number(low)}-{_number(high)}{suffix}"
    else:
        parts = [
            f"{'default ' if is_default else ''}{name} {_number(value)}{suffix}"
            for name, (value, is_default) in (
                ("lower limit", shown["low"]),
                ("upper limit", shown["high"]),
            )
            if value is not None
        ]
        if not parts:
            return ""
        text = ", ".join(parts)
    for test in tests:
        limit = reference_limit(test, concept, measurement)
        if limit is not None and test.factor != 1:
            name = "ULN" if test.limit == "high" else "LLN"
            text += f"; {test.factor:g} x {name} = {_number(limit * test.factor)}{suffix}"
    return f" ({text})"


def _number(value: float) -> str:
    """A number as a clinician writes it, never in exponent notation (18000 /mm3, not
    1.8e+04; 0.00012, not 1.2e-04): 4 significant digits, a whole number or one of 10000 or
    more to the unit.

    >>> _number(18000.0), _number(0.00012), _number(121.5), _number(123456.7), _number(2 / 3)
    ('18000', '0.00012', '121.5', '123457', '0.6667')
    """
    if not math.isfinite(value):
        return str(value)
    if value == int(value) or abs(value) >= 1e4:
        return f"{value:.0f}"
    text = f"{value:.4g}"
    if "e" not in text:
        return text
    plain = format(Decimal(text), "f")
    return plain.rstrip("0").rstrip(".") if "." in plain else plain


_POWER = re.compile(r"(?:[x×] ?)?10\*(-?\d+)")
"""A power of ten, with the multiplication sign a recorded unit may already write before it
(`x10*9/L`, as some laboratory systems send a platelet count): shown once, `x10^9/L`."""
_ANNOTATION = re.compile(r"\{([^}]*)\}")
_ATTACHED_ANNOTATION = re.compile(r"(?<=[\w\]])\{[^}]*\}")
"""An annotation right after a unit symbol (`g{creat}`): a label of that unit (UCUM 2.1,
section 2.4), which people do not write."""
_UCUM_IN_TEXT = re.compile(
    r"(?<![\w.])[\w%\[\]/.*{}-]*(?:\{[^}\s]*\}|10\*-?\d+|\[[A-Za-z]+\])[\w%\[\]/.*{}-]*"
)


def readable_units_in(text: str) -> str:
    """UCUM units inside a sentence made readable (`33 mL/min/{1.73_m2}` -> `33
    mL/min/1.73 m2`).

    A unit holds no white space and follows none of `_UCUM_IN_TEXT`'s characters but a
    space, so the expression is run only over the words (split at spaces) that hold a
    `{`, `[` or `10*`: a third of the time of running it over the whole sentence (once per
    patient for a computed eGFR)."""
    words = text.split(" ")
    for position, word in enumerate(words):
        if "{" in word or "[" in word or "10*" in word:
            words[position] = _UCUM_IN_TEXT.sub(_readable_match, word)
    return " ".join(words)


def _readable_match(match: re.Match[str]) -> str:
    return readable_unit(match.group(0)) or ""


_PREFIXES = {"umol": "µmol", "ug": "µg", "uL": "µL", "um": "µm"}


@functools.lru_cache(maxsize=256)
def readable_unit(unit: object) -> str:
    """A UCUM code as people write it: `10*9/L` -> `x10^9/L`, `[IU]/mL` -> `IU/mL`,
    `umol/L` -> `µmol/L`, `{score}` -> `` (annotations dropped), `mg/g{creat}` -> `mg/g`
    (a unit's label dropped), `mL/min/{1.73_m2}` -> `mL/min/1.73 m2` (an annotation
    standing for a unit kept); `1` -> ``."""
    if not isinstance(unit, str) or unit in ("", "1"):
        return ""
    text = _POWER.sub(lambda match: f"x10^{match.group(1)}", unit)
    if text.startswith("{") and text.endswith("}") and "}" not in text[:-1]:
        return ""  # a unitless annotation: {INR}, {score}
    text = _ATTACHED_ANNOTATION.sub("", text)
    text = _ANNOTATION.sub(lambda match: match.group(1).replace("_", " "), text)
    text = text.replace("[", "").replace("]", "")
    for code, shown in _PREFIXES.items():
        text = re.sub(rf"(?<![A-Za-z]){code}", shown, text)
    return text.strip() or ""


# --------------------------------------------------------------------------- plain text


def explanation_text(explanation: PatientExplanation, *, width: int = 100) -> str:
    """The explanation as plain text: a header, then each criterion with its reasoning."""
    lines = header_lines(explanation)
    for criterion in explanation.criteria:
        lines.append("")
        lines.extend(criterion_lines(criterion))
    if explanation.data_problems:
        lines += ["", "Data problems in the record:"]
        lines += [f"  - {problem}" for problem in explanation.data_problems]
    return "\n".join(_wrap(line, width) for line in lines) + "\n"


def header_lines(explanation: PatientExplanation) -> list[str]:
    newest = explanation.newest_data.isoformat() if explanation.newest_data else "no dated data"
    return [
        f"{explanation.trial_id}: {explanation.trial_title}",
        f"{explanation.patient_reference}: {explanation.status.value} ({explanation.status_text})",
        f"As of {explanation.as_of.isoformat()}; newest data in the record {newest}",
    ]


def criterion_lines(criterion: CriterionExplanation) -> list[str]:
    """One criterion: number, label and outcome; protocol text; the reasoning tree."""
    lines = [
        f"{criterion.number} {criterion.label}: {criterion.outcome_text} ({criterion.id})",
        f"  Protocol: {criterion.protocol_text}",
    ]
    if criterion.step is None:
        lines.append(f"  {criterion.summary}")
        return lines
    lines.extend(step_lines(criterion.step, 1))
    return lines


def step_lines(step: Step, depth: int) -> list[str]:
    """A step and its children, indented; looked-for, filters and what would settle it."""
    indent = "  " * depth
    if not step.needed:
        mark = "[not applicable]" if step.moot else "[not needed]"
        return [f"{indent}{mark} {not_needed_text(step)}"]
    mark = f"[{TRUTH_TEXT[step.truth]}]"
    if step.children:
        title = step.label or {"all of": "All of:", "any of": "Any of:", "not": "Not:"}.get(
            step.combination, ""
        )
        if step.label:
            title = (
                f"{step.label} ({step.combination})"
                if step.combination != "not"
                else (f"{step.label} (not)")
            )
        lines = [f"{indent}{mark} {title}"]
        for child in step.children:
            lines.extend(step_lines(child, depth + 1))
        return lines
    if step.findings:
        relation = f": {step.relation}" if step.relation else ""
        lines = [f"{indent}{mark} {step.label}{relation}"]
    else:
        lines = [f"{indent}{mark} {_leaf_sentence(step)}"]
    for finding in step.findings:
        cited = f" ({finding.reference})" if finding.text != finding.reference else ""
        lines.append(f"{indent}    - {finding.text}{cited}")
    if step.looked_for and (not step.findings or step.truth is UNKNOWN):
        lines.append(f"{indent}    looked for: {step.looked_for}")
    for item in step.filters:
        lines.append(f"{indent}    {item}")
    for item in step.to_settle:
        if not step.question:
            lines.append(f"{indent}    to settle: {item}")
    return lines


def not_needed_text(step: Step) -> str:
    """One line for an operand whose answer changes nothing: what it is, and why it is moot."""
    title = step.label or step.combination.capitalize() or "this item"
    if step.moot:
        return f"{title}: {step.moot}"
    return f"{title}: unanswered, not needed (the other items already decide)"


def _wrap(line: str, width: int) -> str:
    """Wrap a long line at spaces, continuing under its own indentation (never inside a
    word or a resource reference)."""
    if len(line) <= width:
        return line
    indent = len(line) - len(line.lstrip(" "))
    lead = " " * (indent + 4)
    words = line[indent:].split(" ")
    out: list[str] = []
    current = " " * indent + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) > width:
            out.append(current)
            current = lead + word
        else:
            current = f"{current} {word}"
    out.append(current)
    return "\n".join(out)


def open_items(explanation: PatientExplanation) -> list[str]:
    """What a screening coordinator should do next: the data to add, then the questions."""
    items = [f"{c.number}: add {item}" for c, item in explanation.missing_data]
    items += [f"{c.number}: ask {question}" for c, question in explanation.open_questions]
    return items


def stale_data_warning(evaluation: PatientEvaluation) -> str | None:
    """A warning when the record's newest data is older than the criteria's shortest named
    window (`screening`): every result that window needs is then missing, often because the
    as-of date is not the one the data was collected for."""
    windows = [
        (window.duration.start_before(evaluation.as_of), name)
        for name, window in evaluation.criteria.source.windows.items()
        if window.duration is not None
    ]
    if not windows:
        return None
    first_day, name = max(windows)
    newest = evaluation.newest_data
    if newest is not None and newest >= first_day:
        return None
    found = f"the newest data is from {newest.isoformat()}" if newest else "no data is dated"
    return (
        f"As of {evaluation.as_of.isoformat()} the {name} window runs from "
        f"{first_day.isoformat()}, but {found}: results that window needs count as missing. "
        "Check the as-of date (--as-of)."
    )
