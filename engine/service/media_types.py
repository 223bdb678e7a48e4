"""The media type of a request body: JSON (FHIR JSON or plain JSON) in UTF-8, else 415.

Every route that reads a body reads JSON: CDS Hooks 2.0 ("Use of JSON": data "MUST be sent
and received as JSON"; its examples send `Content-Type: application/json`), and FHIR R4
(http.html, "Content Types and encodings": `application/fhir+json`, the formal MIME type;
`application/json` is taken as well; "FHIR uses UTF-8 for all request and response bodies").
A body of another media type, or of none, is answered 415 Unsupported Media Type (RFC 9110
15.5.16) with an `Accept` header naming the accepted types (RFC 9110 12.5.1: "Accept ... can
be used to indicate which media types would have been accepted in the request"). Parameters
other than `charset` (`fhirVersion=4.0`) are allowed; `charset`, when given, must be UTF-8
(RFC 8259 8.1: JSON exchanged between systems is UTF-8), in any case (`charset=UTF-8`).

A request without a body (an R4 rest-hook notification without payload, R4 2.46.7.1) needs no
Content-Type. A body with a content coding (`Content-Encoding: gzip`, `br`, any but `identity`)
is 415 with `Accept-Encoding: identity` (RFC 9110 8.4, 15.5.16): the service decodes none.
The Content-Type header is parsed by the standard library's `email.message` (the parser
FastAPI itself uses for it).

A JSON body is parsed by orjson (`load_json`, through `JsonRoute` for the routes whose body is
a model), and a body that is not JSON is a 400 saying what is wrong and where (`not UTF-8:
byte 0xff at line 1, column 12`, `nested deeper than 254 levels`):
FastAPI's own parsing (`json.loads`) answered both with "There was an error parsing the body".
That 400 comes after the credentials are checked (401 first; `JsonRequest`).
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from engine.service.problems import FHIR_JSON, ApiError

JSON = "application/json"
ACCEPTED_MEDIA_TYPES = (FHIR_JSON, JSON)
_UTF_8 = frozenset({"utf-8", "utf8"})


async def json_body(request: Request) -> None:
    """415 when the request carries a body whose Content-Type is not JSON in UTF-8; 400 when
    that body is not JSON (what `JsonRequest` kept of the parse). A dependency that runs after
    the credentials' (401/403 first, then 415, then 400), whereas FastAPI parses a route's
    body before any dependency runs."""
    _check_media_type(request)
    unreadable = getattr(request.state, "unreadable_json", None)
    if unreadable is not None:
        raise ApiError.of(400, "invalid", f"the request body is not valid JSON: {unreadable}")


def _check_media_type(request: Request) -> None:
    _check_content_encoding(request)
    value = request.headers.get("content-type")
    if value is None:
        if _has_no_body(request):
            return
        raise _unsupported("the request has a body but no Content-Type")
    message = email.message.Message()
    message["content-type"] = value
    media_type = message.get_content_type()
    shown = value.split(";", 1)[0].strip()[:64]
    if media_type not in ACCEPTED_MEDIA_TYPES or "/" not in shown:
        raise _unsupported(f"Content-Type {shown!r} is not JSON")
    charset = message.get_param("charset")
    if charset is not None and (not isinstance(charset, str) or charset.lower() not in _UTF_8):
        named = charset if isinstance(charset, str) else "?"
        raise _unsupported(f"the charset {named[:32]!r} is not UTF-8")


def _check_content_encoding(request: Request) -> None:
    """415 for a body with a content coding (RFC 9110 8.4: gzip, br, deflate, anything but
    `identity`): the service decodes none, and a coded body read as it is would be parsed
    as garbage. RFC 9110 15.5.16: "If the problem was caused by an unsupported content
    coding, the Accept-Encoding response header field (Section 12.5.3) ought to be used to
    indicate which (if any) content codings would have been accepted in the request"."""
    codings = [
        coding.strip().lower()
        for value in request.headers.getlist("content-encoding")
        for coding in value.split(",")
        if coding.strip()
    ]
    unsupported = [coding for coding in codings if coding != "identity"]
    if not unsupported or _has_no_body(request):
        return
    raise ApiError.of(
        415,
        "not-supported",
        f"Content-Encoding {unsupported[0][:32]!r} is not supported; send the body without "
        "a content coding",
        "Content-Encoding",
        headers={"Accept-Encoding": "identity"},
    )


def _has_no_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" not in request.headers and length in (None, "0")


def _unsupported(reason: str) -> ApiError:
    accepted = ", ".join(ACCEPTED_MEDIA_TYPES)
    return ApiError.of(
        415,
        "not-supported",
        f"{reason}; send the body as {accepted} (UTF-8)",
        "Content-Type",
        headers={"Accept": accepted},
    )


MAX_DEPTH = 254
"""How deep a request's JSON may nest (arrays and objects): orjson's writer's limit. The
service writes what it reads (an inline Bundle, a prefetch) with orjson to read it as a
Bundle file, and walks it for nulls; deeper data was a 500 (RecursionError) or a 400 that
misnamed the fault ("a number beyond the 64-bit integer range"). orjson's reader stops at
1024 levels; no FHIR resource nests near 254."""


def load_json(body: bytes) -> Any:
    """The JSON value of a request body; json.JSONDecodeError (orjson's is one) whose message
    says what is wrong and where (line and column; the byte for a text that is not UTF-8)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        before = body[: error.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        reason = f"not UTF-8: byte 0x{body[error.start]:02x} at line {line}, column {column}"
        raise json.JSONDecodeError(reason, "", 0) from None
    try:
        value = orjson.loads(text.removeprefix("\ufeff"))  # a byte order mark is ignored
    except orjson.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        if error.msg == "depth limit exceeded":
            reason = f"nested deeper than {MAX_DEPTH} levels (reading stopped at {where})"
        else:
            reason = f"{error.msg} at {where}"
        raise json.JSONDecodeError(reason, "", 0) from None
    try:
        orjson.dumps(value)  # the writer's nesting limit, checked once, here (~0.1 ms/200 KB)
    except orjson.JSONEncodeError as error:
        if "Recursion" in str(error):
            raise json.JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", "", 0) from None
        # Anything else orjson reads but cannot write (none known: it reads an integer beyond
        # 64 bits as a float) is answered where the value is written, naming its field.
    return value


UNREADABLE = object()
"""The body `JsonRequest.json` gives for a body that is not JSON (json_body answers 400)."""


class JsonRequest(Request):
    """A request whose JSON body is read by `load_json`.

    FastAPI parses a route's body before its dependencies run, so a parse error would be
    answered 400 before the credentials are checked: an unauthenticated caller could probe
    the routes with malformed bodies. A body that is not JSON is kept as UNREADABLE with the
    reason in `state.unreadable_json`, and `json_body`, a dependency after the credentials,
    answers it (CDS Hooks and every route alike: 401 before 400).
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = load_json(await self.body())
            except json.JSONDecodeError as error:
                self.state.unreadable_json = error.msg
                self._json = UNREADABLE
        return self._json


class JsonRoute(APIRoute):
    """A route that reads its JSON body with `load_json` (FastAPI's documented custom
    request class: "Custom Request and APIRoute class")."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def json_handler(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return json_handler
