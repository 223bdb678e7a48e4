"""Terminology coverage over small hand-made data: matched codes, look-alike candidates,
codes left out on purpose, patient counts and ranking, and the three outputs."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from engine.coverage import (
    CoverageReport,
    concepts_used,
    coverage_csv,
    coverage_report,
    coverage_table,
    mapping_names,
    mapping_snippet,
)
from engine.criteria.loader import load_criteria
from engine.normalise import Terminology, load_terminology

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LAB = "http://hospital.example.org/lab"

MAPPINGS = """\
systems:
  loinc: http://loinc.org
  rxnorm: http://www.nlm.nih.gov/research/umls/rxnorm
concepts:
  neutrophils:
    display: Absolute neutrophil count
    unit: 10*9/L
    codes:
      loinc:
        - 751-8             # Neutrophils [#/volume] in Blood by Automated count (Synthea)
      # NOT 26499-4: kept out for this test
  glucocorticoids:
    display: Systemic glucocorticoids
    codes:
      rxnorm:
        - 8640              # prednisone
        - 6902              # methylprednisolone
      # - dexamethasone  # dexamethasone
  first-line:
    display: First-line therapy
    include: [glucocorticoids]
  glucose:
    display: Glucose
    codes: {loinc: [2345-7]}  # Glucose [Mass/volume] in Serum or Plasma
"""


def coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def lab(code: tuple[str, str, str]) -> dict[str, Any]:
    return {"resourceType": "Observation", "code": coding(*code)}


def drug(code: tuple[str, str, str]) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "medicationCodeableConcept": coding(*code)}


ANC = (LOINC, "751-8", "Neutrophils [#/volume] in Blood by Automated count")
LOCAL_ANC = (LAB, "NEUT", "Neutrophils")
LEFT_OUT = (LOINC, "26499-4", "Neutrophils [#/volume] in Blood")
PREDNISONE_TABLET = (RXNORM, "312617", "predniSONE 5 MG Oral Tablet")
PREDNISONE = (RXNORM, "8640", "prednisone")
GLUCOSE_BLOOD = (LAB, "GLU", "Glucose [Mass/volume] in Blood")
TROPONIN = (LAB, "TNI", "Troponin I.cardiac [Mass/volume] in Serum or Plasma")


@pytest.fixture
def terminology(tmp_path: Path) -> Terminology:
    (tmp_path / "mappings.yaml").write_text(MAPPINGS, encoding="utf-8")
    return load_terminology([tmp_path / "mappings.yaml"])


PATIENTS: list[tuple[str, list[dict[str, Any]]]] = [
    ("a", [lab(ANC), lab(LOCAL_ANC), drug(PREDNISONE)]),
    ("b", [lab(LOCAL_ANC), lab(TROPONIN), drug(PREDNISONE_TABLET)]),
    ("c", [lab(LOCAL_ANC), lab(LEFT_OUT), lab(GLUCOSE_BLOOD)]),
    (
        "d",
        [
            {
                "resourceType": "MedicationRequest",
                "medicationReference": {"reference": "Medication/m1"},
            },
            {"resourceType": "Medication", "id": "m1", "code": coding(*PREDNISONE_TABLET)},
        ],
    ),
]
CONCEPTS = {
    "neutrophils": ("Observation",),
    "first-line": ("MedicationAdministration", "MedicationRequest", "MedicationStatement"),
    "glucose": ("Observation",),
}


def report_of(terminology: Terminology) -> CoverageReport:
    return coverage_report(terminology, CONCEPTS, PATIENTS, mapping_names([MAPPINGS]))


def test_mapping_names_reads_comments_and_left_out_codes() -> None:
    names = mapping_names([MAPPINGS])
    assert names.names["neutrophils"] == {
        "751-8": "Neutrophils [#/volume] in Blood by Automated count"
    }
    assert names.names["glucocorticoids"] == {
        "8640": "prednisone",
        "6902": "methylprednisolone",
        "name:dexamethasone": "dexamethasone",
    }
    assert names.names["glucose"] == {"2345-7": "Glucose [Mass/volume] in Serum or Plasma"}
    assert names.left_out == {"neutrophils": frozenset({"26499-4"})}


def test_matched_codes_are_counted_per_patient(terminology: Terminology) -> None:
    report = report_of(terminology)
    assert report.patient_count == 4
    neutrophils, first_line, glucose = report.concepts
    assert [(count.code, count.patients) for count in neutrophils.matched] == [("751-8", 1)]
    assert neutrophils.patients == 1
    assert [(count.code, count.patients) for count in first_line.matched] == [("8640", 1)]
    assert glucose.matched == () and glucose.patients == 0


def test_a_local_lab_code_named_like_a_member_is_a_candidate(terminology: Terminology) -> None:
    neutrophils = report_of(terminology).concepts[0]
    local = [candidate for candidate in neutrophils.candidates if candidate.code == "NEUT"]
    assert len(local) == 1
    assert local[0].patients == 3
    assert local[0].patients_gained == 2  # patient a has 751-8 already
    assert local[0].score == 100
    assert not local[0].left_out_on_purpose


def test_a_code_left_out_on_purpose_is_flagged_not_suggested(terminology: Terminology) -> None:
    report = report_of(terminology)
    flagged = [c for c in report.concepts[0].candidates if c.code == "26499-4"]
    assert len(flagged) == 1 and flagged[0].left_out_on_purpose
    assert "26499-4" not in mapping_snippet(report)


def test_a_product_naming_an_ingredient_of_the_set_is_a_candidate(
    terminology: Terminology,
) -> None:
    first_line = report_of(terminology).concepts[1]
    assert [(c.code, c.patients, c.similar_to) for c in first_line.candidates] == [
        ("312617", 2, "prednisone")  # patient b directly, patient d through its Medication
    ]


def test_a_name_without_a_code_finds_products_too(terminology: Terminology) -> None:
    dexamethasone = (RXNORM, "197577", "dexamethasone 4 MG Oral Tablet")
    report = coverage_report(
        terminology, CONCEPTS, [("z", [drug(dexamethasone)])], mapping_names([MAPPINGS])
    )
    assert [(c.code, c.similar_to) for c in report.concepts[1].candidates] == [
        ("197577", "dexamethasone")
    ]


def test_unrelated_codes_are_not_candidates(terminology: Terminology) -> None:
    report = report_of(terminology)
    codes = {candidate.code for concept in report.concepts for candidate in concept.candidates}
    assert "TNI" not in codes
    # a drug is never a candidate for a lab concept, nor a lab code for a drug concept
    assert "312617" not in {c.code for c in report.concepts[0].candidates}
    assert "NEUT" not in {c.code for c in report.concepts[1].candidates}


def test_candidates_rank_by_patients_they_would_change(terminology: Terminology) -> None:
    patients = [*PATIENTS, ("e", [lab(LEFT_OUT)]), ("f", [lab(LEFT_OUT)])]
    report = coverage_report(terminology, CONCEPTS, patients, mapping_names([MAPPINGS]))
    assert [c.code for c in report.concepts[0].candidates] == ["26499-4", "NEUT"]


def test_csv_table_and_snippet(terminology: Terminology, tmp_path: Path) -> None:
    report = report_of(terminology)
    rows = list(csv.DictReader(io.StringIO(coverage_csv(report))))
    assert {"concept": "neutrophils", "kind": "candidate", "code": "NEUT"}.items() <= next(
        row for row in rows if row["code"] == "NEUT"
    ).items()
    assert any(row["kind"] == "left-out" and row["code"] == "26499-4" for row in rows)
    assert any(row["kind"] == "matched" and row["code"] == "751-8" for row in rows)
    table = coverage_table(report)
    assert "neutrophils (Absolute neutrophil count) [Observation]: 1 patients" in table
    assert "candidate " + LAB + " NEUT Neutrophils (Observation): 3 patients" in table
    snippet = mapping_snippet(report)
    parsed = YAML(typ="safe").load(snippet)
    # glucose in blood resembles glucose in serum: the same analyte, another specimen
    assert {"system": LAB, "codes": {"NEUT": "neutrophils", "GLU": "glucose"}} in parsed[
        "local_codes"
    ]
    # the snippet loads as a mapping file next to the mappings it extends
    (tmp_path / "mappings.yaml").write_text(MAPPINGS, encoding="utf-8")
    (tmp_path / "suggested.yaml").write_text(snippet, encoding="utf-8")
    extended = load_terminology([tmp_path])
    assert extended.concepts_of_coding(LAB, "NEUT") == {"neutrophils"}
    assert "glucocorticoids" in extended.concepts_of_coding(RXNORM, "312617")


def test_concepts_used_reads_the_atoms_of_a_criteria_file() -> None:
    criteria = load_criteria(Path(__file__).resolve().parents[1] / "criteria" / "NCT05315778.yaml")
    used = concepts_used(criteria)
    assert used["neutrophils"] == ("Observation",)
    assert used["anti-cd20"] == (
        "MedicationAdministration",
        "MedicationRequest",
        "MedicationStatement",
    )
    assert "positive" not in used  # answer concepts are not coded resources


def test_nothing_to_suggest_is_no_snippet_and_the_table_says_so(
    terminology: Terminology,
) -> None:
    report = coverage_report(
        terminology,
        CONCEPTS,
        [("a", [lab((LOINC, "751-8", "Neutrophils"))])],
        mapping_names([MAPPINGS]),
    )
    assert all(not concept.candidates for concept in report.concepts)
    assert mapping_snippet(report) is None
    assert coverage_table(report).endswith(
        "Suggested mappings: none (no unmapped code resembles a member of a concept)\n"
    )
    # a code left out on purpose is listed, not suggested: still nothing to suggest
    flagged = coverage_report(
        terminology, CONCEPTS, [("e", [lab(LEFT_OUT)])], mapping_names([MAPPINGS])
    )
    assert [c.code for c in flagged.concepts[0].candidates] == ["26499-4"]
    assert mapping_snippet(flagged) is None
