"""Scripted Bulk Data servers for the tests (respx): the answers of a `$export` server a test
writes step by step (kick-off, status, manifest, files, DELETE), the builders of their bodies,
a clock that the export's waits move forward, and `export`, `export_to_folder` with them.
Used by tests/sources/test_bulk_export.py and tests/conformance/test_conformance_bulk_data.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import respx

from engine.sources import BearerToken, RetryPolicy
from engine.sources.bulk_export import (
    STATE_FILE,
    BulkExportResult,
    ExportProgress,
    export_to_folder,
)

BASE = "http://bulk.test/fhir"
STATUS = f"{BASE}/bulk-status/job-1"
FILES = f"{BASE}/bulk-files/job-1"
TOKEN = "s3cret-token"


# --------------------------------------------------------------------------- helpers


def ndjson(*resources: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(resource) + b"\n" for resource in resources)


def patient(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "gender": "female"}


def condition(condition_id: str, patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": condition_id,
        "subject": {"reference": f"Patient/{patient_id}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "302215000"}]},
    }


def outcome(diagnostics: str, code: str = "processing", severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def manifest(
    output: list[tuple[str, str]],
    error: tuple[str, ...] = (),
    *,
    requires_token: bool = True,
) -> dict[str, Any]:
    return {
        "transactionTime": "2026-11-25T10:00:00Z",
        "request": f"{BASE}/$export",
        "requiresAccessToken": requires_token,
        "output": [{"type": kind, "url": url} for kind, url in output],
        "error": [{"type": "OperationOutcome", "url": url} for url in error],
    }


class FakeTime:
    """A clock that the export's sleeps move forward; the sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


DECLARED_TYPES = ("Condition", "MedicationRequest", "Observation", "Patient")


def capability_statement(types: tuple[str, ...] = DECLARED_TYPES) -> dict[str, Any]:
    """An R4 CapabilityStatement declaring `types` (what `GET metadata` answers)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server", "resource": [{"type": name} for name in types]}],
    }


@contextmanager
def scripted_server() -> Iterator[respx.MockRouter]:
    """A respx router answering `GET metadata` with `capability_statement()` (route name
    `metadata`); the test adds the rest."""
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{BASE}/metadata", name="metadata").mock(
            return_value=httpx.Response(200, json=capability_statement())
        )
        yield router


def export(
    folder: Path,
    fake_time: FakeTime,
    *,
    types: tuple[str, ...] | None = ("Condition",),
    progress: Callable[[ExportProgress], None] | None = None,
    **options: Any,
) -> BulkExportResult:
    retry = RetryPolicy(attempts=3, first_delay=0.5, give_up_after=60.0)
    return export_to_folder(
        BASE,
        folder,
        types=types,
        auth=BearerToken(TOKEN),
        retry=retry,
        progress=progress,
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        jitter=lambda: 0.5,
        **options,
    )


def kickoff_route(server: respx.MockRouter, path: str = "/fhir/$export") -> respx.Route:
    return server.get(f"http://bulk.test{path}").mock(
        return_value=httpx.Response(202, headers={"Content-Location": STATUS})
    )


def file_route(server: respx.MockRouter, name: str, content: bytes) -> respx.Route:
    return server.get(f"{FILES}/{name}").mock(return_value=httpx.Response(200, content=content))


def status_route(server: respx.MockRouter, *answers: httpx.Response) -> respx.Route:
    return server.get(STATUS).mock(side_effect=list(answers))


def delete_route(server: respx.MockRouter, status: int = 202) -> respx.Route:
    return server.delete(STATUS).mock(return_value=httpx.Response(status))


def done(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body)


def state(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((folder / STATE_FILE).read_bytes())
    return data


def no_network() -> httpx.MockTransport:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"the export asked the server: {request.method} {request.url}")

    return httpx.MockTransport(refuse)


# --------------------------------------------------------------------------- a real server

NOT_AVAILABLE = 'The requested resource type "{}" is not available on this server'
"""What the SMART on FHIR reference Bulk Data server answers (400) for a type it lacks."""


def refusing_kickoff(server: respx.MockRouter, lacking: set[str]) -> respx.Route:
    """A kick-off answering 400, as the SMART reference server does, while `_type` names a
    type of `lacking` (the first one), and 202 otherwise."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent = request.url.params["_type"].split(",")
        refused = [name for name in sent if name in lacking]
        if refused:
            return httpx.Response(400, json=outcome(NOT_AVAILABLE.format(refused[0])))
        return httpx.Response(202, headers={"Content-Location": STATUS})

    return server.get(f"{BASE}/$export").mock(side_effect=answer)
