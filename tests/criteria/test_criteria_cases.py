"""Criteria test cases (`trialsieve test`, engine/criteria_cases.py): the shipped cases pass,
a wrong expectation fails with the difference and the explanation, bad case files are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.criteria_cases import case_files, load_case_file, run_case
from engine.evaluate import CompiledCriteria

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = ROOT / "criteria"
HEADER = f"criteria: {CRITERIA / 'NCT05315778.yaml'}\nas_of: 2026-11-01\n"


def _write(folder: Path, text: str) -> Path:
    tests = folder / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    path = tests / "cases.yaml"
    path.write_text(HEADER + text, encoding="utf-8")
    return path


def test_the_shipped_cases_pass(trial: CompiledCriteria) -> None:
    files = list(case_files([CRITERIA]))
    assert files, "no case files beside the criteria"
    for file in files:
        cases = load_case_file(file)
        if cases.criteria != Path(trial.source.path).resolve():
            continue
        for case in cases.cases:
            result = run_case(trial, case)
            assert result.passed, "\n".join(result.differences)


def test_a_wrong_expectation_fails_with_a_diff_and_the_explanation(tmp_path: Path) -> None:
    aspirin = ROOT / "examples" / "patients" / "itp-refractory-on-aspirin.json"
    _write(
        tmp_path,
        f"cases:\n  - name: wrong on purpose\n    bundle: {aspirin}\n    expect:\n"
        "      status: candidate\n      criteria:\n"
        "        exclusion-2-thrombosis-or-antithrombotics: clear\n",
    )
    result = CliRunner().invoke(app, ["test", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.stdout and "wrong on purpose" in result.stdout
    assert "- exclusion-2-thrombosis-or-antithrombotics: clear" in result.stdout
    assert "+ exclusion-2-thrombosis-or-antithrombotics: fails" in result.stdout
    assert "Aspirin 81 mg" in result.stdout  # the criterion's explanation
    assert "- status: candidate\n+ status: ineligible" in result.stdout
    assert result.stdout.rstrip().endswith("0 passed, 1 failed")


def test_a_compact_patient_is_screened(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "cases:\n  - name: low haemoglobin\n    patient:\n      gender: male\n"
        "      birthDate: 1980-05-01\n"
        "      observations: [{code: loinc 718-7, value: 95 g/L, date: 2026-10-20}]\n"
        "    expect:\n      criteria: {exclusion-7-screening-blood-counts: fails}\n",
    )
    result = CliRunner().invoke(app, ["test", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "1 passed, 0 failed" in result.stdout


def test_a_bad_case_file_is_named_with_line_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "cases:\n  - name: no patient\n    expect:\n      status: maybe\n",
    )
    result = CliRunner().invoke(app, ["test", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert f"{path}:4, field cases[0].bundle" in result.output
    assert "give `bundle:`" in result.output


@pytest.mark.parametrize(
    ("case", "line", "field", "message"),
    [
        (
            "    bundle: no-such-patient.json\n    expect: {status: candidate}\n",
            5,
            "cases[0].bundle",
            "no-such-patient.json: no such file",
        ),
        (
            "    patient: {gender: male}\n    expect:\n      criteria:\n"
            "        inclusion-2-age-18-66: fails\n",
            8,
            "cases[0].expect.criteria.inclusion-2-age-18-66",
            "has no criterion 'inclusion-2-age-18-66' (did you mean 'inclusion-2-age-18-65'?)",
        ),
        (
            "    patient: {gender: male}\n    expect:\n      status: inelligible\n",
            7,
            "cases[0].expect.status",
            "status 'inelligible' is not one of ineligible, potential-candidate, candidate, "
            "eligible (did you mean 'ineligible'?)",
        ),
        (
            "    patient: {gender: male}\n    expect:\n      criteria:\n"
            "        inclusion-2-age-18-65: clear\n        inclusion-4-ecog-0-2: failed\n",
            9,
            "cases[0].expect.criteria.inclusion-4-ecog-0-2",
            "inclusion-4-ecog-0-2's outcome 'failed' is not one of clear, fails, missing-data, "
            "manual-review (did you mean 'fails'?)",
        ),
    ],
)
def test_a_missing_bundle_or_an_unknown_criterion_is_a_bad_case_file(
    tmp_path: Path, case: str, line: int, field: str, message: str
) -> None:
    """Named at the case's line and field, exit 2, before any case runs: a missing Bundle was
    named by its own path alone, and a criterion id typo was a failing case (exit 1)."""
    path = _write(tmp_path, "cases:\n  - name: typo\n" + case)
    result = CliRunner().invoke(app, ["test", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert f"{path}:{line}, field {field}: case 'typo': " in result.output
    assert message in result.output
    assert "FAILED" not in result.output


def test_every_unknown_criterion_of_a_case_file_is_named_at_once(tmp_path: Path) -> None:
    """Two criterion ids misspelt in one file: both named, each at its line (the first alone
    was, and the second only once the first was fixed)."""
    path = _write(
        tmp_path,
        "cases:\n  - name: typos\n    patient: {gender: male}\n    expect:\n      criteria:\n"
        "        inclusion-2-age-18-to-65: fails\n        inclusion-4-ecog-0-to-2: fails\n",
    )
    result = CliRunner().invoke(app, ["test", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert f"{path}:8, field cases[0].expect.criteria.inclusion-2-age-18-to-65" in result.output
    assert f"{path}:9, field cases[0].expect.criteria.inclusion-4-ecog-0-to-2" in result.output
    assert "(did you mean 'inclusion-4-ecog-0-2'?)" in result.output


@pytest.mark.parametrize(
    ("patient", "field", "message"),
    [
        (
            "{gender: male, conditions: [{code: snomed 32273002, onset: 12}]}",
            "patient.conditions.onset",
            "expected a date string, found int",
        ),
        ('{gender: male, birthDate: "1980-02-30"}', "patient.birthDate", "not a valid date"),
        (
            "{gender: male, observations: [{code: loinc 718-7, value: 1e999 g/L}]}",
            "patient.observations.value",
            "'1e999 g/L' is not a finite number",
        ),
    ],
)
def test_a_compact_patient_the_data_could_never_hold_is_refused(
    tmp_path: Path, patient: str, field: str, message: str
) -> None:
    """A case must not pass or fail on a value no FHIR resource can hold (these were taken
    as written, and the case then passed or failed on other grounds)."""
    path = _write(
        tmp_path,
        f"cases:\n  - name: x\n    patient: {patient}\n    expect: {{status: ineligible}}\n",
    )
    result = CliRunner().invoke(app, ["test", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 2, result.output
    assert f"field {field}: case 'x': " in result.output
    assert message in result.output
