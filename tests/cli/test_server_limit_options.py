"""`--max-pages` and `--max-answer-mib`: the FHIR server limits (`engine.fhir_http.ServerLimits`)
on the commands that read a server, validated (exit 2 naming the option) and applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import respx
from scripted_fhir import BASE, capability_statement, searchset
from typer.testing import CliRunner

from engine.cli import app
from engine.cli.options import MaxAnswerMibOption, MaxPagesOption
from engine.fhir_http import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_PAGES, ServerLimits

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = str(ROOT / "criteria" / "NCT05315778.yaml")
TRIALS = str(ROOT / "criteria")
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01", "gender": "female"}
ON_SERVER = ["evaluate", CRITERIA, "--server", BASE, "--patient", "p1", "--as-of", "2026-11-01"]


@pytest.mark.parametrize(
    "command",
    [
        ON_SERVER,
        ["demo", CRITERIA, "--server", BASE],
        ["serve", "--trials", TRIALS, "--no-auth"],
        ["cohort", CRITERIA, "--server", BASE, "--ndjson", "export"],
        ["subscribe", "--server", BASE, "--public-url", "http://127.0.0.1:8080"],
    ],
    ids=lambda command: command[0],
)
@pytest.mark.parametrize(
    ("option", "value"),
    [("--max-pages", "0"), ("--max-pages", "many"), ("--max-answer-mib", "0")],
)
def test_a_bad_limit_exits_2_naming_the_option(command: list[str], option: str, value: str) -> None:
    if option == "--max-pages" and command[0] in ("cohort", "subscribe"):
        pytest.skip("no search there: the option is not offered (docs/server.md)")
    result = CliRunner().invoke(app, [*command, option, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["evaluate", CRITERIA, "--bundle", CRITERIA, "--max-pages", "5"],
            "--max-pages and --max-answer-mib need --server",
        ),
        (["demo", CRITERIA, "--max-answer-mib", "5"], "--max-answer-mib need --server"),
        (
            ["cohort", CRITERIA, "--ndjson", "export", "--max-answer-mib", "5"],
            "--max-answer-mib needs --server",
        ),
        (
            ["subscribe", "--server", BASE, "--public-url", "http://x", "--max-pages", "5"],
            "No such option: --max-pages",
        ),
    ],
)
def test_a_limit_without_a_server_to_read_is_refused(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def endless_pages(request: httpx.Request) -> httpx.Response:
    page = int(request.url.params.get("page", "0"))
    return httpx.Response(
        200, json=searchset(PATIENT, next_url=f"{BASE}/Patient/p1/$everything?page={page + 1}")
    )


def test_evaluate_stops_a_search_at_max_pages() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as server:
        server.get("/metadata").mock(
            return_value=httpx.Response(200, json=capability_statement([], everything=True))
        )
        route = server.get("/Patient/p1/$everything").mock(side_effect=endless_pages)
        result = CliRunner().invoke(app, [*ON_SERVER, "--max-pages", "3"])
    assert result.exit_code == 1, result.output
    assert route.call_count == 3
    assert "next links do not end within the limit of 3 pages per search" in result.stderr


def test_evaluate_refuses_an_answer_beyond_max_answer_mib() -> None:
    text = {"status": "generated", "div": "<div>" + "x" * (1024 * 1024) + "</div>"}
    with respx.mock(base_url=BASE, assert_all_called=False) as server:
        server.get("/metadata").mock(
            return_value=httpx.Response(200, json=capability_statement([], everything=True))
        )
        server.get("/Patient/p1/$everything").mock(
            return_value=httpx.Response(200, json=searchset(dict(PATIENT, text=text)))
        )
        result = CliRunner().invoke(app, [*ON_SERVER, "--max-answer-mib", "1"])
    assert result.exit_code == 1, result.output
    assert "the answer is larger than 1,048,576 bytes" in result.stderr


def test_subscribe_refuses_an_answer_beyond_max_answer_mib() -> None:
    big = {"resourceType": "Subscription", "id": "s", "reason": "x" * (1024 * 1024)}
    with respx.mock(base_url=BASE, assert_all_called=False) as server:
        server.put(url__regex=r".*/Subscription/.*").mock(
            return_value=httpx.Response(200, json=big)
        )
        arguments = ["subscribe", "--server", BASE, "--public-url", "http://127.0.0.1:8080"]
        result = CliRunner().invoke(app, [*arguments, "--trials", TRIALS, "--max-answer-mib", "1"])
    assert result.exit_code == 1, result.output
    assert "the answer is larger than 1,048,576 bytes" in result.output


def test_serve_gives_the_service_its_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    settings: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: None)
    monkeypatch.setattr("engine.service.logs.configure_logging", lambda level: None)
    monkeypatch.setattr("engine.service.app.create_app", settings.append)
    arguments = ["serve", "--trials", TRIALS, "--no-auth"]
    result = CliRunner().invoke(app, [*arguments, "--max-pages", "7", "--max-answer-mib", "2"])
    assert result.exit_code == 0, result.output
    assert settings[0].fhir_limits == ServerLimits(max_pages=7, max_answer_bytes=2 * 2**20)
    result = CliRunner().invoke(app, arguments)
    assert settings[1].fhir_limits == ServerLimits(DEFAULT_MAX_PAGES, DEFAULT_MAX_ANSWER_BYTES)


def test_cohort_gives_the_export_its_answer_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Bulk export's kick-off, status and manifest answers are bounded by
    `--max-answer-mib` (its files are streamed to disk)."""
    asked: list[ServerLimits] = []

    def export_to_folder(*arguments: Any, limits: ServerLimits, **options: Any) -> Any:
        asked.append(limits)
        raise httpx.ConnectError("stop here")

    monkeypatch.setattr("engine.sources.bulk_export.export_to_folder", export_to_folder)
    arguments = ["cohort", CRITERIA, "--server", BASE, "--ndjson", str(tmp_path / "export")]
    CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "out"), "--max-answer-mib", "3"])
    assert asked == [ServerLimits(max_answer_bytes=3 * 2**20)]


def test_the_help_gives_the_defaults_the_limits_have() -> None:
    """The options' help says each default as a number (the CLI's options do not import the
    HTTP client to read it): the number must be the one `ServerLimits` applies."""
    pages_help = get_args(MaxPagesOption)[1].help
    answer_help = get_args(MaxAnswerMibOption)[1].help
    assert pages_help.endswith(f"default {DEFAULT_MAX_PAGES}.")
    assert answer_help.endswith(f"default {DEFAULT_MAX_ANSWER_BYTES // 2**20}.")
