"""FHIR HTTP plumbing: the one HTTP layer between trialsieve and FHIR servers.

Every request trialsieve sends to a FHIR server goes through this module: the server source
(`engine.sources.fhir_server`), the Bulk Data client (`engine.sources.bulk_export`), the server
sink (`engine.sinks.fhir_server`), the REST service's re-evaluation and the embedded server's
loader. It sits beside the pipeline's stages rather than in one of them because sources and
sinks both talk to servers; the stages keep what they do with the answers.

- `FhirServerClient` talks to one server over httpx: a base URL, optional auth, a timeout per
  attempt, retries, a bound on the time of each request (or, with `time_limit`, of the whole
  job: a Bulk export), `next`-link paging that never leaves the base URL (a token is not sent
  to another host) and stops after `ServerLimits.max_pages` pages. It reads the server's
  CapabilityStatement once, through fhirclient's R4 model, into `ServerCapabilities`.
- Retries: `RetryPolicy` and `Retrier`, the one retry loop: exponential backoff with jitter on
  connection errors, timeouts, 429 and 5xx, honouring Retry-After (`retry_after`).
- Authentication, as `httpx.Auth`: `BearerToken` (a static token from the environment or a
  file), `ContextBearerToken` (the token of the call being served, for the REST service) and
  `SmartBackendAuth` (SMART Backend Services: client credentials with a signed JWT);
  `auth_from_options` chooses one from command-line options.

Every failure raises `ServerError` naming the server and the request; nothing is logged but
URLs, statuses and fallbacks, never a token, key or assertion.

SMART Backend Services in detail: before the first request `SmartBackendAuth` asks the token
endpoint (given, or discovered from `{FHIR base}/.well-known/smart-configuration`) for an
access token with a client assertion: a JWT with `iss` = `sub` = the client id, `aud` = the
token endpoint, `exp` four minutes ahead (SMART allows at most five) and a unique `jti`,
signed RS384 or ES384 with the client's private key. The token is cached until shortly before
it expires, then fetched anew; a 401 answer fetches a new token and sends the request once
more. The client id and private key come from a TOML file (`--auth-config FILE`) that holds
them or names the environment variables holding them, never from the command line; neither
they, the assertion nor the access token appear in a repr, a message or a log line:

    [smart]
    client_id_env = "TRIALSIEVE_CLIENT_ID"        # or client_id = "..."
    private_key_file = "trialsieve-private.pem"   # relative to this file; or private_key_env
    key_id = "trialsieve-2026"                    # the kid of the key registered with the server
    # token_url = "https://auth.example.org/token"  # default: discovered
    # scope = "system/*.read system/ResearchSubject.write ..."
    # jwks_url = "https://example.org/trialsieve/jwks.json"  # sent as the JWT's jku header

Dependencies: httpx, fhirclient (CapabilityStatement), PyJWT and cryptography (SMART).
"""

from __future__ import annotations

import contextvars
import email.utils
import logging
import os
import random
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote, unquote, urlsplit

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.fhirabstractbase import FHIRValidationError

from engine import __version__
from engine.errors import AuthConfigError, Location, ServerError, ServerRefusal

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
JSON_MEDIA_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
"""Content types taken for FHIR JSON in an answer: R4's (http.html#mime-type), plain JSON,
and the DSTU2 type some servers still send; parameters (`; charset=utf-8`,
`; fhirVersion=4.0`) aside. An answer without a Content-Type is judged by its body."""
USER_AGENT = f"trialsieve/{__version__}"
"""Sent with every request, so that a server's logs name the client."""
_LONGEST_DIAGNOSTICS = 500


# --------------------------------------------------------------------------- auth


class BearerToken(httpx.Auth):
    """A static bearer token, sent as `Authorization: Bearer ...`; its repr hides the token.

    Read it from the environment or a file, never from the command line, so that it stays out
    of shell histories and process lists.
    """

    def __init__(self, token: str) -> None:
        if not token or any(character.isspace() for character in token):
            raise ServerError("a bearer token must be one word with no spaces")
        self._token = token

    @classmethod
    def from_environment(cls, variable: str, environment: Mapping[str, str]) -> BearerToken:
        """The token in environment variable `variable` (pass `os.environ`)."""
        token = environment.get(variable, "").strip()
        if not token:
            raise ServerError(f"environment variable {variable} is not set or empty")
        return cls(token)

    @classmethod
    def from_file(cls, path: str | Path) -> BearerToken:
        """The token on the first line of a file (e.g. a mounted secret)."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ServerError(f"{path}: cannot read the token file: {reason}") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise ServerError(f"{path}: the token file is empty")
        return cls(token)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"


class ContextBearerToken(httpx.Auth):
    """The bearer token a context variable holds when a request is sent, none when it holds
    none: one client serves calls that each bring their own token (CDS Hooks
    `fhirAuthorization`), and a token never leaks into another call's requests.
    """

    def __init__(self, token: contextvars.ContextVar[str | None]) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._token.get()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def __repr__(self) -> str:
        return "ContextBearerToken(<per request>)"


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for a server and how often to try again.

    A request is tried up to `attempts` times; retry n (from 0) waits between half and all of
    `min(longest_delay, first_delay * 2**n)` seconds (exponential backoff, jitter), or what the
    server's Retry-After asks. `give_up_after` bounds one request's total time, all attempts
    and waits included; `timeout` bounds each attempt: httpx's connect, read, write and pool
    timeouts, and (`FhirServerClient.send`) the whole answer, which must be read within
    `timeout` of the attempt's start (checked as its body arrives).
    """

    attempts: int = 5
    first_delay: float = 0.5
    longest_delay: float = 30.0
    give_up_after: float = 120.0
    timeout: float = 30.0

    def backoff(self, retry: int, jitter: float) -> float:
        """Seconds before retry number `retry`; `jitter` is uniform in [0, 1)."""
        ceiling = min(self.longest_delay, self.first_delay * 2.0**retry)
        return ceiling / 2 + jitter * ceiling / 2


DEFAULT_MAX_PAGES = 1000
"""Pages one search may bring (`ServerLimits.max_pages`): at the default page size of 200,
200,000 resources of one type for one patient, which no real record reaches; a server whose
`next` links never end is stopped there."""


DEFAULT_MAX_ANSWER_BYTES = 128 * 1024 * 1024
"""Bytes one answer's body may hold, decoded (`ServerLimits.max_answer_bytes`): a searchset
page of 200 resources is a few hundred kB, a large record answered in one `$everything` page
some tens of MB."""


@dataclass(frozen=True)
class ServerLimits:
    """How much a server may send: `max_pages` pages per search (`FhirServerClient.pages`)
    and `max_answer_bytes` bytes per answer (`FhirServerClient.send`; Bulk Data files are
    streamed to disk instead, bounded by the export's time limit).

    Every front end (evaluate, demo, the service, a cohort's Bulk export) builds its client
    with these defaults unless it passes others, so a misbehaving or hostile server cannot
    keep a run or a service worker reading forever.
    """

    max_pages: int = DEFAULT_MAX_PAGES
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES

    def __post_init__(self) -> None:
        if self.max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        if self.max_answer_bytes < 1:
            raise ValueError("max_answer_bytes must be at least 1")

    @classmethod
    def of(cls, max_pages: int | None = None, max_answer_mib: int | None = None) -> ServerLimits:
        """The limits a command's `--max-pages N` and `--max-answer-mib N` ask for (MiB:
        2**20 bytes); None keeps the default."""
        return cls(
            max_pages=DEFAULT_MAX_PAGES if max_pages is None else max_pages,
            max_answer_bytes=(
                DEFAULT_MAX_ANSWER_BYTES if max_answer_mib is None else max_answer_mib * 2**20
            ),
        )


T = TypeVar("T")


class AnswerTooSlow(httpx.ReadTimeout):
    """An answer still arriving when its attempt's time ran out (a server that sends it a few
    bytes at a time never trips httpx's timeout, which bounds each read, not the whole):
    retried like any timeout."""


class RetryableAnswer(Exception):
    """An answer worth asking again for (429, a transient 5xx): why, its status, and the wait
    its Retry-After asks (None when it asks none)."""

    def __init__(self, problem: str, status: int, asked: float | None) -> None:
        super().__init__(problem)
        self.problem, self.status, self.asked = problem, status, asked


@dataclass(frozen=True)
class Retrier:
    """Tries a request again within a `RetryPolicy`: the one retry loop of every client.

    `run(described, attempt)` calls `attempt(timeout)` until it returns, retrying transport
    errors and `RetryableAnswer`s with backoff or the Retry-After wait. Each attempt's timeout
    is `retry.timeout` cut to what is left before `deadline()`; retries stop after
    `retry.attempts` or when the next wait would pass the deadline, or, with
    `window_from_first_failure`, `retry.give_up_after` after the first failure. Then
    `error(described, message, status, timed_out)` is raised; `bound` names the limit in it.
    `sleep`, `clock` and `jitter` are for tests.
    """

    retry: RetryPolicy
    server: str
    error: Callable[[str, str, int | None, bool], ServerError]
    deadline: Callable[[], float]
    bound: str
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = random.random
    window_from_first_failure: bool = False

    def timeout(self, deadline: float) -> float:
        """An attempt's timeout: the policy's, cut to what is left before `deadline`."""
        return max(0.001, min(self.retry.timeout, deadline - self.clock()))

    def run(self, described: str, attempt: Callable[[float], T]) -> T:
        deadline = self.deadline()
        retry_deadline: float | None = None if self.window_from_first_failure else deadline
        problem, status, timed_out = "not tried", None, False
        for number in range(1, self.retry.attempts + 1):
            try:
                return attempt(self.timeout(deadline))
            except httpx.TransportError as error:
                problem, status, asked = transport_problem(error), None, None
                timed_out = isinstance(error, httpx.TimeoutException)
            except RetryableAnswer as answer:
                problem, status, asked = answer.problem, answer.status, answer.asked
                timed_out = False
            now = self.clock()
            if retry_deadline is None:
                retry_deadline = min(deadline, now + self.retry.give_up_after)
            if number == self.retry.attempts:
                break
            delay = asked if asked is not None else self.retry.backoff(number - 1, self.jitter())
            if delay > retry_deadline - now:
                raise self.error(
                    described,
                    f"{problem}; gave up after {_attempts(number)}: the next try would come "
                    f"after {delay:.1f} s, beyond {self.bound}",
                    status,
                    timed_out,
                )
            log.warning("%s %s: %s; retrying in %.1f s", self.server, described, problem, delay)
            self.sleep(delay)
        raise self.error(
            described,
            f"{problem}; gave up after {_attempts(self.retry.attempts)}",
            status,
            timed_out,
        )


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def is_retryable(status: int) -> bool:
    return status == 429 or (status >= 500 and status != 501)


def retry_after(response: httpx.Response, now: Callable[[], float]) -> float | None:
    """Seconds the Retry-After header asks for (RFC 9110 §10.2.3: delta-seconds or an HTTP
    date), or None when it asks for none: absent, unreadable, `0`, or a date not in the future
    (the server's clock behind ours). RFC 9110 leaves such a value to the client; retrying at
    once would hammer a server that has just said 429 or 503, so the caller's backoff applies
    instead."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - now()
    return seconds if seconds > 0 else None


# --------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class ResourceCapabilities:
    """What a CapabilityStatement declares for one resource type."""

    type: str
    search_params: frozenset[str] = frozenset()
    search_includes: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    interactions: frozenset[str] = frozenset()
    conditional_create: bool = False
    conditional_update: bool = False


@dataclass(frozen=True)
class ServerCapabilities:
    """The parts of a server's CapabilityStatement that decide how trialsieve reads and writes.

    A type the statement does not list has no declared search parameters, operations or
    conditional interactions.
    """

    fhir_version: str
    software: str | None
    resources: Mapping[str, ResourceCapabilities]
    system_interactions: frozenset[str] = frozenset()

    @classmethod
    def from_statement(cls, statement: dict[str, Any]) -> ServerCapabilities:
        """Read a CapabilityStatement (JSON) through fhirclient's model.

        Raises ValueError when it is not a valid R4 CapabilityStatement.
        """
        try:
            model = CapabilityStatement(statement, strict=True)
        except FHIRValidationError as error:
            raise ValueError(f"not a valid FHIR R4 CapabilityStatement: {error}") from None
        resources: dict[str, ResourceCapabilities] = {}
        system_interactions: set[str] = set()
        for rest in model.rest or ():
            if rest.mode != "server":
                continue
            system_interactions.update(item.code for item in rest.interaction or ())
            for resource in rest.resource or ():
                resources[resource.type] = ResourceCapabilities(
                    type=resource.type,
                    search_params=frozenset(p.name for p in resource.searchParam or ()),
                    search_includes=frozenset(resource.searchInclude or ()),
                    operations=frozenset(o.name.lstrip("$") for o in resource.operation or ()),
                    interactions=frozenset(i.code for i in resource.interaction or ()),
                    conditional_create=bool(resource.conditionalCreate),
                    conditional_update=bool(resource.conditionalUpdate),
                )
        software = model.software.name if model.software is not None else None
        return cls(model.fhirVersion, software, resources, frozenset(system_interactions))

    def of(self, resource_type: str) -> ResourceCapabilities:
        """The declared capabilities of a type (empty when the type is not listed)."""
        return self.resources.get(resource_type) or ResourceCapabilities(resource_type)

    @property
    def supports_everything(self) -> bool:
        """Whether `Patient/{id}/$everything` is declared."""
        return "everything" in self.of("Patient").operations

    def patient_search_param(self, resource_type: str) -> str | None:
        """The search parameter that finds a type's resources by patient (`patient`, `subject`)."""
        declared = self.of(resource_type).search_params
        return next((name for name in ("patient", "subject") if name in declared), None)

    def can_include(self, resource_type: str, include: str) -> bool:
        """Whether `_include={include}` is declared on searches of the type."""
        return include in self.of(resource_type).search_includes

    def conditional_create_on_identifier(self, resource_type: str) -> bool:
        resource = self.of(resource_type)
        return resource.conditional_create and "identifier" in resource.search_params

    def conditional_update_on_identifier(self, resource_type: str) -> bool:
        resource = self.of(resource_type)
        return resource.conditional_update and "identifier" in resource.search_params


# --------------------------------------------------------------------------- client


class FhirServerClient:
    """HTTP access to one FHIR R4 server: retries, time bounds, paging, its capabilities.

    Each request may take `retry.give_up_after` seconds, retries included; a search may bring
    `limits.max_pages` pages. With `time_limit`
    the client serves one bounded job instead (a Bulk export): every request must end within
    `time_limit` seconds of the client's creation (`deadline`), and a request's retries stop
    `retry.give_up_after` after its first failure. `transport`, `sleep`, `clock` and `jitter`
    are for tests. Use it as a context manager or call `close()`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        retry: RetryPolicy | None = None,
        limits: ServerLimits | None = None,
        time_limit: float | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ServerError(f"'{base_url}' is not a FHIR base URL (http(s)://host[:port]/path)")
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.limits = limits or ServerLimits()
        self.auth = auth
        self.deadline: float | None = None if time_limit is None else clock() + time_limit
        """When the job must end (monotonic seconds); None: each request has its own bound."""
        if self.deadline is None:
            self._retrier = Retrier(
                self.retry,
                self.base_url,
                self.error,
                deadline=lambda: clock() + self.retry.give_up_after,
                bound=f"the {self.retry.give_up_after:g} s bound",
                sleep=sleep,
                clock=clock,
                jitter=jitter,
            )
        else:
            deadline = self.deadline
            self._retrier = Retrier(
                self.retry,
                self.base_url,
                self.error,
                deadline=lambda: deadline,
                bound="the time allowed",
                sleep=sleep,
                clock=clock,
                jitter=jitter,
                window_from_first_failure=True,
            )
        self._clock = clock
        self._capabilities: ServerCapabilities | None = None
        self.http = httpx.Client(
            base_url=self.base_url + "/",
            auth=auth,
            timeout=self.retry.timeout,
            transport=transport,
            headers={"Accept": FHIR_JSON, "User-Agent": USER_AGENT},
        )
        """The httpx client (auth, timeouts, headers set) for what `send` does not cover."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def capabilities(self) -> ServerCapabilities:
        """The server's CapabilityStatement (`GET metadata`), read once."""
        if self._capabilities is None:
            statement = self.json("GET", "metadata")
            try:
                capabilities = ServerCapabilities.from_statement(statement)
            except ValueError as error:
                raise self.error("GET metadata", str(error)) from None
            if not capabilities.fhir_version.startswith("4."):
                raise self.error(
                    "GET metadata",
                    f"the server speaks FHIR {capabilities.fhir_version}; "
                    "trialsieve needs R4 (4.x)",
                )
            self._capabilities = capabilities
        return self._capabilities

    def json(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send a request and return its JSON object; ServerError for any other answer."""
        response = self.send(method, url, params=params, body=body, headers=headers)
        return self._json_object(response, self.describe(method, url, params))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """`GET TYPE/ID`: the resource, or None when the server answers 404 or 410.

        An OperationOutcome answered with 200 instead of the resource is a ServerRefusal
        (status 200) with its diagnostics."""
        url = f"{resource_type}/{quote(resource_id, safe='')}"
        response = self.send("GET", url, missing_ok=True)
        if response.status_code in (404, 410):
            return None
        resource = self._json_object(response, f"GET {url}")
        if resource.get("resourceType") == "OperationOutcome" != resource_type:
            # A read answered 200 with an OperationOutcome instead of the resource: a refusal,
            # as for a search answered so, with the server's words.
            words = outcome_diagnostics(resource) or "no diagnostics"
            raise self.refusal(
                f"GET {url}", f"HTTP 200 with an OperationOutcome, not a {resource_type}: {words}"
            )
        if resource.get("resourceType") != resource_type:
            raise self.error(f"GET {url}", f"answered with a {resource.get('resourceType')}")
        return resource

    def pages(self, url: str, params: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """The searchset Bundles of a search, following `next` links (with handling=strict).

        A `next` link is a URI reference (R4 http.html#paging: followed as given, never
        built); a relative one is resolved against the URL of the page that carries it (RFC
        3986 §5.2, `httpx.URL.join`), and the result must be on this server (`is_on_server`).
        An OperationOutcome in place of a page is a ServerRefusal (status 200) with its
        diagnostics; any other answer that is not a searchset Bundle in FHIR JSON a
        ServerError without a status. A search whose `next` links go on past
        `limits.max_pages` pages is a ServerError naming the search and the limit (the pages
        before it have been yielded)."""
        strict = {"Prefer": "handling=strict"}
        seen: set[str] = set()
        page_url: str | None = url
        page_params = params
        search = self.describe("GET", url, params)
        count = 0
        while page_url is not None:
            if count == self.limits.max_pages:
                raise self.error(
                    search,
                    f"stopped after {count} pages: the server's next links do not end within "
                    f"the limit of {self.limits.max_pages} pages per search",
                )
            count += 1
            page_address = self.http.build_request("GET", page_url, params=page_params).url
            seen.add(str(page_address))
            described = self.describe("GET", page_url, page_params)
            bundle = self.json("GET", page_url, params=page_params, headers=strict)
            if bundle.get("resourceType") == "OperationOutcome":
                # A search answered 200 with an OperationOutcome instead of results: a
                # refusal, for callers that take it as "this type is not available".
                words = outcome_diagnostics(bundle) or "no diagnostics"
                raise self.refusal(
                    described, f"HTTP 200 with an OperationOutcome, not a searchset: {words}"
                )
            if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
                kind = bundle.get("type") or bundle.get("resourceType")
                raise self.error(described, f"expected a searchset Bundle, got {kind}")
            yield bundle
            page_url, page_params = self._next_link(bundle, described, page_address), None
            if page_url is not None and page_url in seen:
                raise self.error(described, f"the next link {page_url} repeats an earlier page")

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        missing_ok: bool = False,
        worth_retrying: Callable[[httpx.Response], bool] | None = None,
        answers_kept: Collection[int] = (),
    ) -> httpx.Response:
        """Send one request with retries; return a 2xx answer (or 404/410 when `missing_ok`,
        or a status in `answers_kept`, for the caller to read).

        Retries connection errors, timeouts, 429 and 5xx (except 501) with backoff and
        Retry-After, within `retry.attempts` and `retry.give_up_after`; raises ServerError
        naming the server and the request otherwise. `worth_retrying` may veto retrying such
        an answer (a Bulk export that failed for good says so in an OperationOutcome).
        """
        described = self.describe(method, url, params)
        content = orjson.dumps(body) if body is not None else None
        all_headers = {"Content-Type": FHIR_JSON} if content is not None else {}
        all_headers.update(headers or {})

        def attempt(timeout: float) -> httpx.Response:
            deadline = self._clock() + timeout
            request = self.http.build_request(
                method,
                url,
                params=params,
                content=content,
                headers=all_headers,
                timeout=httpx.Timeout(timeout),
            )
            answer = self.http.send(request, stream=True)
            response = self._read_whole(answer, described, timeout, deadline)
            if response.is_success or (missing_ok and response.status_code in (404, 410)):
                return response
            if response.status_code in answers_kept:
                return response
            problem, status = status_problem(response), response.status_code
            if not is_retryable(status) or (
                worth_retrying is not None and not worth_retrying(response)
            ):
                raise self.error(described, problem, status)
            raise RetryableAnswer(problem, status, retry_after(response, time.time))

        return self._retrier.run(described, attempt)

    def _read_whole(
        self, response: httpx.Response, described: str, timeout: float, deadline: float
    ) -> httpx.Response:
        """A streamed answer, read whole (decoded) by `deadline` (monotonic seconds, `timeout`
        after the attempt began) and within
        `limits.max_answer_bytes`, as an answer whose content is in memory.

        Raises AnswerTooSlow (retried as a timeout) when the body is still arriving at the
        deadline, ServerError when it is larger than the limit; closes the stream either way.
        """
        limit = self.limits.max_answer_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise self.error(
                        described,
                        f"the answer is larger than {limit:,} bytes "
                        "(ServerLimits.max_answer_bytes); not read further",
                    )
                chunks.append(chunk)
                if self._clock() > deadline:
                    raise AnswerTooSlow(
                        f"the answer was not complete within the {timeout:g} s an attempt "
                        f"may take ({size:,} bytes had come)",
                        request=response.request,
                    )
        finally:
            response.close()
        # The body is decoded: the answer keeps every header but its encoding and length.
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=b"".join(chunks),
            request=response.request,
            extensions=response.extensions,
        )

    def retrying(self, described: str, attempt: Callable[[float], T]) -> T:
        """Run `attempt(timeout)` with this client's retries (for a streamed download)."""
        return self._retrier.run(described, attempt)

    def attempt_timeout(self) -> float:
        """The timeout of one attempt started now: the policy's, cut to the job's deadline."""
        if self.deadline is None:
            return self.retry.timeout
        return self._retrier.timeout(self.deadline)

    def _next_link(self, bundle: dict[str, Any], described: str, page: httpx.URL) -> str | None:
        """The page's `next` link as an absolute URL on this server (resolved against `page`,
        the page's own URL), None when it has none; a ServerError when it is unusable or
        leads off the server."""
        links = bundle.get("link")
        if not isinstance(links, list):
            return None
        for link in links:
            if isinstance(link, dict) and link.get("relation") == "next":
                url = link.get("url")
                if not isinstance(url, str) or not url:
                    raise self.error(described, "the next link has no url")
                absolute = _resolved(page, url)
                if absolute is None:
                    raise self.error(described, f"the next link {url} is not a URL")
                if not self.is_on_server(absolute):
                    raise self.error(
                        described,
                        f"the next link {url} is outside the base URL {self.base_url}; the "
                        "server is configured with another base URL than the one it is "
                        "reached at (for sekmet: set SEKMET_BASE_URL)",
                    )
                return absolute
        return None

    def is_on_server(self, url: str) -> bool:
        """Whether a URL or literal reference is on this server: resolved against the base URL
        (RFC 3986 §5.2, so `Medication/m1` is, `//other.example.org/fhir/Medication/m1` and
        `/elsewhere/Medication/m1` are not), it lies under the base URL, both compared in
        their normal form (`_normal_form`): `BASE/../other` and `BASE/%2E%2E/other` are
        outside, `HTTPS://HOST:443/base` is the base.
        """
        absolute = _resolved(httpx.URL(self.base_url + "/"), url)
        found = _normal_form(absolute) if absolute is not None else None
        base = _normal_form(self.base_url)
        if found is None or base is None or found[:3] != base[:3]:
            return False
        return found[3][: len(base[3])] == base[3]

    def describe(self, method: str, url: str, params: Mapping[str, str] | None = None) -> str:
        """`METHOD path?query` relative to the base URL, for messages; another host's URL
        without its query (a signed download URL carries its credentials there).
        """
        if url == self.base_url:
            target = ""
        elif url.startswith(self.base_url + "/"):
            target = url[len(self.base_url) + 1 :]
        else:
            target = url.split("?", 1)[0]
        if params:
            target += ("&" if "?" in target else "?") + "&".join(
                f"{name}={value}" for name, value in params.items()
            )
        return f"{method} {target or '/'}"

    def _json_object(self, response: httpx.Response, described: str) -> dict[str, Any]:
        """The answer's JSON object. An answer of another media type (a proxy's or single
        sign-on's HTML login page), not JSON, or JSON but not an object is a ServerError
        naming the request and the content type, without a status: never a refusal."""
        kind = response.headers.get("Content-Type")
        media_type = (kind or "").split(";", 1)[0].strip().lower()
        if kind is not None and media_type not in JSON_MEDIA_TYPES:
            raise self.error(described, f"the answer is {kind}, not FHIR JSON ({FHIR_JSON})")
        shown = kind or "no content type"
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self.error(described, f"the answer is not JSON ({shown})") from None
        if not isinstance(document, dict):
            raise self.error(described, f"the answer is not a JSON object ({shown})")
        return document

    def refusal(self, described: str, message: str) -> ServerRefusal:
        """A ServerRefusal (an OperationOutcome answered with 200) naming this server and the
        request."""
        return ServerRefusal(message, server=self.base_url, request=described, status=200)

    def error(
        self, described: str, message: str, status: int | None = None, timed_out: bool = False
    ) -> ServerError:
        """A ServerError naming this server and the request."""
        return ServerError(
            message, server=self.base_url, request=described, status=status, timed_out=timed_out
        )


def _resolved(base: httpx.URL, reference: str) -> str | None:
    """A URI reference resolved against `base` (RFC 3986 §5.2: httpx's join), as a string;
    None when it is not a URL httpx can parse."""
    try:
        return str(base.join(reference))
    except httpx.InvalidURL:
        return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _normal_form(url: str) -> tuple[str, str, int, tuple[str, ...]] | None:
    """An http(s) URL as (scheme, host, port, path segments) after RFC 3986 §6.2.2's
    syntax-based normalisation, the query dropped: scheme and host in lower case, the default
    port explicit, each path segment percent-decoded (§6.2.2.2; decoded per segment, so an
    encoded `/` stays inside its segment), and dot segments removed (§6.2.2.3, by httpx),
    those decoding reveals (`%2E%2E`) included; empty segments are left out, so that a base
    URL compares with a trailing slash or without. None for another scheme or no host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return None
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parsed.host:
        return None
    raw_path = parsed.raw_path.split(b"?", 1)[0].decode("ascii")
    decoded = "/".join(quote(unquote(segment), safe="") for segment in raw_path.split("/"))
    normal = httpx.URL(scheme=scheme, host=parsed.host.lower(), path=decoded or "/")
    segments = tuple(normal.raw_path.decode("ascii").split("/")[1:])
    port = parsed.port or _DEFAULT_PORTS[scheme]
    return scheme, normal.host, port, tuple(segment for segment in segments if segment)


def transport_problem(error: httpx.TransportError) -> str:
    if isinstance(error, AnswerTooSlow):
        return str(error)
    if isinstance(error, httpx.TimeoutException):
        return f"no answer in time ({type(error).__name__})"
    return f"cannot connect ({type(error).__name__}: {error})"


def status_problem(response: httpx.Response) -> str:
    """`HTTP 404 Not Found: <OperationOutcome diagnostics>`."""
    text = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    details = _outcome_text(response)
    return f"{text}: {details}" if details else text


def _outcome_text(response: httpx.Response) -> str:
    try:
        document = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(document, dict) or document.get("resourceType") != "OperationOutcome":
        return ""
    return outcome_diagnostics(document)


def outcome_diagnostics(outcome: dict[str, Any]) -> str:
    """The issues of an OperationOutcome as one line: each issue's diagnostics, else
    details.text, else code, followed by the element it is about in parentheses (its
    `expression`, else its deprecated `location`; R4 OperationOutcome.issue), unless the text
    names it already: `Missing required property (Bundle.entry[1].resource.status)`."""
    texts: list[str] = []
    for item in outcome.get("issue") or ():
        if not isinstance(item, dict):
            continue
        details = item.get("details")
        detail_text = details.get("text") if isinstance(details, dict) else None
        text = item.get("diagnostics") or detail_text or item.get("code")
        paths = _issue_paths(item)
        if not isinstance(text, str) or not text:
            text = ", ".join(paths)
        elif paths and not all(path in text for path in paths):
            text = f"{text} ({', '.join(paths)})"
        if text:
            texts.append(text)
    joined = "; ".join(texts)
    if len(joined) > _LONGEST_DIAGNOSTICS:
        return joined[: _LONGEST_DIAGNOSTICS - 1] + "…"
    return joined


def _issue_paths(issue: dict[str, Any]) -> list[str]:
    """The elements an OperationOutcome issue is about: its `expression` (FHIRPath), else its
    `location` (XPath, deprecated in R4)."""
    for name in ("expression", "location"):
        paths = issue.get(name)
        if isinstance(paths, list):
            found = [path for path in paths if isinstance(path, str) and path]
            if found:
                return found
    return []


# --------------------------------------------------------------------------- SMART Backend Services

DEFAULT_SCOPE = (
    "system/*.read system/ResearchStudy.write system/ResearchSubject.write "
    "system/DetectedIssue.write"
)
"""Read everything the criteria may need; write only what trialsieve writes back."""

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 240
"""Seconds a client assertion is valid: SMART allows at most 300; this leaves room for skew."""

REFRESH_MARGIN = 60.0
"""Seconds before its expiry that a cached access token is replaced."""

DEFAULT_TOKEN_LIFETIME = 300
"""Seconds an access token is kept when the token endpoint does not say (`expires_in`)."""

SUPPORTED_ALGORITHMS = ("RS384", "ES384")
TOKEN_RETRY = RetryPolicy(attempts=3, first_delay=1.0, longest_delay=4.0, give_up_after=60.0)
"""Retries of a token request: connection errors, timeouts, 429 and 5xx, as for FHIR requests."""
_TOKEN_REQUEST = "POST (SMART client_credentials grant)"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_CONFIG_KEYS = frozenset(
    {
        "client_id",
        "client_id_env",
        "private_key_file",
        "private_key_env",
        "key_id",
        "algorithm",
        "token_url",
        "scope",
        "jwks_url",
    }
)
_HIDDEN = "<hidden>"
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}")
_LONGEST_DESCRIPTION = 300


@dataclass(frozen=True)
class _AccessToken:
    value: str = field(repr=False)
    expires_at: float


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services: an access token from a signed client assertion, cached.

    `private_key` is a PEM private key (RSA for RS384, P-384 EC for ES384; the algorithm is
    taken from the key). Either `token_url` or `fhir_base_url` (to discover the token
    endpoint from) is needed. `clock` gives the wall time in seconds (tests inject one);
    `transport` carries the token and discovery requests (tests inject one). Token requests
    go through their own HTTP client (not the FHIR server's: no auth, no FHIR headers),
    retried by `Retrier` within `TOKEN_RETRY`; failures raise ServerError naming the token
    endpoint, never the key, assertion or token.
    """

    def __init__(
        self,
        *,
        client_id: str,
        private_key: str | bytes,
        key_id: str,
        token_url: str | None = None,
        fhir_base_url: str | None = None,
        scope: str = DEFAULT_SCOPE,
        jwks_url: str | None = None,
        algorithm: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not client_id.strip():
            raise AuthConfigError("the SMART client id is empty")
        if not key_id.strip():
            raise AuthConfigError("the SMART key id (kid) is empty")
        if token_url is None and fhir_base_url is None:
            raise AuthConfigError("give the token endpoint, or the FHIR base URL to discover it")
        if not scope.split():
            raise AuthConfigError("the SMART scope is empty")
        self._client_id = client_id
        self._key, self.algorithm = _signing_key(private_key, algorithm)
        self.key_id = key_id
        self.scope = " ".join(scope.split())
        self.jwks_url = jwks_url
        self.fhir_base_url = fhir_base_url.rstrip("/") if fhir_base_url else None
        self._token_url = _checked_endpoint(token_url, "token_url") if token_url else None
        self._clock = clock
        self._sleep = sleep
        self._transport = transport
        self._access: _AccessToken | None = None
        self._lock = threading.Lock()

    @property
    def token_url(self) -> str:
        """The token endpoint (discovered on first use when not given)."""
        with self._lock:
            return self._endpoint()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self._current_token(rejected=token)}"
            yield request

    def client_assertion(self, token_url: str) -> str:
        """A signed client-assertion JWT for `token_url`, valid for ASSERTION_LIFETIME s."""
        now = int(self._clock())
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": secrets.token_urlsafe(24),
        }
        headers: dict[str, Any] = {"kid": self.key_id, "typ": "JWT"}
        if self.jwks_url:
            headers["jku"] = self.jwks_url
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def __repr__(self) -> str:
        where = self._token_url or f"discovered from {self.fhir_base_url}"
        return f"SmartBackendAuth(token_url={where}, client_id={_HIDDEN}, key_id={self.key_id})"

    # ------------------------------------------------------------------ tokens

    def _current_token(self, rejected: str | None = None) -> str:
        """The cached token, or a new one when none is cached, it is about to expire, or the
        server has just refused it (`rejected`).
        """
        with self._lock:
            access = self._access
            fresh = access is not None and self._clock() < access.expires_at - REFRESH_MARGIN
            if access is None or not fresh or access.value == rejected:
                access = self._access = self._fetch_token()
            return access.value

    def _fetch_token(self) -> _AccessToken:
        token_url = self._endpoint()
        assertion = self.client_assertion(token_url)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": self.scope,
        }
        requested_at = self._clock()
        response = self._post_form(token_url, form, assertion)
        answer = _json_object(response)
        if not response.is_success:
            problem = _oauth_problem(response, answer, assertion)
            raise _token_error(token_url, problem, response.status_code)
        token = answer.get("access_token") if answer is not None else None
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise _token_error(token_url, "the answer has no usable access_token")
        token_type = answer.get("token_type") if answer is not None else None
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise _token_error(token_url, f"token_type is {token_type!r}, not bearer")
        lifetime = answer.get("expires_in") if answer is not None else None
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        return _AccessToken(token, requested_at + float(lifetime))

    def _post_form(self, token_url: str, form: Mapping[str, str], assertion: str) -> httpx.Response:
        """POST the token request; `Retrier` retries connection errors, timeouts, 429 and 5xx.

        Any other answer is returned for the caller to judge (a 4xx is an OAuth error).
        """

        def error(described: str, message: str, status: int | None, timed_out: bool) -> ServerError:
            hidden = _JWT_LIKE.sub(_HIDDEN, message.replace(assertion, _HIDDEN))
            return ServerError(
                f"no access token: {hidden}",
                server=token_url,
                request=described,
                status=status,
                timed_out=timed_out,
            )

        retrier = Retrier(
            TOKEN_RETRY,
            token_url,
            error,
            deadline=lambda: self._clock() + TOKEN_RETRY.give_up_after,
            bound=f"the {TOKEN_RETRY.give_up_after:g} s bound",
            sleep=self._sleep,
            clock=self._clock,
        )
        with self._http() as http:

            def attempt(timeout: float) -> httpx.Response:
                response = http.post(token_url, data=dict(form), timeout=timeout)
                if is_retryable(response.status_code):
                    problem = status_problem(response)
                    asked = retry_after(response, time.time)
                    raise RetryableAnswer(problem, response.status_code, asked)
                return response

            return retrier.run(_TOKEN_REQUEST, attempt)

    def _endpoint(self) -> str:
        """The token endpoint; discovered (once) from the FHIR server when not given."""
        if self._token_url is None:
            assert self.fhir_base_url is not None
            self._token_url = self._discover(self.fhir_base_url)
        return self._token_url

    def _discover(self, fhir_base_url: str) -> str:
        url = f"{fhir_base_url}/.well-known/smart-configuration"
        request = "GET .well-known/smart-configuration"
        hint = "; give token_url in the auth config instead"
        try:
            with self._http() as http:
                response = http.get(url)
        except httpx.TransportError as error:
            problem = f"cannot connect ({type(error).__name__}){hint}"
            raise ServerError(problem, server=fhir_base_url, request=request) from None
        document = _json_object(response)
        if not response.is_success or document is None:
            problem = f"HTTP {response.status_code}, no SMART configuration{hint}"
            raise ServerError(
                problem, server=fhir_base_url, request=request, status=response.status_code
            )
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            problem = f"the SMART configuration names no token_endpoint{hint}"
            raise ServerError(problem, server=fhir_base_url, request=request)
        try:
            return _checked_endpoint(endpoint, "the discovered token_endpoint")
        except AuthConfigError as error:
            raise ServerError(error.message, server=fhir_base_url, request=request) from None

    def _http(self) -> httpx.Client:
        return httpx.Client(
            transport=self._transport,
            timeout=TOKEN_RETRY.timeout,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            follow_redirects=False,
        )


def _signing_key(
    pem: str | bytes, algorithm: str | None
) -> tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, str]:
    """The private key and its algorithm (RS384 for RSA, ES384 for P-384)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise AuthConfigError(
            "the private key is not a PEM private key without a password"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise AuthConfigError(f"the RSA key has {key.key_size} bits; SMART needs 2048 or more")
        inferred = "RS384"
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        inferred = "ES384"
    else:
        raise AuthConfigError("the private key must be RSA (RS384) or EC on P-384 (ES384)")
    if algorithm is not None and algorithm != inferred:
        raise AuthConfigError(
            f"algorithm {algorithm} does not fit the key, which signs {inferred} "
            f"(supported: {', '.join(SUPPORTED_ALGORITHMS)})"
        )
    return key, inferred


def _checked_endpoint(url: str, what: str) -> str:
    """An https URL, or http on loopback (a local test server)."""
    parts = urlsplit(url)
    loopback_http = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    if not parts.netloc or not (parts.scheme == "https" or loopback_http):
        raise AuthConfigError(f"{what} '{url}' must be an https URL (http only on loopback)")
    return url


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        document = response.json()
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _oauth_problem(response: httpx.Response, answer: dict[str, Any] | None, assertion: str) -> str:
    """`HTTP 401 Unauthorized: invalid_client: <error_description>`, with the assertion and
    anything else that looks like a JWT hidden.
    """
    text = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if answer is None:
        return text
    parts = [
        _JWT_LIKE.sub(_HIDDEN, value.replace(assertion, _HIDDEN))[:_LONGEST_DESCRIPTION]
        for value in (answer.get("error"), answer.get("error_description"))
        if isinstance(value, str) and value
    ]
    return ": ".join([text, *parts])


def _token_error(token_url: str, message: str, status: int | None = None) -> ServerError:
    return ServerError(
        f"no access token: {message}", server=token_url, request=_TOKEN_REQUEST, status=status
    )


# --------------------------------------------------------------------------- configuration


def load_smart_auth(
    path: Path, fhir_base_url: str, environment: Mapping[str, str]
) -> SmartBackendAuth:
    """The `[smart]` table of a TOML auth config as a SmartBackendAuth for a server.

    Secrets are given in the file or by naming environment variables (`client_id_env`,
    `private_key_env` holding PEM text); `private_key_file` is relative to the config file.
    AuthConfigError names the file and field of any problem.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise AuthConfigError(f"cannot read the auth config: {reason}", _at(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AuthConfigError(f"not valid TOML: {error}", _at(path)) from None
    table = document.get("smart")
    if not isinstance(table, dict):
        raise AuthConfigError("no [smart] table", _at(path))
    unknown = sorted(set(table) - _CONFIG_KEYS)
    if unknown:
        raise AuthConfigError(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_CONFIG_KEYS))}",
            _at(path, "smart"),
        )
    client_id = _secret(table, "client_id", path, environment)
    private_key = _private_key(table, path, environment)
    try:
        return SmartBackendAuth(
            client_id=client_id,
            private_key=private_key,
            key_id=_text(table, "key_id", path, required=True) or "",
            token_url=_text(table, "token_url", path),
            fhir_base_url=fhir_base_url,
            scope=_text(table, "scope", path) or DEFAULT_SCOPE,
            jwks_url=_text(table, "jwks_url", path),
            algorithm=_text(table, "algorithm", path),
        )
    except AuthConfigError as error:
        raise AuthConfigError(error.message, _at(path, "smart")) from None


def auth_from_options(
    token_env: str | None,
    token_file: Path | None,
    auth_config: Path | None,
    *,
    server: str,
    environment: Mapping[str, str] | None = None,
) -> httpx.Auth | None:
    """The auth for `server` that the command-line options ask for: a bearer token from an
    environment variable or a file, SMART Backend Services from a config file, or none.

    `environment` defaults to `os.environ`. Raises AuthConfigError when more than one is
    given, ServerError or AuthConfigError when the one given is unusable.
    """
    given = [
        option
        for option, value in (
            ("--token-env", token_env),
            ("--token-file", token_file),
            ("--auth-config", auth_config),
        )
        if value
    ]
    if len(given) > 1:
        raise AuthConfigError(f"give one of {', '.join(given)}, not several")
    variables = os.environ if environment is None else environment
    if token_env:
        return BearerToken.from_environment(token_env, variables)
    if token_file:
        return BearerToken.from_file(token_file)
    if auth_config:
        return load_smart_auth(auth_config, server, variables)
    return None


def _at(path: Path, field_name: str | None = None) -> Location:
    return Location(file=str(path), field=field_name)


def _text(table: Mapping[str, Any], name: str, path: Path, required: bool = False) -> str | None:
    value = table.get(name)
    if value is None:
        if required:
            raise AuthConfigError(f"{name} is required", _at(path, f"smart.{name}"))
        return None
    if not isinstance(value, str) or not value.strip():
        raise AuthConfigError(f"{name} must be a non-empty string", _at(path, f"smart.{name}"))
    return value.strip()


def _secret(table: Mapping[str, Any], name: str, path: Path, environment: Mapping[str, str]) -> str:
    """`name` from the file, or from the environment variable `{name}_env` names."""
    inline = _text(table, name, path)
    variable = _text(table, f"{name}_env", path)
    if (inline is None) == (variable is None):
        raise AuthConfigError(f"give {name} or {name}_env (exactly one)", _at(path, "smart"))
    if variable is not None:
        value = environment.get(variable, "").strip()
        if not value:
            raise AuthConfigError(
                f"environment variable {variable} is not set or empty",
                _at(path, f"smart.{name}_env"),
            )
        return value
    assert inline is not None
    return inline


def _private_key(table: Mapping[str, Any], path: Path, environment: Mapping[str, str]) -> bytes:
    """The PEM text from `private_key_file` (relative to the config) or `private_key_env`."""
    key_file = _text(table, "private_key_file", path)
    variable = _text(table, "private_key_env", path)
    if (key_file is None) == (variable is None):
        raise AuthConfigError(
            "give private_key_file or private_key_env (exactly one)", _at(path, "smart")
        )
    if variable is not None:
        value = environment.get(variable, "").strip()
        if not value:
            raise AuthConfigError(
                f"environment variable {variable} is not set or empty",
                _at(path, "smart.private_key_env"),
            )
        return value.encode()
    assert key_file is not None
    key_path = Path(key_file).expanduser()
    if not key_path.is_absolute():
        key_path = path.parent / key_path
    try:
        return key_path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise AuthConfigError(
            f"cannot read the private key file {key_path}: {reason}",
            _at(path, "smart.private_key_file"),
        ) from None
