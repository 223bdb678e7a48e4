"""`trialsieve cohort --since`: an incremental Bulk Data export (`_since`) holds only what
changed (Bulk Data Access IG v2.0.0, "Query Parameters", `_since`: "Resources will be
included in the response if their state has changed after the supplied time"), so a cohort
is never evaluated over one alone, as if it were complete records."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx
import typer
from bulk_support import (
    BASE,
    FILES,
    FakeTime,
    condition,
    delete_route,
    done,
    export,
    file_route,
    kickoff_route,
    manifest,
    ndjson,
    patient,
    scripted_server,
    status_route,
)
from typer.testing import CliRunner

from engine.cli.cohort import cohort
from engine.cohort import kept_types
from engine.trial import load_trial

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = str(ROOT / "criteria" / "NCT05315778.yaml")
SINCE = "2026-11-01T00:00:00Z"

app = typer.Typer()
app.command()(cohort)


@app.command()
def version() -> None:
    """A second command, so that `cohort` is a subcommand as in the real app."""


def _exported(folder: Path, since: str | None) -> None:
    """`folder` filled by an export from the scripted server (with `_since` when given)."""
    with scripted_server() as server:
        kickoff_route(server)
        outputs = [("Patient", f"{FILES}/p.ndjson"), ("Condition", f"{FILES}/c.ndjson")]
        status_route(server, done(manifest(outputs)))
        file_route(server, "p.ndjson", ndjson(patient("p1")))
        file_route(server, "c.ndjson", ndjson(condition("c1", "p1")))
        delete_route(server)
        export(folder, FakeTime(), since=since)


def _contents(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _arguments(out: Path) -> list[str]:
    options = ["--as-of", "2026-11-20", "--quiet", "--workers", "1", "--out", str(out)]
    return ["cohort", CRITERIA, *options]


def test_a_cohort_over_an_incremental_export_alone_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    _exported(folder, SINCE)
    result = CliRunner().invoke(app, [*_arguments(tmp_path / "out"), "--ndjson", str(folder)])
    assert result.exit_code == 2, result.output
    assert "only an incremental export (--since 2026-11-01T00:00:00Z)" in result.output
    assert "none on record" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_since_into_a_folder_without_a_complete_export_asks_the_server_nothing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "export"
    arguments = [*_arguments(tmp_path / "out"), "--server", BASE, "--ndjson", str(folder)]
    with respx.mock(assert_all_called=False) as server:
        anything = server.route().mock(return_value=httpx.Response(500))
        result = CliRunner().invoke(app, [*arguments, "--since", SINCE])
    assert result.exit_code == 2, result.output
    assert f"--since {SINCE}: the folder holds no complete export" in result.output
    assert "export without --since into this folder first" in result.output
    assert not anything.called
    assert not (tmp_path / "out").exists()
    assert not list(folder.rglob("*.ndjson"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--since", "yesterday"], "_since 'yesterday' is not a FHIR instant"),
        (["--export-level", "group"], "a group export needs a Group id (--group ID): none given"),
    ],
)
def test_bad_export_arguments_are_named_before_the_folder_or_the_server(
    tmp_path: Path, options: list[str], message: str
) -> None:
    """A --since that is no instant was reported as a folder without a complete export, and a
    group export without --group as "needs a Group id, not None"."""
    folder = tmp_path / "export"
    arguments = [*_arguments(tmp_path / "out"), "--server", BASE, "--ndjson", str(folder)]
    with respx.mock(assert_all_called=False) as server:
        anything = server.route().mock(return_value=httpx.Response(500))
        result = CliRunner().invoke(app, [*arguments, *options])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {message}"), result.output
    assert not anything.called
    assert not (tmp_path / "out").exists()


def test_since_applies_the_changes_onto_the_complete_export(tmp_path: Path) -> None:
    """The base export and the changes since (a Condition added, the other deleted) from the
    scripted server: the cohort reads the merged folder."""
    folder = tmp_path / "export"
    types = kept_types(load_trial(CRITERIA))
    with scripted_server() as server:
        kickoff_route(server)
        outputs = [("Patient", f"{FILES}/p.ndjson"), ("Condition", f"{FILES}/c.ndjson")]
        status_route(server, done(manifest(outputs)))
        file_route(server, "p.ndjson", ndjson(patient("p1"), patient("p2")))
        file_route(server, "c.ndjson", ndjson(condition("c1", "p1"), condition("c2", "p2")))
        delete_route(server)
        export(folder, FakeTime(), types=types)
    changes = manifest([("Condition", f"{FILES}/changed.ndjson")], requires_token=False)
    changes["deleted"] = [{"type": "Bundle", "url": f"{FILES}/deleted.ndjson"}]
    deleted = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Condition/c2"}}],
    }
    arguments = [*_arguments(tmp_path / "out"), "--server", BASE, "--ndjson", str(folder)]
    with scripted_server() as server:
        kickoff = kickoff_route(server)
        status_route(server, done(changes))
        file_route(server, "changed.ndjson", ndjson(condition("c3", "p2")))
        file_route(server, "deleted.ndjson", ndjson(deleted))
        delete_route(server)
        result = CliRunner().invoke(app, [*arguments, "--since", SINCE])
    assert result.exit_code == 0, result.output
    assert kickoff.calls.last.request.url.params["_since"] == SINCE
    conditions = (folder / "Condition.000.ndjson").read_bytes()
    assert conditions == ndjson(condition("c1", "p1"), condition("c3", "p2"))
    assert (tmp_path / "out" / "cohort.csv").read_text().count("\n") == 3
