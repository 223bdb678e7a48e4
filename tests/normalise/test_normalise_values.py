"""Reading Observation values: quantities, coded answers, text, components, value_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from normalise_support import SYSTEMS, WriteMapping

from engine.normalise import DataProblem, Measurement, Terminology, load_terminology, measure

UCUM = "http://unitsofmeasure.org"
SYNTHEA_OBSERVATIONS = Path("/work/shared/data/synthea-exafluence/ndjson/Observation.000.ndjson")


def observation(code: str, system: str = "http://loinc.org", **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        **value,
    }


def quantity(value: float, unit: str | None, ucum_code: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"value": value}
    if unit is not None:
        result["unit"] = unit
    if ucum_code is not None:
        result.update(system=UCUM, code=ucum_code)
    return result


def measured(result: Measurement | DataProblem) -> Measurement:
    assert isinstance(result, Measurement), result
    return result


def problem(result: Measurement | DataProblem) -> DataProblem:
    assert isinstance(result, DataProblem), result
    return result


def test_quantity_converted_to_canonical_unit(small_terminology: Terminology) -> None:
    resource = observation("718-7", valueQuantity=quantity(13.5, "g/dL", "g/dL"))
    result = measured(measure(resource, small_terminology.concept("hemoglobin"), small_terminology))
    assert result.value == pytest.approx(135.0)
    assert result.unit == "g/L"
    assert result.field == "valueQuantity"
    assert result.answer_concepts == frozenset()
    assert (result.reference_low, result.reference_high) == (None, None)


def test_creatinine_mass_to_substance(small_terminology: Terminology) -> None:
    resource = observation("38483-4", valueQuantity=quantity(1.0, "mg/dL", "mg/dL"))
    result = measured(measure(resource, small_terminology.concept("creatinine"), small_terminology))
    assert result.value == pytest.approx(88.4, abs=0.01)


def test_unit_text_through_aliases(small_terminology: Terminology) -> None:
    concept = small_terminology.concept("hemoglobin")
    resource = observation("718-7", valueQuantity=quantity(14.0, "g/dL"))
    assert measured(measure(resource, concept, small_terminology)).value == pytest.approx(140)
    platelets = small_terminology.concept("platelets")
    resource = observation("777-3", valueQuantity=quantity(35, "x10^9/L"))
    assert measured(measure(resource, platelets, small_terminology)).value == 35
    resource = observation("777-3", valueQuantity=quantity(35, "K/uL"))
    assert measured(measure(resource, platelets, small_terminology)).value == 35


def test_missing_unit_is_a_problem(small_terminology: Terminology) -> None:
    resource = observation("718-7", valueQuantity=quantity(13.5, None))
    result = problem(measure(resource, small_terminology.concept("hemoglobin"), small_terminology))
    assert result.field == "valueQuantity.unit"
    assert "no unit" in result.message


def test_unconvertible_unit_is_a_problem(small_terminology: Terminology) -> None:
    resource = observation("718-7", valueQuantity=quantity(13.5, "mg", "mg"))
    result = problem(measure(resource, small_terminology.concept("hemoglobin"), small_terminology))
    assert result.field == "valueQuantity.unit"
    assert result.message.startswith("valueQuantity.unit 'mg' cannot be converted to g/L")


def test_non_ucum_unit_is_a_problem(small_terminology: Terminology) -> None:
    resource = observation("718-7", valueQuantity=quantity(13.5, "grams per decilitre"))
    result = problem(measure(resource, small_terminology.concept("hemoglobin"), small_terminology))
    assert result.field == "valueQuantity.unit"
    assert "not UCUM" in result.message


def test_a_display_unit_beside_a_ucum_code_is_read_by_the_code(
    real_terminology: Terminology,
) -> None:
    """A Quantity whose `unit` is a display and whose `code` is UCUM, without a system, is
    read by its code (LOINC's annotated UACR unit), not refused for its display."""
    uacr = real_terminology.concept("urine-albumin-creatinine-ratio")
    written = {"value": 96, "unit": "mg/mmol creatinine", "code": "mg/mmol{creat}"}
    resource = observation("32294-1", valueQuantity=written)
    assert measured(measure(resource, uacr, real_terminology)).value == pytest.approx(848.66, 1e-3)
    neither = {"value": 96, "unit": "mg/mmol creatinine", "code": "mg per mmol"}
    result = problem(measure(observation("32294-1", valueQuantity=neither), uacr, real_terminology))
    assert result.message.startswith("valueQuantity.unit 'mg/mmol creatinine' is not UCUM")


def test_censored_value_keeps_its_side_through_conversion(small_terminology: Terminology) -> None:
    value = {**quantity(5, "g/dL", "g/dL"), "comparator": "<"}
    resource = observation("718-7", valueQuantity=value)
    result = measure(resource, small_terminology.concept("hemoglobin"), small_terminology)
    assert isinstance(result, Measurement)
    assert result.comparator == "<"
    assert result.value == pytest.approx(50.0)


def test_sufficient_to_achieve_is_no_bound(small_terminology: Terminology) -> None:
    value = {**quantity(5, "g/L", "g/L"), "comparator": "ad"}
    resource = observation("718-7", valueQuantity=value)
    result = problem(measure(resource, small_terminology.concept("hemoglobin"), small_terminology))
    assert result.field == "valueQuantity.comparator"
    assert "no bound" in result.message


def test_no_value(small_terminology: Terminology) -> None:
    concept = small_terminology.concept("hemoglobin")
    assert problem(measure(observation("718-7"), concept, small_terminology)).message == "no value"
    absent = observation(
        "718-7", dataAbsentReason={"coding": [{"code": "not-performed", "system": "x"}]}
    )
    result = problem(measure(absent, concept, small_terminology))
    assert result.field == "dataAbsentReason"
    assert "not-performed" in result.message


def test_reference_range_converted(small_terminology: Terminology) -> None:
    resource = observation(
        "718-7",
        valueQuantity=quantity(11.0, "g/dL", "g/dL"),
        referenceRange=[
            {"low": quantity(12.0, "g/dL", "g/dL"), "high": {"value": 16.0}},
        ],
    )
    result = measured(measure(resource, small_terminology.concept("hemoglobin"), small_terminology))
    assert result.reference_low == pytest.approx(120.0)
    assert result.reference_high == pytest.approx(160.0)  # no unit: the result's unit


def test_ecog_as_integer_quantity_and_coded_answer(small_terminology: Terminology) -> None:
    ecog = small_terminology.concept("ecog")
    assert (
        measured(measure(observation("89247-1", valueInteger=2), ecog, small_terminology)).value
        == 2
    )
    quantity_result = measure(
        observation("89247-1", valueQuantity=quantity(1, "{score}", "{score}")),
        ecog,
        small_terminology,
    )
    assert measured(quantity_result).value == 1
    coded = observation(
        "89247-1",
        valueCodeableConcept={"coding": [{"system": "http://loinc.org", "code": "LA9623-5"}]},
    )
    result = measured(measure(coded, ecog, small_terminology))
    assert result.value == 1
    assert result.field == "valueCodeableConcept"


def test_integer_without_unit_for_a_measured_concept(small_terminology: Terminology) -> None:
    resource = observation("718-7", valueInteger=135)
    result = problem(measure(resource, small_terminology.concept("hemoglobin"), small_terminology))
    assert "has no unit" in result.message


def test_coded_answer_concepts(small_terminology: Terminology) -> None:
    concept = small_terminology.concept("hemoglobin")
    positive = observation(
        "718-7",
        valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "10828004"}]},
    )
    assert measured(measure(positive, concept, small_terminology)).answer_concepts == {"positive"}
    text_only = observation("718-7", valueCodeableConcept={"text": "Not detected"})
    assert measured(measure(text_only, concept, small_terminology)).answer_concepts == {"negative"}
    unknown = observation(
        "718-7", valueCodeableConcept={"coding": [{"system": "http://x", "code": "?"}]}
    )
    assert (
        "not an answer the mappings know"
        in problem(measure(unknown, concept, small_terminology)).message
    )


def test_string_and_boolean(small_terminology: Terminology) -> None:
    concept = small_terminology.concept("ecog")
    result = measured(
        measure(observation("89247-1", valueString=" POSITIVE "), concept, small_terminology)
    )
    assert result.answer_concepts == {"positive"}
    assert (
        measured(measure(observation("89247-1", valueString="3"), concept, small_terminology)).value
        == 3
    )
    assert (
        "neither"
        in problem(
            measure(observation("89247-1", valueString="<5"), concept, small_terminology)
        ).message
    )
    result = measured(
        measure(observation("89247-1", valueBoolean=False), concept, small_terminology)
    )
    assert result.answer_concepts == {"negative"}


def test_unsupported_value_type(small_terminology: Terminology) -> None:
    resource = observation("718-7", valueRatio={"numerator": {"value": 1}})
    result = problem(measure(resource, small_terminology.concept("hemoglobin"), small_terminology))
    assert "valueRatio" in result.message


def test_component_value(small_terminology: Terminology) -> None:
    panel = observation(
        "85354-9",
        component=[
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": quantity(80, "mm[Hg]", "mm[Hg]"),
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": quantity(120, "mm[Hg]", "mm[Hg]"),
            },
        ],
    )
    result = measured(measure(panel, small_terminology.concept("systolic"), small_terminology))
    assert result.value == 120
    assert result.field == "component[1].valueQuantity"


def test_value_path(write_mapping: WriteMapping) -> None:
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping(
        """\
        concepts:
          site-ecog:
            display: ECOG in an extension
            codes: {local-lab: [ECOG]}
            value_path: "extension[?(@.url == 'http://hospital.example.org/ecog')]"
          site-hemoglobin:
            display: Hemoglobin in a component quantity
            unit: g/L
            codes: {local-lab: [HGB-PANEL]}
            value_path: "component[0].valueQuantity"
        """
    )
    terminology = load_terminology([path.parent])
    resource = observation(
        "ECOG",
        "http://hospital.example.org/lab",
        extension=[
            {"url": "http://other", "valueString": "x"},
            {"url": "http://hospital.example.org/ecog", "valueInteger": 3},
        ],
    )
    result = measured(measure(resource, terminology.concept("site-ecog"), terminology))
    assert result.value == 3
    assert result.field == "extension[1].valueInteger"
    panel = observation(
        "HGB-PANEL",
        "http://hospital.example.org/lab",
        component=[{"valueQuantity": quantity(9.1, "g/dL", "g/dL")}],
    )
    result = measured(measure(panel, terminology.concept("site-hemoglobin"), terminology))
    assert result.value == pytest.approx(91.0)
    assert result.field == "component[0].valueQuantity"
    missing = observation("ECOG", "http://hospital.example.org/lab")
    assert (
        "no value at value_path"
        in problem(measure(missing, terminology.concept("site-ecog"), terminology)).message
    )


@pytest.mark.skipif(not SYNTHEA_OBSERVATIONS.exists(), reason="Synthea sample data not present")
def test_every_synthea_measurement_is_usable(real_terminology: Terminology) -> None:
    measured_concepts: set[str] = set()
    with SYNTHEA_OBSERVATIONS.open() as lines:
        for line in lines:
            resource = json.loads(line)
            for coding in resource["code"]["coding"]:
                for concept_id in real_terminology.concepts_of_coding(
                    coding["system"], coding["code"]
                ):
                    concept = real_terminology.concept(concept_id)
                    result = measure(resource, concept, real_terminology)
                    assert isinstance(result, Measurement), (concept_id, result)
                    measured_concepts.add(concept_id)
    assert {"hemoglobin", "platelets", "creatinine", "total-bilirubin", "alt", "ast"} <= (
        measured_concepts
    )


def test_a_unit_that_does_not_convert_is_named_as_written(real_terminology: Terminology) -> None:
    """The message quotes the lab's unit and says how it was read (haematology QA session 14,
    finding 6: "IU/L" was shown as "U/L", and the reader could not see what went wrong)."""
    resource = observation("1742-6", valueQuantity=quantity(22, "mIU/mL"))
    result = problem(measure(resource, real_terminology.concept("alt"), real_terminology))
    assert result.message.startswith(
        "valueQuantity.unit 'mIU/mL' (read as UCUM 'm[IU]/mL') cannot be converted to U/L"
    )
    resource = observation("718-7", valueQuantity=quantity(13.5, "mg", "mg"))
    result = problem(measure(resource, real_terminology.concept("hemoglobin"), real_terminology))
    assert result.message.startswith("valueQuantity.unit 'mg' cannot be converted to g/L")


def test_a_bare_number_for_a_measured_concept_says_the_unit_is_missing(
    small_terminology: Terminology,
) -> None:
    """'18' is a plain number: what it lacks is a unit (haematology QA session 14, 11)."""
    resource = observation("777-3", valueString="18")
    result = problem(measure(resource, small_terminology.concept("platelets"), small_terminology))
    assert result.message == (
        "valueString '18' is a number without a unit; platelets needs a unit convertible to 10*9/L"
    )
