"""A throwaway FHIR R4 server on loopback (sekmet-fhir), and loading transaction Bundles into a
server.

`EmbeddedServer` runs `sekmet serve` on a free port of 127.0.0.1 in a temporary folder of its
own (sekmet keeps its data in ./data under its working directory), with:

- its base URL set to the port it listens on (`SEKMET_BASE_URL`; else its paging links point
  at localhost:8090);
- a random bearer token required for everything but `/metadata`, and optionally SMART Backend
  Services clients (`SmartClientRegistration`);
- its order simulator off, so that it holds exactly the data loaded into it.

`start()` waits until `/metadata` answers and the token is accepted (which proves the port is
this server's); `stop()` terminates the process, waits, kills it if it does not stop, and
deletes the folder. Use it as a context manager. On Linux the process also gets SIGTERM when
the thread that started it dies, so a killed parent leaves no server behind; start it from a
long-lived thread (the main thread). sekmet-fhir is an optional dependency:
`pip install 'trialsieve[demo]'`.

`load_transaction_bundles` loads Bundle files into any FHIR server: Synthea's hospital and
practitioner Bundles first, the resources that conditional references
(`Practitioner?identifier=system|value`) name created where missing, and `POST` entries
turned into `PUT Type/{id}` (create with the file's id) so that the ids stay those of the files
and a second load updates instead of duplicating.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx
import orjson

from engine.errors import EmbeddedServerError, InputError, Location, ServerError
from engine.sinks import FhirServerSink, WrittenEntry
from engine.sources import BearerToken, FhirServerClient, RetryPolicy

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'trialsieve[demo]'"
SHARED_BUNDLE_PREFIXES = ("hospitalInformation", "practitionerInformation")
"""Synthea Bundles of the resources its patient Bundles reference conditionally."""

_CONDITIONAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)\?identifier=([^|&]+)\|([^&]+)$")
_PORT_ATTEMPTS = 3
_POLL_INTERVAL = 0.1
_LOG_TAIL_LINES = 30

# Run in the server's Python: die with the starting thread (Linux), then run `sekmet serve`.
# argv: [-c, parent pid, sekmet arguments...].
_LAUNCHER = """\
import ctypes, os, signal, sys
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit("sekmet launcher: the process that started it is gone")
from sekmet.cli import app
sys.argv = ["sekmet", *sys.argv[2:]]
app()
"""


@dataclass(frozen=True)
class SmartClientRegistration:
    """A SMART Backend Services client the embedded server accepts: its id, the PEM file of
    its public key, and the scopes it may be granted.
    """

    client_id: str
    public_key_file: Path
    scopes: str = "system/*.*"


def sekmet_version() -> str:
    """The installed sekmet-fhir version; EmbeddedServerError naming the fix when absent."""
    if importlib.util.find_spec("sekmet") is None:
        raise EmbeddedServerError(
            f"sekmet-fhir is not installed, so there is no local FHIR server to start: "
            f"{INSTALL_HINT} (or give --server URL of a FHIR R4 server)"
        )
    try:
        return importlib.metadata.version("sekmet-fhir")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _make_folder(folder: Path) -> None:
    """Create the server's folder and its parents when missing; EmbeddedServerError naming it
    when that fails (a file in the way, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise EmbeddedServerError(
            f"{folder}: cannot create the server's folder: {reason}"
        ) from None


class EmbeddedServer:
    """sekmet-fhir on a free loopback port, in a temporary folder deleted when it stops.

    `folder` puts the server in that folder instead (created with its parents when missing,
    and kept; EmbeddedServerError naming it when it cannot be);
    `smart_clients` are accepted besides the bearer token, with access tokens valid for
    `token_lifetime` seconds. The token is never shown in the repr.
    """

    def __init__(
        self,
        *,
        folder: Path | None = None,
        smart_clients: Sequence[SmartClientRegistration] = (),
        token_lifetime: int = 3600,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.smart_clients = tuple(smart_clients)
        self.token_lifetime = token_lifetime
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._given_folder = folder
        self._folder: Path | None = None
        self._token = secrets.token_urlsafe(24)
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the server and wait until it answers; EmbeddedServerError when it cannot."""
        if self._process is not None:
            raise EmbeddedServerError(f"the server at {self.base_url} is already running")
        sekmet_version()
        atexit.register(self.stop)
        try:
            self._folder = self._given_folder or Path(tempfile.mkdtemp(prefix="trialsieve-sekmet-"))
            _make_folder(self._folder)
            settings = self._write_settings(self._folder)
            for _attempt in range(_PORT_ATTEMPTS):
                self._launch(settings, _free_port())
                if self._wait_until_up():
                    break
                log.warning(
                    "port %s was taken before sekmet could bind it; trying another", self._port
                )
            else:
                raise EmbeddedServerError(
                    f"sekmet could not bind a free port on 127.0.0.1 in {_PORT_ATTEMPTS} tries"
                )
            self._check_token()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop), delete its temporary folder.

        Safe to call more than once, and registered with atexit while the server runs.
        """
        atexit.unregister(self.stop)
        self._end_process()
        folder, self._folder = self._folder, None
        if folder is not None and self._given_folder is None:
            try:
                shutil.rmtree(folder)
            except OSError as error:
                log.warning("could not delete the server's folder %s: %s", folder, error)

    # ------------------------------------------------------------------ what it offers

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def folder(self) -> Path:
        self._started()
        assert self._folder is not None
        return self._folder

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/fhir`."""
        if self._port is None:
            raise EmbeddedServerError("the embedded server has not been started")
        return f"http://127.0.0.1:{self._port}/fhir"

    @property
    def token(self) -> str:
        """The bearer token the server requires (keep it out of messages and logs)."""
        return self._token

    def auth(self) -> BearerToken:
        return BearerToken(self._token)

    def client(self, retry: RetryPolicy | None = None) -> FhirServerClient:
        """A client for this server, with its token."""
        return FhirServerClient(self.base_url, auth=self.auth(), retry=retry)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The end of the server's log (stdout and stderr), for error messages."""
        if self._folder is None:
            return ""
        path = self._folder / "sekmet.log"
        if not path.exists():
            return ""
        text = path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not started"
        return f"EmbeddedServer({where}, running={self.running})"

    # ------------------------------------------------------------------ internals

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise EmbeddedServerError("the embedded server is not running")
        return self._process

    def _write_settings(self, folder: Path) -> Path:
        """settings.yaml (written as JSON, which YAML reads): simulator off, auth required."""
        types = ["bearer", "smart"] if self.smart_clients else ["bearer"]
        settings = {
            "simulator": {"enabled": False},
            "log_inbound": False,
            "server_auth": {
                "types": types,
                "tokens": [self._token],
                "token_lifetime": self.token_lifetime,
                "smart_clients": [
                    {
                        "client_id": client.client_id,
                        "public_key_path": str(client.public_key_file.resolve()),
                        "scopes": client.scopes,
                    }
                    for client in self.smart_clients
                ],
            },
        }
        path = folder / "settings.yaml"
        path.write_text(json.dumps(settings, indent=2), encoding="utf-8")
        path.chmod(0o600)
        return path

    def _launch(self, settings: Path, port: int) -> None:
        self._end_process()
        assert self._folder is not None
        self._port = port
        environment = {
            **os.environ,
            "SEKMET_BASE_URL": self.base_url,
            "SEKMET_CONFIG": str(settings),
        }
        arguments = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        self._log = (self._folder / "sekmet.log").open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *arguments],
            cwd=self._folder,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches trialsieve, which stops the server
        )
        log.info("started sekmet (pid %s) at %s", self._process.pid, self.base_url)

    def _wait_until_up(self) -> bool:
        """True once `/metadata` answers 200; False when the port was taken."""
        process = self._started()
        url = f"{self.base_url}/metadata"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower():
                    return False
                raise EmbeddedServerError(
                    f"sekmet exited with status {code} while starting; its log ends:\n{tail}"
                )
            try:
                answered = httpx.get(url, timeout=2.0).status_code == 200
            except httpx.TransportError:
                answered = False  # not listening yet
            if answered:
                return True
            time.sleep(_POLL_INTERVAL)
        raise EmbeddedServerError(
            f"sekmet did not answer {url} within {self.start_timeout:g} s; its log ends:\n"
            f"{self.log_tail()}"
        )

    def _check_token(self) -> None:
        """One authenticated read: only this server knows the token, so it is ours."""
        url = f"{self.base_url}/Patient"
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/fhir+json"}
        try:
            response = httpx.get(url, params={"_count": "1"}, headers=headers, timeout=10.0)
        except httpx.TransportError as error:
            raise EmbeddedServerError(f"{url}: no answer after start ({error})") from None
        if response.status_code != 200:
            raise EmbeddedServerError(
                f"{url} answered HTTP {response.status_code} to the server's own token: another "
                "server may be listening on the port"
            )

    def _end_process(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("sekmet (pid %s) did not stop in time; killing it", process.pid)
                process.kill()
                process.wait(self.stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadedBundle:
    """One Bundle file loaded into a server: what the server did with each entry."""

    path: Path
    written: tuple[WrittenEntry, ...]

    @property
    def patient_ids(self) -> tuple[str, ...]:
        """The server ids of the Patients the Bundle created or updated."""
        return tuple(
            resource_id
            for entry in self.written
            if (resource_id := _written_id(entry, "Patient")) is not None
        )


def bundle_files(folders_or_files: Iterable[Path]) -> list[Path]:
    """The `*.json` files of folders (recursively) and files, Synthea's shared Bundles first."""
    files: list[Path] = []
    for path in folders_or_files:
        files.extend(sorted(path.rglob("*.json")) if path.is_dir() else [path])
    return sorted(files, key=lambda file: not file.name.startswith(SHARED_BUNDLE_PREFIXES))


class TransactionLoader:
    """Loads transaction Bundle files into a server, one at a time (see the module docstring).

    Before each Bundle, the resources its conditional references name are created where the
    server has none (a conditional create on the identifier; each reference once per loader).
    With `keep_ids` each unconditional `POST` entry of a resource with an id becomes
    `PUT Type/{id}`: the server keeps the file's ids, a second load updates in place, and a
    retried request is harmless. Without it the server assigns ids.
    """

    def __init__(self, client: FhirServerClient, *, keep_ids: bool = True) -> None:
        self.client = client
        self.keep_ids = keep_ids
        self._sink = FhirServerSink(client)
        self._ensured: set[str] = set()

    def load(self, path: Path) -> LoadedBundle:
        """Load one file; InputError when it is not a transaction Bundle, ServerError naming
        the file when the server refuses it.
        """
        bundle = _read_transaction(path)
        if self.keep_ids:
            _keep_ids(bundle)
        shared = _missing_conditional_targets(bundle, self._ensured)
        if shared["entry"]:
            self._send(shared, path, "the resources its conditional references name")
        self._ensured.update(_conditional_references(bundle))
        return LoadedBundle(path, tuple(self._send(bundle, path, "the Bundle")))

    def _send(self, bundle: dict[str, Any], path: Path, what: str) -> list[WrittenEntry]:
        try:
            return self._sink.send(bundle)
        except ServerError as error:
            raise ServerError(
                f"{path}: loading {what}: {error.message}",
                server=error.server,
                request=f"POST / (transaction of {len(bundle['entry'])} entries)",
                status=error.status,
            ) from error


def load_transaction_bundles(
    client: FhirServerClient, files: Iterable[Path], *, keep_ids: bool = True
) -> list[LoadedBundle]:
    """Load transaction Bundle files into a server in the order given (see `bundle_files`),
    stopping at the first that fails (see `TransactionLoader`).
    """
    loader = TransactionLoader(client, keep_ids=keep_ids)
    return [loader.load(path) for path in files]


def _read_transaction(path: Path) -> dict[str, Any]:
    try:
        bundle = orjson.loads(path.read_bytes())
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(f"cannot read the file: {reason}", Location(file=str(path))) from None
    except orjson.JSONDecodeError as error:
        raise InputError(f"not JSON: {error}", Location(file=str(path))) from None
    if (
        not isinstance(bundle, dict)
        or bundle.get("resourceType") != "Bundle"
        or bundle.get("type") != "transaction"
        or not isinstance(bundle.get("entry"), list)
    ):
        raise InputError(
            "not a transaction Bundle with entries, which is what can be loaded into a server",
            Location(file=str(path)),
        )
    for position, entry in enumerate(bundle["entry"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("resource"), dict)
            or not isinstance(entry.get("request"), dict)
        ):
            raise InputError(
                "a transaction entry needs a resource and a request",
                Location(file=str(path), field=f"entry[{position}]"),
            )
    return bundle


def _keep_ids(bundle: dict[str, Any]) -> None:
    """Turn each unconditional `POST Type` of a resource with an id into `PUT Type/{id}`."""
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        resource_id = resource.get("id")
        if (
            request.get("method") == "POST"
            and "ifNoneExist" not in request
            and isinstance(resource_id, str)
            and resource_id
        ):
            entry["request"] = {"method": "PUT", "url": f"{resource['resourceType']}/{resource_id}"}


def _missing_conditional_targets(bundle: dict[str, Any], ensured: set[str]) -> dict[str, Any]:
    """A transaction creating, where absent, what the Bundle's conditional references name
    (what Synthea's hospital and practitioner Bundles would provide).
    """
    entries = []
    for reference in sorted(_conditional_references(bundle) - ensured):
        match = _CONDITIONAL_REFERENCE.match(reference)
        assert match is not None
        resource_type, system, value = match.groups()
        entries.append(
            {
                "resource": {
                    "resourceType": resource_type,
                    "identifier": [{"system": system, "value": value}],
                },
                "request": {
                    "method": "POST",
                    "url": resource_type,
                    "ifNoneExist": f"identifier={system}|{value}",
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _conditional_references(bundle: dict[str, Any]) -> set[str]:
    return {
        reference
        for reference in _references(bundle["entry"])
        if _CONDITIONAL_REFERENCE.match(reference)
    }


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str):
            yield reference
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _written_id(entry: WrittenEntry, resource_type: str) -> str | None:
    """The id of a `resource_type` the entry wrote, from its location or request."""
    for text in (entry.location or "", entry.request.split(" ", 1)[-1]):
        match = re.search(rf"(?:^|/){resource_type}/([A-Za-z0-9\-.]{{1,64}})(?:/|$)", text)
        if match:
            return match.group(1)
    return None
