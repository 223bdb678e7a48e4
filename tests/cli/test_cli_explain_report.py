"""What `evaluate` tells a person: the as-of day, --explain in clinical language without the
Bundle, --report pages, the stale-data warning; --version."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from engine.cli import app

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = str(ROOT / "criteria" / "NCT05315778.yaml")
PATIENTS = ROOT / "examples" / "patients"
ASPIRIN = str(PATIENTS / "itp-refractory-on-aspirin.json")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_explain_alone_prints_the_explanation_not_the_bundle(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["evaluate", CRITERIA, "--bundle", ASPIRIN, "--as-of", "2026-11-01", "--explain"],
        env={"COLUMNS": "100"},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    # the explanation's header names the day: no second "As of" line before it
    assert result.stderr.startswith("NCT05315778: ")
    assert result.stderr.count("As of 2026-11-01") == 1
    assert "E2 Thrombosis or antithrombotics: present: excludes" in result.stderr
    assert "Aspirin 81 mg, 81 mg orally once daily, order active" in result.stderr
    assert "with --explain the Bundle is not printed" in result.stderr
    assert '"resourceType"' not in result.stderr
    assert max(len(line) for line in result.stderr.splitlines()) <= 100


def test_one_patient_to_a_file_says_where_and_what(runner: CliRunner, tmp_path: Path) -> None:
    output = tmp_path / "result.json"
    result = runner.invoke(
        app,
        [
            "evaluate",
            CRITERIA,
            "--bundle",
            ASPIRIN,
            "--as-of",
            "2026-11-01",
            "--output",
            f"{output}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"Patient/itp-refractory-on-aspirin: ineligible; written to {output}" in result.stdout
    assert orjson.loads(output.read_bytes())["resourceType"] == "Bundle"


def test_report_writes_one_page_per_patient(runner: CliRunner, tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    result = runner.invoke(
        app,
        [
            *("evaluate", CRITERIA, "--bundle", str(PATIENTS), "--as-of", "2026-11-01"),
            *("--output", str(tmp_path / "out"), "--report", str(pages)),
        ],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    written = sorted(path.stem for path in pages.glob("*.html"))
    assert written == sorted(path.stem for path in PATIENTS.glob("*.json"))
    page = (pages / "itp-refractory-on-aspirin.html").read_text(encoding="utf-8")
    assert "Aspirin 81 mg" in page and "As of</dt><dd>2026-11-01" in page
    assert f"Report pages written to {pages}/" in result.stdout


def test_an_as_of_after_the_data_warns_and_today_is_named(runner: CliRunner) -> None:
    late = runner.invoke(
        app,
        ["evaluate", CRITERIA, "--bundle", ASPIRIN, "--as-of", "2027-06-01", "--explain"],
        env={"COLUMNS": "200"},
    )
    assert late.exit_code == 0, late.output
    assert "warning: As of 2027-06-01 the screening window runs from 2027-05-04" in late.stderr
    today = runner.invoke(app, ["evaluate", CRITERIA, "--bundle", ASPIRIN, "--explain"])
    assert "(today; give --as-of YYYY-MM-DD for a reproducible day)" in today.stderr


def test_version_and_flags_read_as_flags(runner: CliRunner) -> None:
    from engine import __version__

    assert runner.invoke(app, ["--version"]).stdout == f"trialsieve {__version__}\n"
    help_text = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"}).stdout
    explain_line = next(line for line in help_text.splitlines() if "--explain" in line)
    assert "<bool>" not in explain_line
