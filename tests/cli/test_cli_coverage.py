"""`trialsieve coverage` on small hand-made Bundles and NDJSON: the table, the snippet, the
files written with --out, and the error paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.cli import app

CRITERIA = Path(__file__).resolve().parents[2] / "criteria" / "NCT05315778.yaml"
LAB = "http://hospital.example.org/lab"
LOINC = "http://loinc.org"


def observation(patient: str, system: str, code: str, display: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{patient}-{code}",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def patient_resources(patient: str) -> list[dict[str, Any]]:
    return [
        {"resourceType": "Patient", "id": patient},
        observation(patient, LAB, "NEUT", "Neutrophils"),
        observation(patient, LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood"),
    ]


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    folder = tmp_path / "bundles"
    folder.mkdir()
    for patient in ("p1", "p2"):
        entries = [
            {"fullUrl": f"{item['resourceType']}/{item['id']}", "resource": item}
            for item in patient_resources(patient)
        ]
        document = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        (folder / f"{patient}.json").write_text(json.dumps(document), encoding="utf-8")
    return folder


@pytest.fixture
def ndjson(tmp_path: Path) -> Path:
    folder = tmp_path / "ndjson"
    folder.mkdir()
    by_type: dict[str, list[str]] = {}
    for patient in ("p1", "p2"):
        for item in patient_resources(patient):
            by_type.setdefault(item["resourceType"], []).append(json.dumps(item))
    for resource_type, lines in by_type.items():
        (folder / f"{resource_type}.ndjson").write_text("\n".join(lines) + "\n", "utf-8")
    return folder


def test_bundles_report_matched_codes_and_a_look_alike_local_code(
    bundles: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["coverage", str(CRITERIA), "--bundles", str(bundles), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Terminology coverage over 2 patients" in result.output
    assert "matched   LOINC 718-7 Hemoglobin [Mass/volume] in Blood: 2 patients" in result.output
    assert f"candidate {LAB} NEUT Neutrophils (Observation): 2 patients" in result.output
    assert '"NEUT": neutrophils' in result.output
    assert (out / "coverage.txt").read_text(encoding="utf-8") in result.output
    assert "neutrophils,candidate," in (out / "coverage.csv").read_text(encoding="utf-8")
    assert '"NEUT": neutrophils' in (out / "suggested-mappings.yaml").read_text(encoding="utf-8")
    assert "Suggested mappings: 1 code, in the local_codes: snippet" in result.output


def test_ndjson_gives_the_same_report_as_bundles(bundles: Path, ndjson: Path) -> None:
    from_bundles = CliRunner().invoke(app, ["coverage", str(CRITERIA), "--bundles", str(bundles)])
    from_ndjson = CliRunner().invoke(app, ["coverage", str(CRITERIA), "--ndjson", str(ndjson)])
    assert from_ndjson.exit_code == 0, from_ndjson.output
    assert from_ndjson.output == from_bundles.output


def test_exactly_one_input_folder(bundles: Path, ndjson: Path) -> None:
    for arguments in ([], ["--bundles", str(bundles), "--ndjson", str(ndjson)]):
        result = CliRunner().invoke(app, ["coverage", str(CRITERIA), *arguments])
        assert result.exit_code == 2
        assert "exactly one of --ndjson DIR and --bundles DIR" in result.output


def test_an_unreadable_bundle_is_named_and_the_rest_reported(bundles: Path) -> None:
    (bundles / "broken.json").write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(app, ["coverage", str(CRITERIA), "--bundles", str(bundles)])
    assert result.exit_code == 1
    assert "broken.json" in result.output
    assert "Terminology coverage over 2 patients" in result.output


def test_nothing_to_suggest_writes_no_suggestions_file_and_says_so(
    bundles: Path, tmp_path: Path
) -> None:
    """A file of comments only is no mapping file (an empty mapping file is refused): with
    nothing to suggest there is none, and one an earlier run left is removed."""
    for file in bundles.glob("*.json"):  # the local NEUT code, the only candidate, goes
        document = json.loads(file.read_text(encoding="utf-8"))
        document["entry"] = [
            entry for entry in document["entry"] if "NEUT" not in json.dumps(entry["resource"])
        ]
        file.write_text(json.dumps(document), encoding="utf-8")
    out = tmp_path / "report"
    out.mkdir()
    (out / "suggested-mappings.yaml").write_text("local_codes: []\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["coverage", str(CRITERIA), "--bundles", str(bundles), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    said = "Suggested mappings: none (no unmapped code resembles a member of a concept)"
    assert said in result.output
    assert said in (out / "coverage.txt").read_text(encoding="utf-8")
    assert (
        f"Nothing to suggest: no {out / 'suggested-mappings.yaml'} written (the one an "
        "earlier run wrote there is removed)"
    ) in result.output
    assert "local_codes" not in result.output
    assert sorted(path.name for path in out.iterdir()) == ["coverage.csv", "coverage.txt"]


@pytest.mark.parametrize(
    ("option", "folder", "inside", "message"),
    [
        ("--ndjson", "X.ndjson", "p1.json", "the folder holds no *.ndjson or *.ndjson.gz files"),
        ("--ndjson", "empty", None, "the folder holds no *.ndjson or *.ndjson.gz files"),
        ("--bundles", "empty", None, "the folder holds no *.json files"),
        ("--ndjson", "input", "Patient.ndjson/", "a folder, named like an NDJSON file"),
        ("--bundles", "input", "p1.json/", "a folder, named like a Bundle file"),
    ],
)
def test_an_unusable_input_folder_exits_2_as_in_cohort(
    tmp_path: Path, option: str, folder: str, inside: str | None, message: str
) -> None:
    """The same input folder problems get the same exit status from `coverage` and
    `cohort`: 2, refused before anything is read (README, "Exit status"). `inside`: what the
    folder holds (a name ending in / is a folder)."""
    given = tmp_path / folder
    given.mkdir()
    if inside is not None and inside.endswith("/"):
        (given / inside).mkdir()
    elif inside is not None:
        (given / inside).write_text("{}", encoding="utf-8")
    runner = CliRunner()
    coverage = runner.invoke(app, ["coverage", str(CRITERIA), option, str(given)])
    cohort = runner.invoke(
        app, ["cohort", str(CRITERIA), option, str(given), "--out", str(tmp_path / "out")]
    )
    assert (coverage.exit_code, cohort.exit_code) == (2, 2), coverage.output + cohort.output
    assert message in coverage.output and message in cohort.output
    assert "Terminology coverage" not in coverage.output
