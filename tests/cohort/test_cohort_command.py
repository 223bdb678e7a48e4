"""`trialsieve cohort`, registered on a typer app the way engine/cli.py registers it."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from engine.cohort.command import cohort

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = str(ROOT / "criteria" / "NCT05315778.yaml")
PATIENTS = str(ROOT / "examples" / "patients")

app = typer.Typer()
app.command()(cohort)


@app.command()
def version() -> None:
    """A second command, so that `cohort` is a subcommand as in the real app."""


def test_cohort_over_bundles_prints_the_summary(tmp_path: Path) -> None:
    arguments = ["cohort", CRITERIA, "--bundles", PATIENTS, "--as-of", "2026-11-01"]
    result = CliRunner().invoke(
        app, [*arguments, "--out", str(tmp_path), "--workers", "1", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "candidate" in result.output and "patients/s" in result.output
    assert (tmp_path / "cohort.csv").read_text().count("\n") == 9
    again = CliRunner().invoke(app, [*arguments[:-1], "2027-01-01", "--out", str(tmp_path)])
    assert again.exit_code == 2
    assert "other as-of day" in again.output


def test_exactly_one_input_is_required(tmp_path: Path) -> None:
    both = ["cohort", CRITERIA, "--bundles", PATIENTS, "--ndjson", PATIENTS, "--out", str(tmp_path)]
    assert CliRunner().invoke(app, both).exit_code == 2
    assert CliRunner().invoke(app, ["cohort", CRITERIA, "--out", str(tmp_path)]).exit_code == 2


def test_input_problems_exit_with_1(tmp_path: Path) -> None:
    folder = tmp_path / "ndjson"
    folder.mkdir()
    (folder / "Patient.ndjson").write_bytes(b'{"resourceType":"Patient","id":"p1"}\n{oops\n')
    arguments = ["cohort", CRITERIA, "--ndjson", str(folder), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*arguments, "--as-of", "2026-11-01", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "1 input problems" in result.output


def test_attestations_and_engine_options(tmp_path: Path) -> None:
    attestations = str(ROOT / "examples" / "attestations.yaml")
    arguments = ["cohort", CRITERIA, "--bundles", PATIENTS, "--as-of", "2026-11-01", "--quiet"]
    result = CliRunner().invoke(
        app,
        [
            *arguments,
            "--out",
            str(tmp_path / "a"),
            "--workers",
            "1",
            "--attestations",
            attestations,
        ],
    )
    assert result.exit_code == 0, result.output
    assert ",eligible," in (tmp_path / "a" / "cohort.csv").read_text()
    wrong = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "b"), "--scheduler", "x"])
    assert wrong.exit_code == 2
    assert "--scheduler needs --engine dask" in wrong.output


def test_full_evaluates_the_settled_patients_in_full(tmp_path: Path) -> None:
    synthea = str(ROOT / "examples" / "synthea")
    arguments = ["cohort", CRITERIA, "--bundles", synthea, "--as-of", "2026-11-01", "--quiet"]
    settled = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "a"), "--workers", "1"])
    assert settled.exit_code == 0, settled.output
    assert "settled by the pre-filter (not read in full)" in settled.output
    assert "not_evaluated" in (tmp_path / "a" / "cohort.csv").read_text()
    full = CliRunner().invoke(
        app, [*arguments, "--out", str(tmp_path / "b"), "--workers", "1", "--full"]
    )
    assert full.exit_code == 0, full.output
    assert "settled by the pre-filter (evaluated in full)" in full.output
    assert "not_evaluated" not in (tmp_path / "b" / "cohort.csv").read_text()
