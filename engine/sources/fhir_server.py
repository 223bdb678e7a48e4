"""Patients from a live FHIR R4 server, and the HTTP client the server sink shares.

`FhirServerClient` talks to one server: a base URL, optional bearer-token auth, a timeout per
attempt, retries with exponential backoff and jitter on connection errors, timeouts, 429 and
5xx (honouring Retry-After), a bound on the total time of each request, and `next`-link paging
that never leaves the base URL (a bearer token is not sent to another host). It reads the
server's CapabilityStatement once, through fhirclient's R4 model, into `ServerCapabilities`.

`FhirServerSource` pulls each patient: `Patient/{id}/$everything` when the server declares it,
else `Patient/{id}` and one search `TYPE?patient=Patient/{id}` per resource type the criteria
need, always with `Prefer: handling=strict` (a lenient server would otherwise ignore a parameter
it does not know and answer with every resource of the type). Medications that
`medicationReference` points to are read when the pull did not bring them. The pulled
resources go through `parse_bundle`, so they are checked exactly like a Bundle file.

Every failure raises `ServerError` naming the server and the request; nothing is logged but
URLs, statuses and fallbacks, never a token.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import orjson
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.fhirabstractbase import FHIRValidationError

from engine import __version__
from engine.errors import ServerError
from engine.resource_types import MEDICATION_REFERENCING_TYPES
from engine.resource_types import resource_types_to_pull as resource_types_to_pull
from engine.sources.base import PatientResources
from engine.sources.bundle import parse_bundle
from engine.sources.references import reference_key

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
DEFAULT_PAGE_SIZE = 200

# Fields that tie a resource to its patient (ResearchSubject.individual among them).
_PATIENT_REFERENCE_FIELDS = ("subject", "patient", "individual")
# Answers that mean "this server does not do $everything", after which searches are tried.
_EVERYTHING_REFUSALS = frozenset({400, 404, 405, 501})
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


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for a server and how often to try again.

    A request is tried up to `attempts` times; retry n (from 0) waits between half and all of
    `min(longest_delay, first_delay * 2**n)` seconds (exponential backoff, jitter), or what the
    server's Retry-After asks. `give_up_after` bounds one request's total time, all attempts
    and waits included; `timeout` bounds each attempt's connect, read, write and pool waits.
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


T = TypeVar("T")


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
                    f"{problem}; gave up after {number} attempts: the next try would come "
                    f"after {delay:.1f} s, beyond {self.bound}",
                    status,
                    timed_out,
                )
            log.warning("%s %s: %s; retrying in %.1f s", self.server, described, problem, delay)
            self.sleep(delay)
        attempts = self.retry.attempts
        raise self.error(
            described, f"{problem}; gave up after {attempts} attempts", status, timed_out
        )


def is_retryable(status: int) -> bool:
    return status == 429 or (status >= 500 and status != 501)


def retry_after(response: httpx.Response, now: Callable[[], float]) -> float | None:
    """Seconds the Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now())


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

    `transport`, `sleep`, `clock` and `jitter` are for tests. Use it as a context manager or
    call `close()`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        retry: RetryPolicy | None = None,
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
        self._retrier = Retrier(
            self.retry,
            self.base_url,
            self._error,
            deadline=lambda: clock() + self.retry.give_up_after,
            bound=f"the {self.retry.give_up_after:g} s bound",
            sleep=sleep,
            clock=clock,
            jitter=jitter,
        )
        self._capabilities: ServerCapabilities | None = None
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            auth=auth,
            timeout=self.retry.timeout,
            transport=transport,
            headers={"Accept": FHIR_JSON, "User-Agent": f"trialsieve/{__version__}"},
        )

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
        self._http.close()

    def capabilities(self) -> ServerCapabilities:
        """The server's CapabilityStatement (`GET metadata`), read once."""
        if self._capabilities is None:
            statement = self.json("GET", "metadata")
            try:
                capabilities = ServerCapabilities.from_statement(statement)
            except ValueError as error:
                raise self._error("GET metadata", str(error)) from None
            if not capabilities.fhir_version.startswith("4."):
                raise self._error(
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
        return self._json_object(response, self._describe(method, url, params))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """`GET TYPE/ID`: the resource, or None when the server answers 404 or 410."""
        url = f"{resource_type}/{quote(resource_id, safe='')}"
        response = self.send("GET", url, missing_ok=True)
        if response.status_code in (404, 410):
            return None
        resource = self._json_object(response, f"GET {url}")
        if resource.get("resourceType") != resource_type:
            raise self._error(f"GET {url}", f"answered with a {resource.get('resourceType')}")
        return resource

    def pages(self, url: str, params: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """The searchset Bundles of a search, following `next` links (with handling=strict)."""
        strict = {"Prefer": "handling=strict"}
        seen: set[str] = set()
        page_url: str | None = url
        page_params = params
        while page_url is not None:
            seen.add(str(self._http.build_request("GET", page_url, params=page_params).url))
            described = self._describe("GET", page_url, page_params)
            bundle = self.json("GET", page_url, params=page_params, headers=strict)
            if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
                kind = bundle.get("type") or bundle.get("resourceType")
                raise self._error(described, f"expected a searchset Bundle, got {kind}")
            yield bundle
            page_url, page_params = self._next_link(bundle, described), None
            if page_url is not None and str(self._http.build_request("GET", page_url).url) in seen:
                raise self._error(described, f"the next link {page_url} repeats an earlier page")

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> httpx.Response:
        """Send one request with retries; return a 2xx answer (or 404/410 when `missing_ok`).

        Retries connection errors, timeouts, 429 and 5xx (except 501) with backoff and
        Retry-After, within `retry.attempts` and `retry.give_up_after`; raises ServerError
        naming the server and the request otherwise.
        """
        described = self._describe(method, url, params)
        content = orjson.dumps(body) if body is not None else None
        all_headers = {"Content-Type": FHIR_JSON} if content is not None else {}
        all_headers.update(headers or {})

        def attempt(timeout: float) -> httpx.Response:
            response = self._http.request(
                method, url, params=params, content=content, headers=all_headers, timeout=timeout
            )
            if response.is_success or (missing_ok and response.status_code in (404, 410)):
                return response
            problem, status = status_problem(response), response.status_code
            if not is_retryable(status):
                raise self._error(described, problem, status)
            raise RetryableAnswer(problem, status, retry_after(response, time.time))

        return self._retrier.run(described, attempt)

    def _next_link(self, bundle: dict[str, Any], described: str) -> str | None:
        links = bundle.get("link")
        if not isinstance(links, list):
            return None
        for link in links:
            if isinstance(link, dict) and link.get("relation") == "next":
                url = link.get("url")
                if not isinstance(url, str) or not url:
                    raise self._error(described, "the next link has no url")
                if not self.is_on_server(url):
                    raise self._error(
                        described,
                        f"the next link {url} is outside the base URL {self.base_url}; the "
                        "server is configured with another base URL than the one it is "
                        "reached at (for sekmet: set SEKMET_BASE_URL)",
                    )
                return url
        return None

    def is_on_server(self, url: str) -> bool:
        """Whether a URL or literal reference (relative, or absolute under the base URL) is
        on this server.
        """
        if not url.startswith(("http://", "https://")):
            return "://" not in url
        base = self.base_url
        return url == base or url.startswith((base + "/", base + "?"))

    def _describe(self, method: str, url: str, params: Mapping[str, str] | None) -> str:
        """`METHOD path?query` relative to the base URL, for messages."""
        if url == self.base_url:
            target = ""
        elif url.startswith(self.base_url + "/"):
            target = url[len(self.base_url) + 1 :]
        else:
            target = url
        if params:
            target += ("&" if "?" in target else "?") + "&".join(
                f"{name}={value}" for name, value in params.items()
            )
        return f"{method} {target or '/'}"

    def _json_object(self, response: httpx.Response, described: str) -> dict[str, Any]:
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            kind = response.headers.get("Content-Type", "no content type")
            raise self._error(
                described, f"the answer is not JSON ({kind})", response.status_code
            ) from None
        if not isinstance(document, dict):
            raise self._error(described, "the answer is not a JSON object", response.status_code)
        return document

    def _error(
        self, described: str, message: str, status: int | None = None, timed_out: bool = False
    ) -> ServerError:
        return ServerError(
            message, server=self.base_url, request=described, status=status, timed_out=timed_out
        )


def transport_problem(error: httpx.TransportError) -> str:
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
    """The issues of an OperationOutcome as one line (diagnostics, else details.text)."""
    texts: list[str] = []
    for item in outcome.get("issue") or ():
        if not isinstance(item, dict):
            continue
        details = item.get("details")
        detail_text = details.get("text") if isinstance(details, dict) else None
        text = item.get("diagnostics") or detail_text or item.get("code")
        if isinstance(text, str) and text:
            texts.append(text)
    joined = "; ".join(texts)
    if len(joined) > _LONGEST_DIAGNOSTICS:
        return joined[: _LONGEST_DIAGNOSTICS - 1] + "…"
    return joined


# --------------------------------------------------------------------------- source


@dataclass
class _Pulled:
    """Entries of one patient's pull, keyed by `Type/id` (a resource met twice is kept once).

    Malformed entries are kept too, under their position, so that `parse_bundle` reports them.
    """

    entries: dict[str, Any] = field(default_factory=dict)

    def add(self, entry: Any) -> None:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        resource_id = resource.get("id") if isinstance(resource, dict) else None
        if isinstance(resource, dict) and isinstance(resource_id, str) and resource_id:
            key = f"{resource.get('resourceType')}/{resource_id}"
        else:
            key = f"#{len(self.entries)}"
        self.entries.setdefault(key, entry)

    def resources(self) -> Iterator[dict[str, Any]]:
        """The well-formed resources pulled so far."""
        return (entry["resource"] for key, entry in self.entries.items() if not key.startswith("#"))


class FhirServerSource:
    """Patients pulled from a FHIR server, one `PatientResources` per id, in the order given.

    `resource_types` are the types the criteria need (Patient is always read; Medication means
    "resolve medicationReference"). With `use_everything` (the default) the pull uses
    `Patient/{id}/$everything` when the CapabilityStatement declares it, and falls back to
    per-type searches when it does not or the server refuses the operation. Searches ask for
    `page_size` resources per page. A type the server declares no patient search for is read
    whole and filtered here (in both modes: such a server leaves it out of `$everything` too),
    since leaving it out would read as "the patient has none".
    """

    def __init__(
        self,
        client: FhirServerClient,
        patient_ids: Sequence[str],
        resource_types: Collection[str],
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        use_everything: bool = True,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.client = client
        self.patient_ids = tuple(patient_ids)
        self.resource_types = frozenset(resource_types)
        self.page_size = page_size
        self.use_everything = use_everything

    def __iter__(self) -> Iterator[PatientResources]:
        for patient_id in self.patient_ids:
            yield self.pull(patient_id)

    def pull(self, patient_id: str) -> PatientResources:
        """One patient's resources from the server (ServerError, or InputError for bad data)."""
        capabilities = self.client.capabilities()
        by_parameter = {
            resource_type: capabilities.patient_search_param(resource_type)
            for resource_type in sorted(self.resource_types - {"Patient", "Medication"})
        }
        searches = [(t, parameter) for t, parameter in by_parameter.items() if parameter]
        unsearchable = [t for t, parameter in by_parameter.items() if parameter is None]
        pulled: _Pulled | None = None
        if self.use_everything and capabilities.supports_everything:
            pulled = self._everything(patient_id)
        if pulled is None:
            pulled = self._searches(patient_id, searches, capabilities)
        for resource_type in unsearchable:
            self._scan(resource_type, patient_id, pulled)
        if "Medication" in self.resource_types:
            self._add_referenced_medications(pulled)
        origin = f"{self.client.base_url}/Patient/{patient_id}"
        entries = list(pulled.entries.values())
        bundle = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
        patient = parse_bundle(orjson.dumps(bundle), origin)
        if patient.patient_id != patient_id:
            raise ServerError(
                f"asked for Patient/{patient_id}, the server answered with Patient/"
                f"{patient.patient_id}",
                server=self.client.base_url,
                request=f"GET Patient/{patient_id}",
            )
        return patient

    def _everything(self, patient_id: str) -> _Pulled | None:
        """`$everything`, all pages; None when the server refuses the operation."""
        url = f"Patient/{quote(patient_id, safe='')}/$everything"
        params = {"_count": str(self.page_size)}
        pulled = _Pulled()
        try:
            for page in self.client.pages(url, params):
                for entry in page.get("entry") or ():
                    pulled.add(entry)
        except ServerError as error:
            if error.status not in _EVERYTHING_REFUSALS or pulled.entries:
                raise
            log.warning("%s; falling back to searches by patient", error)
            return None
        return pulled

    def _searches(
        self,
        patient_id: str,
        searches: Sequence[tuple[str, str]],
        capabilities: ServerCapabilities,
    ) -> _Pulled:
        """`Patient/{id}`, then one paged search per (type, patient search parameter)."""
        pulled = _Pulled()
        patient = self.client.read("Patient", patient_id)
        if patient is None:
            raise ServerError(
                f"no Patient/{patient_id} on the server",
                server=self.client.base_url,
                request=f"GET Patient/{patient_id}",
                status=404,
            )
        pulled.add({"fullUrl": f"{self.client.base_url}/Patient/{patient_id}", "resource": patient})
        for resource_type, parameter in searches:
            params = {parameter: f"Patient/{patient_id}", "_count": str(self.page_size)}
            include = f"{resource_type}:medication"
            if resource_type in MEDICATION_REFERENCING_TYPES and capabilities.can_include(
                resource_type, include
            ):
                params["_include"] = include
            for page in self.client.pages(resource_type, params):
                for entry in page.get("entry") or ():
                    pulled.add(entry)
        return pulled

    def _scan(self, resource_type: str, patient_id: str, pulled: _Pulled) -> None:
        """Every resource of a type the server cannot search by patient, this patient's kept.

        Such a server (sekmet has no search parameters on ResearchSubject) usually leaves the
        type out of `$everything` as well. Reading the whole type is slow on a large server,
        but leaving the type out would read as "the patient has none".
        """
        log.warning(
            "%s declares no patient search for %s: reading every %s and keeping Patient/%s's",
            self.client.base_url,
            resource_type,
            resource_type,
            patient_id,
        )
        for page in self.client.pages(resource_type, {"_count": str(self.page_size)}):
            for entry in page.get("entry") or ():
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict) and self._is_about(resource, patient_id):
                    pulled.add(entry)

    def _is_about(self, resource: dict[str, Any], patient_id: str) -> bool:
        """Whether the resource's subject, patient or individual is this server's patient."""
        for field_name in _PATIENT_REFERENCE_FIELDS:
            value = resource.get(field_name)
            reference = value.get("reference") if isinstance(value, dict) else None
            if (
                isinstance(reference, str)
                and reference_key(reference) == f"Patient/{patient_id}"
                and self.client.is_on_server(reference)
            ):
                return True
        return False

    def _add_referenced_medications(self, pulled: _Pulled) -> None:
        """Read each Medication a medicationReference names that the pull did not bring."""
        wanted: dict[str, str] = {}
        for resource in list(pulled.resources()):
            if resource.get("resourceType") not in MEDICATION_REFERENCING_TYPES:
                continue
            reference = resource.get("medicationReference")
            literal = reference.get("reference") if isinstance(reference, dict) else None
            if not isinstance(literal, str):
                continue
            key = reference_key(literal)
            if key is None or not key.startswith("Medication/") or key in pulled.entries:
                continue
            if not self.client.is_on_server(literal):
                log.warning("%s: not following %s, which is on another server", key, literal)
                continue
            wanted.setdefault(key, key.split("/", 1)[1])
        for key, medication_id in wanted.items():
            medication = self.client.read("Medication", medication_id)
            if medication is None:
                log.warning("%s: %s is not on the server", self.client.base_url, key)
                continue
            pulled.add({"fullUrl": f"{self.client.base_url}/{key}", "resource": medication})
