"""HEAD answered as GET without the body (RFC 9110 9.3.2).

"The HEAD method is identical to GET except that the server MUST NOT send content in the
response"; "The server SHOULD send the same header fields in response to a HEAD request as it
would have sent if the request method had been GET". FastAPI's routes answer only the methods
they declare, so a HEAD to `GET /health` was a 405. This middleware routes a HEAD request as
its GET (same status, same headers, `Content-Length` included) and drops the body. A path that
has no GET answers HEAD as it answers GET: 405 with its `Allow`. A 405 whose `Allow` names
GET names HEAD too (RFC 9110 10.2.1: Allow "lists the set of methods advertised as supported
by the target resource").
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    """Serve HEAD requests as GET, without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "HEAD":
            await self.app(scope, receive, _allowing_head(send))
            return
        as_get = {**scope, "method": "GET"}
        answer = _allowing_head(send)

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the GET's body is not sent, only its end
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await answer(message)

        try:
            await self.app(as_get, receive, without_body)
        finally:
            if "route" in as_get:
                scope["route"] = as_get["route"]  # for the request log (its route template)


def _allowing_head(send: Send) -> Send:
    """`send`, with HEAD added to the `Allow` of a 405 that allows GET."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = []
            for name, value in message.get("headers", ()):
                if name.lower() == b"allow":
                    methods = [method.strip() for method in value.decode("latin-1").split(",")]
                    if "GET" in methods and "HEAD" not in methods:
                        value = ", ".join([*methods, "HEAD"]).encode("latin-1")
                headers.append((name, value))
            message = {**message, "headers": headers}
        await send(message)

    return sending
