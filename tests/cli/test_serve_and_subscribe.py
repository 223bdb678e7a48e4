"""`trialsieve serve` and `trialsieve subscribe` as command functions (registered here the way
engine/cli/__init__.py registers them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
import typer
from service_support import smart_config
from typer.testing import CliRunner

from engine.cli.serve import serve
from engine.cli.subscribe import subscribe

CRITERIA = Path(__file__).resolve().parents[2] / "criteria"


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(serve)
    app.command()(subscribe)
    return app


def test_serve_runs_uvicorn_on_loopback(cli: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: calls.append(options))
    monkeypatch.setattr(
        "engine.service.logs.configure_logging", lambda level: None
    )  # keep pytest's
    result = CliRunner().invoke(
        cli,
        ["serve", "--trials", str(CRITERIA), "--api-token-env", "API_TOKEN", "--port", "8099"],
        env={"API_TOKEN": "secret"},
    )
    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "host": "127.0.0.1",
            "port": 8099,
            "log_config": None,
            "access_log": False,
            "limit_concurrency": 2000,  # connections; requests: the app's 1000 (docs/service.md)
            "timeout_keep_alive": 5,
        }
    ]


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["serve", "--trials", "no-such-folder", "--no-auth"], "not a folder of criteria files"),
        (["serve", "--trials", str(CRITERIA)], "no API authentication configured"),
        (
            ["serve", "--trials", str(CRITERIA), "--api-token-env", "A", "--api-token-file", "f"],
            "not both",
        ),
        (["serve", "--trials", str(CRITERIA), "--api-token-env", "UNSET_VARIABLE_X"], "UNSET"),
        (
            ["serve", "--trials", str(CRITERIA), "--no-auth", "--auth-config", "auth.toml"],
            "give --server too",
        ),
        (
            [
                *("serve", "--trials", str(CRITERIA), "--no-auth", "--server"),
                *("http://127.0.0.1:9/fhir", "--auth-config", "no-such-auth.toml"),
            ],
            "cannot read the auth config",
        ),
        (
            ["subscribe", "--server", "http://127.0.0.1:9/fhir", "--public-url", "ftp://x"],
            "--public-url must be an http(s) URL",
        ),
    ],
)
def test_bad_options_exit_2(cli: typer.Typer, arguments: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 2, result.output
    assert words in result.output


def test_serve_refuses_a_short_report_link_key(cli: typer.Typer) -> None:
    """The key that signs the CDS cards' report links: 32 characters at least (RFC 2104
    section 3), else the start stops with exit 2 naming where the key was read."""
    arguments = ["serve", "--trials", str(CRITERIA), "--api-token-env", "API_TOKEN"]
    result = CliRunner().invoke(
        cli,
        [*arguments, "--report-link-key-env", "LINK_KEY"],
        env={"API_TOKEN": "secret", "LINK_KEY": "short"},
    )
    assert result.exit_code == 2, result.output
    assert "at least 32 characters" in result.output
    assert "LINK_KEY" in result.output
    both = CliRunner().invoke(
        cli,
        [*arguments, "--report-link-key-env", "A", "--report-link-key-file", "f"],
        env={"API_TOKEN": "secret"},
    )
    assert both.exit_code == 2 and "not both" in both.output


def test_subscribe_reports_a_refusal(cli: typer.Typer) -> None:
    refusal = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": "no rest-hooks here"}],
    }
    with respx.mock() as mock:
        mock.put(url__regex=r"http://fhir\.invalid/r4/Subscription/.*").mock(
            return_value=httpx.Response(400, json=refusal)
        )
        result = CliRunner().invoke(
            cli,
            [
                "subscribe",
                "--server",
                "http://fhir.invalid/r4",
                "--public-url",
                "http://127.0.0.1:8080",
                "--trials",
                str(CRITERIA),
            ],
        )
    assert result.exit_code == 1, result.output
    assert "http://fhir.invalid/r4" in result.output
    assert "no rest-hooks here" in result.output


def test_subscribe_authenticates_with_smart_backend_services(
    cli: typer.Typer, tmp_path: Path
) -> None:
    """`subscribe --auth-config`: the Subscriptions are registered with the access token SMART
    Backend Services grants (as `evaluate --server --auth-config`), not only a static token."""
    token_url = "https://auth.example.org/token"
    config, _key = smart_config(tmp_path, token_url)
    bearers: set[str | None] = set()
    registered: list[dict[str, str]] = []

    def stored(request: httpx.Request) -> httpx.Response:
        bearers.add(request.headers.get("authorization"))
        registered.append({**orjson.loads(request.content), "status": "active"})
        return httpx.Response(200, json=registered[-1])

    with respx.mock() as mock:
        mock.post(token_url).mock(
            return_value=httpx.Response(
                200, json={"access_token": "smart-1", "token_type": "Bearer", "expires_in": 300}
            )
        )
        mock.put(url__regex=r"http://fhir\.invalid/r4/Subscription/.*").mock(side_effect=stored)
        mock.get(url__regex=r"http://fhir\.invalid/r4/Subscription/.*").mock(
            side_effect=lambda request: (
                bearers.add(request.headers.get("authorization")) or httpx.Response(404)
            )
        )
        result = CliRunner().invoke(
            cli,
            [
                *("subscribe", "--server", "http://fhir.invalid/r4"),
                *("--public-url", "http://127.0.0.1:8080", "--trials", str(CRITERIA)),
                *("--auth-config", str(config)),
            ],
        )
    assert result.exit_code == 0, result.output
    assert bearers == {"Bearer smart-1"}
    # each Subscription's id and criteria in full (folded in a narrow table, never cut)
    rows = [line.split("│")[1:4] for line in result.output.splitlines() if "│" in line]
    assert "…" not in result.output
    for column, field in ((0, "id"), (1, "criteria")):
        written = "".join(cells[column].strip() for cells in rows)
        prefix = "Subscription/" if field == "id" else ""
        assert written == "".join(prefix + subscription[field] for subscription in registered)
