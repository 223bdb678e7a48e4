"""Retries, time bounds, paging, auth and fallbacks of the FHIR server client, source and sink,
against scripted HTTP answers (respx): the failures a real server rarely shows on demand.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from scripted_fhir import BASE, capability_statement, searchset

from engine.errors import ServerError
from engine.evaluate import CompiledCriteria, evaluate_patient
from engine.fhir_http import (
    DEFAULT_MAX_PAGES,
    ServerCapabilities,
    ServerLimits,
    outcome_diagnostics,
)
from engine.record import build_record
from engine.sinks import FhirServerSink, server_transaction
from engine.sources import (
    BearerToken,
    FhirServerClient,
    FhirServerSource,
    RetryPolicy,
    read_bundle_file,
)

TOKEN = "s3cret-token"
ROOT = Path(__file__).resolve().parents[2]
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female"}


def statement(
    resources: dict[str, dict[str, Any]], *, version: str = "4.0.1", everything: bool = False
) -> dict[str, Any]:
    """A CapabilityStatement declaring the given types (searchParam names, flags)."""
    declared = []
    for resource_type, options in resources.items():
        entry: dict[str, Any] = {
            "type": resource_type,
            "searchParam": [{"name": name, "type": "token"} for name in options.get("params", ())],
        }
        entry.update({k: v for k, v in options.items() if k != "params"})
        declared.append(entry)
    return capability_statement(
        declared, everything=everything, patient_interactions=(), version=version
    )


class Waits:
    """Records the sleeps the client asks for instead of sleeping."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@pytest.fixture
def waits() -> Waits:
    return Waits()


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def client(waits: Waits, **retry: Any) -> FhirServerClient:
    policy = RetryPolicy(**{"attempts": 4, "first_delay": 0.5, "give_up_after": 60.0, **retry})
    return FhirServerClient(
        BASE, auth=BearerToken(TOKEN), retry=policy, sleep=waits, jitter=lambda: 0.5
    )


# --------------------------------------------------------------------------- retries


def test_429_waits_as_long_as_retry_after_says(server: respx.MockRouter, waits: Waits) -> None:
    route = server.get("/Patient/p1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(200, json=PATIENT),
        ]
    )
    assert client(waits).read("Patient", "p1") == PATIENT
    assert route.call_count == 2
    assert waits.seconds == [2.0]


def test_retry_after_may_be_a_date(server: respx.MockRouter, waits: Waits) -> None:
    in_three_seconds = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    later = email.utils.format_datetime(in_three_seconds, usegmt=True)
    server.get("/Patient/p1").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": later}),
            httpx.Response(200, json=PATIENT),
        ]
    )
    assert client(waits).read("Patient", "p1") == PATIENT
    assert len(waits.seconds) == 1
    assert 1.0 < waits.seconds[0] <= 3.0


@pytest.mark.parametrize("asked", ["Wed, 21 Oct 2015 07:28:00 GMT", "0"])
def test_a_retry_after_asking_no_wait_gets_the_backoff(
    server: respx.MockRouter, waits: Waits, asked: str
) -> None:
    """RFC 9110 §10.2.3 leaves a date in the past (the server's clock behind) or 0 to the
    client: trialsieve takes it as no wait asked and backs off as without Retry-After, never
    retrying at once a server that has just said 429."""
    route = server.get("/Patient/p1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": asked}),
            httpx.Response(429, headers={"Retry-After": asked}),
            httpx.Response(200, json=PATIENT),
        ]
    )
    assert client(waits).read("Patient", "p1") == PATIENT
    assert route.call_count == 3
    assert waits.seconds == [0.375, 0.75]


def test_503_is_retried_with_exponential_backoff(server: respx.MockRouter, waits: Waits) -> None:
    route = server.get("/Patient/p1").mock(
        side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200, json=PATIENT)]
    )
    assert client(waits).read("Patient", "p1") == PATIENT
    assert route.call_count == 3
    # Half the ceiling plus jitter (0.5) times the other half: 0.5 s, then 1 s ceilings.
    assert waits.seconds == [0.375, 0.75]


def test_connection_errors_are_retried(server: respx.MockRouter, waits: Waits) -> None:
    server.get("/Patient/p1").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=PATIENT)]
    )
    assert client(waits).read("Patient", "p1") == PATIENT
    assert len(waits.seconds) == 1


def test_timeouts_end_in_an_error_naming_server_and_request(
    server: respx.MockRouter, waits: Waits
) -> None:
    route = server.get("/Patient/p1/$everything").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ServerError) as caught:
        client(waits, attempts=3).json("GET", "Patient/p1/$everything", params={"_count": "50"})
    assert route.call_count == 3
    assert str(caught.value) == (
        f"{BASE}: GET Patient/p1/$everything?_count=50: "
        "no answer in time (ReadTimeout); gave up after 3 attempts"
    )
    assert caught.value.status is None
    assert caught.value.timed_out


def test_a_retry_after_beyond_the_time_bound_gives_up_at_once(
    server: respx.MockRouter, waits: Waits
) -> None:
    route = server.get("/Patient/p1").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "600"})
    )
    with pytest.raises(ServerError) as caught:
        client(waits, give_up_after=60.0).read("Patient", "p1")
    assert route.call_count == 1
    assert waits.seconds == []
    assert "HTTP 429 Too Many Requests; gave up after 1 attempt: " in str(caught.value)
    assert "beyond the 60 s bound" in str(caught.value)


def test_client_errors_are_not_retried_and_carry_the_outcome(
    server: respx.MockRouter, waits: Waits
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "no such thing"}],
    }
    route = server.get("/Observation").mock(return_value=httpx.Response(400, json=outcome))
    with pytest.raises(ServerError) as caught:
        list(client(waits).pages("Observation", {"patient": "Patient/p1"}))
    assert route.call_count == 1
    assert route.calls.last.request.headers["Prefer"] == "handling=strict"
    assert caught.value.status == 400
    assert str(caught.value) == (
        f"{BASE}: GET Observation?patient=Patient/p1: HTTP 400 Bad Request: no such thing"
    )


def test_an_answer_that_is_not_json_is_an_error(server: respx.MockRouter, waits: Waits) -> None:
    server.get("/Patient/p1").mock(
        return_value=httpx.Response(
            200, text="<html>login</html>", headers={"Content-Type": "text/html"}
        )
    )
    with pytest.raises(ServerError) as caught:
        client(waits).read("Patient", "p1")
    assert str(caught.value) == (
        f"{BASE}: GET Patient/p1: the answer is text/html, not FHIR JSON (application/fhir+json)"
    )
    assert caught.value.status is None


# --------------------------------------------------------------------------- answer bounds


class FakeClock:
    """Monotonic seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Trickle(httpx.SyncByteStream):
    """A body that arrives a few bytes at a time, `seconds` apart on `clock`."""

    def __init__(self, body: bytes, clock: FakeClock, seconds: float) -> None:
        self.body, self.clock, self.seconds = body, clock, seconds

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), 8):
            self.clock.now += self.seconds
            yield self.body[start : start + 8]


def test_an_answer_that_trickles_in_is_cut_at_the_attempt_timeout(
    server: respx.MockRouter, waits: Waits
) -> None:
    """httpx's timeout bounds each read, so bytes arriving every 0.4 s never trip a 1 s
    timeout; the attempt's whole answer is bounded too, and the attempt retried."""
    clock = FakeClock()
    body = orjson.dumps(searchset(OBSERVATION))
    route = server.get("/Observation").mock(
        side_effect=lambda request: httpx.Response(200, stream=Trickle(body, clock, 0.4))
    )
    policy = RetryPolicy(attempts=2, timeout=1.0, give_up_after=10.0)
    slow = FhirServerClient(BASE, retry=policy, sleep=waits, clock=clock, jitter=lambda: 0.5)
    with pytest.raises(ServerError) as caught:
        list(slow.pages("Observation"))
    assert route.call_count == 2
    assert caught.value.timed_out
    assert str(caught.value) == (
        f"{BASE}: GET Observation: the answer was not complete within the 1 s an attempt may "
        "take (24 bytes had come); gave up after 2 attempts"
    )


def test_an_answer_larger_than_the_limit_is_not_read_whole(
    server: respx.MockRouter, waits: Waits
) -> None:
    big = dict(PATIENT, text={"status": "generated", "div": "<div>" + "x" * 5000 + "</div>"})
    route = server.get("/Patient/p1").mock(return_value=httpx.Response(200, json=big))
    small = FhirServerClient(BASE, limits=ServerLimits(max_answer_bytes=4096), sleep=waits)
    with pytest.raises(ServerError) as caught:
        small.read("Patient", "p1")
    assert route.call_count == 1  # not retried
    assert caught.value.status is None
    assert str(caught.value) == (
        f"{BASE}: GET Patient/p1: the answer is larger than 4,096 bytes "
        "(ServerLimits.max_answer_bytes); not read further"
    )
    assert FhirServerClient(BASE).limits.max_answer_bytes == 128 * 1024 * 1024


def test_a_compressed_answer_is_read_decoded(server: respx.MockRouter, waits: Waits) -> None:
    compressed = gzip.compress(orjson.dumps(PATIENT))
    server.get("/Patient/p1").mock(
        return_value=httpx.Response(
            200,
            content=compressed,
            headers={"Content-Type": "application/fhir+json", "Content-Encoding": "gzip"},
        )
    )
    assert client(waits).read("Patient", "p1") == PATIENT


class _DripHandler(BaseHTTPRequestHandler):
    """Sends a searchset one byte every 50 ms (about 4 s in all)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        body = orjson.dumps(searchset())
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:  # the client gave up and closed the connection
            pass


def test_a_server_that_drips_its_answer_is_given_up_within_the_bounds() -> None:
    """Over a real socket (loopback): one attempt of 0.5 s, no retry, gives up in well under
    the 4 s the answer would take."""
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), _DripHandler)
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{http_server.server_address[1]}/fhir"
        policy = RetryPolicy(attempts=1, timeout=0.5, give_up_after=1.0)
        started = time.monotonic()
        with (
            FhirServerClient(base, retry=policy) as dripping,
            pytest.raises(ServerError, match=r"was not complete within the 0\.5 s") as caught,
        ):
            list(dripping.pages("Observation"))
        assert time.monotonic() - started < 1.5
        assert caught.value.timed_out
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join()


# --------------------------------------------------------------------------- paging


def test_next_links_are_followed(server: respx.MockRouter, waits: Waits) -> None:
    first = {"resourceType": "Observation", "id": "o1", "status": "final"}
    second = {"resourceType": "Observation", "id": "o2", "status": "final"}
    server.get("/Observation", params={"_offset": "1"}).mock(
        return_value=httpx.Response(200, json=searchset(second))
    )
    server.get("/Observation").mock(
        return_value=httpx.Response(
            200, json=searchset(first, next_url=f"{BASE}/Observation?_count=1&_offset=1")
        )
    )
    pages = list(client(waits).pages("Observation", {"_count": "1"}))
    assert [page["entry"][0]["resource"]["id"] for page in pages] == ["o1", "o2"]


def test_a_next_link_outside_the_base_url_is_refused(
    server: respx.MockRouter, waits: Waits
) -> None:
    # sekmet started without SEKMET_BASE_URL writes links to its default base URL.
    elsewhere = "http://localhost:8090/fhir/Observation?_count=1&_offset=1"
    server.get("/Observation").mock(
        return_value=httpx.Response(200, json=searchset(next_url=elsewhere))
    )
    with pytest.raises(ServerError) as caught:
        list(client(waits).pages("Observation", {"_count": "1"}))
    assert f"the next link {elsewhere} is outside the base URL {BASE}" in str(caught.value)
    assert "SEKMET_BASE_URL" in str(caught.value)


def test_a_next_link_back_to_an_earlier_page_is_refused(
    server: respx.MockRouter, waits: Waits
) -> None:
    loop = f"{BASE}/Observation?_count=1"
    server.get("/Observation").mock(return_value=httpx.Response(200, json=searchset(next_url=loop)))
    with pytest.raises(ServerError, match="repeats an earlier page"):
        list(client(waits).pages("Observation", {"_count": "1"}))


def endless_pages(request: httpx.Request) -> httpx.Response:
    """A page whose `next` link is always a new page: the server's links never end."""
    page = int(request.url.params.get("page", "0"))
    return httpx.Response(
        200, json=searchset(next_url=f"{BASE}/Observation?patient=Patient/p1&page={page + 1}")
    )


def test_a_search_whose_next_links_never_end_stops_at_the_page_limit(
    server: respx.MockRouter, waits: Waits
) -> None:
    route = server.get("/Observation").mock(side_effect=endless_pages)
    limited = FhirServerClient(BASE, limits=ServerLimits(max_pages=5), sleep=waits)
    pages = 0
    with pytest.raises(ServerError) as caught:
        for _page in limited.pages("Observation", {"patient": "Patient/p1"}):
            pages += 1
    assert pages == 5
    assert route.call_count == 5
    assert str(caught.value) == (
        f"{BASE}: GET Observation?patient=Patient/p1: stopped after 5 pages: the server's "
        "next links do not end within the limit of 5 pages per search"
    )


def test_every_client_has_a_page_limit_by_default() -> None:
    assert FhirServerClient(BASE).limits.max_pages == DEFAULT_MAX_PAGES == 1000
    with pytest.raises(ValueError, match="max_pages must be at least 1"):
        ServerLimits(max_pages=0)


def test_a_search_answered_with_another_bundle_type_is_refused(
    server: respx.MockRouter, waits: Waits
) -> None:
    server.get("/Observation").mock(
        return_value=httpx.Response(200, json={"resourceType": "Bundle", "type": "history"})
    )
    with pytest.raises(ServerError, match="expected a searchset Bundle, got history"):
        list(client(waits).pages("Observation"))


# --------------------------------------------------------------------------- auth


def test_the_bearer_token_is_sent_but_never_shown(server: respx.MockRouter, waits: Waits) -> None:
    route = server.get("/Patient/p1").mock(return_value=httpx.Response(401))
    auth = BearerToken(TOKEN)
    with pytest.raises(ServerError) as caught:
        client(waits).read("Patient", "p1")
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert route.call_count == 1
    assert caught.value.status == 401
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value)
    assert TOKEN not in repr(auth)


def test_tokens_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n", encoding="utf-8")
    assert repr(BearerToken.from_file(token_file)) == "BearerToken(<hidden>)"
    assert BearerToken.from_environment("FHIR_TOKEN", {"FHIR_TOKEN": TOKEN}) is not None
    with pytest.raises(ServerError, match="environment variable FHIR_TOKEN is not set or empty"):
        BearerToken.from_environment("FHIR_TOKEN", {})
    with pytest.raises(ServerError, match="cannot read the token file"):
        BearerToken.from_file(tmp_path / "missing")


# --------------------------------------------------------------------------- capabilities


def test_a_server_that_is_not_r4_is_refused(server: respx.MockRouter, waits: Waits) -> None:
    server.get("/metadata").mock(
        return_value=httpx.Response(200, json=statement({}, version="3.0.2"))
    )
    with pytest.raises(ServerError, match=r"speaks FHIR 3\.0\.2; trialsieve needs R4"):
        client(waits).capabilities()


def test_sink_keeps_conditional_requests_where_the_server_declares_them(
    trial: CompiledCriteria,
) -> None:
    capable = ServerCapabilities.from_statement(
        statement(
            {
                "ResearchStudy": {"params": ["identifier"], "conditionalCreate": True},
                "ResearchSubject": {"params": ["identifier"], "conditionalUpdate": True},
                "DetectedIssue": {"params": ["identifier"], "conditionalUpdate": False},
            }
        )
    )
    patient = read_bundle_file(ROOT / "examples" / "patients" / "itp-too-old.json")
    evaluation = evaluate_patient(
        trial, build_record(patient, trial.terminology), dt.date(2026, 11, 1)
    )
    entries = server_transaction(evaluation, capable)["entry"]
    assert (
        entries[0]["request"]["ifNoneExist"]
        == "identifier=https://clinicaltrials.gov%7CNCT05315778"
    )
    assert entries[1]["request"]["url"].startswith("ResearchSubject?identifier=")
    assert "id" not in entries[1]["resource"]  # conditional update: no id in the body
    assert entries[2]["resource"]["id"] == entries[2]["fullUrl"].removeprefix("urn:uuid:")
    assert entries[2]["request"] == {
        "method": "PUT",
        "url": f"DetectedIssue/{entries[2]['resource']['id']}",
    }


# --------------------------------------------------------------------------- source


NEEDED = {"Patient", "Observation", "MedicationRequest", "Medication", "ResearchSubject"}
OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"text": "platelets"},
    "subject": {"reference": "Patient/p1"},
}
PRESCRIPTION = {
    "resourceType": "MedicationRequest",
    "id": "mr1",
    "status": "active",
    "intent": "order",
    "medicationReference": {"reference": "Medication/m1"},
    "subject": {"reference": "Patient/p1"},
}
MEDICATION = {"resourceType": "Medication", "id": "m1", "code": {"text": "aspirin"}}
SUBJECTS = [
    {
        "resourceType": "ResearchSubject",
        "id": f"rs-{patient}",
        "status": "off-study",
        "study": {"display": "another study"},
        "individual": {"reference": f"Patient/{patient}"},
    }
    for patient in ("p1", "p2")
]
SEARCHABLE = {"params": ["patient"]}


def script_searches(server: respx.MockRouter) -> dict[str, respx.Route]:
    return {
        "patient": server.get("/Patient/p1").mock(return_value=httpx.Response(200, json=PATIENT)),
        "observations": server.get("/Observation").mock(
            return_value=httpx.Response(200, json=searchset(OBSERVATION))
        ),
        "prescriptions": server.get("/MedicationRequest").mock(
            return_value=httpx.Response(200, json=searchset(PRESCRIPTION))
        ),
        "medication": server.get("/Medication/m1").mock(
            return_value=httpx.Response(200, json=MEDICATION)
        ),
        "subjects": server.get("/ResearchSubject").mock(
            return_value=httpx.Response(200, json=searchset(*SUBJECTS))
        ),
    }


def keys(resources: list[dict[str, Any]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


def test_without_everything_the_source_searches_each_needed_type(
    server: respx.MockRouter, waits: Waits
) -> None:
    declared = {"Observation": SEARCHABLE, "MedicationRequest": SEARCHABLE}
    server.get("/metadata").mock(return_value=httpx.Response(200, json=statement(declared)))
    routes = script_searches(server)
    source = FhirServerSource(client(waits), ["p1"], NEEDED, page_size=25)
    (patient,) = list(source)
    # ResearchSubject has no patient search: every one is read, only p1's kept.
    assert keys(patient.resources) == {
        "Patient/p1",
        "Observation/o1",
        "MedicationRequest/mr1",
        "Medication/m1",
        "ResearchSubject/rs-p1",
    }
    search = routes["observations"].calls.last.request
    assert dict(search.url.params) == {"patient": "Patient/p1", "_count": "25"}
    assert search.headers["Prefer"] == "handling=strict"
    assert dict(routes["subjects"].calls.last.request.url.params) == {"_count": "25"}
    assert routes["medication"].call_count == 1


def test_when_everything_is_refused_the_source_falls_back_to_searches(
    server: respx.MockRouter, waits: Waits
) -> None:
    declared = {"Observation": SEARCHABLE, "MedicationRequest": SEARCHABLE}
    server.get("/metadata").mock(
        return_value=httpx.Response(200, json=statement(declared, everything=True))
    )
    everything = server.get("/Patient/p1/$everything").mock(return_value=httpx.Response(501))
    routes = script_searches(server)
    (patient,) = list(FhirServerSource(client(waits), ["p1"], NEEDED))
    assert everything.call_count == 1
    assert routes["observations"].call_count == 1
    assert "Observation/o1" in keys(patient.resources)


def test_a_patient_whose_search_never_ends_is_an_error_not_a_hang(
    server: respx.MockRouter, waits: Waits
) -> None:
    """`evaluate --server` and `demo --server` pull through FhirServerSource: the page limit
    ends the pull with an error for the patient (not a refusal: the first page came)."""
    declared = {"Observation": SEARCHABLE, "MedicationRequest": SEARCHABLE}
    server.get("/metadata").mock(return_value=httpx.Response(200, json=statement(declared)))
    script_searches(server)
    server.get("/Observation").mock(side_effect=endless_pages)
    limited = FhirServerClient(BASE, limits=ServerLimits(max_pages=3), sleep=waits)
    with pytest.raises(ServerError, match="stopped after 3 pages"):
        list(FhirServerSource(limited, ["p1"], NEEDED))


def test_everything_pages_are_followed_and_medications_read(
    server: respx.MockRouter, waits: Waits
) -> None:
    declared = {
        "Observation": SEARCHABLE,
        "MedicationRequest": SEARCHABLE,
        "ResearchSubject": SEARCHABLE,
    }
    server.get("/metadata").mock(
        return_value=httpx.Response(200, json=statement(declared, everything=True))
    )
    server.get("/Patient/p1/$everything", params={"page": "2"}).mock(
        return_value=httpx.Response(200, json=searchset(PRESCRIPTION))
    )
    server.get("/Patient/p1/$everything").mock(
        return_value=httpx.Response(
            200,
            json=searchset(PATIENT, OBSERVATION, next_url=f"{BASE}/Patient/p1/$everything?page=2"),
        )
    )
    medication = server.get("/Medication/m1").mock(
        return_value=httpx.Response(200, json=MEDICATION)
    )
    (patient,) = list(FhirServerSource(client(waits), ["p1"], NEEDED))
    assert keys(patient.resources) == {
        "Patient/p1",
        "Observation/o1",
        "MedicationRequest/mr1",
        "Medication/m1",
    }
    assert medication.call_count == 1


# --------------------------------------------------------------------------- sink


def test_a_failed_entry_in_the_answer_is_an_error(server: respx.MockRouter, waits: Waits) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "ResearchStudy", "id": "s1", "status": "active"},
                "request": {"method": "PUT", "url": "ResearchStudy/s1"},
            }
        ],
    }
    answer = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": "409 Conflict"}}],
    }
    server.post("").mock(return_value=httpx.Response(200, json=answer))
    with pytest.raises(ServerError) as caught:
        FhirServerSink(client(waits)).send(bundle)
    assert str(caught.value) == (
        f"{BASE}: POST / (transaction: PUT ResearchStudy/s1): "
        "entries failed in a transaction reported done: PUT ResearchStudy/s1: 409 Conflict"
    )


def test_a_rejected_transaction_names_the_field_and_the_entry(
    server: respx.MockRouter, waits: Waits
) -> None:
    """Medplum's validator puts the text in `details.text` and the element only in
    `expression` (R4 OperationOutcome.issue.expression, FHIRPath, 0-based indexes): both
    reach the message, with the request of the entry it names."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "ResearchStudy", "id": "s1", "status": "active"},
                "request": {"method": "PUT", "url": "ResearchStudy/s1"},
            },
            {
                "resource": {"resourceType": "DetectedIssue", "id": "d1", "status": "final"},
                "request": {"method": "PUT", "url": "DetectedIssue/d1"},
            },
        ],
    }
    rejected = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "required",
                "details": {"text": "Missing required property"},
                "expression": ["Bundle.entry[1].resource.status"],
            }
        ],
    }
    server.post("").mock(return_value=httpx.Response(400, json=rejected))
    with pytest.raises(ServerError) as caught:
        FhirServerSink(client(waits)).send(bundle)
    assert str(caught.value) == (
        f"{BASE}: POST / (transaction: PUT ResearchStudy/s1, PUT DetectedIssue/d1): "
        "HTTP 400 Bad Request: Missing required property (Bundle.entry[1].resource.status); "
        "Bundle.entry[1] is PUT DetectedIssue/d1"
    )


@pytest.mark.parametrize(
    ("issue", "text"),
    [
        (
            {"code": "required", "expression": ["Patient.name", "Patient.gender"]},
            "required (Patient.name, Patient.gender)",
        ),
        ({"code": "invalid", "location": ["/f:Patient/f:gender"]}, "invalid (/f:Patient/f:gender)"),
        (
            {"diagnostics": "Patient.gender: unknown code", "expression": ["Patient.gender"]},
            "Patient.gender: unknown code",
        ),
        (
            {
                "diagnostics": "bad",
                "expression": ["Patient.gender"],
                "location": ["/f:Patient/f:gender"],
            },
            "bad (Patient.gender)",
        ),
    ],
)
def test_an_outcome_issue_names_its_element(issue: dict[str, Any], text: str) -> None:
    """R4 OperationOutcome.issue.expression (FHIRPath), else the deprecated location (XPath),
    follows the issue's text unless the text names it already."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", **issue}]}
    assert outcome_diagnostics(outcome) == text
