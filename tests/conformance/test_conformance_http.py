"""HTTP semantics (RFC 9110, https://www.rfc-editor.org/rfc/rfc9110) as the service answers
them: methods, representation metadata, content codings, and the order of checks.

Every test names the section it checks.
"""

from __future__ import annotations

import gzip

import pytest
from fastapi.testclient import TestClient
from service_support import (
    AUTH,
    CDS_SERVICE,
    ClientFactory,
    assert_unauthorized,
    example,
    hook_call,
    loaded_trial,
    prefetch_from,
    without,
)

VARYING_HEADERS = frozenset({"x-request-id"})
"""Answer headers that differ between two requests (a new id for each)."""


def get_paths(api: TestClient) -> list[str]:
    """A path for every GET route of the app (path parameters filled in)."""
    paths = []
    for route in api.app.routes:  # type: ignore[attr-defined]
        methods = getattr(route, "methods", None) or set()
        if "GET" in methods:
            path = route.path.replace("{trial_id}", "NCT05315778")
            paths.append(path.replace("{patient_id}", "p1"))
    return paths


def test_every_get_route_answers_head(api: TestClient) -> None:
    """RFC 9110 9.3.2 HEAD: "The HEAD method is identical to GET except that the server MUST
    NOT send content in the response"; "The server SHOULD send the same header fields in
    response to a HEAD request as it would have sent if the request method had been GET".
    Every GET route, with and without credentials: the GET's status and headers
    (Content-Length included), no body; never 405."""
    paths = get_paths(api)
    assert {"/health", "/ready", "/cds-services", "/openapi.json", "/docs"} <= set(paths)
    for path in paths:
        for headers in ({}, AUTH):
            got = api.get(path, headers=headers)
            head = api.head(path, headers=headers)
            assert head.status_code == got.status_code, (path, head.text)
            assert head.content == b"", path

            def compared(answer: object) -> dict[str, str]:
                return {
                    name: value
                    for name, value in answer.headers.items()  # type: ignore[attr-defined]
                    if name not in VARYING_HEADERS
                }

            assert compared(head) == compared(got), path


def test_head_on_a_route_without_get_is_405_with_allow(api: TestClient) -> None:
    """RFC 9110 15.5.6 405 Method Not Allowed: "The origin server MUST generate an Allow
    header field in a 405 response containing a list of the target resource's currently
    supported methods"; a POST-only route does not answer HEAD."""
    answer = api.head("/evaluate", headers=AUTH)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.content == b""


def test_every_json_answer_says_utf_8(service_client: ClientFactory) -> None:
    """RFC 9110 8.3 Content-Type and 8.3.1 Media Type (the `charset` parameter); FHIR R4
    http.html, "Content Types and encodings": "FHIR uses UTF-8 for all request and response
    bodies". Every JSON answer, success or error, from a route, the body limit or the
    error handlers, is `application/fhir+json; charset=utf-8` (an OperationOutcome) or
    `application/json; charset=utf-8` (the service's own JSON), never without the charset."""
    api = service_client()
    small = service_client(max_body_bytes=1000)
    json_header = {"Content-Type": "application/json", **AUTH}
    answers = {
        "health": api.get("/health"),
        "ready": api.get("/ready"),
        "discovery": api.get("/cds-services"),
        "openapi": api.get("/openapi.json"),
        "evaluated": api.post("/evaluate", json={"bundle": example("itp-too-old")}, headers=AUTH),
        "card": api.post(
            CDS_SERVICE,
            json=hook_call(
                "itp-too-old",
                prefetch=prefetch_from(example("itp-too-old"), loaded_trial(api), "itp-too-old"),
            ),
            headers=AUTH,
        ),
        "400": api.post("/evaluate", content=b"{", headers=json_header),
        "401": api.post("/evaluate", json={}),
        "404": api.get("/nowhere"),
        "405": api.get("/evaluate", headers=AUTH),
        "409": api.post("/evaluate", json={"patient": "p1"}, headers=AUTH),
        "413": small.post("/evaluate", content=b" " * 2000, headers=json_header),
        "415": api.post("/evaluate", content=b"{}", headers={"Content-Type": "text/plain", **AUTH}),
    }
    own_json = {"health", "ready", "discovery", "openapi", "evaluated", "card"}
    for name, answer in answers.items():
        kind = "application/json" if name in own_json else "application/fhir+json"
        assert answer.headers["content-type"] == f"{kind}; charset=utf-8", (name, answer.text)
        assert answer.json(), name
    assert answers["card"].status_code == 200, answers["card"].text
    assert answers["evaluated"].status_code == 200, answers["evaluated"].text


BODY_ROUTES = (
    "/evaluate",
    "/trials/NCT05315778/evaluate",
    CDS_SERVICE,
    f"{CDS_SERVICE}/feedback",
    "/fhir-notify",
    "/fhir-notify/Observation/o1",
)


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("body", [b"{bad", b"\xff\xfe", b"[" * 2000, b'{"a": 1,}'])
def test_credentials_are_checked_before_the_body_is_parsed(
    api: TestClient, path: str, body: bytes
) -> None:
    """RFC 9110 11.6.1 WWW-Authenticate and 15.5.2 401 Unauthorized: a request without
    credentials is answered 401 with the challenge, whatever its body: a malformed JSON body
    is not parsed (nor answered 400) before the caller is authenticated, so an anonymous
    caller learns nothing about what a route reads. With credentials, the same body is a 400
    saying why it is not JSON."""
    headers = {"Content-Type": "application/json"}
    assert_unauthorized(api.post(path, content=body, headers=headers), "")
    if not path.startswith("/fhir-notify"):  # notifications need a FHIR server first (409)
        refused = api.post(path, content=body, headers={**headers, **AUTH})
        assert refused.status_code == 400, refused.text
        assert "not valid JSON" in refused.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "zstd", "x-custom", "identity, gzip"])
def test_a_body_with_a_content_coding_is_415(
    service_client: ClientFactory, path: str, coding: str
) -> None:
    """RFC 9110 8.4 Content-Encoding and 15.5.16 415 Unsupported Media Type: "The 415 (Unsupported
    Media Type) status code indicates that the origin server is refusing to service the request
    because the content is ... in a format not supported by this method on the target
    resource", and "If the problem was caused by an unsupported content coding, the
    Accept-Encoding response header field (Section 12.5.3) ought to be used to indicate which
    (if any) content codings would have been accepted". The service decodes no coding: a coded
    body (even one whose bytes happen to be JSON) is a 415 naming Content-Encoding, with
    `Accept-Encoding: identity`, never parsed as it is."""
    api = service_client(fhir_server="http://127.0.0.1:9/r4")
    plain = b'{"patient": "p1"}'
    body = gzip.compress(plain) if coding == "gzip" else plain
    headers = {"Content-Type": "application/json", "Content-Encoding": coding, **AUTH}
    answer = api.post(path, content=body, headers=headers)
    assert answer.status_code == 415, answer.text
    assert answer.headers["accept-encoding"] == "identity"
    (issue,) = answer.json()["issue"]
    assert issue["code"] == "not-supported"
    assert issue["expression"] == ["Content-Encoding"]
    assert_unauthorized(api.post(path, content=body, headers=without(headers, "Authorization")), "")


def test_identity_is_no_content_coding(api: TestClient) -> None:
    """RFC 9110 8.4.1: `identity` is no coding at all (reserved for Accept-Encoding, but a
    body that says it is taken as it is)."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "identity", **AUTH}
    answer = api.post("/evaluate", json={"bundle": example("itp-too-old")}, headers=headers)
    assert answer.status_code == 200, answer.text
