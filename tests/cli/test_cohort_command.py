"""`trialsieve cohort`, registered on a typer app the way engine/cli/__init__.py registers it."""

from __future__ import annotations

import csv
import importlib
import os
import re
import stat
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
import typer
from bulk_support import capability_statement
from typer.testing import CliRunner

from engine.cli.cohort import cohort
from engine.cohort import kept_types
from engine.errors import CriteriaError, InputChangedError, Location
from engine.trial import load_trial

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


def test_an_error_is_printed_as_written_not_read_as_markup(tmp_path: Path) -> None:
    """A criteria error naming a UCUM unit in brackets ('[in_i]', '[length]') lost them to
    rich's markup ("cannot convert '' to 'g/L':  is not  /  ** 3"), as evaluate never did."""
    criteria = tmp_path / "criteria.yaml"
    text = Path(CRITERIA).read_text()
    text = text.replace('value: "< 100 g/L"', 'value: "< 100 [in_i]"', 1)
    criteria.write_text(text.replace("mappings: [../mappings]", f"mappings: [{ROOT}/mappings]"))
    arguments = ["cohort", str(criteria), "--bundles", PATIENTS, "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, arguments, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "cannot convert '[in_i]' to 'g/L': [length] is not [mass] / [length] ** 3" in (
        result.output
    )


def test_a_failed_write_is_an_error_naming_the_file_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_arguments: Any, **_options: Any) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "partitions" / "3.ndjson"))

    monkeypatch.setattr(importlib.import_module("engine.cohort"), "run_cohort", disk_full)
    arguments = ["cohort", CRITERIA, "--bundles", PATIENTS, "--out", str(tmp_path), "--quiet"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "3.ndjson: No space left on device" in result.output
    assert "run the same command again to resume" in result.output


def test_an_input_that_changed_while_read_exits_1_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a bad argument (2): the same command runs again once the input has settled."""

    def changed(*_arguments: Any, **_options: Any) -> None:
        raise InputChangedError(
            "the input file changed while the cohort ran (its size or modification time "
            "differs); nothing was kept: run the same command again once the input no longer "
            "changes",
            Location(file="export/Patient.000.ndjson"),
        )

    monkeypatch.setattr(importlib.import_module("engine.cohort"), "run_cohort", changed)
    arguments = ["cohort", CRITERIA, "--bundles", PATIENTS, "--out", str(tmp_path), "--quiet"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: export/Patient.000.ndjson: the input file changed")
    assert "run the same command again once the input no longer changes" in result.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_an_output_that_is_a_named_pipe_is_named_and_the_run_exits_1(tmp_path: Path) -> None:
    pipe = tmp_path / "cohort.csv"
    os.mkfifo(pipe)
    arguments = ["cohort", CRITERIA, "--bundles", PATIENTS, "--as-of", "2026-11-01"]
    result = CliRunner().invoke(
        app, [*arguments, "--out", str(tmp_path), "--workers", "1", "--quiet"]
    )
    assert result.exit_code == 1
    assert f"error: {pipe}: not a regular file (a named pipe)" in result.output
    assert stat.S_ISFIFO(pipe.lstat().st_mode)
    assert not (tmp_path / "summary.json").exists()


def test_a_re_run_after_an_edit_says_what_it_evaluated(tmp_path: Path) -> None:
    criteria = tmp_path / "criteria" / "trial.yaml"
    criteria.parent.mkdir()
    (tmp_path / "mappings").symlink_to(ROOT / "mappings")
    text = Path(CRITERIA).read_text(encoding="utf-8")
    criteria.write_text(text, encoding="utf-8")
    arguments = ["cohort", str(criteria), "--bundles", PATIENTS, "--as-of", "2026-11-01"]
    arguments += ["--out", str(tmp_path / "out"), "--workers", "1", "--quiet"]
    assert CliRunner().invoke(app, arguments).exit_code == 0
    edited = text.replace("age: {min: 18, max: 65}", "age: {min: 18, max: 60}", 1)
    assert edited != text
    criteria.write_text(edited, encoding="utf-8")
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "re-run from stored outcomes" in result.output
    assert "criterion outcomes evaluated" in result.output
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    # the age criterion alone, for every patient (the preview answers it for settled ones)
    assert summary["criteria_evaluated_again"] == summary["patients"] > 0


def test_watch_re_runs_after_each_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--watch: each save re-runs (only the edited criterion is evaluated) and shows what it
    moved against the run before it; criteria that do not load are reported and the watch
    goes on to the next save."""
    criteria = tmp_path / "criteria" / "trial.yaml"
    criteria.parent.mkdir()
    (tmp_path / "mappings").symlink_to(ROOT / "mappings")
    text = Path(CRITERIA).read_text(encoding="utf-8")
    criteria.write_text(text, encoding="utf-8")
    seen: list[tuple[Path, list[Path]]] = []
    out = tmp_path / "out"
    runs: list[tuple[dict[str, int], int]] = []  # statuses, and the age step's loss

    def finished_run() -> None:
        summary = orjson.loads((out / "summary.json").read_bytes())
        with open(out / "attrition.csv", encoding="utf-8", newline="") as handle:
            lost = {row["criterion"]: int(row["lost"]) for row in csv.DictReader(handle)}
        runs.append((summary["statuses"], lost["inclusion-2-age-18-65"]))

    def saves(watched: Path, mappings: list[Path]) -> Any:
        seen.append((watched, mappings))
        finished_run()
        criteria.write_text(text.replace("max: 65}", "max: 66}", 1), encoding="utf-8")
        yield {"saved"}
        finished_run()
        criteria.write_text(text.replace("max: 65}", "max: sixty}", 1), encoding="utf-8")
        yield {"saved"}
        criteria.write_text(text.replace("max: 65}", "max: 19}", 1), encoding="utf-8")
        yield {"saved"}
        finished_run()

    # the module (engine.cli re-exports the command under the module's name)
    monkeypatch.setattr(importlib.import_module("engine.cli.cohort"), "changes", saves)
    arguments = ["cohort", str(criteria), "--bundles", PATIENTS, "--as-of", "2026-11-01"]
    arguments += ["--out", str(out), "--workers", "1", "--quiet", "--watch"]
    result = CliRunner().invoke(app, arguments, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert seen == [(criteria.resolve(), [(ROOT / "mappings").resolve()])]
    assert result.output.count("Cohort written to") == 3  # the first run and two re-runs
    assert result.output.count("re-run from stored outcomes") == 2
    assert "sixty" in result.output  # the criteria that did not load, named
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["criteria_evaluated_again"] == summary["patients"]
    # a save that changes no outcome (nobody is 66), then one that moves the age step's patients
    first, unchanged, younger = runs
    assert unchanged == first
    assert result.output.count("no count moved since the last run") == 1
    assert result.output.count("Moved since the last run") == 1
    moved = result.output[result.output.index("Moved since the last run") :]
    (before, lost_before), (after, lost_after) = unchanged, younger
    assert lost_after > lost_before
    expected = [
        (status, before[status], after[status])
        for status in after
        if before[status] != after[status]
    ] + [("lost at inclusion-2-age-18-65", lost_before, lost_after)]
    for label, was, now in expected:
        assert re.search(rf"{re.escape(label)}\s*│\s*{was:,}\s*│\s*{now:,}\s*│", moved), label


def test_control_c_during_a_watch_s_re_run_says_what_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while --watch waits for a save ends the watch as usual (the last run's status);
    during a re-run it stops that run: `interrupted: ...`, exit 130, and the folder shows no
    finished run until the same command resumes it."""
    criteria = tmp_path / "criteria" / "trial.yaml"
    criteria.parent.mkdir()
    (tmp_path / "mappings").symlink_to(ROOT / "mappings")
    text = Path(CRITERIA).read_text(encoding="utf-8")
    criteria.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    arguments = ["cohort", str(criteria), "--bundles", PATIENTS, "--as-of", "2026-11-01"]
    arguments += ["--out", str(out), "--workers", "1", "--quiet"]
    module = importlib.import_module("engine.cli.cohort")

    def stopped_while_waiting(_watched: Path, _mappings: list[Path]) -> Any:
        raise KeyboardInterrupt
        yield  # a generator

    monkeypatch.setattr(module, "changes", stopped_while_waiting)
    assert CliRunner().invoke(app, [*arguments, "--watch"]).exit_code == 0

    def interrupted(*_arguments: Any, **_options: Any) -> Any:
        raise KeyboardInterrupt

    def a_save(_watched: Path, _mappings: list[Path]) -> Any:
        criteria.write_text(text.replace("max: 65}", "max: 60}", 1), encoding="utf-8")
        runner = importlib.import_module("engine.cohort.runner")
        monkeypatch.setattr(runner, "_rebuild_from_store", interrupted)  # Ctrl-C in the re-run
        yield {"saved"}

    monkeypatch.setattr(module, "changes", a_save)
    result = CliRunner().invoke(app, [*arguments, "--watch"])
    assert result.exit_code == 130, result.output
    assert result.output.splitlines()[-1] == (
        f"interrupted: 0 of 16 partitions kept in {out}; run the same command again to resume"
    ), result.output
    assert not (out / "summary.json").exists()
    monkeypatch.undo()
    assert CliRunner().invoke(app, arguments).exit_code == 0
    assert (out / "summary.json").is_file()


def test_no_store_keeps_nothing_for_re_runs_and_refuses_watch(tmp_path: Path) -> None:
    arguments = ["cohort", CRITERIA, "--bundles", PATIENTS, "--as-of", "2026-11-01"]
    arguments += ["--out", str(tmp_path / "out"), "--workers", "1", "--quiet", "--no-store"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "cohort.csv").is_file()
    assert not (tmp_path / "out" / "partitions" / "store").exists()
    refused = CliRunner().invoke(app, [*arguments, "--watch"])
    assert refused.exit_code == 2
    assert "--no-store" in refused.output


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
    assert "1 input problem (1 line, " in result.output


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
    assert "settled by the pre-filter (evaluated from their preview)" in settled.output
    assert "not_evaluated" in (tmp_path / "a" / "cohort.csv").read_text()
    full = CliRunner().invoke(
        app, [*arguments, "--out", str(tmp_path / "b"), "--workers", "1", "--full"]
    )
    assert full.exit_code == 0, full.output
    assert "settled by the pre-filter (evaluated in full)" in full.output
    assert "not_evaluated" not in (tmp_path / "b" / "cohort.csv").read_text()


def test_a_server_s_bulk_export_gives_what_its_bundles_give(
    synthea_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--server`: the export of the types the criteria read, then the same cohort as the
    Bundles the server was loaded with; a re-run reuses the export."""
    monkeypatch.setenv("TRIALSIEVE_TEST_TOKEN", synthea_server.token)
    synthea = str(ROOT / "examples" / "synthea")
    common = ["cohort", CRITERIA, "--as-of", "2026-11-01", "--quiet", "--workers", "1"]
    from_bundles = CliRunner().invoke(
        app, [*common, "--bundles", synthea, "--out", str(tmp_path / "bundles")]
    )
    assert from_bundles.exit_code == 0, from_bundles.output
    server = ["--server", synthea_server.base_url, "--token-env", "TRIALSIEVE_TEST_TOKEN"]
    export = tmp_path / "export"
    for run in ("first", "again"):
        result = CliRunner().invoke(
            app, [*common, *server, "--ndjson", str(export), "--out", str(tmp_path / run)]
        )
        assert result.exit_code == 0, result.output
        for name in ("subjects.ndjson", "issues.ndjson", "cohort.csv"):
            expected = (tmp_path / "bundles" / name).read_bytes()
            assert (tmp_path / run / name).read_bytes() == expected, name
    request = orjson.loads((export / "export.json").read_bytes())["request"]
    assert set(request["types"]) == set(kept_types(load_trial(CRITERIA)))
    refused = CliRunner().invoke(app, [*common, *server, "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "--server needs --ndjson" in refused.output


def test_types_the_server_does_not_export_are_named_and_unknown(tmp_path: Path) -> None:
    """`--server` against a server whose CapabilityStatement lacks MedicationStatement and
    whose kick-off refuses AllergyIntolerance (400, as the SMART reference Bulk Data server
    answers for a type it lacks): the export goes on without them, the command names them
    once, and criteria over them are unknown in the cohort, not "none on record"."""
    base = "http://bulk.test/fhir"
    status = f"{base}/bulk-status/1"
    text = (ROOT / "examples/patients/itp-relapsed-candidate.json").read_text()
    for entry in orjson.loads(text)["entry"]:  # urn:uuid references as an export has them
        resource = entry["resource"]
        text = text.replace(
            f'"{entry["fullUrl"]}"', f'"{resource["resourceType"]}/{resource["id"]}"'
        )
    bundle = orjson.loads(text)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    declared = [name for name in kept_types(load_trial(CRITERIA)) if name != "MedicationStatement"]
    statement = capability_statement(tuple(declared))
    refused = 'The requested resource type "AllergyIntolerance" is not available on this server'

    def kick_off(request: httpx.Request) -> httpx.Response:
        if "AllergyIntolerance" in request.url.params["_type"].split(","):
            issue = {"severity": "error", "code": "not-supported", "diagnostics": refused}
            return httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": [issue]})
        return httpx.Response(202, headers={"Content-Location": status})

    left_out = ("MedicationStatement", "AllergyIntolerance")
    sent = [name for name in by_type if name in declared and name not in left_out]
    manifest = {
        "transactionTime": "2026-11-25T10:00:00Z",
        "request": f"{base}/$export",
        "requiresAccessToken": False,
        "output": [{"type": name, "url": f"{base}/files/{name}.ndjson"} for name in sent],
        "error": [],
    }
    arguments = ["cohort", CRITERIA, "--as-of", "2026-11-01", "--quiet", "--workers", "1"]
    arguments += ["--server", base, "--ndjson", str(tmp_path / "export")]
    with respx.mock() as mock:
        mock.get(f"{base}/metadata").respond(200, json=statement)
        kickoff = mock.get(f"{base}/$export").mock(side_effect=kick_off)
        mock.get(status).respond(200, json=manifest)
        for name in sent:
            lines = b"".join(orjson.dumps(resource) + b"\n" for resource in by_type[name])
            mock.get(f"{base}/files/{name}.ndjson").respond(200, content=lines)
        mock.delete(status).respond(202)
        result = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    assert kickoff.call_count == 2
    line = (
        "export: the server does not export AllergyIntolerance, MedicationStatement (not "
        "declared in its CapabilityStatement, or refused at kick-off); criteria over them are "
        "unknown (not exported by the server)"
    )
    assert result.output.count(line) == 1, result.output
    availability = (tmp_path / "out" / "data_availability.csv").read_text()
    assert "not exported by the server" in availability
    issues = (tmp_path / "out" / "issues.ndjson").read_text()
    assert "anticoagulant or antiplatelet drug: MedicationStatement not exported by the" in issues


def test_engine_is_a_choice_of_the_registered_engines(tmp_path: Path) -> None:
    from engine.cli.options import EngineName
    from engine.cohort.engines import ENGINES

    assert {name.value for name in EngineName} == set(ENGINES)
    arguments = ["cohort", CRITERIA, "--bundles", PATIENTS, "--out", str(tmp_path)]
    wrong = CliRunner().invoke(app, [*arguments, "--engine", "spark"])
    assert wrong.exit_code == 2
    assert "'spark' is not one of" in wrong.output and "'local'" in wrong.output
    assert not (tmp_path / "cohort.csv").exists()
    shown = CliRunner().invoke(app, ["cohort", "--help"], env={"COLUMNS": "200"})
    assert "<local|dask>" in shown.output


def test_watch_goes_on_when_the_criteria_do_not_load_as_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Criteria saved broken between the run and the watch's start: the error is reported
    and the watch goes on, on the criteria file alone; its next save re-runs."""
    criteria = tmp_path / "criteria" / "trial.yaml"
    criteria.parent.mkdir()
    (tmp_path / "mappings").symlink_to(ROOT / "mappings")
    text = Path(CRITERIA).read_text(encoding="utf-8")
    criteria.write_text(text, encoding="utf-8")
    loader = importlib.import_module("engine.criteria.loader")
    load_criteria = loader.load_criteria
    failed: list[Path] = []

    def broken_once(path: Path) -> Any:
        if not failed:
            failed.append(Path(path))
            raise CriteriaError("saved broken meanwhile", Location(file=str(path), line=1))
        return load_criteria(path)

    seen: list[tuple[Path, list[Path]]] = []

    def saves(watched: Path, mappings: list[Path]) -> Any:
        seen.append((watched, mappings))
        criteria.write_text(text.replace("max: 65}", "max: 19}", 1), encoding="utf-8")
        yield {"saved"}

    cohort_module = importlib.import_module("engine.cli.cohort")
    monkeypatch.setattr(cohort_module, "changes", saves)
    original_watch = cohort_module._watch

    def watch_after_a_broken_save(*arguments: Any) -> Any:
        monkeypatch.setattr(loader, "load_criteria", broken_once)
        return original_watch(*arguments)

    monkeypatch.setattr(cohort_module, "_watch", watch_after_a_broken_save)
    arguments = ["cohort", str(criteria), "--bundles", PATIENTS, "--as-of", "2026-11-01"]
    arguments += ["--out", str(tmp_path / "out"), "--workers", "1", "--quiet", "--watch"]
    result = CliRunner().invoke(app, arguments, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "saved broken meanwhile" in result.output
    assert seen == [(criteria.resolve(), [])]
    assert result.output.count("Cohort written to") == 2
    assert "Moved since the last run" in result.output
