"""`evaluate_on_server` (the `evaluate --server` command) against sekmet."""

from __future__ import annotations

import html
from pathlib import Path

import orjson
import pytest
from sekmet_server import ROOT, TOKEN_VARIABLE, SekmetServer
from typer.testing import CliRunner, Result

from engine.cli import app as file_app

CRITERIA = str(ROOT / "criteria" / "NCT05315778.yaml")
ATTESTATIONS = str(ROOT / "examples" / "attestations.yaml")
PATIENTS = ROOT / "examples" / "patients"
AS_OF = ["--as-of", "2026-11-01"]


def server_arguments(*arguments: str) -> list[str]:
    """`trialsieve evaluate CRITERIA --server ...`: the real command line, through engine.cli."""
    return ["evaluate", CRITERIA, *arguments]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def on_server(runner: CliRunner, sekmet: SekmetServer, *arguments: str) -> Result:
    return runner.invoke(
        file_app,
        server_arguments(
            "--server", sekmet.base_url, "--token-env", TOKEN_VARIABLE, *AS_OF, *arguments
        ),
        env={TOKEN_VARIABLE: sekmet.token},
    )


def test_prints_the_same_bundle_as_evaluate_with_the_file(
    runner: CliRunner, sekmet: SekmetServer
) -> None:
    from_server = on_server(
        runner, sekmet, "--patient", "itp-relapsed-candidate", "--attestations", ATTESTATIONS
    )
    from_file = runner.invoke(
        file_app,
        [
            "evaluate",
            CRITERIA,
            "--bundle",
            str(PATIENTS / "itp-relapsed-candidate.json"),
            "--attestations",
            ATTESTATIONS,
            *AS_OF,
        ],
    )
    assert from_server.exit_code == 0, from_server.output
    assert from_file.exit_code == 0, from_file.output
    assert orjson.loads(from_server.stdout) == orjson.loads(from_file.stdout)
    assert orjson.loads(from_server.stdout)["entry"][1]["resource"]["status"] == "eligible"


def test_write_reports_what_it_wrote(runner: CliRunner, sekmet: SekmetServer) -> None:
    result = on_server(
        runner, sekmet, "--patient", "itp-hbsag-carrier-candidate", "--write", "--explain"
    )
    assert result.exit_code == 0, result.output
    assert "exclusion-10" in result.stdout  # the --explain table
    assert "Patient/itp-hbsag-carrier-candidate: candidate; wrote" in result.stdout
    assert f"{sekmet.base_url}/ResearchSubject/" in result.stdout


def test_dry_run_prints_the_bundle_and_writes_nothing(
    runner: CliRunner, sekmet: SekmetServer
) -> None:
    result = on_server(
        runner, sekmet, "--patient", "itp-refractory-local-codes", "--write", "--dry-run"
    )
    assert result.exit_code == 0, result.output
    bundle = orjson.loads(result.stdout)
    subject = bundle["entry"][1]
    assert subject["request"] == {
        "method": "PUT",
        "url": f"ResearchSubject/{subject['resource']['id']}",
    }
    with sekmet.client() as client:
        assert client.read("ResearchSubject", subject["resource"]["id"]) is None


def test_several_patients_go_to_a_folder(
    runner: CliRunner, sekmet: SekmetServer, tmp_path: Path
) -> None:
    patients = ["--patient", "itp-too-old", "--patient", "itp-secondary-lupus"]
    result = on_server(runner, sekmet, *patients, "--output", str(tmp_path), "--no-everything")
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "itp-secondary-lupus.json",
        "itp-too-old.json",
    ]
    assert "ineligible" in result.stdout  # the summary table


def test_a_patient_that_fails_is_named_and_the_others_go_on(
    runner: CliRunner, sekmet: SekmetServer
) -> None:
    patients = ["--patient", "no-such-patient", "--patient", "itp-too-old"]
    result = on_server(runner, sekmet, *patients, "--write")
    assert result.exit_code == 1
    assert "Patient/itp-too-old: ineligible; wrote" in result.stdout
    assert f"Patient/no-such-patient: {sekmet.base_url}: GET Patient/no-such-patient" in (
        result.stderr
    )
    assert "1 of 2 patients could not be evaluated" in result.stderr


def test_without_the_token_every_patient_fails(runner: CliRunner, sekmet: SekmetServer) -> None:
    result = runner.invoke(
        file_app, server_arguments("--server", sekmet.base_url, "--patient", "itp-too-old", *AS_OF)
    )
    assert result.exit_code == 1
    assert "HTTP 401 Unauthorized: Authentication required" in result.stderr
    assert sekmet.token not in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--token-env", "TRIALSIEVE_NO_SUCH_VARIABLE"], "TRIALSIEVE_NO_SUCH_VARIABLE is not set"),
        (["--token-env", "A", "--token-file", "b"], "not both"),
        (["--patient", "a", "--patient", "b"], "--output FOLDER is required"),
        (["--server", "fhir.example.org"], "'fhir.example.org' is not a FHIR base URL"),
        (["--bundle", "x.json"], "give --bundle or --server, not both"),
    ],
)
def test_bad_arguments_exit_2(
    runner: CliRunner, sekmet: SekmetServer, arguments: list[str], message: str
) -> None:
    result = runner.invoke(
        file_app,
        server_arguments("--server", sekmet.base_url, "--patient", "itp-too-old", *arguments),
    )
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_type_the_server_refuses_is_unknown_and_named_once(
    runner: CliRunner, sekmet: SekmetServer
) -> None:
    """Issue 12, item 3: sekmet behind a proxy that refuses `$everything` (501) and every
    MedicationStatement search (400 with an OperationOutcome, as the SMART reference server
    answers for a type it lacks): the pull goes on, criteria over MedicationStatement are
    unknown (not "none on record"), the command names the type and the answer once, and the
    DetectedIssue says why."""
    from refusing_server import Refusal, refusing_server

    diagnostics = 'The requested resource type "MedicationStatement" is not available'
    refusals = {
        "MedicationStatement": Refusal(400, diagnostics),
        "$everything": Refusal(501),
    }
    patients = ["itp-relapsed-candidate", "itp-hbsag-carrier-candidate"]
    with refusing_server(sekmet.base_url, refusals) as proxy:
        result = runner.invoke(
            file_app,
            server_arguments(
                "--server",
                proxy.base_url,
                "--token-env",
                TOKEN_VARIABLE,
                *AS_OF,
                "--attestations",
                ATTESTATIONS,
                *[argument for patient in patients for argument in ("--patient", patient)],
                "--write",
                "--dry-run",
                "--output",
                str(Path(sekmet.folder) / "refused-out"),
            ),
            env={TOKEN_VARIABLE: sekmet.token},
        )
    assert result.exit_code == 0, result.output
    line = (
        "MedicationStatement not available from the server (HTTP 400 Bad Request: "
        f"{diagnostics}): criteria over it are unknown"
    )
    assert result.output.count(line) == 1
    bundle = orjson.loads(
        (Path(sekmet.folder) / "refused-out" / f"{patients[0]}.json").read_bytes()
    )
    subject, issue = (entry["resource"] for entry in bundle["entry"][1:3])
    # From the file this patient is eligible; without MedicationStatement, the antithrombotics
    # exclusion (MedicationRequest or MedicationStatement in use) lacks data.
    assert subject["status"] == "potential-candidate"
    assert "lack data (exclusion-2-thrombosis-or-antithrombotics" in issue["detail"]
    assert html.escape(line) in issue["text"]["div"]
