"""A folder of per-patient Bundles beside a Bundle of shared resources (no Patient: the
Medications the patients' MedicationRequests name by `medicationReference`), as a conversion
from NDJSON writes it (`_shared.json`): `cohort --bundles` and `evaluate --bundle FOLDER` give
the results of the same data as NDJSON, where those Medications are the export's shared
resources."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import orjson
import pytest
from cohort_examples import AS_OF, ROOT, bundles_to_ndjson, ndjson_to_bundles
from typer.testing import CliRunner

from engine.cli import app
from engine.cohort import BundleInput, NdjsonInput, run_cohort

DAPA_CKD = ROOT / "criteria" / "NCT03036150.yaml"
"""Its criteria read medications (SGLT2 inhibitors, immunosuppressants, RAAS blockers)."""
COMPARED = (
    "cohort.csv",
    "subjects.ndjson",
    "issues.ndjson",
    "attrition.csv",
    "data_availability.csv",
    "errors.ndjson",
)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The CKD examples as NDJSON, and that NDJSON as Bundles with `_shared.json`."""
    root = tmp_path_factory.mktemp("layouts")
    bundles_to_ndjson(
        (ROOT / "examples" / "ckd" / "synthea", ROOT / "examples" / "ckd"), root / "ndjson"
    )
    ndjson_to_bundles(root / "ndjson", root / "bundles")
    shared = orjson.loads((root / "bundles" / "_shared.json").read_bytes())
    assert {entry["resource"]["resourceType"] for entry in shared["entry"]} == {"Medication"}
    return root / "ndjson", root / "bundles"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cohort_over_bundles_and_their_shared_bundle_is_the_cohort_over_ndjson(
    layouts: tuple[Path, Path], tmp_path: Path, workers: int
) -> None:
    ndjson, bundles = layouts
    over_ndjson = run_cohort(DAPA_CKD, NdjsonInput(ndjson), tmp_path / "ndjson", AS_OF, workers=1)
    over_bundles = run_cohort(
        DAPA_CKD, BundleInput(bundles), tmp_path / "bundles", AS_OF, workers=workers
    )
    assert over_bundles.problems == over_ndjson.problems == 0
    for name in COMPARED:
        assert (tmp_path / "bundles" / name).read_bytes() == (
            tmp_path / "ndjson" / name
        ).read_bytes(), name
    # the shared Bundle matters: without it the medications cannot be told
    alone = tmp_path / "without-shared"
    shutil.copytree(bundles, alone)
    (alone / "_shared.json").unlink()
    run_cohort(DAPA_CKD, BundleInput(alone), tmp_path / "alone", AS_OF, workers=1)
    assert (tmp_path / "alone" / "cohort.csv").read_bytes() != (
        tmp_path / "ndjson" / "cohort.csv"
    ).read_bytes()


def test_evaluate_over_the_bundles_folder_gives_each_patient_the_cohort_s_result(
    layouts: tuple[Path, Path], tmp_path: Path
) -> None:
    """`evaluate --bundle FOLDER` reads the shared Bundle too: each patient's DetectedIssue
    is the one a `--full` cohort run over the NDJSON writes (which `evaluate` gives)."""
    ndjson, bundles = layouts
    run_cohort(DAPA_CKD, NdjsonInput(ndjson), tmp_path / "cohort", AS_OF, workers=1, full=True)
    expected = {
        issue["patient"]["reference"]: issue
        for issue in map(
            orjson.loads, (tmp_path / "cohort" / "issues.ndjson").read_bytes().splitlines()
        )
    }
    output = tmp_path / "evaluated"
    arguments = ["evaluate", str(DAPA_CKD), "--bundle", str(bundles), "--as-of", AS_OF.isoformat()]
    result = CliRunner().invoke(app, [*arguments, "--output", str(output)])
    assert result.exit_code == 0, result.output
    found = {}
    for written in output.glob("*.json"):
        for entry in orjson.loads(written.read_bytes())["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "DetectedIssue":
                found[resource["patient"]["reference"]] = resource
    assert sorted(found) == sorted(expected)
    for reference, issue in found.items():
        assert issue == {key: value for key, value in expected[reference].items() if key != "id"}


def test_a_bundle_without_a_patient_holding_a_patient_s_resource_stays_an_error(
    layouts: tuple[Path, Path], tmp_path: Path
) -> None:
    """Named with the file and the resource, in errors.ndjson (exit 1) and by `evaluate`;
    the other patients are evaluated."""
    _ndjson, bundles = layouts
    folder = tmp_path / "bundles"
    shutil.copytree(bundles, folder)
    loose = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "Medication", "id": "loose-medication"}},
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "loose-observation",
                    "status": "final",
                    "code": {"text": "a note"},
                }
            },
        ],
    }
    (folder / "loose.json").write_bytes(orjson.dumps(loose))
    summary = run_cohort(DAPA_CKD, BundleInput(folder), tmp_path / "out", AS_OF, workers=2)
    assert summary.patients == 10 and summary.problems == 1
    problem = orjson.loads((tmp_path / "out" / "errors.ndjson").read_bytes())
    assert (problem["file"], problem["resource"]) == (
        str(folder / "loose.json"),
        "Observation/loose-observation",
    )
    assert "belongs to a patient" in problem["message"]
    arguments = ["evaluate", str(DAPA_CKD), "--bundle", str(folder), "--as-of", AS_OF.isoformat()]
    result = CliRunner().invoke(app, [*arguments, "--output", str(tmp_path / "evaluated")])
    assert result.exit_code == 1
    assert f"error: {folder / 'loose.json'}, Observation/loose-observation: the Bundle holds" in (
        result.output.replace("\n", " ")
    )
    assert "1 of 11 inputs could not be evaluated" in result.output


_SHARED_DAPAGLIFLOZIN = {
    "resourceType": "Medication",
    "id": "shared-dapagliflozin",
    "code": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1488564"}]
    },
}


@pytest.mark.parametrize(
    ("reference", "spaced", "edit"),
    [
        ("Medication/shared-dapagliflozin", False, None),
        ("Medication/shared-dapagliflozin", True, None),  # `"reference": "..."`
        ("Medication/shared-dapagliflozin", False, b'"Medication\\/'),
        ("https://fhir.example.org/r4/Medication/shared-dapagliflozin", False, None),
        ("Medication/shared-dapagliflozin/_history/1", False, None),
        ("Medication/shared-dapagliflozin", False, b'"Medication\\u002f'),
        ("Medication/shared-dapagliflozin", False, b'"Medic\\u0061tion/'),
    ],
    ids=["compact", "white space", "escaped slash", "absolute", "versioned", "u002f", "u0061"],
)
def test_a_shared_medication_is_found_however_the_reference_is_written(
    tmp_path: Path, reference: str, spaced: bool, edit: bytes | None
) -> None:
    """A MedicationRequest refers to dapagliflozin (DAPA-CKD's exclusion 4, an SGLT2
    inhibitor) through a Medication of the export's Medication file. The reference, written
    with JSON white space (as Python's json module writes it), an escaped slash or another
    escape, absolute or versioned, resolves as the compact `"reference":"Medication/<id>"`
    does and as a Bundle's does: the candidate is excluded (the Medication was left out, and
    the SGLT2 inhibitor was 'data missing': a potential candidate, silently)."""
    folder = tmp_path / "ndjson"
    bundles_to_ndjson((ROOT / "examples" / "ckd",), folder)
    request = {
        "resourceType": "MedicationRequest",
        "id": "mr-dapagliflozin",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": reference},
        "subject": {"reference": "Patient/ckd-candidate"},
        "authoredOn": "2026-10-20",
    }
    line = orjson.dumps(request)
    if spaced:
        line = line.replace(b'":', b'": ').replace(b'","', b'", "')
    if edit is not None:
        line = line.replace(b'"Medication/', edit)
    assert orjson.loads(line) == request
    with open(folder / "MedicationRequest.000.ndjson", "ab") as requests:
        requests.write(line + b"\n")
    with open(folder / "Medication.000.ndjson", "ab") as medications:
        medications.write(orjson.dumps(_SHARED_DAPAGLIFLOZIN) + b"\n")
    criteria = ROOT / "criteria" / "NCT03036150.yaml"
    for full in (True, False):
        out = tmp_path / f"out-{full}"
        summary = run_cohort(criteria, NdjsonInput(folder), out, AS_OF, workers=1, full=full)
        assert summary.problems == 0
        with open(out / "cohort.csv", encoding="utf-8", newline="") as table:
            row = next(row for row in csv.DictReader(table) if row["patient"] == "ckd-candidate")
        assert row["status"] == "ineligible", row
        sglt2 = next(column for column in row if column.startswith("exclusion-4"))
        assert row[sglt2] == "met", row


def test_an_export_written_with_json_white_space_gives_the_same_results(tmp_path: Path) -> None:
    """The examples' export with every line written as Python's json module writes it
    (`", "` and `": "`): the same cohort as the compact export (12 of the 28 patients'
    references to shared Medications went unresolved, exclusion 16 turning from manual review
    to data missing)."""
    compact = tmp_path / "compact"
    bundles_to_ndjson((ROOT / "examples" / "synthea", ROOT / "examples" / "patients"), compact)
    spaced = tmp_path / "spaced"
    spaced.mkdir()
    for path in compact.iterdir():
        lines = path.read_bytes().splitlines()
        written = [json.dumps(orjson.loads(line)).encode() for line in lines]
        (spaced / path.name).write_bytes(b"".join(line + b"\n" for line in written))
    criteria = ROOT / "criteria" / "NCT05315778.yaml"
    tables = []
    for folder in (compact, spaced):
        out = tmp_path / f"out-{folder.name}"
        run_cohort(criteria, NdjsonInput(folder), out, AS_OF, workers=1, full=True)
        tables.append((out / "cohort.csv").read_bytes())
    assert tables[0] == tables[1]
