"""A request body size and time limit, enforced before a route reads the body.

A `Content-Length` over the limit is refused at once; a body sent without one (chunked) is
read up to the limit and refused as soon as it passes it. Either way the answer is 413 with
an OperationOutcome, and the connection stays usable.

A body that has not arrived whole `timeout` seconds after the request's headers (a client
that declares `Content-Length: 100` and sends 9 bytes, or trickles its body) is answered 408
Request Timeout (RFC 9110 15.5.9) with `Connection: close`, and the connection is closed.
uvicorn has no such timeout, and none for the headers themselves: a request whose headers
never end never reaches the app (docs/service.md, "Slow clients": the proxy's job).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.service.problems import FHIR_JSON_ANSWER, Issue, operation_outcome


class BodyLimitMiddleware:
    """Refuse HTTP request bodies larger than `limit` bytes with 413, and bodies not received
    whole within `timeout` seconds with 408."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _too_large(send, self.limit)
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
            await _answer(
                send,
                408,
                f"the request body did not arrive within {self.timeout:g} s",
                "timeout",
                close=True,
            )
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


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    await _answer(send, 413, f"the request body is larger than {limit:,} bytes", "too-costly")


async def _answer(send: Send, status: int, text: str, code: str, close: bool = False) -> None:
    body: Any = operation_outcome([Issue(code, text)])
    encoded = orjson.dumps(body)
    headers = [
        (b"content-type", FHIR_JSON_ANSWER.encode()),
        (b"content-length", str(len(encoded)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})
