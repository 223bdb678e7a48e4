"""A cohort loses the patients the record says died (Patient.deceased[x]) at step 0 of the
attrition funnel; re-runs and what-if attrition keep them lost."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import orjson
from cohort_examples import AS_OF, bundles_to_ndjson
from trial_patients import example_with_patient_fields

from engine.cohort import NdjsonInput, run_cohort
from engine.cohort.whatif import what_if_funnel

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = ROOT / "criteria" / "NCT05315778.yaml"
PATIENTS = ROOT / "examples" / "patients"
CANDIDATE = "itp-relapsed-candidate"


def _bundle(name: str, **deceased: Any) -> dict[str, Any]:
    """An example Bundle with these `deceased[x]` fields on its Patient."""
    return example_with_patient_fields(PATIENTS / f"{name}.json", **deceased)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_cohort_loses_the_deceased_at_step_0(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    folder.mkdir()
    for file in sorted(PATIENTS.glob("*.json")):
        shutil.copy(file, folder / file.name)
    (folder / f"{CANDIDATE}.json").write_bytes(
        orjson.dumps(_bundle(CANDIDATE, deceasedDateTime="2026-10-29"))
    )
    ndjson = tmp_path / "ndjson"
    bundles_to_ndjson((folder,), ndjson)
    criteria = tmp_path / "trial" / "criteria" / CRITERIA.name
    criteria.parent.mkdir(parents=True)
    shutil.copytree(ROOT / "mappings", tmp_path / "trial" / "mappings")
    shutil.copy(CRITERIA, criteria)
    out = tmp_path / "out"
    summary = run_cohort(criteria, NdjsonInput(ndjson), out, AS_OF, workers=1, partition_count=2)
    rows = {row["patient"]: row for row in _rows(out / "cohort.csv")}
    dead_id = next(patient for patient, row in rows.items() if row["deceased"] == "yes")
    assert rows[dead_id]["status"] == "ineligible"
    assert [row["deceased"] for row in rows.values()].count("yes") == 1
    assert {row["deceased"] for row in rows.values()} == {"no", "yes"}
    attrition = _rows(out / "attrition.csv")
    assert attrition[0] | {} == {
        "step": "0",
        "criterion": "deceased",
        "kind": "vital-status",
        "remaining_before": str(summary.patients),
        "lost": "1",
        "remaining": str(summary.patients - 1),
        "unknown_missing_of_remaining": "0",
        "manual_of_remaining": "0",
        "not_evaluated_of_remaining": "0",
        "fails_overall": "1",
    }
    assert int(attrition[1]["remaining_before"]) == summary.patients - 1
    assert summary.deceased == 1 and summary.to_json()["deceased"] == 1
    assert "Deceased on or before the as-of day" in (out / "attrition.html").read_text()
    issues = [orjson.loads(line) for line in (out / "issues.ndjson").read_bytes().splitlines()]
    assert sum("deceased on 2026-10-29" in issue["detail"] for issue in issues) == 1
    funnel = what_if_funnel(out)
    assert (funnel.steps[0].criterion, funnel.steps[0].lost) == ("deceased", 1)
    assert funnel.remaining == funnel.remaining_in_the_run == int(attrition[-1]["remaining"])
    # a re-run after an edit rebuilds the line from the store: still ineligible, same files
    text = criteria.read_text(encoding="utf-8")
    criteria.write_text(
        text.replace("age: {min: 18, max: 65}", "age: {min: 18, max: 66}", 1), encoding="utf-8"
    )
    run_cohort(criteria, NdjsonInput(ndjson), out, AS_OF, workers=1, partition_count=2)
    fresh = tmp_path / "fresh"
    run_cohort(criteria, NdjsonInput(ndjson), fresh, AS_OF, workers=1, partition_count=2)
    for name in ("cohort.csv", "attrition.csv", "issues.ndjson", "subjects.ndjson"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    assert {row["patient"]: row["status"] for row in _rows(out / "cohort.csv")}[dead_id] == (
        "ineligible"
    )
