"""A second, independently written FHIR server for the tests: Medplum's FHIR router.

`tests/servers/medplum/server.mjs` is trialsieve's small Node HTTP adapter around
`@medplum/fhir-router` (Apache-2.0) and its in-memory repository (pinned in package.json and
package-lock.json there). `start_medplum` installs it with `npm ci` when node_modules is
missing or older than the lock file, starts it on 127.0.0.1 on a free port (the adapter
writes the port to a file once it listens) and returns the running server; `stop` ends it.
The `medplum` fixture (tests/conftest.py) runs it once per session.

What the router lacks, found by reading it: no `metadata` route (the adapter answers a
CapabilityStatement built from the router's routes and Medplum's search parameters), no
`$everything`, no Bulk `$export`, no authentication, and no Subscription notifications (its
in-memory repository stores Subscriptions but sends nothing).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from one_at_a_time import install_lock

from engine.sources import FhirServerClient, RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "tests" / "servers" / "medplum"
START_SECONDS = 60.0


class MedplumUnavailable(Exception):
    """Node or npm is missing: the reason the Medplum tests skip."""


@dataclass(frozen=True)
class MedplumServer:
    """The running server: its base URL and its process."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, retry: RetryPolicy | None = None) -> FhirServerClient:
        return FhirServerClient(self.base_url, retry=retry)

    def http(self) -> httpx.Client:
        """A plain HTTP client, for loading and inspecting the server."""
        return httpx.Client(
            base_url=self.base_url + "/", headers={"Accept": "application/fhir+json"}, timeout=30.0
        )


def install() -> None:
    """`npm ci` in the adapter's folder when node_modules is missing or older than the lock."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        raise MedplumUnavailable("node and npm are not installed, so Medplum cannot run")
    modules = ADAPTER / "node_modules" / ".package-lock.json"
    lock = ADAPTER / "package-lock.json"
    with install_lock(str(ADAPTER)):  # another test process may be installing it now
        if modules.is_file() and modules.stat().st_mtime >= lock.stat().st_mtime:
            return
        finished = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=ADAPTER,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if finished.returncode != 0:
        raise RuntimeError(f"npm ci in {ADAPTER} failed: {finished.stderr.strip()[-2000:]}")


def _node_arguments(node: str) -> list[str]:
    """Node 22+ has a global WebSocket (which @medplum/core reads when loaded); Node 20 needs
    --experimental-websocket for it."""
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    return [node, "--experimental-websocket"] if major < 22 else [node]


def start_medplum(folder: Path) -> MedplumServer:
    """Install if needed, start on a free loopback port, wait until it answers `metadata`."""
    install()
    node = shutil.which("node")
    assert node is not None
    port_file = folder / "port"
    log = folder / "medplum.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [*_node_arguments(node), str(ADAPTER / "server.mjs"), str(port_file)],
            cwd=ADAPTER,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_SECONDS
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Medplum server exited: {log.read_text()[-2000:]}")
            if port_file.is_file() and port_file.read_text().strip():
                base_url = f"http://127.0.0.1:{port_file.read_text().strip()}/fhir"
                server = MedplumServer(base_url, process, log)
                with server.http() as http:
                    if http.get("metadata").status_code == 200:
                        return server
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Medplum server did not start in {START_SECONDS:.0f} s")
            time.sleep(0.1)
    except BaseException:
        stop(process)
        raise


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, wait, kill if it does not stop."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
