"""Golden outputs for NCT03036150: every example in `examples/ckd/`, as of 2026-11-01, whole.

Each example Bundle has its expected transaction Bundle (ResearchStudy, ResearchSubject,
DetectedIssue) in `tests/nct03036150/golden/<file stem>.json`. After a deliberate change to the
output, regenerate with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/nct03036150` and review the
diff like code.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle

from engine.attestations import load_attestations
from engine.evaluate import CompiledCriteria, SubjectStatus, evaluate_patient
from engine.record import build_record
from engine.report import transaction_bundle
from engine.sinks import to_json
from engine.sources import read_bundle_file
from engine.trial import load_trial

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = Path(__file__).parent / "golden"
AS_OF = dt.date(2026, 11, 1)
EXAMPLES = sorted((ROOT / "examples" / "ckd").rglob("*.json"))
STATUS_WITH_ATTESTATIONS = {
    "ckd-candidate": SubjectStatus.ELIGIBLE,
    "ckd-egfr-too-high": SubjectStatus.INELIGIBLE,
    "ckd-on-sglt2-inhibitor": SubjectStatus.INELIGIBLE,
    "ckd-recent-stroke": SubjectStatus.INELIGIBLE,
    "ckd-missing-visit-1-labs": SubjectStatus.POTENTIAL_CANDIDATE,
    "ckd-kidney-transplant": SubjectStatus.INELIGIBLE,
    "ckd-iga-nephropathy-prednisone": SubjectStatus.INELIGIBLE,
    "0d4fcba9-b3c9-1765-4a0f-120004c84bb3": SubjectStatus.INELIGIBLE,
    "4d9dd02d-a8d6-b435-83c2-13cbdac86f9e": SubjectStatus.POTENTIAL_CANDIDATE,
    "8397ac4c-b2f1-3164-3d4e-a3199deed82b": SubjectStatus.POTENTIAL_CANDIDATE,
}
"""What examples/ckd/README.md promises for each example."""


@pytest.fixture(scope="module")
def dapa_ckd() -> CompiledCriteria:
    return load_trial(ROOT / "criteria" / "NCT03036150.yaml")


@pytest.fixture(scope="module")
def attestations(dapa_ckd: CompiledCriteria) -> Any:
    return load_attestations(
        ROOT / "examples" / "attestations-nct03036150.yaml", dapa_ckd.manual_ids
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_matches_golden_output(
    example: Path, dapa_ckd: CompiledCriteria, attestations: Any
) -> None:
    record = build_record(read_bundle_file(example), dapa_ckd.terminology)
    evaluation = evaluate_patient(dapa_ckd, record, AS_OF, attestations.get(record.patient_id))
    assert evaluation.status is STATUS_WITH_ATTESTATIONS[example.stem]
    produced = transaction_bundle(evaluation)
    Bundle.model_validate(produced)
    expected_file = EXPECTED / f"{example.stem}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        EXPECTED.mkdir(exist_ok=True)
        expected_file.write_bytes(to_json(produced))
    assert expected_file.exists(), f"no golden file {expected_file}; run with UPDATE_GOLDEN=1"
    assert produced == orjson.loads(expected_file.read_bytes())


def test_every_example_has_a_promised_status_and_every_golden_file_its_example() -> None:
    stems = {path.stem for path in EXAMPLES}
    assert stems == set(STATUS_WITH_ATTESTATIONS)
    orphans = [path.name for path in EXPECTED.glob("*.json") if path.stem not in stems]
    assert not orphans, f"golden files without an example: {orphans}"
