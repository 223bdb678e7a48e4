"""A request body size and time limit, enforced before a route reads the body, the
credentials of a request with a body checked before the body is read, and a limit on the
requests served at once (`RequestLimitMiddleware`).

A `Content-Length` over the limit is refused at once; a body sent without one (chunked) is
read up to the limit and refused as soon as it passes it. Either way the answer is 413 with
an OperationOutcome, and the connection stays usable.

A body that has not arrived whole `timeout` seconds after the request's headers (a client
that declares `Content-Length: 100` and sends 9 bytes, or trickles its body) is answered 408
Request Timeout (RFC 9110 15.5.9) with `Connection: close`, and the connection is closed.
uvicorn has no such timeout, and none for the headers themselves: a request whose headers
never end never reaches the app (docs/service.md, "Slow clients": the proxy's job).

The body is read whole (up to the limit) before the app runs, so without a check first any
client could make the service hold `limit` bytes per connection: with `authenticate`, a
request that carries a body is authenticated from its headers before a byte of the body is
read (401 with `Connection: close`, the body left unread), and its scopes are kept in the
scope (`SCOPES_KEY`) for the route, which then does not check the credentials again (a JWT
is accepted once). A request without a body is authenticated by its route, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.service.problems import FHIR_JSON_ANSWER, ApiError

SCOPES_KEY = "trialsieve.scopes"
"""The ASGI scope key of the scopes of a request authenticated before its body was read."""
Authenticate = Callable[[Scope], frozenset[str]]
"""The scopes of a request's credentials (from its headers); ApiError 401 when refused."""


class BodyLimitMiddleware:
    """Refuse HTTP request bodies larger than `limit` bytes with 413, and bodies not received
    whole within `timeout` seconds with 408."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        timeout: float,
        authenticate: Authenticate | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _too_large(send, self.limit)
            return
        if self.authenticate is not None and _has_body(scope, declared):
            try:
                scope[SCOPES_KEY] = self.authenticate(scope)
            except ApiError as error:
                await _answer(send, error, close=True)
                return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        break  # the client went away: let the app see it
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limit:
                        await _too_large(send, self.limit)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            text = f"the request body did not arrive within {self.timeout:g} s"
            await _answer(send, ApiError.of(408, "timeout", text), close=True)
            return
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestLimitMiddleware:
    """Answer 503 to an HTTP request that comes while `limit` requests are in progress.

    The answer is an OperationOutcome (issue code `throttled`) with `Retry-After`
    (RFC 9110 15.6.4: a 503 MAY say when to retry; 10.2.3) and `Connection: close`, sent
    before the request's body is read; the request log records it. `GET /health` is never
    refused: a liveness probe that failed under load would have the orchestrator restart a
    process that is only busy. uvicorn's own cap on connections (`limit_concurrency`, idle
    keep-alive connections included) stays as the transport's backstop, set above this one
    (`cli/serve.py`), where it answers in plain text.
    """

    def __init__(self, app: ASGIApp, limit: int, retry_after_seconds: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self.in_progress = 0
        """Requests this process is serving (one event loop: no lock needed)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            error = ApiError.of(
                503,
                "throttled",
                f"the service is at its limit of {self.limit:,} requests in progress; retry "
                f"in {self.retry_after_seconds} s",
                headers={"Retry-After": str(self.retry_after_seconds)},
            )
            await _answer(send, error, close=True)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1


def _has_body(scope: Scope, declared: int | None) -> bool:
    """Whether the request says it carries a body (a Content-Length above 0, or chunked)."""
    if declared is not None and declared > 0:
        return True
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    error = ApiError.of(413, "too-costly", f"the request body is larger than {limit:,} bytes")
    await _answer(send, error)


async def _answer(send: Send, error: ApiError, close: bool = False) -> None:
    """The error's answer (an OperationOutcome, with the error's headers), with `Connection:
    close` when `close` (the body it came with is not read)."""
    encoded = orjson.dumps(error.body())
    headers = [
        (b"content-type", FHIR_JSON_ANSWER.encode()),
        (b"content-length", str(len(encoded)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})
