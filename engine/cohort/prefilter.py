"""The pre-filter: concepts an inclusion criterion requires, checked from the codes alone.

An inclusion criterion whose expression is an `all` (at any depth of `all`s from the top)
containing a plain resource atom over Condition or Procedure with a concept (no value test,
no negation) cannot be met by a patient who has no Condition/Procedure coded in that concept:
diagnoses and procedures are closed world, so the atom is not met and so is the criterion.
Such a patient is ineligible whatever the rest of the record says; `Prefilter.settling_criterion`
finds that from the resources' codes, without building the record.

The cohort runner still evaluates settled patients in full: their DetectedIssue lists every
criterion's outcome and the record's data problems, and must equal what `trialsieve evaluate`
writes. The pre-filter counts them (and checks the full evaluation agrees); its requirements
are what a server source pushes down into its searches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from engine.criteria.model import AllOf, CriterionKind, Expression, ResourceAtom
from engine.evaluate import CompiledCriteria
from engine.record import CodeClassifier

PREFILTER_TYPES = frozenset({"Condition", "Procedure"})
"""Closed-world types whose concept comes from `code` alone (no referenced Medication)."""


@dataclass(frozen=True)
class RequiredConcept:
    """An inclusion criterion cannot be met without a resource of these types in this concept."""

    criterion_id: str
    concept: str
    resource_types: frozenset[str]

    def __str__(self) -> str:
        types = "/".join(sorted(self.resource_types))
        return f"{self.criterion_id} requires a {types} in concept {self.concept}"


@dataclass(frozen=True)
class Prefilter:
    """The concepts the criteria require, in protocol order."""

    requirements: tuple[RequiredConcept, ...]

    @classmethod
    def from_criteria(cls, criteria: CompiledCriteria) -> Prefilter:
        requirements = [
            RequiredConcept(compiled.id, atom.concept, frozenset(atom.resource_types))
            for compiled in criteria.criteria
            if compiled.kind is CriterionKind.INCLUSION
            for atom in _required_atoms(compiled.criterion.expression)
            if atom.concept is not None
        ]
        return cls(tuple(requirements))

    @cached_property
    def types(self) -> frozenset[str]:
        """The resource types the pre-filter reads."""
        return frozenset(t for requirement in self.requirements for t in requirement.resource_types)

    def settling_criterion(
        self, resources: Iterable[dict[str, Any]], classifier: CodeClassifier
    ) -> str | None:
        """The first criterion the patient cannot meet for lack of a required concept, or None."""
        if not self.requirements:
            return None
        wanted = self.types
        present: set[tuple[str, str]] = set()  # (resource type, concept)
        for resource in resources:
            resource_type = resource.get("resourceType")
            if resource_type in wanted:
                for concept in _concepts_of_code(resource.get("code"), classifier):
                    present.add((resource_type, concept))
        for requirement in self.requirements:
            if not any((t, requirement.concept) in present for t in requirement.resource_types):
                return requirement.criterion_id
        return None


def _required_atoms(expression: Expression) -> Iterator[ResourceAtom]:
    """The resource atoms an expression cannot be met without (through `all`s only)."""
    if isinstance(expression, AllOf):
        for operand in expression.operands:
            yield from _required_atoms(operand)
    elif (
        isinstance(expression, ResourceAtom)
        and expression.value is None
        and (expression.selection != "count" or expression.minimum_count >= 1)
        and set(expression.resource_types) <= PREFILTER_TYPES
    ):
        yield expression


def _concepts_of_code(code: Any, classifier: CodeClassifier) -> Iterator[str]:
    codings = code.get("coding") if isinstance(code, dict) else None
    if not isinstance(codings, list):
        return
    for coding in codings:
        if not isinstance(coding, dict):
            continue
        value = coding.get("code")
        if not isinstance(value, str) or not value:
            continue
        system = coding.get("system")
        yield from classifier.concepts_of_coding(system if isinstance(system, str) else None, value)
