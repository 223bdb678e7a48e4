"""Three-valued outcomes (met / not met / unknown) with their reasons and evidence.

Kleene's logic: `all` is not met as soon as one operand is not met, met when all are met,
unknown otherwise; `any` is its dual; `not` swaps met and not met. Unknown always says why:
missing data (the record cannot answer) or manual review (a person must answer), and both
kinds are kept apart all the way to the ResearchSubject status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import chain
from operator import attrgetter
from typing import Any

from engine.criteria.model import Atom
from engine.dataclass_init import direct_init
from engine.normalise import Concept, Measurement, Terminology


class Truth(StrEnum):
    MET = "met"
    NOT_MET = "not-met"
    UNKNOWN = "unknown"


MET, NOT_MET, UNKNOWN = Truth.MET, Truth.NOT_MET, Truth.UNKNOWN
"""Truth's members as module names, which the evaluation reads as globals: an Enum class's
attributes are read through `EnumType.__getattr__` in Python 3.11, several times a global's
cost, and every node and combination reads them."""


class UnknownReason(StrEnum):
    MISSING_DATA = "missing-data"
    MANUAL_REVIEW = "manual-review"


@direct_init
@dataclass(frozen=True)
class Cited:
    """A resource an atom cites, kept for explanations (engine.report.explanation).

    `resource` is the record's own dict (read-only); `medication` the CodeableConcept of a
    medication resource's drug (inline, or the code of the Medication it references).
    `measured`: the concept and terminology an atom with a value test read the resource's
    value for, and that value (`engine.normalise.measure` of the three), so that an
    explanation saying the value reads it again only for another concept or terminology.
    """

    reference: str
    resource: Mapping[str, Any]
    medication: Mapping[str, Any] | None = None
    measured: tuple[Concept, Terminology, Measurement] | None = field(default=None, compare=False)


@direct_init
@dataclass(frozen=True)
class Outcome:
    """The result of one node of a criterion's expression.

        `reason` is one human sentence; `evidence` the references (`Observation/abc`) that decided;
        `missing` what data was needed and absent (or unusable); `manual` the manual atom ids still
        to be answered; `children` the operands' outcomes, for explanations; `unavailable` why the
    data could not be had, for an atom over types the source could not provide. An atom's outcome
        also keeps the `atom` it answers and the resources it `cited` (the evidence), so that
        explanations can say what was looked for and what was found; neither takes part in
        equality.
    """

    truth: Truth
    reason: str
    label: str = ""
    evidence: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    manual: tuple[str, ...] = ()
    children: tuple[Outcome, ...] = field(default=(), repr=False)
    atom: Atom | None = field(default=None, repr=False, compare=False)
    cited: tuple[Cited, ...] = field(default=(), repr=False, compare=False)
    unavailable: str = ""
    """For an atom unknown because the source could not provide some of its types, which
    and why ("MedicationStatement not exported by the server"); explanations say it."""

    @property
    def unknown_reasons(self) -> frozenset[UnknownReason]:
        """Why the outcome is unknown (empty when it is known)."""
        if self.truth is not UNKNOWN:
            return frozenset()
        reasons: set[UnknownReason] = set()
        if self.missing:
            reasons.add(UnknownReason.MISSING_DATA)
        if self.manual:
            reasons.add(UnknownReason.MANUAL_REVIEW)
        return frozenset(reasons)


def with_atom(
    outcome: Outcome, atom: Atom | None, cited: tuple[Cited, ...] | None = None
) -> Outcome:
    """`outcome` with the atom it answers and (when given) the resources it cites: what
    `dataclasses.replace` gives, at a fraction of its cost."""
    return Outcome(
        outcome.truth,
        outcome.reason,
        outcome.label,
        outcome.evidence,
        outcome.missing,
        outcome.manual,
        outcome.children,
        atom,
        outcome.cited if cited is None else cited,
        outcome.unavailable,
    )


# Outcomes the same for every patient (an atom that finds nothing, an unanswered manual item)
# are shared; a combination of shared outcomes is then the same for every patient too, and is
# made once. Shared outcomes are known by id: the list keeps each alive, so no other object can
# take its id.
_SHARED_LIMIT = 100_000
_shared_ids: set[int] = set()
_shared: list[Outcome] = []
_combined: dict[tuple[Any, ...], Outcome] = {}


def shared(outcome: Outcome) -> Outcome:
    """Mark `outcome` as the same for every patient (it lives as long as the process), so that
    the combinations of shared outcomes are made once; returns it."""
    if id(outcome) not in _shared_ids and len(_shared) < _SHARED_LIMIT:
        _shared_ids.add(id(outcome))
        _shared.append(outcome)
    return outcome


def is_shared(outcome: Outcome) -> bool:
    """Whether `outcome` was marked the same for every patient (`shared`)."""
    return id(outcome) in _shared_ids


def _merged(parts: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """The items of `parts`, in order, each once (the usual cases, every part empty or one
    part of one item, without building a dict)."""
    first: tuple[str, ...] | None = None
    filled: list[tuple[str, ...]] | None = None
    for part in parts:  # a loop, not a comprehension: no frame of its own (Python 3.11)
        if part:
            if first is None:
                first = part
            elif filled is None:
                filled = [first, part]
            else:
                filled.append(part)
    if first is None:
        return ()
    if filled is None:
        return first if len(first) == 1 else tuple(dict.fromkeys(first))
    return tuple(dict.fromkeys(chain.from_iterable(filled)))


_evidence_of = attrgetter("evidence")
_missing_of = attrgetter("missing")
_manual_of = attrgetter("manual")
_reason_of = attrgetter("reason")


def _deduplicated(part: tuple[str, ...]) -> tuple[str, ...]:
    """`_merged` of one part: its items in order, each once."""
    if len(part) < 2:
        return part or ()
    return tuple(dict.fromkeys(part))


def combine_all(operands: Sequence[Outcome], label: str = "") -> Outcome:
    """Kleene conjunction: not met wins, then unknown, then met."""
    return combine(operands, label, NOT_MET)


def combine_any(operands: Sequence[Outcome], label: str = "") -> Outcome:
    """Kleene disjunction: met wins, then unknown, then not met."""
    return combine(operands, label, MET)


def combine(operands: Sequence[Outcome], label: str, deciding: Truth) -> Outcome:
    """`combine_all` (`deciding` not met) or `combine_any` (`deciding` met) of the operands;
    a combination of shared outcomes is made once."""
    children = tuple(operands)
    if not _shared_ids.issuperset(map(id, children)):
        return _combined_anew(children, label, deciding)
    key = (deciding, label, tuple(map(id, children)))
    return _made_once(key, _combined_anew, children, label, deciding)


def _made_once(key: tuple[Any, ...], make: Callable[..., Outcome], *arguments: Any) -> Outcome:
    """The outcome made of shared outcomes that `key` names: made once (`make(*arguments)`),
    and shared itself. The arguments are passed rather than a closure: a function whose
    closure reads its locals makes a cell of each at every call (`combine`, `negate`)."""
    found = _combined.get(key)
    if found is None:
        found = make(*arguments)
        if len(_combined) < _SHARED_LIMIT:
            _combined[key] = shared(found)
    return found


def _combined_anew(children: tuple[Outcome, ...], label: str, deciding: Truth) -> Outcome:
    deciders: list[Outcome] = []
    unknowns: list[Outcome] = []
    unknown = UNKNOWN
    for child in children:  # a loop, not two comprehensions: no frames of their own
        truth = child.truth
        if truth is deciding:
            deciders.append(child)
        elif truth is unknown:
            unknowns.append(child)
    if len(deciders) == 1:  # the usual case: what joining and `_merged` give for one part
        decider = deciders[0]
        evidence = _deduplicated(decider.evidence)
        return Outcome(deciding, decider.reason, label, evidence, (), (), children)
    if deciders:
        return Outcome(
            deciding,
            "; ".join(map(_reason_of, deciders)),
            label,
            _merged(map(_evidence_of, deciders)),
            (),
            (),
            children,
        )
    if len(unknowns) == 1:
        only = unknowns[0]
        return Outcome(
            unknown,
            only.reason,
            label,
            _merged(map(_evidence_of, children)),
            _deduplicated(only.missing),
            _deduplicated(only.manual),
            children,
        )
    if unknowns:
        return Outcome(
            unknown,
            "; ".join(map(_reason_of, unknowns)),
            label,
            _merged(map(_evidence_of, children)),
            _merged(map(_missing_of, unknowns)),
            _merged(map(_manual_of, unknowns)),
            children,
        )
    other = MET if deciding is NOT_MET else NOT_MET
    return Outcome(
        other,
        "; ".join(map(_reason_of, children)),
        label,
        _merged(map(_evidence_of, children)),
        (),
        (),
        children,
    )


_FLIPPED = {MET: NOT_MET, NOT_MET: MET, UNKNOWN: UNKNOWN}


def negate(operand: Outcome, label: str = "") -> Outcome:
    """Kleene negation: met and not met swap, unknown stays unknown with its reasons."""
    if id(operand) not in _shared_ids:
        return _negated(operand, label)
    return _made_once((None, label, id(operand)), _negated, operand, label)


def _negated(operand: Outcome, label: str) -> Outcome:
    return Outcome(
        truth=_FLIPPED[operand.truth],
        reason=f"not ({operand.reason})",
        label=label,
        evidence=operand.evidence,
        missing=operand.missing,
        manual=operand.manual,
        children=(operand,),
    )
