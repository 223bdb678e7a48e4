"""Shared fixtures: small mapping files written on the fly, and the real mappings folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from normalise_support import SYSTEMS, WriteMapping

from engine.normalise import Terminology, load_terminology

REPOSITORY = Path(__file__).resolve().parents[2]
REAL_MAPPINGS = REPOSITORY / "mappings"


@pytest.fixture
def write_mapping(tmp_path: Path) -> WriteMapping:
    """Write a mapping file (dedented) into a temporary folder and return its path."""

    def write(text: str, name: str = "test.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def real_terminology() -> Terminology:
    """The terminology from the repository's mappings/ folder."""
    return load_terminology([REAL_MAPPINGS])


@pytest.fixture
def small_terminology(write_mapping: WriteMapping) -> Terminology:
    """A small terminology exercising every kind of membership."""
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping(
        """\
        concepts:
          hemoglobin:
            display: Hemoglobin
            unit: g/L
            reference_range: {low: 120, high: 175}
            codes: {loinc: [718-7]}
          platelets:
            display: Platelets
            unit: 10*9/L
            codes: {loinc: [777-3]}
          creatinine:
            display: Creatinine
            unit: umol/L
            molar_mass: 113.12
            codes: {loinc: [2160-0, 38483-4]}
          antiplatelets:
            display: Antiplatelets
            prefixes: {atc: [B01AC]}
          anticoagulants:
            display: Anticoagulants
            prefixes: {atc: [B01AA]}
          antithrombotics:
            display: Antithrombotics
            include: [antiplatelets, anticoagulants]
          malignancy:
            display: Malignancy
            ranges: {icd10cm: [C00-C97]}
          coagulation-disorder:
            display: Coagulation disorder
            ranges: {icd10cm: [D65-D68]}
          itp:
            display: ITP
            codes: {icd10cm: [D69.3], snomed: [32273002]}
          ecog:
            display: ECOG
            codes: {loinc: [89247-1]}
            answers: {loinc: {LA9622-7: 0, LA9623-5: 1}}
          systolic:
            display: Systolic blood pressure
            unit: mm[Hg]
            codes: {loinc: [8480-6]}
          positive:
            display: Positive
            codes: {snomed: [10828004]}
            text: [positive, detected]
          negative:
            display: Negative
            codes: {snomed: [260385009]}
            text: [negative, not detected, "false"]
        local_codes:
          - system: local-lab
            codes: {HGB: hemoglobin, CREA: [creatinine]}
        unit_aliases:
          "x10^9/L": 10*9/L
          "K/uL": 10*3/uL
        """,
        "concepts.yaml",
    )
    return load_terminology([path.parent])
