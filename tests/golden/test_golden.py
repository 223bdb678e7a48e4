"""Golden outputs: every shipped example patient, evaluated as of a fixed day, compared whole.

Each example Bundle in `examples/` has its expected transaction Bundle (ResearchStudy,
ResearchSubject, DetectedIssue) in `tests/golden/expected/<file stem>.json`. After a deliberate
change to the output, regenerate with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/golden` and
review the diff like code.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.researchsubject import ResearchSubject

from engine.attestations import load_attestations
from engine.evaluate import CompiledCriteria
from engine.screening import screen_patient
from engine.sinks import to_json
from engine.sources import read_bundle_file

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = Path(__file__).parent / "expected"
AS_OF = dt.date(2026, 11, 1)
EXAMPLES = sorted(
    path
    for folder in ("patients", "synthea")
    for path in (ROOT / "examples" / folder).glob("*.json")
)


@pytest.fixture(scope="module")
def attestations(trial: CompiledCriteria) -> Any:
    return load_attestations(ROOT / "examples" / "attestations.yaml", trial.manual_ids)


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_matches_golden_output(
    example: Path, trial: CompiledCriteria, attestations: Any
) -> None:
    resources = read_bundle_file(example)
    screening = screen_patient(trial, resources, AS_OF, attestations.get(resources.patient_id))
    produced = screening.transaction_bundle

    Bundle.model_validate(produced)
    ResearchSubject.model_validate(produced["entry"][1]["resource"])
    DetectedIssue.model_validate(produced["entry"][2]["resource"])

    expected_file = EXPECTED / f"{example.stem}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        EXPECTED.mkdir(exist_ok=True)
        expected_file.write_bytes(to_json(produced))
    assert expected_file.exists(), f"no golden file {expected_file}; run with UPDATE_GOLDEN=1"
    assert produced == orjson.loads(expected_file.read_bytes())


def test_every_golden_file_has_its_example() -> None:
    stems = {path.stem for path in EXAMPLES}
    orphans = [path.name for path in EXPECTED.glob("*.json") if path.stem not in stems]
    assert not orphans, f"golden files without an example: {orphans}"
