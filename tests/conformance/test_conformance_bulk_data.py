"""FHIR Bulk Data Access IG v2.0.0 (http://hl7.org/fhir/uv/bulkdata/STU2/export.html), as
trialsieve's Bulk Data client (`engine.sources.bulk_export`) speaks it.

Every test names the section of the IG it checks: "Bulk Data Kick-off Request" (its Headers,
Query Parameters, Response - Success, Response - Error), "Bulk Data Status Request" (Response -
In-Progress Status, Response - Error Status, Response - Complete Status), "Bulk Data Delete
Request" and "File Request". The server is scripted (respx, tests/bulk_support.py): each
answer is one the IG allows, written out so that the client's side of it is pinned; the
whole flow against a real server (sekmet-fhir) is in tests/sources/test_bulk_export.py.
Not done by trialsieve, so not tested: POST kick-off, `_elements`, `_typeFilter`,
`includeAssociatedData`. The manifest's `deleted` array (`_since`) and applying an export
with `_since` onto an earlier one are tested in tests/sources/test_bulk_since.py.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from bulk_support import (
    BASE,
    DECLARED_TYPES,
    FILES,
    STATUS,
    TOKEN,
    FakeTime,
    capability_statement,
    condition,
    delete_route,
    done,
    export,
    file_route,
    kickoff_route,
    manifest,
    ndjson,
    no_network,
    outcome,
    patient,
    refusing_kickoff,
    scripted_server,
    state,
    status_route,
)

from engine.cohort.ndjson_partitions import NdjsonFolderSource
from engine.errors import ServerError
from engine.sources import ndjson_files
from engine.sources.bulk_export import ERRORS_FOLDER, ExportProgress, read_export_issues


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with scripted_server() as router:
        yield router


# --------------------------------------------------------------------------- kick-off


def test_polls_as_retry_after_asks_then_downloads_in_manifest_order(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Bulk Data Kick-off Request": GET with `Accept: application/fhir+json` and `Prefer:
    respond-async` (Headers), `_outputFormat=application/fhir+ndjson` and `_type` (Query
    Parameters); "Bulk Data Status Request": while 202 ("Response - In-Progress Status"), the
    next poll after Retry-After, else after intervals of its own, X-Progress shown; then every
    `output` file of the manifest ("File Request"), in its order, one type per file."""
    kickoff = kickoff_route(server)
    status = status_route(
        server,
        httpx.Response(202, headers={"Retry-After": "3", "X-Progress": "collecting 40%"}),
        httpx.Response(202, headers={"X-Progress": "writing"}),
        done(
            manifest(
                [
                    ("Condition", f"{FILES}/c-a.ndjson"),
                    ("Patient", f"{FILES}/p.ndjson"),
                    ("Condition", f"{FILES}/c-b.ndjson"),
                ]
            )
        ),
    )
    file_route(server, "c-a.ndjson", ndjson(condition("c1", "p1")))
    file_route(server, "p.ndjson", ndjson(patient("p1"), patient("p2")))
    file_route(server, "c-b.ndjson", ndjson(condition("c2", "p2"), condition("c3", "p2")))
    delete = delete_route(server)
    events: list[ExportProgress] = []

    result = export(tmp_path, fake_time, types=("Condition",), progress=events.append)

    sent = kickoff.calls.last.request
    assert sent.headers["Prefer"] == "respond-async"
    assert sent.headers["Accept"] == "application/fhir+json"
    assert sent.url.params["_type"] == "Condition,Patient"
    assert sent.url.params["_outputFormat"] == "application/fhir+ndjson"
    assert status.call_count == 3
    assert fake_time.waits == [3.0, 1.0]  # Retry-After, then the first interval of its own
    assert [e.message for e in events if e.stage == "waiting"] == ["collecting 40%", "writing"]
    assert [path.name for path in ndjson_files(tmp_path)] == [
        "Condition.000.ndjson",
        "Condition.001.ndjson",
        "Patient.000.ndjson",
    ]
    assert (tmp_path / "Condition.001.ndjson").read_bytes() == ndjson(
        condition("c2", "p2"), condition("c3", "p2")
    )
    assert result.resources_by_type() == {"Condition": 3, "Patient": 2}
    assert delete.call_count == 1
    assert sorted(p.patient_id for p in NdjsonFolderSource(tmp_path)) == ["p1", "p2"]


def test_a_500_on_the_status_url_is_retried(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Bulk Data Status Request", "Response - Error Status": a 5XX that does not say the
    export failed (no OperationOutcome, or one with a `transient` issue code) is asked again
    with backoff."""
    kickoff_route(server)
    status = status_route(
        server,
        httpx.Response(500, text="Internal Server Error"),
        httpx.Response(503, json=outcome("database busy", code="transient")),
        done(manifest([("Patient", f"{FILES}/p.ndjson")])),
    )
    file_route(server, "p.ndjson", ndjson(patient("p1")))
    delete_route(server)

    result = export(tmp_path, fake_time)

    assert status.call_count == 3
    assert fake_time.waits == [0.375, 0.75]  # backoff with jitter 0.5: 0.5 then 1.0 ceilings
    assert result.resources_by_type() == {"Patient": 1}


def test_a_failed_export_is_not_retried_and_names_the_diagnostics(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Bulk Data Status Request", "Response - Error Status": a 5XX whose OperationOutcome has
    no transient issue means the export failed: not asked again, the diagnostics named."""
    kickoff_route(server)
    status = status_route(
        server, httpx.Response(500, json=outcome("out of disk space", code="processing"))
    )
    with pytest.raises(ServerError) as caught:
        export(tmp_path, fake_time)
    assert status.call_count == 1 and fake_time.waits == []
    assert str(caught.value) == (
        f"{BASE}: GET bulk-status/job-1: HTTP 500 Internal Server Error: out of disk space"
    )


def test_a_kick_off_refused_with_an_operation_outcome_is_a_clear_error(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Bulk Data Kick-off Request", "Response - Error": a 4XX with an OperationOutcome is an
    error naming the request and the diagnostics (one about `_type` as a whole, naming Patient
    too, is not a type the server lacks), never carrying the token."""
    kickoff = server.get(f"{BASE}/$export").mock(
        return_value=httpx.Response(
            400, json=outcome("_type=Condition,Patient: unknown parameter", code="invalid")
        )
    )
    with pytest.raises(ServerError) as caught:
        export(tmp_path, fake_time)
    error = caught.value
    assert kickoff.call_count == 1 and error.status == 400 and error.server == BASE
    assert error.request is not None and error.request.startswith("GET $export?")
    assert "_type=Condition,Patient" in error.request
    assert str(error).endswith("HTTP 400 Bad Request: _type=Condition,Patient: unknown parameter")
    assert TOKEN not in str(error)


def test_a_kick_off_without_content_location_is_an_error(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Bulk Data Kick-off Request", "Response - Success": 202 Accepted with a Content-Location
    (the status URL); any other answer is an error, not a synchronous export taken as one."""
    server.get(f"{BASE}/$export").mock(return_value=httpx.Response(200, json={}))
    with pytest.raises(ServerError, match="expected 202 Accepted with a Content-Location"):
        export(tmp_path, fake_time)


@pytest.mark.parametrize("requires_token", [True, False])
def test_downloads_carry_the_token_only_when_the_manifest_requires_it(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path, requires_token: bool
) -> None:
    """ "Response - Complete Status" (`requiresAccessToken`) and "File Request": the files are
    asked with `Accept: application/fhir+ndjson`, and with the access token only when the
    manifest requires it."""
    kickoff = kickoff_route(server)
    status = status_route(
        server,
        done(manifest([("Patient", f"{FILES}/p.ndjson")], requires_token=requires_token)),
    )
    download = file_route(server, "p.ndjson", ndjson(patient("p1")))
    delete_route(server)

    export(tmp_path, fake_time)

    expected = f"Bearer {TOKEN}"
    assert kickoff.calls.last.request.headers["Authorization"] == expected
    assert status.calls.last.request.headers["Authorization"] == expected
    sent = download.calls.last.request
    assert sent.headers["Accept"] == "application/fhir+ndjson"
    assert sent.headers.get("Authorization") == (expected if requires_token else None)


@pytest.mark.parametrize(
    ("target", "token_follows"),
    [
        ("https://objects.example.org/bucket/p.ndjson?X-Signature=abc", False),
        (f"{FILES}/moved/p.ndjson", True),
    ],
)
def test_a_file_behind_a_redirect_is_downloaded_the_token_kept_on_the_servers_origin(
    server: respx.MockRouter,
    fake_time: FakeTime,
    tmp_path: Path,
    target: str,
    token_follows: bool,
) -> None:
    """ "File Request": the token goes with a file request only when `requiresAccessToken`
    is true. A file server in front of an object store redirects (302) to a presigned URL:
    the redirect is followed, and the token goes on only to the server's own origin, never
    to the object store."""
    kickoff_route(server)
    status_route(server, done(manifest([("Patient", f"{FILES}/p.ndjson")], requires_token=True)))
    asked = server.get(f"{FILES}/p.ndjson").mock(
        return_value=httpx.Response(302, headers={"Location": target})
    )
    moved = server.get(target).mock(return_value=httpx.Response(200, content=ndjson(patient("p1"))))
    delete_route(server)

    result = export(tmp_path, fake_time)

    assert [file.resources for file in result.files] == [1]
    assert asked.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    sent = moved.calls.last.request.headers.get("Authorization")
    assert sent == (f"Bearer {TOKEN}" if token_follows else None)


def test_the_manifest_error_files_are_kept_apart_and_their_issues_returned(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Response - Complete Status": the `error` array's files are OperationOutcome NDJSON;
    they are downloaded apart from the data, and each issue is returned (a line that is no
    OperationOutcome becomes an issue saying so)."""
    kickoff_route(server)
    status_route(
        server,
        done(
            manifest(
                [("Patient", f"{FILES}/p.ndjson")],
                (f"{FILES}/errors.ndjson",),
            )
        ),
    )
    file_route(server, "p.ndjson", ndjson(patient("p1")))
    file_route(
        server,
        "errors.ndjson",
        ndjson(
            outcome("Observation/o9: cannot be serialised", code="exception"),
            outcome("_since ignored for Condition", code="informational", severity="warning"),
        )
        + b"not json\n",
    )
    delete_route(server)

    result = export(tmp_path, fake_time)

    error_file = tmp_path / ERRORS_FOLDER / "OperationOutcome.000.ndjson.txt"
    assert [(i.severity, i.code, i.diagnostics, i.line) for i in result.issues] == [
        ("error", "exception", "Observation/o9: cannot be serialised", 1),
        ("warning", "informational", "_since ignored for Condition", 2),
        ("error", "invalid", "the line is not an OperationOutcome", 3),
    ]
    assert all(issue.file == error_file for issue in result.issues)
    assert str(result.issues[0]).startswith(f"{error_file}:1: error (exception): Observation/o9")
    assert ndjson_files(tmp_path) == [tmp_path / "Patient.000.ndjson"]
    assert [p.patient_id for p in NdjsonFolderSource(tmp_path)] == ["p1"]
    # The issues come back with the result of a call that asks the server nothing.
    again = export(tmp_path, fake_time, transport=no_network())
    assert again.reused and again.issues == result.issues
    assert read_export_issues(error_file) == list(result.issues)


def test_a_kick_off_refused_for_a_type_is_asked_again_without_it(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Bulk Data Kick-off Request", "Query Parameters" (`_type`: a server SHOULD answer an
    error with an OperationOutcome for types it does not support) and "Response - Error":
    the kick-off is sent again without the types the OperationOutcome names, which are
    recorded as left out."""
    # the statement declares them all (as the reference server's does), the kick-off refuses two
    server.routes["metadata"].mock(
        return_value=httpx.Response(
            200, json=capability_statement((*DECLARED_TYPES, "MedicationStatement"))
        )
    )
    kickoff = refusing_kickoff(server, {"MedicationStatement", "Observation"})
    status_route(server, done(manifest([("Patient", f"{FILES}/p.ndjson")])))
    file_route(server, "p.ndjson", ndjson(patient("p1")))
    delete_route(server)

    result = export(tmp_path, fake_time, types=("Condition", "MedicationStatement", "Observation"))

    assert [call.request.url.params["_type"] for call in kickoff.calls] == [
        "Condition,MedicationStatement,Observation,Patient",
        "Condition,Observation,Patient",
        "Condition,Patient",
    ]
    assert result.types_left_out == ("MedicationStatement", "Observation")
    assert state(tmp_path)["types_left_out"] == ["MedicationStatement", "Observation"]
    assert fake_time.waits == []  # a refusal is not retried as it was: no backoff


# --------------------------------------------------------------------------- status


def test_a_status_request_answered_429_waits_as_retry_after_asks(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Bulk Data Status Request": a server SHOULD answer a client that polls too often with
    429 Too Many Requests and Retry-After (seconds or an HTTP date); the client waits as
    asked and polls again, without taking it for the export failing."""
    kickoff_route(server)
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    status = status_route(
        server,
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(429, headers={"Retry-After": later}),
        done(manifest([("Patient", f"{FILES}/p.ndjson")])),
    )
    file_route(server, "p.ndjson", ndjson(patient("p1")))
    delete_route(server)

    result = export(tmp_path, fake_time)

    assert status.call_count == 3
    assert fake_time.waits[0] == 7.0
    assert 25.0 < fake_time.waits[1] <= 30.0, fake_time.waits
    assert result.resources_by_type() == {"Patient": 1}


def test_an_error_status_is_the_export_failing_with_the_servers_diagnostics(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Bulk Data Status Request", "Response - Error Status": a 4XX (or a 5XX without a
    transient issue) with an OperationOutcome means the export failed; the error names the
    server, the request and the diagnostics, and the status URL is asked once."""
    kickoff_route(server)
    status = status_route(
        server, httpx.Response(400, json=outcome("the export was cancelled", code="processing"))
    )
    with pytest.raises(ServerError) as caught:
        export(tmp_path, fake_time)
    assert status.call_count == 1 and caught.value.status == 400
    assert str(caught.value) == (
        f"{BASE}: GET bulk-status/job-1: HTTP 400 Bad Request: the export was cancelled"
    )


def test_the_complete_status_manifest_is_read_field_by_field(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Response - Complete Status": `transactionTime` is the export's time (returned and
    kept); `request` is kept with the manifest; each `output` item's `type` and `url` name
    one file of that type (`count`, optional, is only compared with the lines); an empty
    `error` array is no error; `requiresAccessToken: false` sends no token with the files."""
    kickoff_route(server)
    body = manifest(
        [("Patient", f"{FILES}/p.ndjson"), ("Condition", f"{FILES}/c.ndjson")],
        requires_token=False,
    )
    body["output"][0]["count"] = 2
    status_route(server, done(body))
    patients = file_route(server, "p.ndjson", ndjson(patient("p1"), patient("p2")))
    file_route(server, "c.ndjson", ndjson(condition("c1", "p1")))
    delete_route(server)

    result = export(tmp_path, fake_time)

    assert result.transaction_time == "2026-11-25T10:00:00Z" and result.issues == ()
    kept = state(tmp_path)["manifest"]
    assert kept["request"] == f"{BASE}/$export" and kept["requiresAccessToken"] is False
    assert [(file.type, file.url, file.resources) for file in result.files] == [
        ("Patient", f"{FILES}/p.ndjson", 2),
        ("Condition", f"{FILES}/c.ndjson", 1),
    ]
    assert "Authorization" not in patients.calls.last.request.headers


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda body: body.pop("output"), "the completion manifest has no output list"),
        (lambda body: body["output"][0].pop("url"), "output[0] needs a resource type and a url"),
        (lambda body: body["output"][0].pop("type"), "output[0] needs a resource type and a url"),
        (
            lambda body: body.update(error={"url": "x"}),
            "the completion manifest's error is not a list",
        ),
        (
            lambda body: body.pop("transactionTime"),
            "the completion manifest's transactionTime is missing, not a FHIR instant",
        ),
        (
            lambda body: body.update(transactionTime="2026-11-25"),
            "the completion manifest's transactionTime is '2026-11-25', not a FHIR instant",
        ),
        (
            lambda body: body.pop("requiresAccessToken"),
            "the completion manifest's requiresAccessToken is missing",
        ),
        (
            lambda body: body.update(requiresAccessToken="false"),
            "the completion manifest's requiresAccessToken is not true or false",
        ),
        (lambda body: body.pop("request"), "the completion manifest has no request"),
        (lambda body: body.pop("error"), "the completion manifest has no error list"),
    ],
)
def test_a_manifest_without_what_the_ig_requires_is_an_error(
    server: respx.MockRouter,
    fake_time: FakeTime,
    tmp_path: Path,
    change: Callable[[dict[str, Any]], object],
    message: str,
) -> None:
    """ "Response - Complete Status": `transactionTime` (a FHIR instant: the next `_since`),
    `request`, `requiresAccessToken` (a boolean), `output` (each item with `type` and `url`)
    and `error` (an array, empty when there were none) are required. A manifest without them
    is refused with what is wrong, nothing downloaded (a missing `requiresAccessToken` is not
    read as false)."""
    kickoff_route(server)
    body = manifest([("Patient", f"{FILES}/p.ndjson")])
    change(body)
    status_route(server, done(body))
    download = file_route(server, "p.ndjson", ndjson(patient("p1")))
    with pytest.raises(ServerError, match=re.escape(message)):
        export(tmp_path, fake_time)
    assert download.call_count == 0


# --------------------------------------------------------------------------- delete


def test_the_job_is_deleted_once_every_file_is_down(
    server: respx.MockRouter, fake_time: FakeTime, tmp_path: Path
) -> None:
    """ "Bulk Data Delete Request": after the files are retrieved a client MAY send DELETE to
    the status URL, a signal that the server may remove them. trialsieve does, after the
    last file and once (a second call with the same folder asks nothing), and a server that
    refuses (here 405) is not an error."""
    order: list[str] = []

    def answer(name: str, response: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
        def respond(request: httpx.Request) -> httpx.Response:
            order.append(name)
            return response

        return respond

    kickoff_route(server)
    status_route(
        server,
        done(manifest([("Patient", f"{FILES}/p.ndjson"), ("Condition", f"{FILES}/c.ndjson")])),
    )
    server.get(f"{FILES}/p.ndjson").mock(
        side_effect=answer("p.ndjson", httpx.Response(200, content=ndjson(patient("p1"))))
    )
    server.get(f"{FILES}/c.ndjson").mock(
        side_effect=answer("c.ndjson", httpx.Response(200, content=ndjson(condition("c", "p1"))))
    )
    server.delete(STATUS).mock(side_effect=answer("DELETE", httpx.Response(405)))

    export(tmp_path, fake_time)
    export(tmp_path, fake_time)

    assert order == ["p.ndjson", "c.ndjson", "DELETE"]
    assert state(tmp_path)["released"] is True
