"""The command line: outputs, exit codes and error messages for bad input."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from engine.cli import app

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = str(ROOT / "criteria" / "NCT05315778.yaml")
PATIENTS = ROOT / "examples" / "patients"
CANDIDATE = str(PATIENTS / "itp-relapsed-candidate.json")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_one_patient_goes_to_standard_output(runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["evaluate", CRITERIA, "--bundle", CANDIDATE, "--as-of", "2026-11-01"]
    )
    assert result.exit_code == 0, result.output
    bundle = orjson.loads(result.stdout)
    assert bundle["type"] == "transaction"
    assert bundle["entry"][1]["resource"]["status"] == "candidate"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_output_through_a_link_replaces_its_file_and_a_named_pipe_is_refused(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`--output` writes through a symbolic link (the link stays); a named pipe is an error
    naming it, exit 1 as for any output that cannot be written, and stays a named pipe."""
    target, link, pipe = tmp_path / "target.json", tmp_path / "link.json", tmp_path / "pipe.json"
    target.write_bytes(b"{}")
    link.symlink_to(target.name)
    os.mkfifo(pipe)
    arguments = ["evaluate", CRITERIA, "--bundle", CANDIDATE, "--as-of", "2026-11-01"]
    linked = runner.invoke(app, [*arguments, "--output", str(link)])
    assert linked.exit_code == 0, linked.output
    assert link.is_symlink()
    assert orjson.loads(target.read_bytes())["type"] == "transaction"
    refused = runner.invoke(app, [*arguments, "--output", str(pipe)])
    assert refused.exit_code == 1
    assert f"error: {pipe}: cannot write: not a regular file (a named pipe)" in refused.output
    assert "written to" not in refused.output
    assert stat.S_ISFIFO(pipe.lstat().st_mode)


def test_attestations_make_the_candidate_eligible(runner: CliRunner, tmp_path: Path) -> None:
    output = tmp_path / "result.json"
    result = runner.invoke(
        app,
        [
            "evaluate",
            CRITERIA,
            "--bundle",
            CANDIDATE,
            "--as-of",
            "2026-11-01",
            "--attestations",
            str(ROOT / "examples" / "attestations.yaml"),
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(output.read_bytes())["entry"][1]["resource"]["status"] == "eligible"


def test_explain_prints_every_criterion(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            CRITERIA,
            "--bundle",
            CANDIDATE,
            "--as-of",
            "2026-11-01",
            "--output",
            str(tmp_path / "out.json"),
            "--explain",
        ],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    for criterion_id in ("inclusion-2-age-18-65", "exclusion-16-investigator-judgement"):
        assert criterion_id in result.stdout


def test_a_folder_writes_one_file_per_patient_and_a_summary(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        [
            "evaluate",
            CRITERIA,
            "--bundle",
            str(PATIENTS),
            "--as-of",
            "2026-11-01",
            "--output",
            str(tmp_path),
        ],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    written = sorted(path.stem for path in tmp_path.glob("*.json"))
    assert written == sorted(path.stem for path in PATIENTS.glob("*.json"))
    assert "Screening summary" in result.stdout


def test_the_summary_in_a_file_or_pipe_keeps_every_cell_on_one_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Rich takes 80 columns for a file or a pipe: a 36-character Synthea id beside
    `potential-candidate` folded the status into `potential-ca` / `ndidate`. Not a terminal,
    the table is printed at its natural width."""
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(ROOT / "criteria" / "NCT03036150.yaml"),
            "--bundle",
            str(ROOT / "examples" / "ckd"),
            "--as-of",
            "2026-11-01",
            "--output",
            str(tmp_path),
        ],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "potential-candidate " in line]
    assert len(rows) == 3, result.stdout
    synthea_rows = [row for row in rows if "4d9dd02d-a8d6-b435-83c2-13cbdac86f9e" in row]
    assert len(synthea_rows) == 1, result.stdout
    assert max(map(len, result.stdout.splitlines())) > 80


def test_the_same_patient_in_two_files_is_named_and_the_first_result_kept(
    runner: CliRunner, tmp_path: Path
) -> None:
    """One result per patient, the first file's (in file order), as a cohort run keeps it;
    the second file used to overwrite the first's result with exit 0."""
    folder = tmp_path / "in"
    folder.mkdir()
    bundle = orjson.loads(Path(CANDIDATE).read_bytes())
    shutil.copy(CANDIDATE, folder / "a.json")
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["birthDate"] = "2015-01-01"  # a child: another status
    (folder / "b.json").write_bytes(orjson.dumps(bundle))
    out = tmp_path / "out"
    arguments = ["evaluate", CRITERIA, "--bundle", str(folder), "--as-of", "2026-11-01"]
    result = runner.invoke(app, [*arguments, "--output", str(out)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # as the console wraps it, at any path's length
    assert "b.json: Patient/itp-relapsed-candidate is also in" in output
    assert "a.json" in output and "(1 patient)" in output
    written = orjson.loads((out / "itp-relapsed-candidate.json").read_bytes())
    subject = next(
        entry["resource"]
        for entry in written["entry"]
        if entry["resource"]["resourceType"] == "ResearchSubject"
    )
    assert subject["status"] == "candidate"  # a.json's; b.json's child is ineligible


def test_a_bad_file_among_good_ones_is_named_and_the_others_are_written(
    runner: CliRunner, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(CANDIDATE, inputs / "good.json")
    (inputs / "broken.json").write_text(
        '{"resourceType": "Bundle", "type": "collection",\n  "entry": [}'
    )
    output = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "evaluate",
            CRITERIA,
            "--bundle",
            str(inputs),
            "--as-of",
            "2026-11-01",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 1
    assert "broken.json:2" in result.stderr
    assert (output / "itp-relapsed-candidate.json").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["evaluate", "missing.yaml", "--bundle", CANDIDATE], "missing.yaml"),
        (
            ["evaluate", CRITERIA, "--bundle", CANDIDATE, "--as-of", "01/11/2026"],
            "Invalid value for '--as-of': '01/11/2026' is not a date (YYYY-MM-DD)",
        ),
        (
            ["evaluate", CRITERIA, "--bundle", CANDIDATE, "--as-of", "0001-01-01"],
            "Invalid value for '--as-of': the as-of day 0001-01-01 is outside",
        ),
        (["evaluate", CRITERIA, "--bundle", str(PATIENTS)], "--output FOLDER is required"),
        (
            ["evaluate", CRITERIA, "--bundle", CANDIDATE, "--report", CANDIDATE],
            f"{CANDIDATE}: --report must be a folder",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    runner: CliRunner, arguments: list[str], message: str
) -> None:
    result = runner.invoke(app, arguments, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.parametrize("contents", [[], ["export.ndjson"], ["nested/"]])
def test_a_folder_without_bundle_files_is_refused_beside_good_ones(
    runner: CliRunner, tmp_path: Path, contents: list[str]
) -> None:
    """A `--bundle` folder that holds no *.json file (empty, NDJSON, only empty subfolders)
    is named, exit 2, nothing evaluated; it used to be skipped, the other `--bundle` run and
    the command end 0 as though the folder's patients had been screened."""
    folder = tmp_path / "bundles"
    folder.mkdir()
    for name in contents:
        if name.endswith("/"):
            (folder / name).mkdir()
        else:
            (folder / name).write_text('{"resourceType": "Patient", "id": "p"}\n')
    output = tmp_path / "out"
    arguments = ["evaluate", CRITERIA, "--bundle", str(folder), "--bundle", CANDIDATE]
    result = runner.invoke(app, [*arguments, "--as-of", "2026-11-01", "--output", str(output)])
    assert result.exit_code == 2, result.output
    assert f"error: {folder}: the folder holds no *.json files" in result.stderr
    assert not output.exists()


def test_a_folder_named_like_a_bundle_file_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    (folder / "odd.json").mkdir(parents=True)
    shutil.copy(CANDIDATE, folder)
    arguments = ["evaluate", CRITERIA, "--bundle", str(folder), "--as-of", "2026-11-01"]
    result = runner.invoke(app, [*arguments, "--output", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert f"error: {folder / 'odd.json'}: a folder, named like a Bundle file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_bundle_path_is_refused_before_any_patient(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A `--bundle` path that does not exist is a bad argument (exit 2, named), as in
    `cohort --bundles`; nothing is evaluated."""
    missing = tmp_path / "missing.json"
    output = tmp_path / "out"
    arguments = ["evaluate", CRITERIA, "--bundle", CANDIDATE, "--bundle", str(missing)]
    result = runner.invoke(app, [*arguments, "--as-of", "2026-11-01", "--output", str(output)])
    assert result.exit_code == 2, result.output
    assert f"error: {missing}: no such file or folder" in result.stderr
    assert not output.exists()


OTHER_TRIAL_ATTESTATIONS = """\
attestations:
  - patient: itp-relapsed-candidate
    trial: NCT03036150
    by: Dr. Nephrologist
    answers:
      informed-consent: false
      ace-inhibitor-and-arb-contraindicated: true
"""


@pytest.mark.parametrize("command", ["evaluate", "cohort"])
def test_an_attestation_for_another_trial_is_not_applied(
    runner: CliRunner, tmp_path: Path, command: str
) -> None:
    """An entry naming another trial is skipped, as the service skips it (README,
    Attestations): DAPA-CKD's 'informed-consent: false' made the ITP candidate ineligible for
    NCT05315778, and an item only DAPA-CKD asks was refused as unknown."""
    attestations = tmp_path / "attestations.yaml"
    attestations.write_text(OTHER_TRIAL_ATTESTATIONS)
    out = tmp_path / "out"
    if command == "evaluate":
        arguments = ["evaluate", CRITERIA, "--bundle", CANDIDATE, "--output", str(out)]
    else:
        folder = tmp_path / "bundles"
        folder.mkdir()
        shutil.copy(CANDIDATE, folder)
        arguments = ["cohort", CRITERIA, "--bundles", str(folder), "--out", str(out), "--quiet"]
    arguments += ["--as-of", "2026-11-01", "--attestations", str(attestations)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    if command == "evaluate":
        written = orjson.loads(out.read_bytes())
        statuses = [
            entry["resource"]["status"]
            for entry in written["entry"]
            if entry["resource"]["resourceType"] == "ResearchSubject"
        ]
    else:
        subjects = (out / "subjects.ndjson").read_bytes().splitlines()
        statuses = [orjson.loads(line)["status"] for line in subjects]
    assert statuses == ["candidate"]


@pytest.mark.parametrize("command", ["evaluate", "demo"])
@pytest.mark.parametrize("patient_id", ["", "a b", "../Group", "x" * 65])
def test_a_patient_that_is_no_fhir_id_is_refused_before_the_server_is_asked(
    runner: CliRunner, command: str, patient_id: str
) -> None:
    """It went into the server's URL (`Patient/a b/$everything`) and failed per patient after
    the retries (a closed port here: 5 attempts), or asked for another resource."""
    server = "http://127.0.0.1:9/fhir"  # nothing listens: any request would fail
    arguments = [command, CRITERIA, "--server", server, "--patient", patient_id]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert f"error: --patient {patient_id!r} is not a FHIR id" in " ".join(result.stderr.split())
    assert "cannot connect" not in result.output


def test_an_attestation_for_an_unknown_item_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    attestations = tmp_path / "attestations.yaml"
    attestations.write_text(
        "attestations:\n  - patient: p\n    by: Dr. A\n    answers:\n      informed-consnt: true\n"
    )
    result = runner.invoke(
        app, ["evaluate", CRITERIA, "--bundle", CANDIDATE, "--attestations", str(attestations)]
    )
    assert result.exit_code == 2
    assert "informed-consnt" in result.stderr
    assert "attestations.yaml:5" in result.stderr  # the answer's own line


def test_not_a_bundle_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    patient = tmp_path / "patient.json"
    patient.write_text('{"resourceType": "Patient", "id": "p"}')
    result = runner.invoke(app, ["evaluate", CRITERIA, "--bundle", str(patient)])
    assert result.exit_code == 1
    assert "patient.json" in result.stderr
    assert "Bundle" in result.stderr
    assert "Traceback" not in result.output


def test_lint_passes_on_the_shipped_files(runner: CliRunner) -> None:
    result = runner.invoke(app, ["lint", str(ROOT / "criteria"), str(ROOT / "mappings")])
    assert result.exit_code == 0, result.output


def test_lint_fails_on_an_unknown_concept(runner: CliRunner, tmp_path: Path) -> None:
    text = Path(CRITERIA).read_text().replace("concept: hemoglobin", "concept: haemoglobinn", 1)
    text = text.replace("mappings: [../mappings]", f"mappings: [{ROOT / 'mappings'}]")
    criteria = tmp_path / "trial.yaml"
    criteria.write_text(text)
    result = runner.invoke(app, ["lint", str(criteria)])
    assert result.exit_code == 2  # bad criteria, as for evaluate
    assert "haemoglobinn" in result.stderr
    assert "trial.yaml:" in result.stderr
    assert runner.invoke(app, ["evaluate", str(criteria), "--bundle", CANDIDATE]).exit_code == 2
    assert runner.invoke(app, ["lint", str(tmp_path / "nowhere")]).exit_code == 2


def test_server_options_need_a_server(runner: CliRunner) -> None:
    result = runner.invoke(app, ["evaluate", CRITERIA, "--bundle", CANDIDATE, "--write"])
    assert result.exit_code == 2
    assert "need --server" in result.stderr


def test_no_patients_at_all_is_a_clear_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["evaluate", CRITERIA])
    assert result.exit_code == 2
    assert "--bundle" in result.stderr


def test_cohort_is_registered_on_the_main_command(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "cohort",
            CRITERIA,
            "--bundles",
            str(PATIENTS),
            "--as-of",
            "2026-11-01",
            "--out",
            str(tmp_path),
            "--workers",
            "1",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cohort.csv").exists()
    assert len((tmp_path / "subjects.ndjson").read_text().splitlines()) == len(
        list(PATIENTS.glob("*.json"))
    )


@pytest.mark.parametrize("command", ["cohort", "demo", "serve", "subscribe", "lint", "evaluate"])
def test_every_command_is_registered(runner: CliRunner, command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
