"""Fill an NDJSON folder from a FHIR R4 server's Bulk Data `$export` (Bulk Data Access IG v2).

`export_to_folder` kicks off `[base]/$export`, `[base]/Patient/$export` or
`[base]/Group/[id]/$export` (`Prefer: respond-async`, `_type` = the types asked for, always
with Patient; `_since`), polls the status URL the server answers with (202 +
`Content-Location`) as often as its `Retry-After` asks (else with growing intervals), reads
the completion manifest (200) and downloads every output file, streamed to a temporary name
and renamed when complete, as `<Type>.<nnn>.ndjson` in the manifest's order: the names
`ndjson_files` reads (and so a cohort run, through `engine.cohort.ndjson_partitions`). The
manifest's error files (OperationOutcome NDJSON) go to `export-errors/*.ndjson.txt`, a name
the NDJSON reader does not take for data, and their issues are returned. When every file is
down, the status URL is sent a DELETE so that the server can remove the files (a server that
refuses is ignored).

The export is resumable: `export.json` in the folder records the request, the status URL and,
once known, the manifest and the files downloaded. A second call with the same folder and
request does nothing when the export is complete, resumes polling the recorded status URL
(kicking off again when the server no longer knows it: 404 or 410), and downloads only the
files not yet down (kicking off again when the server no longer has them). Another request in
the same folder is refused.

Before the kick-off, the types asked for are intersected with those the server's
CapabilityStatement (`GET metadata`) declares: the others are left out of `_type` (a server
answers 400 to a type it does not have). A kick-off answered 400 with an OperationOutcome
naming types of `_type` (not Patient) is sent again without them (each time with fewer types,
so the kick-offs are bounded by the number of types); any other 400 is an error. The types
left out either way are recorded in `export.json` (`types_left_out`) and in the result, so
that criteria over them are evaluated as missing data ("not exported by the server"), never
as "none on record".

Every request goes through `engine.fhir_http.FhirServerClient` (the HTTP layer of every FHIR
request), built with `time_limit` so that its deadline is the call's. Connection errors,
timeouts, 429 and 5xx are retried with backoff and Retry-After (`RetryPolicy`), unless a 5xx
carries an OperationOutcome whose issues are all non-transient (the export failed: retrying
cannot help). Other answers raise `ServerError` naming the server, the request and the
OperationOutcome's diagnostics. `time_limit` bounds the whole call; the state stays on disk,
so the next call resumes. Credentials go to the status URL only on the server's own host, and
to output files only when the manifest says `requiresAccessToken` and the file is on that
host; a file's redirects are followed, the token dropped on one to another origin; no
message or log line carries them (nor a file URL's query).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args
from urllib.parse import quote, urljoin, urlsplit

import httpx
import orjson

from engine.atomic_write import atomic_write, write_atomically
from engine.errors import BulkExportError, Location
from engine.fhir_http import (
    FHIR_JSON,
    FhirServerClient,
    RetryableAnswer,
    RetryPolicy,
    ServerLimits,
    is_retryable,
    outcome_diagnostics,
    retry_after,
    status_problem,
    transport_problem,
)
from engine.sources.ndjson import NDJSON_SUFFIXES

log = logging.getLogger(__name__)

ExportLevel = Literal["system", "patient", "group"]
"""`[base]/$export`, `[base]/Patient/$export` or `[base]/Group/[id]/$export`."""

FHIR_NDJSON = "application/fhir+ndjson"
STATE_FILE = "export.json"
"""The state file in the export folder (request, status URL, manifest, files downloaded)."""
ERRORS_FOLDER = "export-errors"
"""Where the manifest's error files go, named `*.ndjson.txt` so that they are not read as data."""
MERGE_JOURNAL = "export-merge.json"
"""The journal of an incremental export being merged in (engine.sources.bulk_since)."""
DELETED_FOLDER = "export-deleted"
"""The manifest's `deleted` files (Bundles of DELETE requests, `_since`), `*.ndjson.txt`."""
DEFAULT_TIME_LIMIT = 3600.0
"""Seconds one `export_to_folder` call may take, polling and downloads included."""

_STATE_VERSION = 1
_LOCK_FILE = ".export.lock"
_FIRST_POLL = 1.0
_LONGEST_POLL = 60.0
_SHORTEST_POLL = 0.05
_CHUNK = 1 << 20
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
# IssueType codes under `transient`: the server asks to be asked again later.
_TRANSIENT_CODES = frozenset(
    {"transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled"}
)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ExportRequest:
    """What is exported: the server, the level, the Group, the types (sorted) and `_since`.

    `types` None exports every type the server has. Build one with `ExportRequest.build`,
    which checks and normalises the arguments.
    """

    base_url: str
    level: ExportLevel = "system"
    group_id: str | None = None
    types: tuple[str, ...] | None = None
    since: str | None = None

    @classmethod
    def build(
        cls,
        base_url: str,
        *,
        level: ExportLevel = "system",
        group_id: str | None = None,
        types: Collection[str] | None = None,
        since: str | None = None,
    ) -> ExportRequest:
        """A checked request: Patient added to `types`; BulkExportError for bad arguments."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise BulkExportError(
                f"'{base_url}' is not a FHIR base URL (http(s)://host[:port]/path)"
            )
        if level not in get_args(ExportLevel):
            raise BulkExportError(f"the export level is system, patient or group, not '{level}'")
        if level == "group":
            if group_id is None or not _FHIR_ID.fullmatch(group_id):
                found = "none given" if group_id is None else f"'{group_id}' is no FHIR id"
                raise BulkExportError(f"a group export needs a Group id (--group ID): {found}")
        elif group_id is not None:
            raise BulkExportError(f"a Group id ({group_id}) is only for a group export")
        kept: tuple[str, ...] | None = None
        if types is not None:
            if isinstance(types, str):
                raise BulkExportError("types is a collection of resource types, not one string")
            wrong = sorted(name for name in types if not _TYPE_NAME.fullmatch(name))
            if wrong:
                raise BulkExportError(f"not FHIR resource type names: {', '.join(wrong)}")
            kept = tuple(sorted({"Patient", *types}))
        if since is not None and not _is_instant(since):
            raise BulkExportError(
                f"_since '{since}' is not a FHIR instant (YYYY-MM-DDThh:mm:ss[.sss]Z or "
                "with a +hh:mm offset)"
            )
        return cls(base_url.rstrip("/"), level, group_id, kept, since)

    @property
    def path(self) -> str:
        """The kick-off path relative to the base URL."""
        if self.level == "patient":
            return "Patient/$export"
        if self.level == "group":
            return f"Group/{quote(self.group_id or '', safe='')}/$export"
        return "$export"

    @property
    def kickoff_url(self) -> str:
        return f"{self.base_url}/{self.path}"

    def params(self) -> dict[str, str]:
        """The kick-off's query parameters."""
        params = {"_outputFormat": FHIR_NDJSON}
        if self.types is not None:
            params["_type"] = ",".join(self.types)
        if self.since is not None:
            params["_since"] = self.since
        return params

    def to_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "level": self.level,
            "group_id": self.group_id,
            "types": list(self.types) if self.types is not None else None,
            "since": self.since,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportRequest:
        types = data["types"]
        return cls(
            data["base_url"],
            data["level"],
            data["group_id"],
            tuple(types) if types is not None else None,
            data["since"],
        )

    def differences(self, other: ExportRequest) -> list[str]:
        """`name: this -> other` for each argument that differs."""
        mine, theirs = self.to_json(), other.to_json()
        return [
            f"{name}: {mine[name]} -> {theirs[name]}" for name in mine if mine[name] != theirs[name]
        ]


@dataclass(frozen=True)
class ExportedFile:
    """One output file downloaded: its type, where it is, where it came from, its size."""

    type: str
    path: Path
    url: str
    resources: int
    bytes: int


@dataclass(frozen=True)
class ExportIssue:
    """One issue of the export's error files (an OperationOutcome line of `file`)."""

    severity: str
    code: str
    diagnostics: str
    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity} ({self.code}): {self.diagnostics}"


@dataclass(frozen=True)
class ExportProgress:
    """What the export is doing, for a progress display.

    `stage` is `kick-off`, `waiting` (the server's X-Progress in `message`), `downloaded`
    (`files_done` of `files_total`) or `complete`.
    """

    stage: Literal["kick-off", "waiting", "downloaded", "complete"]
    message: str
    files_done: int = 0
    files_total: int = 0


@dataclass(frozen=True)
class BulkExportResult:
    """A complete export in `folder`: the output files, and the issues of its error files.

    `reused` is True when the folder already held this complete export and the server was
    not asked anything.
    """

    folder: Path
    request: ExportRequest
    transaction_time: str
    files: tuple[ExportedFile, ...]
    issues: tuple[ExportIssue, ...]
    reused: bool = False
    types_left_out: tuple[str, ...] = ()
    """Types asked for that the server's CapabilityStatement does not declare or that its
    kick-off refused (400 naming them): not in `_type`, so nothing of them is on record here
    (missing data, not absence)."""

    def resources_by_type(self) -> dict[str, int]:
        """How many resources (lines) of each type were exported."""
        counts: dict[str, int] = {}
        for file in self.files:
            counts[file.type] = counts.get(file.type, 0) + file.resources
        return counts


ProgressHandler = Callable[[ExportProgress], None]


# --------------------------------------------------------------------------- state


@dataclass
class _FileState:
    kind: Literal["output", "error", "deleted"]
    type: str
    url: str
    name: str
    count: int | None = None
    done: bool = False
    resources: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "url": self.url,
            "name": self.name,
            "count": self.count,
            "done": self.done,
            "resources": self.resources,
            "bytes": self.bytes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _FileState:
        return cls(
            data["kind"],
            data["type"],
            data["url"],
            data["name"],
            data["count"],
            data["done"],
            data["resources"],
            data["bytes"],
        )


@dataclass
class _State:
    request: ExportRequest
    status_url: str | None = None
    kicked_off: str | None = None
    manifest: dict[str, Any] | None = None
    files: list[_FileState] = field(default_factory=list)
    complete: bool = False
    released: bool = False
    types_left_out: tuple[str, ...] = ()
    increments: list[dict[str, Any]] = field(default_factory=list)
    """The incremental (`_since`) exports applied onto this complete one, oldest first:
    `since`, `transaction_time`, `replaced`, `deleted` (engine.sources.bulk_since)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "request": self.request.to_json(),
            "types_left_out": list(self.types_left_out),
            "status_url": self.status_url,
            "kicked_off": self.kicked_off,
            "manifest": self.manifest,
            "files": [file.to_json() for file in self.files],
            "complete": self.complete,
            "released": self.released,
            "increments": self.increments,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _State:
        if data.get("version") != _STATE_VERSION:
            raise ValueError(f"state version {data.get('version')}, expected {_STATE_VERSION}")
        return cls(
            ExportRequest.from_json(data["request"]),
            data["status_url"],
            data["kicked_off"],
            data["manifest"],
            [_FileState.from_json(item) for item in data["files"]],
            bool(data["complete"]),
            bool(data["released"]),
            tuple(data.get("types_left_out") or ()),
            list(data.get("increments") or ()),
        )

    def forget_server_job(self) -> None:
        """Back to before the kick-off (the files already downloaded are removed by the caller)."""
        self.status_url = self.kicked_off = self.manifest = None
        self.files = []
        self.complete = self.released = False


# --------------------------------------------------------------------------- HTTP


class _Gone(Exception):
    """The server no longer has it (404 or 410)."""


def _is_instant(text: str) -> bool:
    """Whether `text` is a FHIR instant (a date, a time to the second, a zone)."""
    if _INSTANT.fullmatch(text) is None:
        return False
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _is_transient_answer(response: httpx.Response) -> bool:
    """Whether a 429 or 5xx is worth retrying: yes, unless it carries an OperationOutcome
    whose issues are all non-transient (the export failed; asking again cannot help).
    """
    if response.status_code == 429:
        return True
    try:
        document = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return True
    if not isinstance(document, dict) or document.get("resourceType") != "OperationOutcome":
        return True
    codes = [issue.get("code") for issue in document.get("issue") or () if isinstance(issue, dict)]
    return not codes or any(code in _TRANSIENT_CODES for code in codes)


def _types_refused(response: httpx.Response, sent_types: str | None) -> tuple[str, ...]:
    """The types of `_type` (Patient aside) that a 400 kick-off answer's OperationOutcome
    names: what the server says it cannot export (the SMART reference server: `The requested
    resource type "MedicationStatement" is not available on this server`).

    None when the answer is no OperationOutcome, names none of them, or names Patient too
    (then it is about the parameter as a whole, `_type=Condition,Patient: unknown`).
    """
    if not sent_types:
        return ()
    try:
        document = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(document, dict) or document.get("resourceType") != "OperationOutcome":
        return ()
    text = outcome_diagnostics(document)
    named = [
        name
        for name in sent_types.split(",")
        if re.search(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])", text)
    ]
    if "Patient" in named:
        return ()
    return tuple(named)


def _download(
    client: FhirServerClient, url: str, target: Path, send_auth: bool, clock: Callable[[], float]
) -> tuple[int, int]:
    """Stream `url` to `target` atomically (`engine.atomic_write`); (lines, bytes).

    Redirects are followed (a file server in front of an object store answers 302 or 307 with
    a presigned URL), by httpx, which drops the Authorization header on a redirect to another
    origin (scheme, host, port; an http-to-https upgrade of the same host aside): the token,
    sent only with `send_auth`, stays on the server's origin.

    Raises `_Gone` for 404/410, ServerError for other refusals or when the client's deadline
    passes during the download.
    """
    described = client.describe("GET", url)

    def attempt(timeout: float) -> tuple[int, int]:
        with client.http.stream(
            "GET",
            url,
            headers={"Accept": FHIR_NDJSON},
            auth=client.auth if send_auth else None,
            timeout=timeout,
            follow_redirects=True,
        ) as response:
            if response.status_code in (404, 410):
                raise _Gone(described)
            if not response.is_success:
                response.read()
                problem = status_problem(response)
                if is_retryable(response.status_code) and _is_transient_answer(response):
                    asked = retry_after(response, time.time)
                    raise RetryableAnswer(problem, response.status_code, asked)
                raise client.error(described, problem, response.status_code)
            return _write(client, response, target, described, clock)

    return client.retrying(described, attempt)


def _write(
    client: FhirServerClient,
    response: httpx.Response,
    target: Path,
    described: str,
    clock: Callable[[], float],
) -> tuple[int, int]:
    lines = size = 0
    last = b"\n"
    assert client.deadline is not None
    with atomic_write(target) as handle:
        for chunk in response.iter_bytes(_CHUNK):
            if not chunk:
                continue
            handle.write(chunk)
            lines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
            if clock() > client.deadline:
                raise client.error(
                    described,
                    "the time limit ran out during the download; run again with the same "
                    "folder to resume",
                    timed_out=True,
                )
    if last != b"\n":
        lines += 1
    return lines, size


# --------------------------------------------------------------------------- the export


def export_to_folder(
    base_url: str,
    folder: str | Path,
    *,
    types: Collection[str] | None = None,
    level: ExportLevel = "system",
    group_id: str | None = None,
    since: str | None = None,
    auth: httpx.Auth | None = None,
    retry: RetryPolicy | None = None,
    limits: ServerLimits | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT,
    progress: ProgressHandler | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> BulkExportResult:
    """Export from the FHIR server at `base_url` into `folder` (created if missing), or
    finish the export a previous call began there (see the module docstring).

    `types` becomes `_type` (Patient is always added; None exports every type), `since`
    `_since` (a FHIR instant). `auth` is sent to the server and, when the manifest requires
    it, with the downloads. `retry` bounds each request's retries, `limits` each answer's
    size (`ServerLimits.max_answer_bytes`: the kick-off, status and manifest answers; the
    files are streamed to disk), `time_limit` the call's seconds. `transport`, `sleep`,
    `clock` and `jitter` are for tests.
    Raises ServerError for what the server refuses or answers wrongly, BulkExportError for
    bad arguments or a folder that holds something else.
    """
    request = ExportRequest.build(
        base_url, level=level, group_id=group_id, types=types, since=since
    )
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    with (
        _folder_lock(root),
        FhirServerClient(
            request.base_url,
            auth=auth,
            retry=retry,
            limits=limits,
            time_limit=time_limit,
            transport=transport,
            sleep=sleep,
            clock=clock,
            jitter=jitter,
        ) as client,
    ):
        return _Export(request, root, client, time_limit, progress, sleep, clock).run()


@contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder's lock file (where fcntl exists)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with (root / _LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BulkExportError(
                "another export is writing this folder", Location(file=str(root))
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class _Export:
    """One call's work on one folder."""

    def __init__(
        self,
        request: ExportRequest,
        root: Path,
        client: FhirServerClient,
        time_limit: float,
        progress: ProgressHandler | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self.request = request
        self.root = root
        self.client = client
        self.time_limit = time_limit
        self.sleep = sleep
        self.clock = clock
        self.progress = progress or (lambda _event: None)
        self.state_path = root / STATE_FILE

    def run(self) -> BulkExportResult:
        state = self._load_state()
        if state.complete and all(
            (self.root / file.name).is_file() for file in state.files if file.done
        ):
            return self._result(state, reused=True)
        for file in state.files:
            if file.done and not (self.root / file.name).is_file():
                if state.increments:  # merged files have no URL to download them from again
                    raise BulkExportError(
                        f"{file.name} of an export with incremental exports applied was "
                        "removed; it cannot be downloaded again: export into an empty folder",
                        Location(file=str(self.root / file.name)),
                    )
                log.warning("%s was removed; downloading it again", self.root / file.name)
                file.done = False
        state.complete = False
        restarted = False
        while True:
            try:
                if state.manifest is None:
                    if state.status_url is None:
                        self._kick_off(state)
                    self._take_manifest(state, self._poll(state))
                self._download_all(state)
                break
            except _Gone as gone:
                if restarted:
                    raise self.client.error(
                        str(gone),
                        "the server answered 404 or 410 again after a new kick-off; it does "
                        "not keep its exports long enough to download them",
                    ) from None
                restarted = True
                log.warning(
                    "%s: the server no longer has %s (expired?); exporting again",
                    self.request.base_url,
                    gone,
                )
                self._remove_downloaded(state)
                state.forget_server_job()
                self._save(state)
        state.complete = True
        self._save(state)
        self._release(state)
        self.progress(
            ExportProgress("complete", "export complete", len(state.files), len(state.files))
        )
        return self._result(state, reused=False)

    # ---------------------------------------------------------------- state file

    def _load_state(self) -> _State:
        if not self.state_path.exists():
            strays = [
                path.relative_to(self.root).as_posix()
                for path in self.root.rglob("*")
                if path.name.endswith(NDJSON_SUFFIXES)
            ]
            if strays:
                raise BulkExportError(
                    f"the folder holds NDJSON files that no export here wrote "
                    f"({', '.join(sorted(strays)[:3])}{', ...' if len(strays) > 3 else ''}); "
                    "export into an empty folder",
                    Location(file=str(self.root)),
                )
            state = _State(self.request)
            self._save(state)
            return state
        try:
            state = _State.from_json(orjson.loads(self.state_path.read_bytes()))
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise BulkExportError(
                f"cannot read the export state: {error}; remove the folder to export anew",
                Location(file=str(self.state_path)),
            ) from None
        differences = state.request.differences(self.request)
        if differences:
            raise BulkExportError(
                "the folder holds another export ("
                + "; ".join(differences)
                + "); use another folder, or empty this one",
                Location(file=str(self.state_path)),
            )
        return state

    def _save(self, state: _State) -> None:
        data = orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
        write_atomically(self.state_path, data)

    # ---------------------------------------------------------------- protocol

    def _kick_off(self, state: _State) -> None:
        request = self.request
        headers = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
        state.types_left_out = self._types_left_out()
        if state.types_left_out:
            log.warning(
                "%s: the server's CapabilityStatement does not declare %s; not exported "
                "(criteria over them are unknown: not exported by the server)",
                request.base_url,
                ", ".join(state.types_left_out),
            )
        # Each 400 naming types drops at least one of the types sent: at most as many
        # kick-offs as types asked for.
        while True:
            params = request.params()
            if state.types_left_out:
                assert request.types is not None
                kept = [name for name in request.types if name not in state.types_left_out]
                params["_type"] = ",".join(kept)
            described = self.client.describe("GET", request.kickoff_url, params)
            self.progress(ExportProgress("kick-off", described))
            response = self.client.send(
                "GET",
                request.kickoff_url,
                params=params,
                headers=headers,
                worth_retrying=_is_transient_answer,
                answers_kept=(400,),
            )
            if response.status_code != 400:
                break
            refused = _types_refused(response, params.get("_type"))
            if not refused:
                raise self.client.error(described, status_problem(response), 400)
            assert request.types is not None
            left_out = {*state.types_left_out, *refused}
            state.types_left_out = tuple(name for name in request.types if name in left_out)
            self._save(state)
            log.warning(
                "%s: the kick-off was refused for %s (%s); exporting again without them "
                "(criteria over them are unknown: not exported by the server)",
                request.base_url,
                ", ".join(refused),
                status_problem(response),
            )
        location = response.headers.get("Content-Location")
        if response.status_code != 202 or not location:
            raise self.client.error(
                described,
                f"expected 202 Accepted with a Content-Location (an asynchronous export), got "
                f"HTTP {response.status_code}"
                + ("" if location else " without a Content-Location"),
                response.status_code,
            )
        status_url = urljoin(request.base_url + "/", location)
        if _origin(status_url) != _origin(request.base_url) and self.client.auth is not None:
            raise self.client.error(
                described,
                f"the status URL {status_url.split('?', 1)[0]} is on another host than the "
                "server; not sending the credentials there",
            )
        state.status_url = status_url
        state.kicked_off = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self._save(state)
        log.info("%s: export kicked off, status at %s", request.base_url, status_url)

    def _types_left_out(self) -> tuple[str, ...]:
        """The types asked for that the CapabilityStatement does not declare (Patient always
        kept; nothing left out when the statement declares no types at all)."""
        if self.request.types is None:
            return ()
        declared = self.client.capabilities().resources
        if not declared:
            return ()
        return tuple(
            name for name in self.request.types if name != "Patient" and name not in declared
        )

    def _poll(self, state: _State) -> dict[str, Any]:
        """The completion manifest; `_Gone` when the server no longer knows the status URL."""
        assert state.status_url is not None
        url = state.status_url
        described = self.client.describe("GET", url)
        headers = {"Accept": FHIR_JSON}
        interval = _FIRST_POLL
        while True:
            response = self.client.send(
                "GET", url, headers=headers, missing_ok=True, worth_retrying=_is_transient_answer
            )
            if response.status_code in (404, 410):
                raise _Gone(described)
            if response.status_code == 200:
                return self._manifest(response, described)
            if response.status_code != 202:
                raise self.client.error(
                    described,
                    f"expected 202 (in progress) or 200 (complete), got HTTP "
                    f"{response.status_code}",
                    response.status_code,
                )
            where = response.headers.get("X-Progress") or "in progress"
            asked = retry_after(response, time.time)
            if asked is None:  # no Retry-After: intervals that grow, as the IG suggests
                delay, interval = interval, min(_LONGEST_POLL, interval * 2)
            else:
                delay = max(_SHORTEST_POLL, asked)
            assert self.client.deadline is not None
            if self.clock() + delay > self.client.deadline:
                raise self.client.error(
                    described,
                    f"the export is not complete within the {self.time_limit:g} s allowed "
                    f"(last progress: {where}); run again with the same folder to resume "
                    "waiting",
                    202,
                    timed_out=True,
                )
            self.progress(ExportProgress("waiting", where))
            log.info("%s: %s; asking again in %.1f s", described, where, delay)
            self.sleep(delay)

    def _manifest(self, response: httpx.Response, described: str) -> dict[str, Any]:
        try:
            manifest = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self.client.error(described, "the completion manifest is not JSON", 200) from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
            raise self.client.error(described, "the completion manifest has no output list", 200)
        # IG 2.0.0 "Response - Complete Status": transactionTime, request, requiresAccessToken,
        # output and error are required; deleted is optional.
        transaction_time = manifest.get("transactionTime")
        if not isinstance(transaction_time, str) or not _is_instant(transaction_time):
            raise self.client.error(
                described,
                "the completion manifest's transactionTime is "
                + ("missing" if transaction_time is None else f"{transaction_time!r}")
                + ", not a FHIR instant (the next --since needs it)",
                200,
            )
        if not isinstance(manifest.get("request"), str) or not manifest["request"]:
            raise self.client.error(
                described, "the completion manifest has no request (the kick-off URL)", 200
            )
        if not isinstance(manifest.get("requiresAccessToken"), bool):
            raise self.client.error(
                described,
                "the completion manifest's requiresAccessToken is "
                + ("missing" if "requiresAccessToken" not in manifest else "not true or false"),
                200,
            )
        if "error" not in manifest:
            raise self.client.error(
                described, "the completion manifest has no error list (an empty one if none)", 200
            )
        for key in ("error", "deleted"):
            if not isinstance(manifest.get(key) or [], list):
                raise self.client.error(
                    described, f"the completion manifest's {key} is not a list", 200
                )
        for key in ("output", "error", "deleted"):
            for position, item in enumerate(manifest.get(key) or ()):
                if (
                    not isinstance(item, dict)
                    or not isinstance(item.get("type"), str)
                    or not _TYPE_NAME.fullmatch(item["type"])
                    or not isinstance(item.get("url"), str)
                    or not item["url"]
                ):
                    raise self.client.error(
                        described,
                        f"the completion manifest's {key}[{position}] needs a resource type "
                        "and a url",
                        200,
                    )
        return cast(dict[str, Any], manifest)

    def _take_manifest(self, state: _State, manifest: dict[str, Any]) -> None:
        """Record the manifest and the file names its files get."""
        assert state.status_url is not None
        wanted = set(self.request.types) if self.request.types is not None else None
        outputs = [item for item in manifest["output"] if wanted is None or item["type"] in wanted]
        skipped = len(manifest["output"]) - len(outputs)
        if skipped:
            log.warning(
                "%s: the manifest lists %s files of types not asked for (the server ignored "
                "_type?); not downloading them",
                self.request.base_url,
                skipped,
            )
        files = _named(outputs, "output", "{type}.{number}.ndjson", state.status_url)
        errors = _named(
            manifest.get("error") or [],
            "error",
            f"{ERRORS_FOLDER}/{{type}}.{{number}}.ndjson.txt",
            state.status_url,
        )
        deleted = _named(
            manifest.get("deleted") or [],
            "deleted",
            f"{DELETED_FOLDER}/{{type}}.{{number}}.ndjson.txt",
            state.status_url,
        )
        state.manifest = manifest
        state.files = files + errors + deleted
        self._save(state)

    def _download_all(self, state: _State) -> None:
        assert state.manifest is not None
        send_token = state.manifest.get("requiresAccessToken") is True
        total = len(state.files)
        for file in state.files:
            if file.done:
                continue
            with_auth = send_token and self.client.auth is not None
            if with_auth and _origin(file.url) != _origin(self.request.base_url):
                raise self.client.error(
                    self.client.describe("GET", file.url),
                    "the manifest requires the access token for a file on another host than "
                    "the server; not sending the credentials there",
                )
            target = self.root / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            file.resources, file.bytes = _download(
                self.client, file.url, target, with_auth, self.clock
            )
            file.done = True
            if file.count is not None and file.count != file.resources and file.kind == "output":
                log.warning(
                    "%s: the manifest says %s resources, the file holds %s lines",
                    target,
                    file.count,
                    file.resources,
                )
            self._save(state)
            done = sum(1 for item in state.files if item.done)
            self.progress(ExportProgress("downloaded", file.name, done, total))

    def _release(self, state: _State) -> None:
        """DELETE the status URL so that the server may remove the files; refusals ignored."""
        if state.status_url is None or state.released:
            return
        url = state.status_url
        try:
            response = self.client.http.request(
                "DELETE", url, timeout=self.client.attempt_timeout()
            )
        except httpx.TransportError as error:
            log.warning("DELETE %s: %s (ignored)", url, transport_problem(error))
            return
        if not response.is_success and response.status_code not in (404, 405):
            log.warning("DELETE %s: %s (ignored)", url, status_problem(response))
        state.released = True
        self._save(state)

    def _remove_downloaded(self, state: _State) -> None:
        for file in state.files:
            (self.root / file.name).unlink(missing_ok=True)

    # ---------------------------------------------------------------- result

    def _result(self, state: _State, *, reused: bool) -> BulkExportResult:
        manifest = state.manifest or {}
        outputs = tuple(
            ExportedFile(file.type, self.root / file.name, file.url, file.resources, file.bytes)
            for file in state.files
            if file.kind == "output"
        )
        issues = tuple(
            issue
            for file in state.files
            if file.kind == "error"
            for issue in read_export_issues(self.root / file.name)
        )
        return BulkExportResult(
            self.root,
            self.request,
            str(manifest.get("transactionTime") or ""),
            outputs,
            issues,
            reused,
            state.types_left_out,
        )


def _named(
    items: list[dict[str, Any]],
    kind: Literal["output", "error", "deleted"],
    pattern: str,
    base: str,
) -> list[_FileState]:
    """File states for manifest items, numbered per type in manifest order."""
    per_type: dict[str, int] = {}
    for item in items:
        per_type[item["type"]] = per_type.get(item["type"], 0) + 1
    seen: dict[str, int] = {}
    files = []
    for item in items:
        resource_type = item["type"]
        index = seen.get(resource_type, 0)
        seen[resource_type] = index + 1
        width = max(3, len(str(per_type[resource_type] - 1)))
        name = pattern.format(type=resource_type, number=f"{index:0{width}d}")
        count = item.get("count")
        files.append(
            _FileState(
                kind,
                resource_type,
                urljoin(base, item["url"]),
                name,
                count if isinstance(count, int) and not isinstance(count, bool) else None,
            )
        )
    return files


def _recorded_state(folder: Path) -> _State | None:
    """The state an export into `folder` recorded (None when no export wrote the folder)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return _State.from_json(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise BulkExportError(
            f"cannot read the export state: {error}", Location(file=str(path))
        ) from None


def exported_types_left_out(folder: Path) -> frozenset[str]:
    """The types an export into `folder` left out (none when no export wrote the folder)."""
    state = _recorded_state(folder)
    return frozenset(state.types_left_out) if state is not None else frozenset()


INCREMENTAL_ONLY = (
    "an export with _since holds only the resources whose state changed after that instant "
    "(Bulk Data Access IG v2, `_since`), not complete records: a patient's unchanged data "
    "would read as none on record"
)


def check_complete_records(folder: Path) -> None:
    """Refuse (BulkExportError) a folder whose export is incremental (`_since`): it holds only
    what changed, so it cannot be evaluated as complete records. A folder no export wrote,
    or a complete export, passes."""
    if (Path(folder) / MERGE_JOURNAL).is_file():
        raise BulkExportError(
            "applying an incremental export (--since) onto this folder was interrupted; run "
            "the same trialsieve cohort --server ... --since command again to finish it",
            Location(file=str(Path(folder) / MERGE_JOURNAL)),
        )
    state = _recorded_state(folder)
    if state is not None and state.request.since is not None:
        raise BulkExportError(
            f"the folder holds only an incremental export (--since {state.request.since}) "
            f"and no complete export to apply it to; {INCREMENTAL_ONLY}; export without "
            "--since into an empty folder",
            Location(file=str(Path(folder) / STATE_FILE)),
        )


def check_since_base(folder: Path, since: str) -> None:
    """Refuse (BulkExportError), before anything is asked of the server, an incremental
    export (`_since`) for a cohort run into `folder` when it holds no complete export to
    apply it to (`engine.sources.bulk_since.apply_since_export` applies one)."""
    state = _recorded_state(folder)
    if state is None or not state.complete or state.request.since is not None:
        raise BulkExportError(
            f"--since {since}: the folder holds no complete export to apply the changes to; "
            f"{INCREMENTAL_ONLY}; export without --since into this folder first",
            Location(file=str(folder)),
        )


def read_export_issues(path: Path) -> list[ExportIssue]:
    """The issues of an export error file (OperationOutcome NDJSON), one per issue.

    A line that is not an OperationOutcome becomes an `error` issue saying so.
    """
    issues: list[ExportIssue] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return [ExportIssue("error", "exception", f"cannot read the file: {reason}", path, 0)]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            outcome = orjson.loads(line)
        except orjson.JSONDecodeError:
            outcome = None
        if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
            issues.append(
                ExportIssue("error", "invalid", "the line is not an OperationOutcome", path, number)
            )
            continue
        for item in outcome.get("issue") or ():
            if not isinstance(item, dict):
                continue
            details = item.get("details")
            detail_text = details.get("text") if isinstance(details, dict) else None
            text = item.get("diagnostics") or detail_text or ""
            issues.append(
                ExportIssue(
                    str(item.get("severity") or "error"),
                    str(item.get("code") or "unknown"),
                    str(text),
                    path,
                    number,
                )
            )
    return issues
