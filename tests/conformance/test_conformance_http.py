"""HTTP semantics (RFC 9110, https://www.rfc-editor.org/rfc/rfc9110) as the service answers
them: methods, representation metadata, content codings, and the order of checks.

Every test names the section it checks.
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from service_support import AUTH

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
