"""A FHIR server that refuses part of what it is asked, for the tests (issue 12, item 3).

`RefusingServer` is a loopback proxy in front of a real server (sekmet, with the example
patients): it forwards every request and its answer, the upstream address in the body
rewritten to its own, except the requests a refusal matches, which it answers itself (HTTP
400 with an OperationOutcome, as the SMART reference Bulk Data server answers for a type it
lacks, or any other status). A refusal matches by the request path's first segment (a type's
searches: `MedicationStatement`) or its last (`$everything`, `$export`), and, with `when_type`,
only when the request's `_type` lists that type. The Bulk Data headers (Content-Location,
Retry-After, X-Progress) are passed on, so that an export goes through it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson


@dataclass(frozen=True)
class Refusal:
    """The answer to a refused request: a status and, unless None, an OperationOutcome's
    diagnostics."""

    status: int
    diagnostics: str | None = None
    when_type: str | None = None
    """Only when the request's `_type` lists this type (a Bulk kick-off the SMART reference
    server refuses for a type it lacks); None: always."""

    def body(self) -> bytes:
        if self.diagnostics is None:
            return b""
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "not-supported", "diagnostics": self.diagnostics}
            ],
        }
        return orjson.dumps(outcome)


@dataclass(frozen=True)
class RefusingServer:
    """The running proxy: its base URL (the upstream's path on another port)."""

    base_url: str
    refusals: Mapping[str, Refusal]


def _handler(upstream: str, refusals: Mapping[str, Refusal]) -> type[BaseHTTPRequestHandler]:
    upstream_origin = "{0.scheme}://{0.netloc}".format(urlsplit(upstream))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def refusal(self) -> Refusal | None:
            segments = [part for part in urlsplit(self.path).path.split("/") if part]
            base_segments = [part for part in urlsplit(upstream).path.split("/") if part]
            relative = segments[len(base_segments) :]
            if not relative:
                return None
            refusal = refusals.get(relative[0]) or refusals.get(relative[-1])
            if refusal is None or refusal.when_type is None:
                return refusal
            listed = parse_qs(urlsplit(self.path).query).get("_type", [])
            named = {name for value in listed for name in value.split(",")}
            return refusal if refusal.when_type in named else None

        def forward(self) -> None:
            refusal = self.refusal()
            own_origin = f"http://127.0.0.1:{self.server.server_address[1]}"
            if refusal is not None:
                body = refusal.body()
                self.send_response(refusal.status)
                if body:
                    self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            length = int(self.headers.get("Content-Length") or 0)
            content = self.rfile.read(length) if length else None
            if content is not None:
                content = content.replace(own_origin.encode(), upstream_origin.encode())
            headers = {
                name: value
                for name, value in self.headers.items()
                if name.lower() in ("authorization", "accept", "content-type", "prefer")
                or name.lower().startswith("if-")
            }
            answer = httpx.request(
                self.command,
                upstream_origin + self.path,
                content=content,
                headers=headers,
                timeout=30.0,
            )
            body = answer.content.replace(upstream_origin.encode(), own_origin.encode())
            self.send_response(answer.status_code)
            forwarded = ("Content-Type", "Location", "ETag", "Last-Modified")
            bulk = ("Content-Location", "Retry-After", "X-Progress", "Expires")  # $export
            for name in (*forwarded, *bulk):
                if name in answer.headers:
                    value = answer.headers[name].replace(upstream_origin, own_origin)
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = forward

    return Handler


@contextmanager
def refusing_server(upstream: str, refusals: Mapping[str, Refusal]) -> Iterator[RefusingServer]:
    """A proxy to `upstream` on a free loopback port that answers `refusals` itself; stopped
    on leaving."""
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, refusals))
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    try:
        path = urlsplit(upstream).path.rstrip("/")
        yield RefusingServer(f"http://127.0.0.1:{http_server.server_address[1]}{path}", refusals)
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join()
