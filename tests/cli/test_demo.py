"""`trialsieve demo` end to end against sekmet-fhir on loopback (and, `--server`, Medplum's FHIR
router, which gives its own ids on conditional create), and the embedded server's life cycle:
started, used, and always stopped (errors, Ctrl-C, SIGTERM, a killed parent).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from medplum_server import MedplumServer
from typer.testing import CliRunner

from engine.attestations import load_attestations
from engine.cli.demo import demo
from engine.embedded_server import INSTALL_HINT, EmbeddedServer, TransactionLoader
from engine.errors import EmbeddedServerError, InputError
from engine.evaluate import CompiledCriteria, evaluate_patient
from engine.record import build_record
from engine.report.resources import research_study_id
from engine.sources import FhirServerClient, read_bundle_file

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sekmet") is None, reason="sekmet-fhir is not installed"
)

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = str(ROOT / "criteria" / "NCT05315778.yaml")
ATTESTATIONS = ROOT / "examples" / "attestations.yaml"
EXAMPLE_FOLDERS = (ROOT / "examples" / "patients", ROOT / "examples" / "synthea")
EXAMPLE_PATIENTS = sorted(p for folder in EXAMPLE_FOLDERS for p in folder.glob("*.json"))
AS_OF = "2026-11-01"
COMMON = [CRITERIA, "--as-of", AS_OF, "--attestations", str(ATTESTATIONS)]
TOKEN_VARIABLE = "TRIALSIEVE_TEST_DEMO_TOKEN"
_STARTED = re.compile(
    r"started sekmet-fhir \S+ at http://127\.0\.0\.1:(\d+)/fhir \(pid (\d+), folder (.+)\) in"
)
_LAUNCH_DEMO = (
    # Ctrl-C at a terminal: SIGINT raises KeyboardInterrupt, whatever the disposition the test
    # run inherited (a job a non-interactive shell starts in the background ignores SIGINT,
    # and so would the demo, which Python then leaves ignored)
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "import typer; from engine.cli.demo import demo; typer.run(demo)"
)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The demo command on its own (engine.cli registers it as `trialsieve demo`)."""
    application = typer.Typer(pretty_exceptions_enable=False)
    application.command()(demo)
    return application


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    """An empty sekmet, for the demo's --server mode."""
    with EmbeddedServer() as running:
        yield running


def is_running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (/proc, else a null signal)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc").is_dir():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def sekmet_processes_on(port: str) -> list[int]:
    """Running processes whose command line serves sekmet on this port (/proc scan)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended while we looked
        if b"serve" in arguments and port.encode() in arguments and is_running(int(entry.name)):
            found.append(int(entry.name))
    return found


def started_server(stderr: str) -> tuple[str, int, Path]:
    """Port, pid and folder from the demo's "started sekmet-fhir ..." progress line."""
    match = _STARTED.search(stderr)
    assert match is not None, stderr
    return match.group(1), int(match.group(2)), Path(match.group(3))


def statuses_from_files(trial: CompiledCriteria) -> dict[str, str]:
    """Each example patient's status, evaluated from its file as `evaluate --bundle` does."""
    answers = load_attestations(ATTESTATIONS, trial.manual_ids)
    day = dt.date.fromisoformat(AS_OF)
    statuses = {}
    for path in EXAMPLE_PATIENTS:
        record = build_record(read_bundle_file(path), trial.terminology)
        evaluation = evaluate_patient(trial, record, day, answers.get(record.patient_id))
        statuses[evaluation.patient_id] = evaluation.status.value
    return statuses


def research_subjects(server: EmbeddedServer) -> list[dict[str, Any]]:
    """The server's ResearchSubjects for NCT05315778 (a Synthea patient is in another study)."""
    headers = {"Authorization": f"Bearer {server.token}", "Accept": "application/fhir+json"}
    answer = httpx.get(
        f"{server.base_url}/ResearchSubject", params={"_count": "500"}, headers=headers
    )
    answer.raise_for_status()
    resources = [entry["resource"] for entry in answer.json().get("entry", [])]
    return [r for r in resources if r["study"].get("identifier", {}).get("value") == "NCT05315778"]


# --------------------------------------------------------------------------- the demo


def test_the_demo_evaluates_the_examples_on_a_local_server_and_stops_it(
    app: typer.Typer, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the default examples are relative to a checkout
    result = runner.invoke(app, COMMON)

    assert result.exit_code == 0, result.output
    assert "Screening summary" in result.stdout
    count = len(EXAMPLE_PATIENTS)
    assert f"{count} ResearchSubjects for NCT05315778 read back from" in result.stdout
    assert f"({count} patients written)" in result.stdout
    assert re.search(
        r"e\.g\. Patient/itp-relapsed-candidate \(eligible\): "
        r"http://127\.0\.0\.1:\d+/fhir/ResearchSubject/[0-9a-f-]{36}$",
        result.stdout,
        re.MULTILINE,
    )
    assert f"[{count}/{count}] Patient/" in result.stderr
    port, pid, folder = started_server(result.stderr)
    assert not is_running(pid)
    assert sekmet_processes_on(port) == []
    assert not folder.exists()


def test_the_demo_against_a_given_server_loads_evaluates_and_writes_every_patient(
    app: typer.Typer, runner: CliRunner, server: EmbeddedServer, trial: CompiledCriteria
) -> None:
    arguments = [*COMMON, "--server", server.base_url, "--token-env", TOKEN_VARIABLE]
    examples = [option for folder in EXAMPLE_FOLDERS for option in ("--examples", str(folder))]
    environment = {TOKEN_VARIABLE: server.token}

    loading = [*arguments, "--load-examples", *examples, "--page-size", "7"]  # several pages
    result = runner.invoke(app, loading, env=environment)

    assert result.exit_code == 0, result.output
    assert server.token not in result.output
    subjects = research_subjects(server)
    assert len(subjects) == len(EXAMPLE_PATIENTS)
    on_server = {
        subject["individual"]["reference"].removeprefix("Patient/"): subject["status"]
        for subject in subjects
    }
    assert on_server == statuses_from_files(trial)

    again = runner.invoke(app, [*arguments, "--patient", "itp-too-old"], env=environment)

    assert again.exit_code == 0, again.output
    assert "1 ResearchSubjects for NCT05315778 read back" in again.stdout
    assert len(research_subjects(server)) == len(EXAMPLE_PATIENTS)  # updated, not duplicated


def test_the_demo_reads_back_on_a_server_that_gives_its_own_ids(
    app: typer.Typer, runner: CliRunner, medplum: MedplumServer, trial: CompiledCriteria
) -> None:
    """Medplum's FHIR router gives the ResearchStudy, conditionally created, an id of its own
    (not the client-side one): the read-back finds the subjects through the study the server
    holds (found by its registry identifier), so every written patient is read back."""
    names = ("itp-too-old", "itp-secondary-lupus")
    examples = [("--examples", str(ROOT / "examples" / "patients" / f"{n}.json")) for n in names]
    arguments = [*COMMON, "--server", medplum.base_url, "--load-examples"]
    result = runner.invoke(app, [*arguments, *(part for pair in examples for part in pair)])

    assert result.exit_code == 0, result.output
    assert "2 ResearchSubjects for NCT05315778 read back" in result.stdout
    with medplum.http() as http:
        search = {"identifier": f"https://clinicaltrials.gov|{trial.trial.id}"}
        found = http.get("ResearchStudy", params=search).json()
    (study,) = [entry["resource"] for entry in found["entry"]]
    assert study["id"] != research_study_id(trial.trial)


def test_a_patient_that_cannot_be_pulled_is_named_and_exits_1(
    app: typer.Typer, runner: CliRunner, server: EmbeddedServer
) -> None:
    result = runner.invoke(
        app,
        [
            *COMMON,
            "--server",
            server.base_url,
            "--token-env",
            TOKEN_VARIABLE,
            "--patient",
            "nobody",
        ],
        env={TOKEN_VARIABLE: server.token},
    )
    assert result.exit_code == 1
    assert "Patient/nobody" in result.stderr
    assert "not loaded, evaluated, written or read back: Patient/nobody" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--patient", "p1"], "need --server"),
        (["--auth-config", "auth.toml"], "need --server"),
        (["--examples", "no-such-folder"], "no-such-folder: no such file or folder"),
        (["--server", "http://127.0.0.1:9/fhir", "--examples", "x"], "needs --load-examples"),
    ],
)
def test_bad_arguments_exit_2(
    app: typer.Typer, runner: CliRunner, arguments: list[str], message: str
) -> None:
    result = runner.invoke(app, [*COMMON, *arguments])
    assert result.exit_code == 2
    assert message in result.stderr


def test_without_sekmet_installed_the_demo_says_how_to_install_it(
    app: typer.Typer, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec

    def without_sekmet(name: str, package: str | None = None) -> Any:
        return None if name == "sekmet" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_sekmet)
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, COMMON)
    assert result.exit_code == 2
    assert INSTALL_HINT in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_server_outlives_an_interrupted_or_killed_demo(stop_signal: signal.Signals) -> None:
    demo_process = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH_DEMO, *COMMON],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo_process.stderr is not None
        progress = ""
        while "started sekmet-fhir" not in progress:
            line = demo_process.stderr.readline()
            assert line, f"the demo ended before starting the server:\n{progress}"
            progress += line
        port, pid, folder = started_server(progress)
        demo_process.send_signal(stop_signal)
        demo_process.wait(30)
    finally:
        if demo_process.poll() is None:
            demo_process.kill()
            demo_process.wait()
        if demo_process.stderr is not None:
            demo_process.stderr.close()

    assert demo_process.returncode != 0
    deadline = time.monotonic() + 15
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)  # after SIGKILL the server gets SIGTERM from the kernel
    assert not is_running(pid)
    assert sekmet_processes_on(port) == []
    if stop_signal == signal.SIGKILL:
        shutil.rmtree(folder, ignore_errors=True)  # a killed process cleans nothing up
    else:
        assert not folder.exists()


# --------------------------------------------------------------------------- the server itself


def test_an_error_inside_the_context_stops_the_server_and_deletes_its_folder() -> None:
    with pytest.raises(RuntimeError), EmbeddedServer() as server:
        pid, folder = server.pid, server.folder
        assert is_running(pid)
        assert server.token not in repr(server)
        raise RuntimeError("something went wrong while the server ran")
    assert not is_running(pid)
    assert not folder.exists()
    server.stop()  # stopping twice is harmless


def test_a_given_folder_is_created_when_missing_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "not" / "yet" / "sekmet"
    with EmbeddedServer(folder=folder) as server:
        assert server.folder == folder
        assert (folder / "settings.yaml").is_file()
    assert folder.is_dir()  # a folder the caller gave is kept


def test_a_given_folder_that_cannot_be_made_is_an_error_naming_it(tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder", encoding="utf-8")
    server = EmbeddedServer(folder=in_the_way / "sekmet")
    with pytest.raises(EmbeddedServerError) as caught:
        server.start()
    assert str(caught.value).startswith(f"{in_the_way / 'sekmet'}: cannot create the server's")
    assert not server.running


def test_a_server_that_does_not_answer_in_time_is_stopped() -> None:
    server = EmbeddedServer(start_timeout=0.0)
    with pytest.raises(EmbeddedServerError, match="did not answer"):
        server.start()
    assert not server.running


def test_only_transaction_bundles_are_loaded(tmp_path: Path) -> None:
    collection = tmp_path / "collection.json"
    collection.write_text('{"resourceType": "Bundle", "type": "collection", "entry": []}')
    with FhirServerClient("http://127.0.0.1:9/fhir") as client:
        loader = TransactionLoader(client)
        with pytest.raises(InputError, match="not a transaction Bundle") as raised:
            loader.load(collection)
    assert str(collection) in str(raised.value)
