"""The record stage: one patient's resources, indexed for the evaluator.

`build_record(source, classifier)` turns a source's `PatientResources` into a `PatientRecord`:
resources by type, by reference (`Type/id`, fullUrl, contained `#id`) and by concept (every
coding of the resource's code, classified by the terminology). Resources stay the plain dicts
the source parsed. Data that is readable but unusable (a Condition without a code, a
medicationReference that points nowhere) is not an error: it is kept in `data_problems` for
the report, and the resource simply matches no concept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from engine.errors import InputError, Location
from engine.resource_types import (
    CODED_TYPES,
    MEDICATION_REFERENCING_TYPES,
    RECORD_TYPES,
    RESOURCE_TYPES,
)
from engine.sources.base import PatientResources
from engine.sources.references import FHIR_ID, reference_key

_NO_RESOURCES: tuple[dict[str, Any], ...] = ()
_PLAIN_REFERENCE = re.compile(rf"[A-Z][A-Za-z]+/(?!\.*$){FHIR_ID.pattern}")
"""A relative reference `Type/id` that is its own `reference_key` (a type, an id that is
not only dots), which `resolve` looks up as it is: one anchored match instead of the
key's search from every position (a test checks that the two agree)."""
_NO_CONCEPTS: frozenset[str] = frozenset()

UNIDENTIFIED_MEDICATION = "trialsieve:unidentified-medication"
"""The concept a record indexes a medication resource under when it cannot tell which drug
it is: its medicationReference resolves to nothing (or to no Medication), or its medication
has no coding in a system the mappings know (text only, a Medication with neither code nor
ingredient codes, local codes). Medication atoms read it too: such a resource in their
window keeps them unknown (`engine.evaluate.nodes.unidentified_medication_text`)."""
UNIDENTIFIED_CONDITION = "trialsieve:unidentified-condition"
"""The concept a record indexes a Condition under when it cannot tell which diagnosis it is:
no code, or no coding in a system the mappings know (text only, local codes only). Condition
atoms read it too: such a Condition in their window keeps them unknown
(`engine.evaluate.nodes.unidentified_text`). A code of a known system that no concept holds
is a diagnosis the criteria do not ask about, not an unknown one."""

UNIDENTIFIED_PROCEDURE = "trialsieve:unidentified-procedure"
"""The concept a record indexes a Procedure under when it cannot tell which procedure it is,
as for a Condition: no code, or no coding in a system the mappings know (text only, local
codes only). Procedure atoms read it too: such a Procedure in their window keeps them
unknown, so that a patient whose splenectomy or transplant is coded locally is not cleared
(`engine.evaluate.nodes.unidentified_text`). A code of a known system that no concept holds
is a procedure the criteria do not ask about."""

UNIDENTIFIED_CONCEPTS: dict[str, str] = {
    **{name: UNIDENTIFIED_MEDICATION for name in MEDICATION_REFERENCING_TYPES},
    "Condition": UNIDENTIFIED_CONDITION,
    "Procedure": UNIDENTIFIED_PROCEDURE,
}
"""For each type whose resources a record indexes under an "unidentified" concept when it
cannot tell what they are, that concept."""

DATING_FIELDS: dict[str, tuple[tuple[str | None, str], ...]] = {
    name: tuple(
        (date_field.container, date_field.name)
        for date_field in (*known.start_fields, *known.end_fields)
    )
    for name, known in RESOURCE_TYPES.items()
    if name in RECORD_TYPES and (known.start_fields or known.end_fields)
}
"""Each type's dating fields (`engine.resource_types`) as (container, name) pairs: what the
newest data day (`PatientRecord.newest_data_day`) is read from. The types a record always
reads only (`RECORD_TYPES`, the clinical data): not ResearchSubject, a study's enrolment,
which a record holds only for criteria asking about it (a cohort run of other criteria
leaves its lines unread: the newest day was then another one than `evaluate`'s)."""

# A coded field to classify: the field's name (for problems) and its CodeableConcept, or None.
_CodedField = tuple[str, Any]


class CodeClassifier(Protocol):
    """What the record needs from the terminology: the concepts one coding belongs to."""

    def concepts_of_coding(self, system: str | None, code: str) -> frozenset[str]: ...

    def knows_system(self, system: str | None) -> bool: ...


_ClassifyCoding = Callable[[str | None, str], frozenset[str] | None]
"""A coding's concepts; None when there are none and its system is unknown."""

_Classifications = Mapping[tuple[str | None, str], frozenset[str] | None]
"""Codings classified so far, by (system, code): what `_ClassifyCoding` answered."""

_UNSEEN: Any = object()


def _coding_classification(classifier: CodeClassifier) -> tuple[_Classifications, _ClassifyCoding]:
    """How to classify a coding, and what has been classified already (read before calling).

    The classifier's own `classify_coding` and its memo (the Terminology's: each distinct
    coding is classified once per process), else a classification built from
    `concepts_of_coding` and `knows_system`, remembered for this record.
    """
    own: _ClassifyCoding | None = getattr(classifier, "classify_coding", None)
    own_memo: _Classifications | None = getattr(classifier, "classification_memo", None)
    if own is not None and own_memo is not None:
        return own_memo, own
    memo: dict[tuple[str | None, str], frozenset[str] | None] = {}

    def classify_coding(system: str | None, code: str) -> frozenset[str] | None:
        if own is not None:
            found = own(system, code)
        else:
            found = classifier.concepts_of_coding(system, code)
            if not found and not classifier.knows_system(system):
                found = None
        memo[system, code] = found
        return found

    return memo, classify_coding


@dataclass(frozen=True)
class RecordProblem:
    """Readable data the engine cannot use; reported with the results, never raised."""

    resource: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.resource}, field {self.field}: {self.message}"


def of_types(
    found: Sequence[dict[str, Any]], resource_types: Collection[str]
) -> list[dict[str, Any]]:
    """The resources of these types (a record's `resources_of_concept`, stored or not; a
    function apart: a comprehension reading a local makes it a cell at every call of the
    function holding it)."""
    return [resource for resource in found if resource["resourceType"] in resource_types]


class PatientRecord:
    """One patient's resources with the indexes the evaluator queries.

    Build it with `build_record`. Lookups return the source's own dicts, in document order;
    treat them as read-only.
    """

    patient: dict[str, Any]
    patient_id: str
    origin: str
    data_problems: list[RecordProblem]
    unavailable_types: Mapping[str, str]
    """Types the source could not provide for this patient, each with why
    (`PatientResources.unavailable_types`)."""
    source_problems: tuple[str, ...] = ()
    """What the source noted about the data it gave (`PatientResources.source_problems`)."""
    _newest_day: str | None = None
    _concepts_indexed: ClassVar[bool] = True
    """Whether `resources_of_concept` answers from the concept index (a subclass answering
    it its own way is not: `holds_any_of` then asks it), known once per class."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._concepts_indexed = cls.resources_of_concept is PatientRecord.resources_of_concept

    def __init__(self, source: PatientResources, classifier: CodeClassifier) -> None:
        self.patient_id = source.patient_id
        self.origin = source.origin
        self.unavailable_types = source.unavailable_types
        self.source_problems = source.source_problems
        self.data_problems = []
        self._resources = source.resources
        self._full_urls = source.full_urls
        self._by_type: dict[str, list[dict[str, Any]]] = {}
        self._by_key: dict[str, dict[str, Any]] = {}
        self._by_full_url: dict[str, dict[str, Any]] = {}
        self._by_concept: dict[str, list[dict[str, Any]]] = {}
        self._position_by_identity: dict[int, int] | None = None
        self._repeated: set[int] = set()
        """The identities of resources whose Type/id an earlier one has: left out of the
        type and concept indexes (a data problem names each)."""
        self._index_types_and_references()
        self.patient = self._find_patient()
        self._index_concepts(classifier)

    # ------------------------------------------------------------------ queries

    @property
    def resources(self) -> Sequence[dict[str, Any]]:
        """Every resource, the Patient included, in document order."""
        return self._resources

    def resources_of_type(self, resource_type: str) -> Sequence[dict[str, Any]]:
        """The resources of one type, in document order."""
        return self._by_type.get(resource_type, _NO_RESOURCES)

    def resources_of_concept(
        self, concept_id: str, resource_types: Collection[str] | None = None
    ) -> Sequence[dict[str, Any]]:
        """The resources whose code belongs to the concept, in document order.

        Observation code and component codes, Condition and Procedure code, a medication
        resource's medication (inline or the referenced Medication's code), AllergyIntolerance
        code and reaction substances. `resource_types` keeps only resources of those types.
        """
        found = self._by_concept.get(concept_id, _NO_RESOURCES)
        if resource_types is None:
            return found
        return of_types(found, resource_types)

    def holds_any_of(self, concept_ids: frozenset[str]) -> bool:
        """Whether any resource of the record belongs to one of the concepts: one set
        operation on the concept index (a subclass answering `resources_of_concept` its
        own way is asked concept by concept)."""
        if self._concepts_indexed:
            return not concept_ids.isdisjoint(self._by_concept)
        return any(map(self.resources_of_concept, concept_ids))  # (no generator's cell)

    def concept_index(self) -> Mapping[str, Sequence[dict[str, Any]]]:
        """Every concept the record's resources belong to, with those resources (read-only)."""
        return self._by_concept

    def resolve(
        self, reference: str | None, container: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The resource a literal reference points to, or None when it is not in the record.

        Accepts `Type/id`, `Type/id/_history/n` (the version is ignored), an absolute URL
        (an exact fullUrl, else matched by its `Type/id` end), `urn:uuid:...` (a fullUrl), and
        `#id` for a resource contained in `container` (`#` alone is the container itself).
        Conditional references (`Practitioner?identifier=...`) resolve to None.
        """
        if not reference:
            return None
        if reference[0] == "#":
            if container is None:
                return None
            return container if reference == "#" else _contained(container, reference[1:])
        found = self._by_full_url.get(reference)
        if found is not None:
            return found
        if _PLAIN_REFERENCE.fullmatch(reference) is not None:
            return self._by_key.get(reference)  # its own `reference_key` (most references)
        key = reference_key(reference)
        return self._by_key.get(key) if key is not None else None

    def cited_patient(self) -> tuple[str, Mapping[str, Any]]:
        """The Patient's label and the Patient, as an atom citing it cites them."""
        patient = self.patient
        return self.label(patient), patient

    def label(self, resource: dict[str, Any]) -> str:
        """A name for messages: `Type/id`, else its fullUrl, else `Type#position`."""
        resource_type = resource.get("resourceType", "Resource")
        resource_id = resource.get("id")
        if isinstance(resource_id, str) and resource_id:
            return f"{resource_type}/{resource_id}"
        position = self._position_of(resource)
        if position is None:
            return str(resource_type)
        return self._full_urls[position] or f"{resource_type}#{position}"

    def newest_data_day(self) -> str:
        """The latest `YYYY-MM-DD` any dating field of the record names (a Period's end, else
        its start; the first ten characters of each value; partial dates ignored), read while
        the record was built; empty when there is none."""
        if self._newest_day is None:
            raise TypeError(f"{type(self).__name__} keeps no newest data day")
        return self._newest_day

    def medication_of(self, resource: dict[str, Any]) -> dict[str, Any] | None:
        """The CodeableConcept of a medication resource's medication, or None.

        medicationCodeableConcept when given, else the code of the Medication that
        medicationReference points to (contained or elsewhere in the record).
        """
        concept, _problem, _medication = self._medication_concept(resource)
        return concept

    # ------------------------------------------------------------------ building

    def _index_types_and_references(self) -> None:
        by_type = self._by_type
        by_key = self._by_key
        by_full_url = self._by_full_url
        dating_fields = DATING_FIELDS
        newest = ""
        for resource, full_url in zip(self._resources, self._full_urls, strict=True):
            resource_type = resource["resourceType"]
            resource_id = resource.get("id")
            if resource_id:
                key = f"{resource_type}/{resource_id}"
            elif full_url:
                key = reference_key(full_url) or ""
            else:
                key = ""
            if key:
                first = by_key.setdefault(key, resource)
                if first is not resource:
                    # One Type/id is one resource (a Bundle's entries with one fullUrl are
                    # versions of it, FHIR R4 bdl-7): the first is read, once, and references
                    # resolve to it; a repeat counted again would make one result two.
                    self._problem(
                        resource,
                        "id",
                        f"another resource has the same id {key}; only the first is read "
                        "(references resolve to it too)",
                    )
                    self._repeated.add(id(resource))
                    if full_url:
                        by_full_url.setdefault(full_url, first)
                    continue
            same_type = by_type.get(resource_type)
            if same_type is None:
                by_type[resource_type] = [resource]
            else:
                same_type.append(resource)
            dating = dating_fields.get(resource_type)
            if dating is not None:
                for container, name in dating:
                    if container is None:
                        value = resource.get(name)
                    else:
                        holder = resource.get(container)
                        value = holder.get(name) if type(holder) is dict else None
                    if value is None:
                        continue
                    if type(value) is dict:
                        value = value.get("end") or value.get("start")
                    # The greatest value's first ten characters are the greatest of theirs.
                    if type(value) is str and len(value) >= 10 and value > newest:
                        newest = value
            if full_url:
                by_full_url.setdefault(full_url, resource)
        self._newest_day = newest[:10]

    def _find_patient(self) -> dict[str, Any]:
        patients = self._by_type.get("Patient")
        if not patients:
            raise InputError("the patient's data holds no Patient", Location(file=self.origin))
        for patient in patients:
            if patient.get("id") == self.patient_id:
                return patient
        return patients[0]

    def _index_concepts(self, classifier: CodeClassifier) -> None:
        by_concept = self._by_concept
        classified, classify = _coding_classification(classifier)
        ways = _WAYS_TO_CLASSIFY
        unseen = _UNSEEN
        repeated = self._repeated
        for resource in self._resources:
            if repeated and id(resource) in repeated:
                continue  # a repeated Type/id: read once, as its first (`_repeated`)
            resource_type = resource["resourceType"]
            way = ways.get(resource_type)
            if way is None:
                continue
            coded_fields_of, usual_field = way
            if "subject" not in resource and "patient" not in resource:
                self._problem(
                    resource,
                    "subject",
                    "no subject or patient; taken to be about this record's patient",
                )
            # The usual case, read inline: the coded field has one well-formed coding in a
            # system the mappings know (`_single_coding_concepts`), and so has every
            # Observation component's code; there is no problem to note. Anything else is
            # classified field by field below.
            concepts: frozenset[str] | set[str] | None = None
            concept = resource.get(usual_field) if usual_field is not None else None
            if type(concept) is dict:
                codings = concept.get("coding")
                if type(codings) is list and len(codings) == 1:
                    coding = codings[0]
                    if type(coding) is dict:
                        code = coding.get("code")
                        system = coding.get("system")
                        if type(code) is str and code and (system is None or type(system) is str):
                            concepts = classified.get((system, code), unseen)
                            if concepts is unseen:
                                concepts = classify(system, code)
            if concepts is not None and "component" in resource and resource_type == "Observation":
                concepts = _component_concepts(
                    resource["component"], concepts, classified, classify
                )
            if concepts is None:
                concepts = _NO_CONCEPTS
                coded_fields = coded_fields_of(self, resource)
                for field, concept in coded_fields:
                    found = self._classify(resource, field, concept, classified, classify)
                    if found:
                        concepts = found if not concepts else concepts | found
                if not concepts:
                    unidentified = _UNIDENTIFIED.get(resource_type)
                    if unidentified is not None and not _knows_a_coding(coded_fields, classify):
                        concepts = (
                            unidentified  # which drug, diagnosis or procedure: cannot be told
                        )
            if concepts:
                for concept_id in concepts:
                    same_concept = by_concept.get(concept_id)
                    if same_concept is None:
                        by_concept[concept_id] = [resource]
                    else:
                        same_concept.append(resource)

    def _classify(
        self,
        resource: dict[str, Any],
        field: str,
        concept: Any,
        classified: _Classifications,
        classify: _ClassifyCoding,
    ) -> frozenset[str] | set[str]:
        """The concepts of every coding of `concept`.

        Notes a concept without codings, or coded only in systems the mappings do not know.
        """
        if concept is None:
            return _NO_CONCEPTS  # already reported by the field's extractor, or optional
        found = _single_coding_concepts(concept, classified, classify)
        if found is not None:
            return found
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list) or not codings:
            text = concept.get("text") if isinstance(concept, dict) else None
            detail = f" (text only: '{text}')" if isinstance(text, str) else ""
            self._problem(resource, field, f"no coding{detail}; it cannot match any concept")
            return _NO_CONCEPTS
        concepts: frozenset[str] | set[str] = _NO_CONCEPTS
        unknown_systems: list[str] = []
        for coding in codings:
            code = coding.get("code") if isinstance(coding, dict) else None
            if not isinstance(code, str) or not code:
                continue
            system = coding.get("system")
            if not isinstance(system, str):
                system = None
            found = classify(system, code)
            if found is None:
                unknown_systems.append(f"{system or '(no system)'}|{code}")
            elif found:
                concepts = found if not concepts else concepts | found
        if unknown_systems and len(unknown_systems) == len(codings):
            self._problem(
                resource,
                field,
                f"coded only in systems the mappings do not know ({', '.join(unknown_systems)}); "
                "it cannot match any concept (add a local code map?)",
            )
        return concepts

    def _medication_concept(
        self, resource: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str, dict[str, Any] | None]:
        """The medication's CodeableConcept, or None and why not; and the Medication that
        medicationReference resolves to, when it is one."""
        concept = resource.get("medicationCodeableConcept")
        if isinstance(concept, dict):
            return concept, "", None
        reference_value = resource.get("medicationReference")
        if not isinstance(reference_value, dict):
            return None, "no medicationCodeableConcept or medicationReference", None
        reference = reference_value.get("reference")
        if not isinstance(reference, str) or not reference:
            return None, "medicationReference has no literal reference", None
        medication = self.resolve(reference, container=resource)
        if medication is None:
            problem = f"medicationReference '{reference}' resolves to no resource in the record"
            return None, problem, None
        if medication.get("resourceType") != "Medication":
            found = medication.get("resourceType")
            problem = f"medicationReference '{reference}' points to a {found}, not a Medication"
            return None, problem, None
        code = medication.get("code")
        if isinstance(code, dict):
            return code, "", medication
        ingredients = _ingredient_concepts(medication)
        if ingredients:  # coded through its ingredients only
            codings = [
                coding
                for _field, concept in ingredients
                for coding in concept.get("coding") or ()
                if isinstance(coding, dict)
            ]
            names = [_concept_name(concept) for _field, concept in ingredients]
            return {"coding": codings, "text": " + ".join(filter(None, names))}, "", medication
        return None, f"the Medication '{reference}' has no code", medication

    def _position_of(self, resource: dict[str, Any]) -> int | None:
        if self._position_by_identity is None:
            self._position_by_identity = {
                id(each): position for position, each in enumerate(self._resources)
            }
        return self._position_by_identity.get(id(resource))

    def _problem(self, resource: dict[str, Any], field: str, message: str) -> None:
        self.data_problems.append(RecordProblem(self.label(resource), field, message))


def _single_coding_concepts(
    concept: Any, classified: _Classifications, classify: _ClassifyCoding
) -> frozenset[str] | None:
    """The concepts of a CodeableConcept in the usual case: one well-formed coding in a system
    the mappings know, so there is no problem to note. None for any other case."""
    if type(concept) is not dict:
        return None
    codings = concept.get("coding")
    if type(codings) is not list or len(codings) != 1:
        return None
    coding = codings[0]
    if type(coding) is not dict:
        return None
    code = coding.get("code")
    system = coding.get("system")
    if type(code) is str and code and (system is None or type(system) is str):
        found = classified.get((system, code), _UNSEEN)
        return classify(system, code) if found is _UNSEEN else found
    return None


def _component_concepts(
    components: Any,
    concepts: frozenset[str] | set[str],
    classified: _Classifications,
    classify: _ClassifyCoding,
) -> frozenset[str] | set[str] | None:
    """`concepts` (the Observation code's) with those of every component's code, when each is
    the usual case (`_single_coding_concepts`); None otherwise."""
    if type(components) is not list:
        return None
    for component in components:
        if type(component) is not dict:
            return None
        found = _single_coding_concepts(component.get("code"), classified, classify)
        if found is None:
            return None
        if found:
            concepts = found if not concepts else concepts | found
    return concepts


def build_record(source: PatientResources, classifier: CodeClassifier) -> PatientRecord:
    """Index one patient's resources by type, reference and concept.

    `classifier` is the terminology (`engine.normalise.Terminology`, or anything with the
    methods of `CodeClassifier`).
    """
    return PatientRecord(source, classifier)


# ---------------------------------------------------------------------- coded fields by type


def _code(record: PatientRecord, resource: dict[str, Any]) -> list[_CodedField]:
    code = resource.get("code")
    if code is None:
        record._problem(resource, "code", "no code; it cannot match any concept")
    return [("code", code)]


def _observation_codes(record: PatientRecord, resource: dict[str, Any]) -> list[_CodedField]:
    fields = _code(record, resource)
    components = resource.get("component")
    if isinstance(components, list):
        for index, component in enumerate(components):
            if isinstance(component, dict):
                fields.append((f"component[{index}].code", component.get("code")))
    return fields


def _allergy_codes(record: PatientRecord, resource: dict[str, Any]) -> list[_CodedField]:
    fields = _code(record, resource)
    reactions = resource.get("reaction")
    if isinstance(reactions, list):
        for index, reaction in enumerate(reactions):
            if isinstance(reaction, dict) and reaction.get("substance") is not None:
                fields.append((f"reaction[{index}].substance", reaction["substance"]))
    return fields


def _medication_codes(record: PatientRecord, resource: dict[str, Any]) -> list[_CodedField]:
    """The medication's code, and the codes of the ingredients of a referenced Medication
    (FHIR R4 Medication.ingredient.itemCodeableConcept: "The actual ingredient"), each a
    code of the medication: a product containing a drug is that drug."""
    concept, problem, medication = record._medication_concept(resource)
    if concept is None:
        field = "medicationReference" if "medicationReference" in resource else "medication[x]"
        record._problem(resource, field, f"{problem}; it cannot match any concept")
        return []
    if medication is None:
        return [("medicationCodeableConcept", concept)]
    if not isinstance(medication.get("code"), dict):
        return [("medicationReference", concept)]  # (the ingredients' codes, joined)
    return [
        ("medicationReference", concept),
        *(
            (f"medicationReference.{field}", ingredient)
            for field, ingredient in _ingredient_concepts(medication)
        ),
    ]


def _ingredient_concepts(medication: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A Medication's ingredients coded by itemCodeableConcept, with their fields."""
    ingredients = medication.get("ingredient")
    if not isinstance(ingredients, list):
        return []
    return [
        (f"ingredient[{index}].itemCodeableConcept", ingredient["itemCodeableConcept"])
        for index, ingredient in enumerate(ingredients)
        if isinstance(ingredient, dict) and isinstance(ingredient.get("itemCodeableConcept"), dict)
    ]


def _concept_name(concept: dict[str, Any]) -> str:
    text = concept.get("text")
    if isinstance(text, str) and text:
        return text
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return str(coding["display"])
    return ""


def _knows_a_coding(coded_fields: list[_CodedField], classify: _ClassifyCoding) -> bool:
    """Whether a coding of these fields is in a system the mappings know (a code of no
    concept there is a drug the criteria do not ask about, not an unknown one)."""
    for _field, concept in coded_fields:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for coding in codings if isinstance(codings, list) else ():
            code = coding.get("code") if isinstance(coding, dict) else None
            if not isinstance(code, str) or not code:
                continue
            system = coding.get("system")
            if classify(system if isinstance(system, str) else None, code) is not None:
                return True
    return False


_UNIDENTIFIED = {name: frozenset({concept}) for name, concept in UNIDENTIFIED_CONCEPTS.items()}


_CodedFields = Callable[[PatientRecord, dict[str, Any]], list[_CodedField]]
_OWN_CODED_FIELDS: dict[str, _CodedFields] = {
    "Observation": _observation_codes,
    "AllergyIntolerance": _allergy_codes,
}
"""Types coded in more than `code`: Observation components, allergy reaction substances."""


_CODED_FIELDS: dict[str, _CodedFields] = {
    name: _medication_codes
    if RESOURCE_TYPES[name].medication
    else _OWN_CODED_FIELDS.get(name, _code)
    for name in CODED_TYPES
}
"""The coded fields of each type the record indexes by concept (`engine.resource_types`)."""

_WAYS_TO_CLASSIFY: dict[str, tuple[_CodedFields, str | None]] = {
    name: (
        coded_fields,
        "medicationCodeableConcept"
        if coded_fields is _medication_codes
        else "code"
        if coded_fields in (_code, _observation_codes)
        else None,
    )
    for name, coded_fields in _CODED_FIELDS.items()
}
"""For each coded type: its coded fields, and the field the usual case reads (the one coded
field; an Observation's components are read after its code; None: no usual case)."""


def _contained(container: dict[str, Any], contained_id: str) -> dict[str, Any] | None:
    contained = container.get("contained")
    if not isinstance(contained, list):
        return None
    for resource in contained:
        if isinstance(resource, dict) and resource.get("id") == contained_id:
            return resource
    return None
