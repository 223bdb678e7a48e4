"""Small trials written on the fly: one criteria file with its own mappings, evaluated on a
handful of hand-written resources. For tests of single constructs of the criteria language."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

from engine.evaluate.outcome import Outcome
from engine.screening import screen_patient
from engine.sources.base import PatientResources
from engine.trial import load_trial

AS_OF = dt.date(2025, 8, 1)

MAPPINGS = """\
systems:
  loinc: {uri: http://loinc.org}
  snomed: {uri: http://snomed.info/sct}
concepts:
  myocardial-infarction:
    display: Myocardial infarction
    codes: {snomed: ["22298006"]}
  hba1c:
    display: HbA1c
    unit: "%"
    codes: {loinc: ["4548-4"]}
  egfr:
    display: eGFR
    unit: mL/min/{1.73_m2}
    codes: {loinc: ["98979-8"]}
  hemoglobin:
    display: Haemoglobin
    unit: g/L
    codes: {loinc: ["718-7"]}
  uacr:
    display: Urine albumin/creatinine ratio
    unit: mg/g
    codes: {loinc: ["9318-7"]}
  chronic-kidney-disease:
    display: Chronic kidney disease
    codes: {snomed: ["709044004"]}
"""


def write_trial(folder: Path, criteria: str, mappings: str = MAPPINGS) -> Path:
    """A criteria file `trial.yaml` (its `criteria:` list given as YAML) and its mappings."""
    (folder / "mappings.yaml").write_text(mappings)
    path = folder / "trial.yaml"
    path.write_text(
        "trial: {id: NCT00000000, title: Test}\nmappings: [mappings.yaml]\ncriteria:\n"
        + textwrap.indent(textwrap.dedent(criteria), "  ")
    )
    return path


def atom_trial(folder: Path, atom: str, mappings: str = MAPPINGS) -> Path:
    """A trial with one inclusion criterion `c` whose expression is `atom` (YAML)."""
    expression = textwrap.indent(textwrap.dedent(atom), "    ")
    return write_trial(
        folder, f"- id: c\n  kind: inclusion\n  text: t\n  expression:\n{expression}", mappings
    )


def evaluate(path: Path, *resources: dict[str, Any], as_of: dt.date = AS_OF) -> list[Outcome]:
    """The outcome of each criterion for a patient holding `resources`."""
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    listed = [patient, *resources]
    source = PatientResources("p", listed, [None] * len(listed), "test")
    screening = screen_patient(load_trial(path), source, as_of)
    return [result.outcome for result in screening.evaluation.results]


def condition(code: str, onset: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"condition-{code}-{onset}",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
        "onsetDateTime": onset,
        **fields,
    }


def observation(
    loinc: str, value: float, unit: str, date: str, ucum: bool = True, **fields: Any
) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value, "unit": unit}
    if ucum:
        quantity |= {"system": "http://unitsofmeasure.org", "code": unit}
    return {
        "resourceType": "Observation",
        "id": f"observation-{loinc}-{date}-{value}",
        "status": "final",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "effectiveDateTime": date,
        "valueQuantity": quantity,
        **fields,
    }
