"""The patient record: indexes by type, reference and concept, and the data problems it notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InputError
from engine.record import (
    UNIDENTIFIED_CONDITION,
    UNIDENTIFIED_MEDICATION,
    UNIDENTIFIED_PROCEDURE,
    CodeClassifier,
    PatientRecord,
    RecordProblem,
    build_record,
)
from engine.sources import PatientResources, read_bundle_file
from engine.sources.references import reference_key

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "synthea"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


class FakeClassifier:
    """Concepts by (system, code); remembers every coding it was asked about."""

    def __init__(self, concepts: dict[tuple[str | None, str], set[str]]) -> None:
        self.concepts = {coding: frozenset(ids) for coding, ids in concepts.items()}
        self.asked: list[tuple[str | None, str]] = []

    def concepts_of_coding(self, system: str | None, code: str) -> frozenset[str]:
        self.asked.append((system, code))
        return self.concepts.get((system, code), frozenset())

    def knows_system(self, system: str | None) -> bool:
        return any(known == system for known, _ in self.concepts)


CLASSIFIER = FakeClassifier(
    {
        (LOINC, "718-7"): {"hemoglobin"},
        (LOINC, "59260-0"): {"hemoglobin"},
        (LOINC, "777-3"): {"platelets"},
        (LOINC, "8480-6"): {"systolic-pressure"},
        (SNOMED, "22298006"): {"myocardial-infarction", "cardiovascular-event"},
        (SNOMED, "233604007"): {"pneumonia"},
        (SNOMED, "80146002"): {"appendectomy"},
        (RXNORM, "309362"): {"clopidogrel", "antiplatelet"},
        (RXNORM, "855812"): {"antiplatelet"},
        (RXNORM, "7980"): {"penicillin"},
        (None, "local-hb"): {"hemoglobin"},
    }
)


def concept(system: str | None, code: str, text: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"code": code}
    if system is not None:
        coding["system"] = system
    result: dict[str, Any] = {"coding": [coding]}
    if text is not None:
        result["text"] = text
    return result


def resource(resource_type: str, resource_id: str | None, **fields: Any) -> dict[str, Any]:
    """A resource of patient p1 (clinical types get their subject/patient reference)."""
    result: dict[str, Any] = {"resourceType": resource_type}
    if resource_id is not None:
        result["id"] = resource_id
    if resource_type in SUBJECT_FIELD and not {"subject", "patient"} & fields.keys():
        result[SUBJECT_FIELD[resource_type]] = {"reference": "Patient/p1"}
    result.update(fields)
    return result


SUBJECT_FIELD = {
    "Observation": "subject",
    "Condition": "subject",
    "Procedure": "subject",
    "MedicationStatement": "subject",
    "MedicationRequest": "subject",
    "MedicationAdministration": "subject",
    "AllergyIntolerance": "patient",
}


def record_of(
    *resources: dict[str, Any],
    full_urls: list[str | None] | None = None,
    classifier: CodeClassifier = CLASSIFIER,
) -> PatientRecord:
    everything = [resource("Patient", "p1"), *resources]
    urls: list[str | None] = [None, *full_urls] if full_urls else [None] * len(everything)
    return build_record(PatientResources("p1", everything, urls, "test.json"), classifier)


def ids(resources: Any) -> list[str]:
    return [each.get("id", "?") for each in resources]


# --------------------------------------------------------------------------- patient, types


def test_patient_and_origin() -> None:
    record = record_of()
    assert record.patient == {"resourceType": "Patient", "id": "p1"}
    assert (record.patient_id, record.origin) == ("p1", "test.json")
    assert record.label(record.patient) == "Patient/p1"


def test_patient_without_id_is_found_by_position() -> None:
    source = PatientResources("x", [resource("Patient", None)], ["urn:uuid:x"], "t.json")
    assert build_record(source, CLASSIFIER).patient == {"resourceType": "Patient"}


def test_data_without_patient_is_an_input_error() -> None:
    source = PatientResources("p1", [resource("Observation", "o1")], [None], "t.json")
    with pytest.raises(InputError, match="no Patient"):
        build_record(source, CLASSIFIER)


def test_resources_of_type_in_document_order() -> None:
    record = record_of(
        resource("Observation", "o1"),
        resource("Condition", "c1"),
        resource("Observation", "o2"),
        resource("Encounter", "e1"),
    )
    assert ids(record.resources_of_type("Observation")) == ["o1", "o2"]
    assert ids(record.resources_of_type("Encounter")) == ["e1"]
    assert list(record.resources_of_type("Procedure")) == []
    assert ids(record.resources) == ["p1", "o1", "c1", "o2", "e1"]


# --------------------------------------------------------------------------- references


@pytest.fixture(scope="module")
def referenced() -> PatientRecord:
    medication = resource("Medication", "m1", code=concept(RXNORM, "309362"))
    observation = resource("Observation", "o1", code=concept(LOINC, "718-7"))
    anonymous = resource("Observation", None, code=concept(LOINC, "777-3"))
    absolute = resource("Condition", "c1", code=concept(SNOMED, "233604007"))
    contained = resource(
        "MedicationRequest",
        "r1",
        contained=[resource("Medication", "inline", code=concept(RXNORM, "855812"))],
        medicationReference={"reference": "#inline"},
    )
    return record_of(
        medication,
        observation,
        anonymous,
        absolute,
        contained,
        full_urls=[
            "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001",
            None,
            "urn:uuid:aaaaaaaa-0000-4000-8000-000000000003",
            "https://hospital.example/fhir/Condition/c1",
            None,
        ],
    )


@pytest.mark.parametrize(
    ("reference", "found"),
    [
        ("Medication/m1", "m1"),
        ("Medication/m1/_history/2", "m1"),
        ("urn:uuid:aaaaaaaa-0000-4000-8000-000000000001", "m1"),
        ("https://other.example/fhir/Observation/o1", "o1"),
        ("https://hospital.example/fhir/Condition/c1", "c1"),
        ("Condition/c1", "c1"),
        ("urn:uuid:aaaaaaaa-0000-4000-8000-000000000003", "?"),
        ("Observation/absent", None),
        ("urn:uuid:aaaaaaaa-0000-4000-8000-000000000999", None),
        ("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999701995", None),
        ("#inline", None),
        ("", None),
        (None, None),
    ],
)
def test_resolve(referenced: PatientRecord, reference: str | None, found: str | None) -> None:
    resolved = referenced.resolve(reference)
    assert (resolved.get("id", "?") if resolved is not None else None) == found


_REFERENCE_PIECES = st.sampled_from(
    [
        *("Medication", "Observation", "medication", "M", "/", "m1", "o1", ".", "..", "-"),
        *("_", "a" * 64, "_history", "2", "#", "?", "urn:uuid:", "https://x.org/fhir/"),
        *(" ", "\n", "é", "Ob1"),
    ]
)


@given(st.lists(_REFERENCE_PIECES, max_size=6).map("".join))
def test_a_reference_looked_up_as_it_is_resolves_as_through_its_key(reference: str) -> None:
    """`resolve` looks a relative `Type/id` up as it is (`_PLAIN_REFERENCE`): such a
    reference is its own `reference_key`, so it finds what the key finds, whatever the ids
    in the record (ids that are not FHIR ids included)."""
    from engine.record import _PLAIN_REFERENCE

    if _PLAIN_REFERENCE.fullmatch(reference) is not None:
        assert reference_key(reference) == reference
    kind, _, rest = reference.partition("/")
    record = record_of(
        resource(kind or "Observation", rest or None),
        resource("Medication", "m1"),
        resource("Observation", "o1/_history/2"),
        resource("Medication", ".."),
    )
    key = reference_key(reference) if reference and reference[0] != "#" else None
    by_key = {
        f"{each['resourceType']}/{each['id']}": each
        for each in reversed([record.patient, *record.resources])
        if each.get("id")
    }
    assert record.resolve(reference) is (by_key.get(key) if key is not None else None)


def test_resolve_contained(referenced: PatientRecord) -> None:
    request = referenced.resources_of_type("MedicationRequest")[0]
    assert referenced.resolve("#inline", container=request) == request["contained"][0]
    assert referenced.resolve("#", container=request) is request
    assert referenced.resolve("#absent", container=request) is None
    assert referenced.resolve("#inline", container={"contained": "not a list"}) is None


def test_resource_without_id_is_resolved_by_type_and_id_of_its_full_url() -> None:
    record = record_of(
        resource("Observation", None),
        full_urls=["https://example.org/fhir/Observation/from-url"],
    )
    assert record.resolve("Observation/from-url") is record.resources_of_type("Observation")[0]


def test_labels(referenced: PatientRecord) -> None:
    observation, anonymous = referenced.resources_of_type("Observation")
    assert referenced.label(observation) == "Observation/o1"
    assert referenced.label(anonymous) == "urn:uuid:aaaaaaaa-0000-4000-8000-000000000003"
    record = record_of(resource("Condition", "c1"), resource("Observation", None))
    assert record.label(record.resources_of_type("Observation")[0]) == "Observation#2"
    assert record.label({"resourceType": "Medication"}) == "Medication"


# --------------------------------------------------------------------------- concepts


def test_observation_is_indexed_by_code_and_component_codes() -> None:
    blood_pressure = resource(
        "Observation",
        "bp",
        code=concept(LOINC, "85354-9"),
        component=[{"code": concept(LOINC, "8480-6")}, {"code": concept(LOINC, "8462-4")}],
    )
    record = record_of(blood_pressure)
    assert ids(record.resources_of_concept("systolic-pressure")) == ["bp"]


def test_a_resource_is_listed_once_per_concept() -> None:
    hemoglobin = resource(
        "Observation",
        "hb",
        code={"coding": [{"system": LOINC, "code": "718-7"}, {"system": LOINC, "code": "59260-0"}]},
    )
    assert ids(record_of(hemoglobin).resources_of_concept("hemoglobin")) == ["hb"]


def test_a_coding_can_belong_to_several_concepts() -> None:
    record = record_of(resource("Condition", "mi", code=concept(SNOMED, "22298006")))
    assert ids(record.resources_of_concept("myocardial-infarction")) == ["mi"]
    assert ids(record.resources_of_concept("cardiovascular-event")) == ["mi"]


def test_concept_lists_keep_document_order_across_types() -> None:
    record = record_of(
        resource("MedicationRequest", "r1", medicationCodeableConcept=concept(RXNORM, "309362")),
        resource(
            "MedicationAdministration", "a1", medicationCodeableConcept=concept(RXNORM, "855812")
        ),
        resource("MedicationStatement", "s1", medicationCodeableConcept=concept(RXNORM, "309362")),
    )
    assert ids(record.resources_of_concept("antiplatelet")) == ["r1", "a1", "s1"]
    assert ids(record.resources_of_concept("antiplatelet", {"MedicationStatement"})) == ["s1"]
    assert record.resources_of_concept("unknown-concept") == ()


def test_indexed_types_and_fields() -> None:
    record = record_of(
        resource("Condition", "c1", code=concept(SNOMED, "233604007")),
        resource("Procedure", "x1", code=concept(SNOMED, "80146002")),
        resource(
            "AllergyIntolerance",
            "allergy",
            code=concept(SNOMED, "91936005"),
            reaction=[{"substance": concept(RXNORM, "7980")}, {"manifestation": []}],
        ),
        # Not indexed: an Encounter's reason, an Observation's coded answer.
        resource("Encounter", "e1", reasonCode=[concept(SNOMED, "233604007")]),
        resource(
            "Observation",
            "o1",
            code=concept(LOINC, "0-0"),
            valueCodeableConcept=concept(SNOMED, "80146002"),
        ),
    )
    assert ids(record.resources_of_concept("pneumonia")) == ["c1"]
    assert ids(record.resources_of_concept("appendectomy")) == ["x1"]
    assert ids(record.resources_of_concept("penicillin")) == ["allergy"]
    assert record.data_problems == []


def test_coding_without_system_is_classified_with_none() -> None:
    classifier = FakeClassifier({(None, "local-hb"): {"hemoglobin"}})
    record = record_of(
        resource("Observation", "o1", code=concept(None, "local-hb")), classifier=classifier
    )
    assert classifier.asked == [(None, "local-hb")]
    assert ids(record.resources_of_concept("hemoglobin")) == ["o1"]


def test_medications_by_concept_reference_and_containment() -> None:
    record = record_of(
        resource("Medication", "m1", code=concept(RXNORM, "309362")),
        resource(
            "MedicationRequest", "inline", medicationCodeableConcept=concept(RXNORM, "855812")
        ),
        resource(
            "MedicationRequest",
            "by-urn",
            medicationReference={"reference": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001"},
        ),
        resource(
            "MedicationAdministration",
            "relative",
            medicationReference={"reference": "Medication/m1"},
        ),
        resource(
            "MedicationStatement",
            "contained",
            contained=[resource("Medication", "c", code=concept(RXNORM, "855812"))],
            medicationReference={"reference": "#c"},
        ),
        full_urls=["urn:uuid:aaaaaaaa-0000-4000-8000-000000000001", None, None, None, None],
    )
    assert ids(record.resources_of_concept("antiplatelet")) == [
        "inline",
        "by-urn",
        "relative",
        "contained",
    ]
    assert ids(record.resources_of_concept("clopidogrel")) == ["by-urn", "relative"]
    by_urn = record.resources_of_type("MedicationRequest")[1]
    assert record.medication_of(by_urn) == concept(RXNORM, "309362")
    assert record.medication_of(resource("MedicationRequest", "none")) is None
    # The Medication itself is not a medication use: it is not indexed by concept.
    assert "m1" not in ids(record.resources_of_concept("clopidogrel"))
    assert record.data_problems == []


def test_a_medication_is_coded_by_its_ingredients_too() -> None:
    """Medication.ingredient.itemCodeableConcept (FHIR R4): a product with no code, or one
    whose code no concept holds, is a drug of its ingredients' concepts."""
    ingredient = {"itemCodeableConcept": concept(RXNORM, "309362", "clopidogrel")}
    record = record_of(
        resource(
            "MedicationStatement",
            "ingredients-only",
            contained=[resource("Medication", "c", ingredient=[ingredient])],
            medicationReference={"reference": "#c"},
        ),
        resource(
            "MedicationRequest",
            "product-and-ingredient",
            contained=[
                resource("Medication", "p", code=concept(RXNORM, "999"), ingredient=[ingredient])
            ],
            medicationReference={"reference": "#p"},
        ),
    )
    assert ids(record.resources_of_concept("clopidogrel")) == [
        "ingredients-only",
        "product-and-ingredient",
    ]
    first = record.resources_of_type("MedicationStatement")[0]
    assert record.medication_of(first) == {
        "coding": [{"system": RXNORM, "code": "309362"}],
        "text": "clopidogrel",
    }
    assert record.data_problems == []


def test_medications_whose_drug_cannot_be_told_are_indexed_apart() -> None:
    """An unresolved medicationReference, a text-only medication, a Medication without code
    or ingredients, local codes only: `UNIDENTIFIED_MEDICATION`; a known system's code of no
    concept is a drug the criteria do not ask about, not an unknown one."""
    record = record_of(
        resource("MedicationRequest", "absent", medicationReference={"reference": "Medication/x"}),
        resource("MedicationRequest", "text", medicationCodeableConcept={"text": "dapagliflozin"}),
        resource(
            "MedicationStatement",
            "no-code",
            contained=[resource("Medication", "c")],
            medicationReference={"reference": "#c"},
        ),
        resource("MedicationRequest", "local", medicationCodeableConcept=concept("urn:x", "1")),
        resource("MedicationRequest", "other", medicationCodeableConcept=concept(RXNORM, "1")),
    )
    assert ids(record.resources_of_concept(UNIDENTIFIED_MEDICATION)) == [
        "absent",
        "text",
        "no-code",
        "local",
    ]
    assert len(record.data_problems) == 4  # the data problems are as before


@pytest.mark.parametrize(
    ("resource_type", "local", "unidentified"),
    [
        ("Condition", "urn:hospital:problems", UNIDENTIFIED_CONDITION),
        ("Procedure", "urn:hospital:procedures", UNIDENTIFIED_PROCEDURE),
    ],
)
def test_conditions_and_procedures_that_cannot_be_told_are_indexed_apart(
    resource_type: str, local: str, unidentified: str
) -> None:
    """A Condition (or a Procedure) in text only, coded only in systems the mappings do not
    know, or without a code: `UNIDENTIFIED_CONDITION` (haematology QA session 14, finding 3)
    or `UNIDENTIFIED_PROCEDURE` (a splenectomy coded locally must not clear a criterion); a
    known system's code of no concept (ICD-10-CM D69.6 where no concept holds it) is a
    diagnosis or procedure the criteria do not ask about. Observations are not indexed so."""
    record = record_of(
        resource(resource_type, "text", code={"text": "Immune thrombocytopenia, chronic"}),
        resource(resource_type, "local", code=concept(local, "ITP-01")),
        resource(resource_type, "no-code"),
        resource(resource_type, "other", code=concept(SNOMED, "1")),
        resource("Observation", "text-result", code={"text": "platelets"}),
    )
    assert ids(record.resources_of_concept(unidentified)) == ["text", "local", "no-code"]
    assert not record.resources_of_concept(UNIDENTIFIED_MEDICATION)
    other = {UNIDENTIFIED_CONDITION, UNIDENTIFIED_PROCEDURE} - {unidentified}
    assert not record.resources_of_concept(other.pop())
    assert len(record.data_problems) == 4  # the data problems are as before


# --------------------------------------------------------------------------- data problems


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (
            resource("Condition", "c1"),
            RecordProblem("Condition/c1", "code", "no code; it cannot match any concept"),
        ),
        (
            resource("Observation", "o1", code={"text": "Hb"}),
            RecordProblem(
                "Observation/o1", "code", "no coding (text only: 'Hb'); it cannot match any concept"
            ),
        ),
        (
            resource("Procedure", "x1", code={"coding": []}),
            RecordProblem("Procedure/x1", "code", "no coding; it cannot match any concept"),
        ),
        (
            resource(
                "Observation", "o2", code=concept(LOINC, "85354-9"), component=[{"code": "8480-6"}]
            ),
            RecordProblem(
                "Observation/o2", "component[0].code", "no coding; it cannot match any concept"
            ),
        ),
        (
            resource(
                "MedicationRequest", "r1", medicationReference={"reference": "Medication/absent"}
            ),
            RecordProblem(
                "MedicationRequest/r1",
                "medicationReference",
                "medicationReference 'Medication/absent' resolves to no resource in the record; "
                "it cannot match any concept",
            ),
        ),
        (
            resource("MedicationRequest", "r2", medicationReference={"reference": "Patient/p1"}),
            RecordProblem(
                "MedicationRequest/r2",
                "medicationReference",
                "medicationReference 'Patient/p1' points to a Patient, not a Medication; "
                "it cannot match any concept",
            ),
        ),
        (
            resource("MedicationRequest", "r3", medicationReference={"display": "aspirin"}),
            RecordProblem(
                "MedicationRequest/r3",
                "medicationReference",
                "medicationReference has no literal reference; it cannot match any concept",
            ),
        ),
        (
            resource("MedicationAdministration", "a1", status="completed"),
            RecordProblem(
                "MedicationAdministration/a1",
                "medication[x]",
                "no medicationCodeableConcept or medicationReference; it cannot match any concept",
            ),
        ),
        (
            resource(
                "MedicationStatement",
                "s1",
                contained=[resource("Medication", "c")],
                medicationReference={"reference": "#c"},
            ),
            RecordProblem(
                "MedicationStatement/s1",
                "medicationReference",
                "the Medication '#c' has no code; it cannot match any concept",
            ),
        ),
        (
            resource("Observation", "p1"),
            RecordProblem("Observation/p1", "code", "no code; it cannot match any concept"),
        ),
    ],
)
def test_data_problems(bad: dict[str, Any], problem: RecordProblem) -> None:
    record = record_of(bad)
    assert record.data_problems == [problem]
    assert record.resources_of_type(bad["resourceType"]) == [bad]


def test_duplicate_ids_resolve_to_the_first_are_read_once_and_are_noted() -> None:
    first = resource("Observation", "o1", code=concept(LOINC, "718-7"))
    second = resource("Observation", "o1", code=concept(LOINC, "777-3"))
    record = record_of(first, second)
    assert record.resolve("Observation/o1") is first
    assert [str(problem) for problem in record.data_problems] == [
        "Observation/o1, field id: another resource has the same id Observation/o1; "
        "only the first is read (references resolve to it too)"
    ]
    # one Type/id is one resource: the repeat is in no index, so no query counts it again
    assert record.resources_of_type("Observation") == [first]
    assert ids(record.resources_of_concept("hemoglobin")) == ["o1"]
    assert not record.resources_of_concept("platelets")
    assert record.resources[-1] is second  # (the source's list is kept as it came)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Observation", "Condition", "Device", "Observation/x"]),
            st.sampled_from(["o1", "o2", "x/o1", "", None, 1, "1", False]),
        ),
        max_size=8,
    )
)
def test_references_and_duplicate_ids_as_one_walk_gives_them(
    typed_ids: list[tuple[str, Any]],
) -> None:
    """Whether the reference index is made at once or when a reference is first resolved, a
    reference resolves to the first resource with its `Type/id`, and each later one is noted."""
    resources = [{"resourceType": kind, "id": value} for kind, value in typed_ids]
    record = record_of(*resources)
    first: dict[str, dict[str, Any]] = {}
    noted = []
    for each in [record.patient, *resources]:
        if each["id"]:
            key = f"{each['resourceType']}/{each['id']}"
            if first.setdefault(key, each) is not each:
                noted.append(
                    f"{record.label(each)}, field id: another resource has the same id {key}; "
                    "only the first is read (references resolve to it too)"
                )
    assert [str(problem) for problem in record.data_problems if problem.field == "id"] == noted
    for key, found in first.items():
        if reference_key(key) == key:  # a reference can name it
            assert record.resolve(key) is found


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
codeable_concepts = json_values | st.fixed_dictionaries(
    {
        "coding": st.lists(
            json_values | st.fixed_dictionaries({"system": json_values, "code": json_values})
        )
    },
    optional={"text": json_values},
)


@given(
    st.sampled_from(
        [
            "Observation",
            "Condition",
            "Procedure",
            "AllergyIntolerance",
            "MedicationRequest",
            "MedicationStatement",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "code",
                "component",
                "reaction",
                "medicationCodeableConcept",
                "medicationReference",
                "contained",
                "id",
            ]
        ),
        codeable_concepts,
    ),
)
def test_odd_shapes_never_raise(resource_type: str, fields: dict[str, Any]) -> None:
    """Whatever a resource's coded fields hold, building the record notes problems, never raises."""
    built = record_of(resource(resource_type, None, **fields))
    assert len(built.resources_of_type(resource_type)) == 1


# --------------------------------------------------------------------------- real data


def test_a_synthea_example_reads_and_indexes() -> None:
    # A patient with clopidogrel given by medicationReference (to a Medication in the Bundle).
    source = read_bundle_file(EXAMPLES / "bfa7eda5-1562-15e6-585a-cfa936ca2147.json")
    record = build_record(source, CLASSIFIER)
    assert record.patient_id == "bfa7eda5-1562-15e6-585a-cfa936ca2147"
    assert record.data_problems == []
    hemoglobin = record.resources_of_concept("hemoglobin")
    assert hemoglobin and all(each["resourceType"] == "Observation" for each in hemoglobin)
    assert record.resources_of_concept("platelets")
    antiplatelet = record.resources_of_concept("antiplatelet")
    assert {each["resourceType"] for each in antiplatelet} == {"MedicationRequest"}
    assert len(record.resources) == len(source.resources)
    for request in record.resources_of_type("MedicationRequest"):
        assert record.medication_of(request) is not None
        assert record.label(request) == f"MedicationRequest/{request['id']}"
    encounter_reference = record.resources_of_type("Condition")[0]["encounter"]["reference"]
    assert record.resolve(encounter_reference) in record.resources_of_type("Encounter")


def test_every_synthea_example_builds_without_problems() -> None:
    for path in sorted(EXAMPLES.glob("*.json")):
        record = build_record(read_bundle_file(path), CLASSIFIER)
        assert record.data_problems == [], path.name


def test_codes_only_from_unknown_systems_are_reported() -> None:
    local = resource("Observation", "local-hb", code=concept("http://lab.example.org/codes", "HGB"))
    mixed = resource(
        "Observation",
        "mixed",
        code={
            "coding": [
                {"system": "http://lab.example.org/codes", "code": "HGB"},
                {"system": LOINC, "code": "718-7"},
            ]
        },
    )
    record = record_of(local, mixed)
    problems = [str(problem) for problem in record.data_problems]
    assert len(problems) == 1
    assert "Observation/local-hb" in problems[0]
    assert "http://lab.example.org/codes|HGB" in problems[0]
    assert ids(record.resources_of_concept("hemoglobin")) == ["mixed"]


def test_clinical_resource_without_subject_is_noted_and_kept() -> None:
    orphan = {"resourceType": "Condition", "id": "c9", "code": concept(SNOMED, "22298006")}
    record = build_record(
        PatientResources("p1", [resource("Patient", "p1"), orphan], [None, None], "t.json"),
        CLASSIFIER,
    )
    assert [str(problem) for problem in record.data_problems] == [
        "Condition/c9, field subject: no subject or patient; "
        "taken to be about this record's patient"
    ]
    assert ids(record.resources_of_concept("myocardial-infarction")) == ["c9"]


CODED_KINDS = {
    "usual": lambda code: {"code": concept(SNOMED, code)},
    "two codings": lambda code: {
        "code": {"coding": [{"system": SNOMED, "code": code}, {"system": LOINC, "code": "x"}]}
    },
    "unknown system": lambda code: {"code": concept("urn:unknown", code)},
    "text only": lambda code: {"code": {"text": code}},
    "no subject": lambda code: {"code": concept(SNOMED, code)},
}


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*CODED_KINDS, "medication reference", "medication inline"]),
            st.sampled_from(["22298006", "233604007", "80146002"]),
        ),
        max_size=10,
    )
)
def test_usual_and_other_cases_keep_document_order(kinds: list[tuple[str, str]]) -> None:
    """A resource in the usual case is classified inline, any other field by field (a
    medicationReference may point to a Medication later in the data): concept lists stay in
    document order, each resource has the concepts it has alone, and the problems come in
    document order."""
    resources: list[dict[str, Any]] = []
    for index, (kind, code) in enumerate(kinds):
        if kind == "medication reference":
            fields: dict[str, Any] = {"medicationReference": {"reference": "Medication/m1"}}
            resources.append(resource("MedicationRequest", f"r{index}", **fields))
        elif kind == "medication inline":
            inline = concept(RXNORM, "309362")
            resources.append(
                resource("MedicationRequest", f"r{index}", medicationCodeableConcept=inline)
            )
        else:
            built = resource("Condition", f"r{index}", **CODED_KINDS[kind](code))
            if kind == "no subject":
                del built["subject"]
            resources.append(built)
    medication = resource("Medication", "m1", code=concept(RXNORM, "855812"))
    record = record_of(*resources, medication)
    position = {id(each): place for place, each in enumerate(record.resources)}
    for found in record.concept_index().values():
        places = [position[id(each)] for each in found]
        assert places == sorted(places) and len(set(places)) == len(places)
    for each in resources:
        alone = record_of(each, medication)
        expected = {c for c, found in alone.concept_index().items() if each in found}
        held = {c for c, found in record.concept_index().items() if any(r is each for r in found)}
        assert held == expected
    order = [int(problem.resource.split("/r")[1]) for problem in record.data_problems]
    assert order == sorted(order)


def test_a_research_subject_does_not_date_the_record() -> None:
    """The newest data day is that of the clinical data a record always reads: a
    ResearchSubject (enrolment in a study), which a cohort run reads only for criteria that
    ask about it, does not move it (`evaluate` and such a run named different days)."""
    observation = resource("Observation", "o1")
    observation["effectiveDateTime"] = "2026-10-25T09:00:00Z"
    enrolment = resource("ResearchSubject", "rs1")
    enrolment["period"] = {"start": "2026-10-25", "end": "2026-10-31"}
    assert record_of(observation, enrolment).newest_data_day() == "2026-10-25"
    assert record_of(observation).newest_data_day() == "2026-10-25"
