"""Compile a loaded criteria file into evaluators, once; evaluate many patients with them.

Compilation resolves every concept against the terminology, converts every threshold to the
concept's canonical unit, builds status predicates and jsonpath filters, and fails early (with
the criteria file's line) on anything that cannot work: an unknown concept, a unit that does not
convert, a value test on a resource type that has no value. Evaluation then only walks small
objects over plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jsonpath_ng.exceptions import JsonPathParserError
from jsonpath_ng.ext.parser import parse as parse_jsonpath

from engine.criteria.model import (
    AS_OF,
    AllOf,
    AnyOf,
    CriteriaFile,
    Criterion,
    CriterionKind,
    Expression,
    ManualAtom,
    NotOf,
    PatientAtom,
    ResourceAtom,
    SourcePosition,
    Trial,
    iter_atoms,
)
from engine.dataclass_init import cached_attribute
from engine.errors import CriteriaError, ErrorCollection, Location, TrialsieveError
from engine.evaluate.computed import compile_computed
from engine.evaluate.exposure import compile_exposure
from engine.evaluate.jsonpath_filter import JsonPathFilter
from engine.evaluate.nodes import (
    AllNode,
    Anchoring,
    AnyNode,
    EvaluationContext,
    ManualNode,
    Node,
    NotNode,
    PatientNode,
    ResourceNode,
    age_bounds_text,
)
from engine.evaluate.status import TRIALSIEVE_IDENTIFIER_SYSTEM, status_predicate
from engine.evaluate.values import compile_value_check
from engine.normalise import Concept, Terminology
from engine.normalise.formulas import FORMULAS
from engine.record import UNIDENTIFIED_CONCEPTS

__all__ = [
    "TRIALSIEVE_IDENTIFIER_SYSTEM",
    "CompiledCriteria",
    "CompiledCriterion",
    "EvaluationContext",
    "compile_criteria",
]


@dataclass(frozen=True)
class CompiledCriterion:
    criterion: Criterion
    root: Node
    id: str = field(init=False, repr=False, compare=False)
    """The criterion's id (kept: read for every patient)."""
    kind: CriterionKind = field(init=False, repr=False, compare=False)
    """The criterion's kind (kept: read for every patient)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.criterion.id)
        object.__setattr__(self, "kind", self.criterion.kind)


@dataclass(frozen=True)
class CompiledCriteria:
    """A trial's criteria ready to evaluate: compile once, evaluate many patients."""

    source: CriteriaFile
    terminology: Terminology
    criteria: tuple[CompiledCriterion, ...]
    unavailable_types: frozenset[str] = frozenset()
    """Resource types the source could not provide for any patient (a Bulk export's
    `types_left_out`): an atom over these types only is unknown, "not exported by the server",
    never not met. A type one patient's source could not provide is in the record's
    `unavailable_types`, with why."""

    @property
    def trial(self) -> Trial:
        return self.source.trial

    @property
    def manual_ids(self) -> frozenset[str]:
        return frozenset(self.source.manual_atoms)

    @cached_attribute
    def resource_types(self) -> frozenset[str]:
        """Every resource type the criteria read (MedicationStatement already expanded)."""
        return frozenset(
            resource_type
            for compiled in self.criteria
            for atom in iter_atoms(compiled.criterion.expression)
            if isinstance(atom, ResourceAtom)
            for resource_type in atom.resource_types
        )

    @cached_attribute
    def types_read_without_concept(self) -> frozenset[str]:
        """The types an atom reads without a concept (`resource:` and no `concept:`): every
        resource of them counts, whatever its code."""
        return frozenset(
            resource_type
            for compiled in self.criteria
            for atom in iter_atoms(compiled.criterion.expression)
            if isinstance(atom, ResourceAtom) and atom.concept is None
            for resource_type in atom.resource_types
        )

    @cached_attribute
    def concepts_read(self) -> frozenset[str]:
        """Every concept whose resources an evaluation of these criteria may look up in a
        record (`PatientRecord.resources_of_concept`, `holds_any_of`): each resource atom's
        concept (a medication use's and a computed value's own included) and each measured
        input of a computed value's formula (creatinine for eGFR). A record's resources of
        no such concept change none of the criteria's outcomes."""
        concepts: set[str] = set()
        for compiled in self.criteria:
            for atom in iter_atoms(compiled.criterion.expression):
                if not isinstance(atom, ResourceAtom):
                    continue
                if atom.concept is not None:
                    concepts.add(atom.concept)
                    concepts.update(  # what cannot be told may be it (`ResourceNode`)
                        UNIDENTIFIED_CONCEPTS[name]
                        for name in atom.resource_types
                        if name in UNIDENTIFIED_CONCEPTS
                    )
                if atom.computed is not None:
                    formula = FORMULAS[atom.computed.formula]
                    concepts.update(
                        spec.concept
                        for spec in formula.measurement_inputs
                        if spec.concept is not None
                    )
        return frozenset(concepts)


# --------------------------------------------------------------------------- compiler


def compile_criteria(source: CriteriaFile, terminology: Terminology) -> CompiledCriteria:
    """Compile every criterion; all problems are reported together (ErrorCollection)."""
    errors: list[TrialsieveError] = []
    compiled: list[CompiledCriterion] = []
    anchors = _Anchors(
        {
            atom.id: (atom, criterion)
            for criterion in source.criteria
            for atom in iter_atoms(criterion.expression)
            if isinstance(atom, ResourceAtom) and atom.id is not None
        }
    )
    for criterion in source.criteria:
        try:
            root = _compile(criterion.expression, criterion, source, terminology, anchors)
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


@dataclass
class _Anchors:
    """The file's atoms with an id (with their criterion), and those compiled so far: an atom
    is compiled once, whether reached in its criterion or as another atom's anchor."""

    atoms: dict[str, tuple[ResourceAtom, Criterion]]
    compiled: dict[str, Node] = field(default_factory=dict)


def _compile(
    expression: Expression,
    criterion: Criterion,
    source: CriteriaFile,
    terminology: Terminology,
    anchors: _Anchors,
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
            return _compile_resource(node, criterion, source, terminology, anchors)
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
        parts.append(f"age {age_bounds_text(atom.minimum_age, atom.maximum_age)}")
    if atom.genders:
        parts.append(" or ".join(atom.genders))
    return ", ".join(parts)


def _compile_resource(
    atom: ResourceAtom,
    criterion: Criterion,
    source: CriteriaFile,
    terminology: Terminology,
    anchors: _Anchors,
) -> Node:
    if atom.id is not None and atom.id in anchors.compiled:
        return anchors.compiled[atom.id]
    node = _compile_resource_node(atom, criterion, source, terminology, anchors)
    if atom.id is not None:
        anchors.compiled[atom.id] = node
    return node


def _anchorings(
    atom: ResourceAtom,
    criterion: Criterion,
    source: CriteriaFile,
    terminology: Terminology,
    anchors: _Anchors,
) -> tuple[Anchoring, ...]:
    """The compiled `before:` / `after:` of an atom (the loader checked that anchors exist
    and go in no circle)."""
    anchorings = []
    for relation in atom.relations:
        where = _location(relation.position, criterion, source, relation.direction)
        if atom.computed is not None or atom.exposure is not None:
            raise CriteriaError(
                f"{relation.direction}: cannot be combined with computed: or use: yet", where
            )
        if relation.anchor == AS_OF:
            anchorings.append(Anchoring(relation, None, "the as-of date"))
            continue
        anchor_atom, anchor_criterion = anchors.atoms[relation.anchor]
        anchor = _compile_resource(anchor_atom, anchor_criterion, source, terminology, anchors)
        if not isinstance(anchor, ResourceNode):
            raise CriteriaError(
                f"anchor '{relation.anchor}' has computed: or use:; anchor on a plain "
                "resource atom",
                where,
            )
        # "after the first Albuminuria (diagnosis), 2026-05-01": the atom's own label, else
        # what it finds (its generated label also names its window, "(ever)": no name)
        name = f"the {relation.event} {anchor_atom.label or anchor.subject}"
        anchorings.append(Anchoring(relation, anchor, name))
    return tuple(anchorings)


def _compile_resource_node(
    atom: ResourceAtom,
    criterion: Criterion,
    source: CriteriaFile,
    terminology: Terminology,
    anchors: _Anchors,
) -> Node:
    concept: Concept | None = None
    if atom.concept is not None:
        if not terminology.has_concept(atom.concept):
            raise CriteriaError(
                f"concept '{atom.concept}' is not defined in the mappings"
                f"{terminology.unknown_concept_hint(atom.concept)}",
                _location(atom.position, criterion, source, "concept"),
            )
        concept = terminology.concept(atom.concept)
    predicates = {t: status_predicate(t, atom.status) for t in atom.resource_types}
    value_check = None
    if atom.value is not None:
        where = _location(atom.position, criterion, source, "value")
        if concept is None or set(atom.resource_types) != {"Observation"}:
            raise CriteriaError("a value test needs an Observation atom with a concept", where)
        value_check = compile_value_check(atom.value, concept, terminology, where)
    subject = concept.display if concept is not None else " or ".join(atom.resource_types)
    node = ResourceNode(
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
        onset=atom.timing == "onset",
        anchorings=_anchorings(atom, criterion, source, terminology, anchors),
    )
    if atom.computed is not None:
        where = _location(
            atom.computed.position or atom.position, criterion, source, "computed.formula"
        )
        return compile_computed(node, atom.computed, terminology, where)
    if atom.exposure is not None:
        where = _location(atom.exposure.position or atom.position, criterion, source, "use")
        return compile_exposure(node, atom.exposure, terminology, where)
    return node


def _resource_label(atom: ResourceAtom, subject: str) -> str:
    value = f" {atom.value.text}" if atom.value is not None else ""
    window = (
        "ever"
        if atom.window.duration is None
        else f"within {atom.window.name or atom.window.duration.readable}"
    )
    if atom.timing == "onset" and atom.window.duration is not None:
        window = f"onset {window}"
    for relation in atom.relations:
        window += f", {relation.direction} {relation.anchor}"
    if atom.apart is not None:
        window += f", {atom.apart.readable} apart"
    return f"{subject}{value} ({window})"


_PARSED_PATHS: dict[str, JsonPathFilter] = {}
"""Each jsonpath expression parsed once per process: atoms with the same filter share the
compiled path, so a patient's evaluation runs it once per resource
(`EvaluationContext.path_matches`), and the process once per distinct content it reads
(`JsonPathFilter`)."""


def parsed_jsonpaths() -> dict[str, Any]:
    """Each jsonpath expression parsed in this process, as jsonpath-ng parsed it (for the
    compiled cache: a process that compiles criteria it read from there parses none)."""
    return {text: known.path for text, known in _PARSED_PATHS.items()}


def remember_jsonpaths(paths: dict[str, Any]) -> None:
    """Take these parsed expressions (`parsed_jsonpaths` of another process) as parsed."""
    for text, path in paths.items():
        if text not in _PARSED_PATHS:
            _PARSED_PATHS[text] = JsonPathFilter(text, path)


def _jsonpaths(
    expressions: tuple[str, ...],
    atom: ResourceAtom,
    criterion: Criterion,
    source: CriteriaFile,
    field: str,
) -> tuple[JsonPathFilter, ...]:
    compiled = []
    for expression in expressions:
        known = _PARSED_PATHS.get(expression)
        if known is not None:
            compiled.append(known)
            continue
        try:
            path = parse_jsonpath(expression)
        except (JsonPathParserError, Exception) as error:  # jsonpath-ng raises bare Exception
            raise CriteriaError(
                f"'{expression}' is not a valid jsonpath-ng expression: {error}",
                _location(atom.position, criterion, source, field),
            ) from None
        compiled.append(_PARSED_PATHS.setdefault(expression, JsonPathFilter(expression, path)))
    return tuple(compiled)
