"""A tiny trial over the shipped mappings, and patients built around one resource, for the
hostile-input regression tests (issue 11)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson

from engine.evaluate import PatientEvaluation, evaluate_patient
from engine.record import build_record
from engine.sources import parse_bundle
from engine.trial import load_trial

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = Path(__file__).resolve().parent / "corpus"
AS_OF = dt.date(2026, 11, 1)

SMALL_TRIAL = f"""\
trial: {{id: NCT00000011, title: Hostile input probe}}
mappings: [{ROOT / "mappings"}]
windows:
  screening: {{within: P28D}}
criteria:
  - id: inclusion-1-adult
    kind: inclusion
    text: Adults
    expression: {{patient: {{age: {{min: 18}}}}}}
  - id: inclusion-2-haemoglobin
    kind: inclusion
    text: Haemoglobin at least 100 g/L during screening
    expression:
      resource: Observation
      concept: hemoglobin
      within: screening
      select: latest
      value: ">= 100 g/L"
  - id: exclusion-1-any-haemoglobin
    kind: exclusion
    text: A haemoglobin test during screening
    expression: {{resource: Observation, concept: hemoglobin, within: screening}}
  - id: exclusion-2-new-itp
    kind: exclusion
    text: ITP diagnosed during screening
    expression:
      resource: Condition
      concept: primary-itp
      within: screening
      timing: onset
  - id: exclusion-3-active-itp
    kind: exclusion
    text: ITP active now
    expression: {{resource: Condition, concept: primary-itp, status: [active]}}
"""


def write_trial(folder: Path, text: str = SMALL_TRIAL) -> Path:
    path = folder / "NCT00000011.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", "birthDate": "1970-05-01", **fields}


def haemoglobin(value: float, when: str, unit: str = "g/L") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "hb1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def itp(onset: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": "c1",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "32273002"}]},
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": onset,
    }


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": resource} for resource in resources],
    }


def evaluate(
    trial_path: Path, document: dict[str, Any], as_of: dt.date = AS_OF
) -> PatientEvaluation:
    trial = load_trial(trial_path)
    resources = parse_bundle(orjson.dumps(document), "test bundle")
    return evaluate_patient(trial, build_record(resources, trial.terminology), as_of)


def result(evaluation: PatientEvaluation, criterion_id: str) -> Any:
    return next(item for item in evaluation.results if item.id == criterion_id)
