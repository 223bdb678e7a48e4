"""Shared fixtures: the real NCT05315778 criteria, compiled once per test session; a FHIR
server on loopback holding the Synthea examples; `sekmet`, a FHIR server on loopback holding
the hand-written example patients and one Synthea patient (sekmet_server.py); `chromium`,
headless Chromium from Debian's packages; `service_client` and `api`, the service app with the
shipped criteria and an API token (service_support.py), for the service and conformance
tests."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings
from medplum_server import MedplumServer, MedplumUnavailable, start_medplum
from medplum_server import stop as stop_medplum
from one_at_a_time import install_lock
from sekmet_server import SekmetServer, load_examples, start_sekmet, stop
from service_support import ClientFactory, make_settings

from engine.compiled_cache import CACHE_VARIABLE
from engine.evaluate import CompiledCriteria
from engine.service import ServiceSettings, create_app
from engine.trial import load_trial

ROOT = Path(__file__).resolve().parent.parent

# Property tests check correctness, not speed: a first call that builds the UCUM registry or
# compiles a schema must not fail a test on a busy machine (speed is for benchmarks/).
settings.register_profile("trialsieve", deadline=None)
settings.load_profile("trialsieve")

# A test session has its own compiled-criteria cache (engine/compiled_cache.py), removed at the
# end: the tests and the commands they start never read what another session compiled.
if CACHE_VARIABLE not in os.environ:
    _cache = tempfile.mkdtemp(prefix="trialsieve-test-cache-")
    os.environ[CACHE_VARIABLE] = _cache
    atexit.register(shutil.rmtree, _cache, True)


@pytest.fixture(scope="session")
def trial() -> CompiledCriteria:
    return load_trial(ROOT / "criteria" / "NCT05315778.yaml")


@pytest.fixture(scope="session")
def synthea_server() -> Iterator[Any]:
    """sekmet-fhir on loopback (stopped at the end), loaded with every Synthea example Bundle
    (ids kept)."""
    if importlib.util.find_spec("sekmet") is None:
        pytest.skip("sekmet-fhir is not installed (pip install sekmet-fhir==0.1.1)")
    from engine.embedded_server import EmbeddedServer, bundle_files, load_transaction_bundles

    with EmbeddedServer() as running:
        with running.client() as client:
            load_transaction_bundles(client, bundle_files([ROOT / "examples" / "synthea"]))
        yield running


class HeadlessChromium:
    """Debian's chromium, headless, with a fresh empty profile per call: renders a page to a
    PNG or to its DOM as parsed (no network: file:// and loopback pages only)."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    )

    def __init__(self, binary: str, scratch: Path) -> None:
        self.binary = binary
        self.scratch = scratch

    def _run(self, *arguments: str) -> str:
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory(dir=self.scratch) as profile:
            finished = subprocess.run(
                [self.binary, *self.FLAGS, f"--user-data-dir={profile}", *arguments],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        if finished.returncode != 0:
            raise AssertionError(f"chromium failed ({finished.returncode}): {finished.stderr}")
        return finished.stdout

    def screenshot(self, url: str, png: Path, width: int = 1200, height: int = 1600) -> Path:
        self._run(f"--window-size={width},{height}", f"--screenshot={png}", url)
        assert png.is_file(), f"chromium wrote no screenshot of {url}"
        return png

    def dom(self, url: str) -> str:
        """The document as chromium parsed and laid it out (`--dump-dom`)."""
        return self._run("--dump-dom", url)


def _chromium_binary() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def _install_chromium() -> str:
    """`apt-get install chromium` (Debian's package), as the project's own step; the reason
    when it cannot be installed here."""
    import os
    import shutil
    import subprocess

    if shutil.which("apt-get") is None:
        return "chromium is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "chromium is not installed and installing it needs root (apt-get install chromium)"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        finished = subprocess.run(
            command, capture_output=True, text=True, env=environment, check=False, timeout=900
        )
        if finished.returncode != 0:
            return f"'{' '.join(command)}' failed: {finished.stderr.strip()[-400:]}"
    return ""


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> HeadlessChromium:
    """Headless Chromium from Debian's packages, installed with apt-get when missing; the
    tests that need it skip, naming why, only when it cannot be installed."""
    binary = _chromium_binary()
    if binary is None:
        with install_lock("apt-get"):  # another test process may be installing it now
            reason = _install_chromium() if _chromium_binary() is None else ""
        binary = _chromium_binary()
        if binary is None:
            pytest.skip(reason or "chromium was installed but is not on PATH")
    return HeadlessChromium(binary, tmp_path_factory.mktemp("chromium"))


@pytest.fixture(scope="session")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    """A real FHIR server (sekmet-fhir) on loopback, once per session, loaded with the example
    patients, stopped at the end. Skipped only when sekmet-fhir is not installed."""
    if importlib.util.find_spec("sekmet") is None:
        pytest.skip(
            "sekmet-fhir is not installed (pip install sekmet-fhir==0.1.1), "
            "so there is no FHIR server to test against"
        )
    process, server = start_sekmet(tmp_path_factory.mktemp("sekmet"))
    try:
        yield load_examples(process, server)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def medplum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MedplumServer]:
    """Medplum's FHIR router with its in-memory repository behind trialsieve's Node adapter
    (tests/servers/medplum), installed with `npm ci` when needed, on loopback, once per
    session, stopped at the end. Skipped only when node or npm is missing."""
    try:
        server = start_medplum(tmp_path_factory.mktemp("medplum"))
    except MedplumUnavailable as missing:
        pytest.skip(str(missing))
    try:
        yield server
    finally:
        stop_medplum(server.process)


@pytest.fixture(scope="session", params=["sekmet", "medplum"])
def fhir_server(request: pytest.FixtureRequest) -> SekmetServer | MedplumServer:
    """Each FHIR server the integration tests run against: sekmet-fhir (Python) and Medplum's
    FHIR router (TypeScript), written independently."""
    server: SekmetServer | MedplumServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def service_client() -> Iterator[ClientFactory]:
    """`service_client(**settings)`: a TestClient (lifespan running) on a new app; every
    client it made is closed at the end of the test.
    """
    opened: list[TestClient] = []

    def open_client(settings: ServiceSettings | None = None, **overrides: object) -> TestClient:
        client = TestClient(create_app(settings or make_settings(**overrides)))
        client.__enter__()
        opened.append(client)
        return client

    yield open_client
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def api(service_client: ClientFactory) -> TestClient:
    """A service without a FHIR server."""
    return service_client()
