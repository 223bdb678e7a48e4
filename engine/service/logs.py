"""Structured JSON logs without patient data or secrets, and a request id per request.

Every line is one JSON object: time, level, logger, message, the request or job id, and the
fields the service passes in `extra={"fields": {...}}` (trial ids, timings, status counts). The
service logs no patient ids, resource contents or tokens. Messages from other loggers (the FHIR
client names requests such as `GET Patient/p1/$everything`, httpx `GET .../Observation/o1`)
are redacted: the id of every `Type/id` reference or path, `patient=`, `subject=`, `_id=` and
`identifier=` values and bearer tokens are replaced, and an exception is written as its type
and stack, never its message.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

log = logging.getLogger("engine.service")

CORRELATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trialsieve_correlation_id", default=None
)
"""The id of the request (or background job) being served, for every log line it causes."""

REQUEST_ID_HEADER = "x-request-id"
_ACCEPTED_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_REDACTIONS = (
    # Every `Type/id` (a resource type is PascalCase, so `HTTP/1.1` is not one): ids of any
    # type may be MRNs or accession numbers. An operation (`Patient/$everything`) is kept.
    (re.compile(r"\b([A-Z][a-z][A-Za-z]{0,62}/)(?![$\[])[^\s/?&#,;'\")]+"), r"\1[redacted]"),
    (
        re.compile(r"((?:patient|subject|individual|_id|identifier)=)[^\s&#,;'\")]+"),
        r"\1[redacted]",
    ),
    (re.compile(r"(Bearer\s+)\S+", re.IGNORECASE), r"\1[redacted]"),
)


def redact(text: str) -> str:
    """The text with the ids of `Type/id` references, patient and id search values and bearer
    tokens replaced."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        correlation = getattr(record, "correlation_id", None) or CORRELATION_ID.get()
        if correlation:
            entry["correlation_id"] = correlation
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({key: value for key, value in fields.items() if key not in entry})
        if record.exc_info and record.exc_info[0] is not None:
            kind, _, stack = record.exc_info
            entry["exception"] = kind.__name__
            entry["stack"] = "".join(traceback.format_tb(stack))
        return orjson.dumps(entry, default=str).decode()


def log_event(level: int, message: str, **fields: Any) -> None:
    """Log a fixed message with fields (trial ids, counts, timings; never patient data),
    tagged with the current request or job id.
    """
    log.log(level, message, extra={"fields": fields, "correlation_id": CORRELATION_ID.get()})


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading), rounded to 0.1."""
    return round((time.perf_counter() - started) * 1000, 1)


def configure_logging(level: str = "info") -> None:
    """Send every log record to standard error as JSON (for `trialsieve serve`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestLogMiddleware:
    """Gives each HTTP request an id (the caller's `X-Request-ID` when well-formed), returns it
    in the answer, and logs method, route template, status and duration (never the path,
    which can hold resource ids).
    """

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = CORRELATION_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            log_event(
                logging.INFO,
                "request",
                method=scope.get("method"),
                route=getattr(route, "path", None) or "unmatched",
                http_status=status,
                duration_ms=elapsed_ms(started),
            )
            CORRELATION_ID.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name.decode("latin-1").lower() == REQUEST_ID_HEADER:
            text: str = value.decode("latin-1")
            if _ACCEPTED_REQUEST_ID.match(text):
                return text
    return uuid.uuid4().hex


def new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:12]
