"""The shipped examples as a cohort input: per-patient Bundles turned into Bulk NDJSON."""

from __future__ import annotations

import csv
import datetime as dt
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.attestations import Attestations
from engine.evaluate import CompiledCriteria, PatientEvaluation, evaluate_patient
from engine.record import build_record
from engine.sources import PatientResources, patient_reference, read_bundle_file

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = ROOT / "criteria" / "NCT05315778.yaml"
EXAMPLE_FOLDERS = (ROOT / "examples" / "synthea", ROOT / "examples" / "patients")
AS_OF = dt.date(2026, 11, 1)
PARTITIONS = 6
OUTPUT_FILES = (
    "subjects.ndjson",
    "issues.ndjson",
    "cohort.csv",
    "attrition.csv",
    "attrition.html",
    "data_availability.csv",
    "errors.ndjson",
)


def _rewrite_references(node: Any, keys: dict[str, str]) -> None:
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and reference in keys:
            node["reference"] = keys[reference]
        for value in node.values():
            _rewrite_references(value, keys)
    elif isinstance(node, list):
        for value in node:
            _rewrite_references(value, keys)


def bundles_to_ndjson(folders: tuple[Path, ...], target: Path) -> None:
    """Per-patient Bundles -> Bulk-style NDJSON by type, references written `Type/id`."""
    by_type: dict[str, list[bytes]] = {}
    seen: set[str] = set()
    for folder in folders:
        for file in sorted(folder.glob("*.json")):
            entries = orjson.loads(file.read_bytes())["entry"]
            keys = {
                entry["fullUrl"]: f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
                for entry in entries
                if "fullUrl" in entry
            }
            for entry in entries:
                resource = entry["resource"]
                key = f"{resource['resourceType']}/{resource['id']}"
                if key in seen:
                    continue
                seen.add(key)
                _rewrite_references(resource, keys)
                by_type.setdefault(resource["resourceType"], []).append(orjson.dumps(resource))
    target.mkdir(parents=True)
    for resource_type, lines in by_type.items():
        (target / f"{resource_type}.000.ndjson").write_bytes(b"\n".join(lines) + b"\n")


def ndjson_to_bundles(folder: Path, target: Path) -> None:
    """Bulk-style NDJSON -> a transaction Bundle per patient (fullUrls `urn:uuid:<id>`, the
    references among a patient's resources written so) and `_shared.json`, a batch Bundle
    of the resources of no patient (Medication, Organization, ...), which the patients'
    Bundles refer to as `Type/id`: the layout /work/shared/tools/convert.py ndjson2bundles
    writes."""
    patients: dict[str, list[dict[str, Any]]] = {}
    shared: list[dict[str, Any]] = []
    for file in sorted(folder.glob("*.ndjson")):
        for line in file.read_bytes().splitlines():
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            owner = patient_reference(resource)
            if owner is None:
                shared.append(resource)
            else:
                patients.setdefault(owner, []).append(resource)
    target.mkdir(parents=True)

    def entry(resource: dict[str, Any], keys: dict[str, str], method: str) -> dict[str, Any]:
        resource = orjson.loads(orjson.dumps(resource))
        _rewrite_references(resource, keys)
        key = f"{resource['resourceType']}/{resource['id']}"
        return {
            "fullUrl": f"urn:uuid:{resource['id']}",
            "resource": resource,
            "request": {"method": method, "url": key},
        }

    for patient_id, resources in patients.items():
        resources.sort(key=lambda resource: resource["resourceType"] != "Patient")
        keys = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in resources}
        document = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [entry(resource, keys, "PUT") for resource in resources],
        }
        (target / f"{patient_id}.json").write_bytes(orjson.dumps(document))
    document = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [entry(resource, {}, "PUT") for resource in shared],
    }
    (target / "_shared.json").write_bytes(orjson.dumps(document))


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def example_patients() -> list[PatientResources]:
    """The shipped examples, read as `trialsieve evaluate` reads them."""
    files = [file for folder in EXAMPLE_FOLDERS for file in sorted(folder.glob("*.json"))]
    return [read_bundle_file(file) for file in files]


def evaluations_of_the_examples(
    trial: CompiledCriteria, attestations: Attestations | None = None
) -> dict[str, PatientEvaluation]:
    """What `trialsieve evaluate` gives for each shipped example, by patient reference."""
    evaluations: dict[str, PatientEvaluation] = {}
    for patient in example_patients():
        record = build_record(patient, trial.terminology)
        answers = (attestations or {}).get(record.patient_id)
        evaluation = evaluate_patient(trial, record, AS_OF, answers)
        evaluations[evaluation.patient_reference] = evaluation
    return evaluations


def skip_unless_dask_workers_fork() -> None:
    """Skip where a local Dask cluster's workers are not forked from the command's process
    (no distributed; no fork, or macOS, where fork is not safe)."""
    pytest.importorskip("distributed")
    if "fork" not in multiprocessing.get_all_start_methods() or sys.platform == "darwin":
        pytest.skip("workers are forked from this process only where fork is safe")


def run_python(code: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter, as a command starts (this folder importable): it
    must exit 0; its output as text."""
    # imported here: the interpreters started so import this module from this folder alone
    from fresh_interpreter import run_python as run_in_a_fresh_interpreter

    return run_in_a_fresh_interpreter(code, *arguments, cwd=Path(__file__).parent)
