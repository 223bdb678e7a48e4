"""Issue 11, items 4, 6 and 7: hostile callers of the service. Server-side request forgery,
token forwarding, upstream addresses in answers, route scopes, body size, ids and days out of
range, numbers beyond 64 bits. Each test failed before the fix it guards. (JWT replay, a CDS
Hooks rule, is checked in tests/conformance/test_conformance_cds_hooks.py.)"""

from __future__ import annotations

import base64
import socket
import time
import uuid
from typing import Any

import httpx
import jwt
import orjson
import pytest
import respx
from fastapi.testclient import TestClient
from service_support import (
    API_TOKEN_VARIABLE,
    AUTH,
    SERVER_TOKEN_VARIABLE,
    ClientFactory,
    example,
    fhir_authorization,
    free_port,
    hook_call,
    live_service,
    loaded_trial,
    make_settings,
    prefetch_from,
    server_settings,
)

from engine.service import ApiAuthSettings, SecretReference, ServiceSettings, create_app

SECRET = "a-shared-secret-of-enough-length-0123456789"
SECRET_VARIABLE = "TRIALSIEVE_TEST_JWT_SECRET"
NOTIFY_VARIABLE = "TRIALSIEVE_TEST_NOTIFY_TOKEN"
NOTIFY_TOKEN = "notify-only-token-5d1e"
SERVICE = "/cds-services/NCT05315778"
METADATA_SERVICE = "http://169.254.169.254/latest/meta-data"
CONFIGURED = "http://fhir.invalid/r4"


def token(audience: str, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://ehr.example.org",
        "sub": "ehr-client",
        "aud": audience,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
        **changes,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "test"})


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def secured(service_client: ClientFactory) -> TestClient:
    """Static API token (every scope), a notify-only token and CDS Hooks JWTs (HS256), with a
    configured FHIR server."""
    return service_client(
        make_settings(
            environment={
                SECRET_VARIABLE: SECRET,
                NOTIFY_VARIABLE: NOTIFY_TOKEN,
                SERVER_TOKEN_VARIABLE: "server-token",
            },
            api_auth=ApiAuthSettings(
                tokens=SecretReference(environment_variable=API_TOKEN_VARIABLE),
                notify_tokens=SecretReference(environment_variable=NOTIFY_VARIABLE),
                jwt_secret=SecretReference(environment_variable=SECRET_VARIABLE),
                jwt_hs256_test_mode=True,
            ),
            fhir_server=CONFIGURED,
            fhir_token=SecretReference(environment_variable=SERVER_TOKEN_VARIABLE),
        )
    )


# ----------------------------------------------------------------- item 6: request forgery


def test_a_cds_call_cannot_make_the_service_call_an_unlisted_server(api: TestClient) -> None:
    body = hook_call(
        "p1", fhirServer=METADATA_SERVICE, fhirAuthorization=fhir_authorization("caller-token")
    )
    with respx.mock(assert_all_called=False) as mock:
        probe = mock.get(url__startswith="http://169.254.169.254").respond(403)
        response = api.post(SERVICE, json=body, headers=AUTH)
    assert response.status_code == 403, response.text
    assert not probe.called
    assert "169.254" not in response.text


@pytest.mark.parametrize(
    "url",
    [
        "http://user:password@ehr.example.org/fhir",
        "http://ehr.example.org/fhir#x",
        "gopher://ehr.example.org/fhir",
        "http://[::1/fhir",
        "http://ehr.example.org:99999/fhir",
    ],
)
def test_a_malformed_fhir_server_is_400_without_echo(api: TestClient, url: str) -> None:
    response = api.post(SERVICE, json=hook_call("p1", fhirServer=url), headers=AUTH)
    assert response.status_code == 400, response.text
    assert url not in response.text


def test_the_configured_server_is_allow_listed_and_gets_the_callers_token(
    service_client: ClientFactory,
) -> None:
    api = service_client(server_settings(CONFIGURED, "server-token"))
    body = hook_call("p1", fhirServer=CONFIGURED, fhirAuthorization=fhir_authorization("ehr-token"))
    with respx.mock(assert_all_called=False) as mock:
        metadata = mock.get(f"{CONFIGURED}/metadata").respond(503)
        response = api.post(SERVICE, json=body, headers=AUTH)
    assert response.status_code == 412, response.text  # the data cannot be had (CDS Hooks 2.0)
    assert metadata.called
    assert metadata.calls[0].request.headers["authorization"] == "Bearer ehr-token"
    assert CONFIGURED not in response.text


def test_when_any_server_is_allowed_an_unlisted_one_never_gets_the_token(
    service_client: ClientFactory,
) -> None:
    api = service_client(allow_any_fhir_server=True)
    elsewhere = "http://elsewhere.invalid/fhir"
    body = hook_call("p1", fhirServer=elsewhere, fhirAuthorization=fhir_authorization("ehr-token"))
    with respx.mock(assert_all_called=False) as mock:
        metadata = mock.get(f"{elsewhere}/metadata").respond(401)
        response = api.post(SERVICE, json=body, headers=AUTH)
    assert metadata.called
    assert "authorization" not in metadata.calls[0].request.headers
    assert response.status_code == 412
    assert elsewhere not in response.text


# ----------------------------------------------------------------- item 6: route scopes


def test_a_cds_client_jwt_may_evaluate_but_not_write(secured: TestClient) -> None:
    inline = {"bundle": example("itp-too-old")}
    allowed = secured.post(
        "/evaluate", json=inline, headers=bearer(token("http://testserver/evaluate"))
    )
    assert allowed.status_code == 200, allowed.text
    writing = secured.post(
        "/evaluate",
        json={"patient": "p1", "write": True},
        headers=bearer(token("http://testserver/evaluate")),
    )
    assert writing.status_code == 403, writing.text
    assert "scope write" in writing.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path", ["/fhir-notify", "/fhir-notify/Observation/o1"])
def test_a_cds_client_jwt_may_not_notify(secured: TestClient, path: str) -> None:
    response = secured.post(path, json=None, headers=bearer(token(f"http://testserver{path}")))
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["code"] == "forbidden"


def test_a_notify_token_may_only_notify(secured: TestClient) -> None:
    # An empty notification: the server is asked what changed (202, queued).
    assert secured.post("/fhir-notify", headers=bearer(NOTIFY_TOKEN)).status_code == 202
    inline = {"bundle": example("itp-too-old")}
    evaluating = secured.post("/evaluate", json=inline, headers=bearer(NOTIFY_TOKEN))
    assert evaluating.status_code == 403
    assert secured.post("/evaluate", json=inline, headers=AUTH).status_code == 200


# ----------------------------------------------------------------- item 7: limits, ids


def test_a_body_over_the_limit_is_413(service_client: ClientFactory) -> None:
    api = service_client(max_body_bytes=1_000_000)
    huge = b'{"bundle": {"padding": "' + b"x" * 20_000_000 + b'"}}'
    response = api.post(
        "/evaluate", content=huge, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"


def test_a_chunked_body_over_the_limit_is_413(service_client: ClientFactory) -> None:
    api = service_client(max_body_bytes=1_000_000)

    def chunks() -> Any:
        for _ in range(30):
            yield b"x" * 100_000

    response = api.post(
        "/evaluate", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_the_default_limit_refuses_20_megabytes(api: TestClient) -> None:
    huge = b'{"bundle": {"padding": "' + b"x" * 20_000_000 + b'"}}'
    response = api.post(
        "/evaluate", content=huge, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize("patient", [".", "..", "p1\n", "Patient/../../x", "a" * 65])
def test_an_invalid_patient_id_is_400(service_client: ClientFactory, patient: str) -> None:
    api = service_client(server_settings(CONFIGURED, "server-token"))
    with respx.mock(assert_all_called=False) as mock:
        anything = mock.route().respond(500)
        response = api.post("/evaluate", json={"patient": patient}, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["patient"]
    assert not anything.called


@pytest.mark.parametrize("patient_id", ["..", "p1\n", "a/b", "../metadata", 5, ""])
def test_an_invalid_cds_patient_id_is_400(api: TestClient, patient_id: Any) -> None:
    """A context.patientId that is given but is not a FHIR id is `invalid` and says so; it
    was answered `required` ("... is required") although present."""
    response = api.post(SERVICE, json=hook_call(patient_id), headers=AUTH)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["code"] == "invalid"
    assert issue["expression"] == ["context.patientId"]
    assert "must be a FHIR id" in issue["diagnostics"]


def test_a_missing_cds_patient_id_is_required(api: TestClient) -> None:
    response = api.post(SERVICE, json={**hook_call("p1"), "context": {}}, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "required"


def test_an_invalid_notified_id_is_400(api: TestClient) -> None:
    response = api.put("/fhir-notify/Observation/p1%0A", headers=AUTH)
    assert response.status_code == 400, response.text


# ----------------------------------------------------------------- item 4: no 500s


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_an_as_of_day_out_of_range_is_400(api: TestClient, day: str) -> None:
    body = {"bundle": example("itp-too-old"), "asOf": day}
    response = api.post("/evaluate", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["asOf"]


def _an_observation(entries: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    return next(
        (index, entry["resource"])
        for index, entry in enumerate(entries)
        if entry["resource"]["resourceType"] == "Observation"
    )


def test_a_huge_integer_in_an_inline_bundle_is_400(api: TestClient) -> None:
    """orjson reads an integer beyond 64 bits as a number with a fraction, as the Bundle
    reader does (no 500): where the engine reads an integer (an Observation's valueInteger)
    it is a 400 naming the element; in an element the engine does not read (an extension)
    it is read as that number, not refused."""
    bundle = example("itp-too-old")
    index, observation = _an_observation(bundle["entry"])
    for value in [element for element in observation if element.startswith("value")]:
        del observation[value]
    observation["valueInteger"] = 2**64
    response = api.post("/evaluate", json={"bundle": bundle}, headers=AUTH)
    assert response.status_code == 400, response.text
    (expression,) = response.json()["issue"][0]["expression"]
    assert expression == f"bundle.entry[{index}].resource.valueInteger"
    bundle = example("itp-too-old")
    bundle["entry"][0]["resource"]["extension"] = [{"url": "x", "valueInteger": 2**64}]
    assert api.post("/evaluate", json={"bundle": bundle}, headers=AUTH).status_code == 200


def test_a_huge_integer_in_a_prefetch_is_400(api: TestClient) -> None:
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    index, observation = _an_observation(prefetch["observation"]["entry"])
    for value in [element for element in observation if element.startswith("value")]:
        del observation[value]
    observation["valueInteger"] = 2**70
    response = api.post(SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH)
    assert response.status_code == 400, response.text
    (expression,) = response.json()["issue"][0]["expression"]
    assert expression == f"prefetch.observation.entry[{index}].resource.valueInteger"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    prefetch["patient"]["extension"] = [{"url": "x", "valueInteger": 2**70}]
    response = api.post(SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH)
    assert response.status_code == 200, response.text


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize("depth", [255, 300, 1000])
def test_deep_nesting_anywhere_in_a_body_is_400_never_500(
    service_client: ClientFactory, depth: int
) -> None:
    """JSON nested deeper than the service can write back (orjson's writer stops at 254
    levels; its reader at 1024) inside an element the engine does not read: in a prefetch a
    1000-level extension was a 500 (RecursionError in the null check), at 300 levels a prefetch
    or an inline Bundle was a 400 misnaming the fault ("a number beyond the 64-bit integer
    range"). Every route now answers 400 "nested deeper than 254 levels"."""
    api = service_client(server_settings("http://fhir.invalid/r4", "server-token"))
    name = "itp-too-old"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    prefetch["patient"]["extension"] = [{"url": "http://x", "valueString": "DEEP"}]
    bundle = example(name)
    bundle["entry"][0]["resource"]["extension"] = [{"url": "http://x", "valueString": "DEEP"}]
    observation = {"resourceType": "Observation", "id": "o1", "note": "DEEP"}
    bodies = {
        SERVICE: hook_call(name, prefetch=prefetch),
        "/evaluate": {"bundle": bundle},
        "/fhir-notify": observation,
    }
    headers = {**AUTH, "Content-Type": "application/json"}
    for path, body in bodies.items():
        content = orjson.dumps(body).replace(b'"DEEP"', _nested(depth).encode())
        response = api.post(path, content=content, headers=headers)
        assert response.status_code == 400, (path, response.text)
        diagnostics = response.json()["issue"][0]["diagnostics"]
        assert "nested deeper than 254 levels" in diagnostics, (path, diagnostics)


def test_the_connection_stays_usable_after_an_error() -> None:
    app = create_app(make_settings())
    with live_service(app) as base_url, httpx.Client(base_url=base_url) as client:
        for day in ("0001-01-01", "9999-12-31"):
            body = {"bundle": example("itp-too-old"), "asOf": day}
            assert client.post("/evaluate", json=body, headers=AUTH).status_code == 400
        assert client.get("/health").status_code == 200
    assert free_port()  # the helper module stays importable for the benchmarks


def test_a_500_says_the_connection_closes() -> None:
    """An unexpected error is answered 500, and the server then drops the connection
    (Starlette re-raises after the answer): the answer carries `Connection: close` (RFC 9112
    9.6), so the client opens a new connection for its next request instead of failing."""
    app = create_app(make_settings())

    @app.get("/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    with live_service(app) as base_url, httpx.Client(base_url=base_url) as client:
        response = client.get("/fails", headers=AUTH)
        assert response.status_code == 500
        assert response.headers["connection"] == "close"
        assert "a bug" not in response.text
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("url", "status"),
    [
        (METADATA_SERVICE, 403),
        ("https://other-ehr.example.org/fhir", 403),
        ("file:///etc/passwd", 400),
        ("http://user:password@ehr.example.org/fhir", 400),
        ("http://ehr.example.org/fhir?x=1", 400),
        ("", 400),
    ],
)
def test_fhir_server_is_checked_even_with_a_full_prefetch(
    api: TestClient, url: str, status: int
) -> None:
    """docs/service.md: `fhirServer` must be on the allow-list (else 403), and be an http(s)
    base URL without credentials, query or fragment (else 400). It was checked only when
    something had to be fetched: with a full prefetch any value was answered 200."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    body = hook_call(name, prefetch=prefetch, fhirServer=url)
    response = api.post(SERVICE, json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.json()["issue"][0]["expression"] == ["fhirServer"]


def test_the_report_link_only_for_a_call_on_the_configured_server(
    service_client: ClientFactory,
) -> None:
    """The card's default link is the service's own report page, which pulls the patient from
    the configured server: a call whose `fhirServer` is another (allow-listed) server gets no
    such link, since the page would describe another record than the card."""
    other = "https://other-ehr.example.org/fhir"
    api = service_client(server_settings(CONFIGURED, "server-token", trusted_fhir_servers=(other,)))
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    links = {}
    for server in (CONFIGURED, other, None):
        fields = {"fhirServer": server} if server else {}
        body = hook_call(name, prefetch=prefetch, **fields)
        response = api.post(SERVICE, json=body, headers=AUTH)
        assert response.status_code == 200, response.text
        links[server] = response.json()["cards"][0].get("links")
    assert links[CONFIGURED] is not None and links[None] is not None
    for server in (CONFIGURED, None):  # signed for a short time: the query says until when
        address, _, query = links[server][0]["url"].partition("?")
        assert address.endswith(f"/trials/NCT05315778/patients/{name}/report")
        assert query.startswith("expires=") and "&signature=" in query
    assert links[other] is None


def exchange_until_closed(settings: ServiceSettings, rest: bytes) -> tuple[bytes, float]:
    """`POST /evaluate` to a live service over a raw socket, the request line and JSON
    content type followed by `rest` (more headers, the blank line, what body is sent): all
    the service answered until it closed the connection, and how long that took."""
    app = create_app(settings)
    with live_service(app) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            started = time.monotonic()
            connection.sendall(
                b"POST /evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + rest
            )
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk  # until the server closes the connection
            return answer, time.monotonic() - started


def test_a_body_that_does_not_arrive_in_time_is_408() -> None:
    """A client that declares `Content-Length: 100` and sends 9 bytes held its connection
    (and a worker's read) open without end: past `body_timeout` the service answers 408
    Request Timeout (RFC 9110 15.5.9) with `Connection: close` and closes the connection."""
    answer, waited = exchange_until_closed(
        make_settings(body_timeout=1.0),
        f"Authorization: {AUTH['Authorization']}\r\n".encode()
        + b'Content-Length: 100\r\n\r\n{"bundle"',
    )
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 408"), answer
    assert b"connection: close" in head
    assert 0.9 < waited < 8, waited


@pytest.mark.parametrize(
    "authorization",
    ["", "Authorization: Bearer not-a-token\r\n", "Authorization: Basic dXNlcjpwYXNz\r\n"],
)
def test_a_body_is_not_read_before_its_credentials_are_accepted(authorization: str) -> None:
    """The body limit middleware reads a body whole before the app runs: any client could
    make the service hold up to `--max-body-bytes` (10 MB) per connection, and wait up to
    `--body-timeout` for it, without credentials. A request with a body is now authenticated
    from its headers first: without accepted credentials it is answered 401 (RFC 9110 15.5.2,
    with `WWW-Authenticate`) at once, with `Connection: close`, its body unread (here:
    9 MB declared, none sent; it used to wait the body timeout, then 408)."""
    answer, waited = exchange_until_closed(
        make_settings(body_timeout=5.0),
        authorization.encode() + b"Content-Length: 9000000\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.lower().startswith(b"http/1.1 401"), answer
    assert b"www-authenticate: bearer" in head.lower()
    assert b"connection: close" in head.lower()
    assert orjson.loads(body)["issue"][0]["code"] == "login"
    assert waited < 3, waited


def test_credentials_checked_before_the_body_are_checked_once(secured: TestClient) -> None:
    """A CDS Hooks JWT (accepted once: its jti is remembered) on a request with a body is
    checked before the body is read, and the route uses that result: the call is served,
    not refused as a replay of itself; the same JWT again is a replay."""
    name = "itp-too-old"
    prefetch = prefetch_from(example(name), loaded_trial(secured), name)
    jwt_token = token(f"http://testserver{SERVICE}")
    body = hook_call(name, prefetch=prefetch)
    first = secured.post(SERVICE, json=body, headers=bearer(jwt_token))
    assert first.status_code == 200, first.text
    again = secured.post(
        SERVICE, json=hook_call(name, prefetch=prefetch), headers=bearer(jwt_token)
    )
    assert again.status_code == 401
    assert "used before" in again.json()["issue"][0]["diagnostics"]


def test_a_refused_jwt_algorithm_is_named_clipped(secured: TestClient) -> None:
    """A JWT header's `alg` is the caller's text: the 401 names it, clipped to 40 characters
    (a 5,000-character `alg` was echoed whole)."""
    header = base64.urlsafe_b64encode(
        orjson.dumps({"alg": "A" * 5000, "typ": "JWT", "kid": "k"})
    ).rstrip(b"=")
    forged = f"{header.decode()}.e30.c2ln"
    response = secured.post(SERVICE, json=hook_call("p1"), headers=bearer(forged))
    assert response.status_code == 401
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert diagnostics == f"JWT algorithm '{'A' * 38}… is not accepted"


def test_a_request_beyond_those_in_progress_is_503_with_retry_after() -> None:
    """`--limit-concurrency N`: with N requests in progress (here one whose body is still
    arriving) the next is answered 503 by the app itself, an OperationOutcome (`throttled`)
    with `Retry-After` (RFC 9110 15.6.4, 10.2.3); uvicorn's own 503 for the same cap was plain
    text, which a FHIR client cannot read as an OperationOutcome. `GET /health` still answers,
    and once the request in progress ends the next is served."""
    app = create_app(make_settings(max_requests_in_progress=1, body_timeout=30.0))
    with live_service(app) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as holding:
            holding.sendall(
                b"POST /evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: {AUTH['Authorization']}\r\n".encode()
                + b'Content-Length: 100\r\n\r\n{"bundle"'
            )
            deadline = time.monotonic() + 10
            refused = httpx.get(f"{base_url}/cds-services")
            while refused.status_code != 503 and time.monotonic() < deadline:
                time.sleep(0.05)  # until the held request is in progress
                refused = httpx.get(f"{base_url}/cds-services")
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["content-type"].startswith("application/fhir+json")
            issue = refused.json()["issue"][0]
            assert issue["code"] == "throttled"
            assert "limit of 1 requests in progress" in issue["diagnostics"]
            assert httpx.get(f"{base_url}/health").status_code == 200
        deadline = time.monotonic() + 10
        served = httpx.get(f"{base_url}/cds-services")
        while served.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.05)  # the held request ends once its connection is closed
            served = httpx.get(f"{base_url}/cds-services")
        assert served.status_code == 200, served.text
