"""The pre-filter: settle patients who lack a concept an inclusion criterion requires.

An inclusion criterion whose expression is an `all` (at any depth of `all`s from the top)
containing a plain resource atom over Condition or Procedure with a concept (no value test,
no negation) cannot be met by a patient who has no Condition/Procedure coded in that concept:
diagnoses and procedures are closed world, so the atom is not met and so is the criterion.
Such a patient is ineligible whatever the rest of the record says.

A cohort run parses and checks every line of each patient (input problems are reported as
with full evaluation), then looks at the patient's *preview* (the Patient, their Conditions
and Procedures: `PREVIEW_TYPES`, `preview_of`); `Prefilter.settle` finds a requirement the
preview cannot meet and `Prefilter.evaluate_settled` evaluates the patient from a record of
the preview alone: the criteria that read nothing else (demographics, diagnoses, procedures,
manual items) exactly as a full evaluation would, the settling criterion from its required
atom, and the others left `not_evaluated`. The rest of the record is never built.

A requirement settles only when every criterion before it in protocol order can be evaluated
from the preview, so the attrition funnel (protocol order) is the same as with full
evaluation. Requirements are also what a server source can push down into its searches.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.attestations import Attestation
from engine.criteria.model import (
    AllOf,
    CriterionKind,
    Expression,
    ResourceAtom,
    iter_atoms,
)
from engine.evaluate import (
    CompiledCriteria,
    CompiledCriterion,
    Outcome,
)
from engine.evaluate.nodes import EvaluationContext, Node
from engine.evaluate.outcome import NOT_MET, is_shared, shared
from engine.record import UNIDENTIFIED_CONCEPTS, PatientRecord
from engine.resource_types import CODE_ONLY_TYPES
from engine.screening import Screening, screen_record
from engine.sources import PatientResources

_SETTLED_OUTCOMES_LIMIT = 1_000

PREFILTER_TYPES = CODE_ONLY_TYPES
"""Closed-world types whose concept comes from `code` alone (no referenced Medication)."""
PREVIEW_TYPES = PREFILTER_TYPES | {"Patient"}
"""What the pre-filter reads of a patient before deciding: the Patient, diagnoses, procedures."""


@dataclass(frozen=True)
class RequiredConcept:
    """An inclusion criterion cannot be met without a resource of these types in this concept."""

    criterion_id: str
    concept: str
    resource_types: frozenset[str]
    node: Node | None = field(default=None, compare=False, repr=False)
    """The compiled atom (evaluated on a settled patient's preview for the reason)."""

    def __str__(self) -> str:
        types = "/".join(sorted(self.resource_types))
        return f"{self.criterion_id} requires a {types} in concept {self.concept}"


@dataclass(frozen=True)
class Prefilter:
    """The concepts the criteria require, in protocol order, and what a preview can settle.

    `evaluable`: the criteria a preview answers exactly (they read only demographics,
    diagnoses, procedures and attestations). `settling`: the requirements whose criterion
    comes after evaluable criteria only (protocol order), so settling keeps the funnel exact.
    """

    requirements: tuple[RequiredConcept, ...]
    evaluable: frozenset[str] = frozenset()
    settling: tuple[RequiredConcept, ...] = ()
    _settled_outcomes: dict[tuple[str, int], tuple[CompiledCriteria, Outcome]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Settling criteria's outcomes made of a shared atom outcome (`settled_outcome`), with
    the criteria they were made for."""

    @classmethod
    def from_criteria(cls, criteria: CompiledCriteria) -> Prefilter:
        requirements = [
            RequiredConcept(
                compiled.id,
                atom.concept,
                frozenset(atom.resource_types),
                _compiled_atom(compiled.root, atom),
            )
            for compiled in criteria.criteria
            if compiled.kind is CriterionKind.INCLUSION
            for atom in _required_atoms(compiled.criterion.expression)
            if atom.concept is not None
            # an atom over a type the source lacks is never not met, so it settles no one
            and criteria.unavailable_types.isdisjoint(atom.resource_types)
        ]
        evaluable = frozenset(c.id for c in criteria.criteria if _reads_preview_only(c))
        order = [c.id for c in criteria.criteria]
        settling = [
            requirement
            for requirement in requirements
            if requirement.node is not None
            and all(
                earlier in evaluable for earlier in order[: order.index(requirement.criterion_id)]
            )
        ]
        return cls(tuple(requirements), evaluable, tuple(settling))

    def settling_criterion(self, record: PatientRecord) -> str | None:
        """The first criterion the patient cannot meet for lack of a required concept, or None."""
        failed = _first_unmet(self.requirements, record)
        return None if failed is None else failed.criterion_id

    def settle(self, preview: PatientRecord) -> RequiredConcept | None:
        """The settling requirement a patient's (preview) record does not meet, or None."""
        return _first_unmet(self.settling, preview)

    def evaluate_settled(
        self,
        criteria: CompiledCriteria,
        preview: PatientRecord,
        as_of: dt.date,
        requirement: RequiredConcept,
        attestations: Mapping[str, Attestation] | None = None,
    ) -> Screening:
        """A settled patient screened from their preview record (see the module docstring).

        Raises RuntimeError when the required atom is met after all (a pre-filter bug).
        """
        decided: dict[str, Outcome] = {}
        if requirement.criterion_id not in self.evaluable:
            decided[requirement.criterion_id] = self.settled_outcome(
                criteria, preview, as_of, requirement, attestations
            )
        return screen_record(
            criteria, preview, as_of, attestations, only=self.evaluable, decided=decided
        )

    def settled_outcome(
        self,
        criteria: CompiledCriteria,
        preview: PatientRecord,
        as_of: dt.date,
        requirement: RequiredConcept,
        attestations: Mapping[str, Attestation] | None = None,
    ) -> Outcome:
        """The settling criterion's outcome (not met), from its required atom, when the
        preview cannot evaluate the criterion itself. RuntimeError for a pre-filter bug."""
        assert requirement.node is not None
        context = EvaluationContext(
            preview,
            as_of,
            attestations or {},
            criteria.terminology,
            unavailable_types=criteria.unavailable_types,
        )
        atom = requirement.node.evaluate(context)
        if atom.truth is not NOT_MET:
            raise RuntimeError(
                f"pre-filter bug: Patient/{preview.patient_id} was settled by "
                f"{requirement.criterion_id}, but its required atom is {atom.truth.value}"
            )
        # The atom finds nothing, mostly the same (shared) outcome for every patient: so is
        # the criterion's outcome made of it, made once.
        key = (requirement.criterion_id, id(atom))
        known = self._settled_outcomes.get(key) if is_shared(atom) else None
        if known is not None and known[0] is criteria:
            return known[1]
        compiled = next(c for c in criteria.criteria if c.id == requirement.criterion_id)
        label = str(getattr(compiled.root, "label", ""))
        outcome = Outcome(NOT_MET, atom.reason, label, atom.evidence, children=(atom,))
        if is_shared(atom):
            if len(self._settled_outcomes) >= _SETTLED_OUTCOMES_LIMIT:
                self._settled_outcomes.clear()
            self._settled_outcomes[key] = (criteria, shared(outcome))
        return outcome


def _first_unmet(
    requirements: tuple[RequiredConcept, ...], record: PatientRecord
) -> RequiredConcept | None:
    """The first requirement no resource of the record meets (by the record's concept index)
    nor may meet: a resource of its types whose diagnosis cannot be told (`engine.record.
    UNIDENTIFIED_CONCEPTS`) may be the one required, so it settles nothing."""
    for requirement in requirements:
        types = requirement.resource_types
        if record.resources_of_concept(requirement.concept, types):
            continue
        if any(
            record.resources_of_concept(UNIDENTIFIED_CONCEPTS[name], types)
            for name in types
            if name in UNIDENTIFIED_CONCEPTS
        ):
            continue
        return requirement
    return None


def preview_of(patient: PatientResources) -> PatientResources:
    """The patient's preview: their Patient, Conditions and Procedures (`PREVIEW_TYPES`);
    the patient itself when they hold nothing else (a patient read preview first)."""
    resources = patient.resources
    kept = [
        index
        for index, resource in enumerate(resources)
        if resource["resourceType"] in PREVIEW_TYPES
    ]
    if len(kept) == len(resources):
        return patient
    return replace(
        patient,
        resources=[patient.resources[index] for index in kept],
        full_urls=[patient.full_urls[index] for index in kept],
    )


def _reads_preview_only(criterion: CompiledCriterion) -> bool:
    """Whether a preview (Patient, Conditions, Procedures) holds all the criterion reads."""
    return all(
        not isinstance(atom, ResourceAtom)
        or (set(atom.resource_types) <= PREFILTER_TYPES and not atom.relations)
        for atom in iter_atoms(criterion.criterion.expression)
    )


def _compiled_atom(root: Node, atom: ResourceAtom) -> Node | None:
    """The compiled node of `atom` in a criterion's compiled expression."""
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if getattr(node, "atom", None) is atom:
            return node  # type: ignore[no-any-return]
        stack.extend(getattr(node, "operands", ()))
        operand = getattr(node, "operand", None)
        if operand is not None:
            stack.append(operand)
    return None


def _required_atoms(expression: Expression) -> Iterator[ResourceAtom]:
    """The resource atoms an expression cannot be met without (through `all`s only)."""
    if isinstance(expression, AllOf):
        for operand in expression.operands:
            yield from _required_atoms(operand)
    elif (
        isinstance(expression, ResourceAtom)
        and expression.value is None
        and expression.absence == "not-met"
        and not expression.relations
        and (expression.selection != "count" or expression.minimum_count >= 1)
        and set(expression.resource_types) <= PREFILTER_TYPES
    ):
        yield expression
