"""HEAD answered as GET without the body (RFC 9110 9.3.2).

"The HEAD method is identical to GET except that the server MUST NOT send content in the
response"; "The server SHOULD send the same header fields in response to a HEAD request as it
would have sent if the request method had been GET". FastAPI's routes answer only the methods
they declare, so a HEAD to `GET /health` was a 405. This middleware routes a HEAD request as
its GET (same status, same headers, `Content-Length` included) and drops the body. A path that
has no GET answers HEAD as it answers GET: 405 with its `Allow`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    """Serve HEAD requests as GET, without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the GET's body is not sent, only its end
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await self.app(as_get, receive, without_body)
        finally:
            if "route" in as_get:
                scope["route"] = as_get["route"]  # for the request log (its route template)
