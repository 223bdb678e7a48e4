"""A real FHIR server for the tests in this folder: sekmet-fhir on loopback.

The server runs in a temporary folder (it keeps its data in ./data), with its base URL set to
the port it listens on (else its paging links point at localhost:8090), a bearer token
required, and its order simulator off (it would answer the example MedicationRequests with
new resources). It is loaded with every hand-written example patient, their ids kept (POST
entries become PUT-as-create), and one Synthea patient, whose ids the server assigns.
`start_sekmet` starts it, `load_examples` loads it; the `sekmet` fixture (conftest.py) runs it
once per session and stops it at the end.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engine.sources import BearerToken, FhirServerClient, RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
HAND_WRITTEN_PATIENTS = sorted((ROOT / "examples" / "patients").glob("*.json"))
SYNTHEA_PATIENT = ROOT / "examples" / "synthea" / "8527d65c-ebd5-8b79-3ad6-86574283792e.json"
"""The smallest Synthea patient whose MedicationRequests use medicationReference."""

TOKEN_VARIABLE = "TRIALSIEVE_TEST_SEKMET_TOKEN"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_CONDITIONAL_REFERENCE = re.compile(r"^([A-Z][A-Za-z]+)\?identifier=([^|]+)\|(.+)$")


@dataclass(frozen=True)
class SekmetServer:
    """The running server: where it is, its token, and the server id of the Synthea patient."""

    base_url: str
    token: str
    folder: Path
    synthea_patient_id: str

    def client(self, retry: RetryPolicy | None = None) -> FhirServerClient:
        return FhirServerClient(self.base_url, auth=BearerToken(self.token), retry=retry)

    def http(self) -> httpx.Client:
        """A plain HTTP client with the token, for loading and inspecting the server."""
        return httpx.Client(
            base_url=self.base_url + "/",
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/fhir+json"},
            timeout=30.0,
        )


def start_sekmet(folder: Path) -> tuple[subprocess.Popen[bytes], SekmetServer]:
    """Start sekmet in `folder`, wait for it, and load the example patients.

    The caller stops the process (also when this raises after starting it).
    """
    token = secrets.token_urlsafe(24)
    settings = folder / "settings.yaml"
    settings.write_text(
        "simulator:\n  enabled: false\n"
        f"server_auth:\n  types: [bearer]\n  tokens: [{token}]\n"
        "log_inbound: false\n",
        encoding="utf-8",
    )
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    environment = {**os.environ, "SEKMET_BASE_URL": base_url, "SEKMET_CONFIG": str(settings)}
    log_path = folder / "sekmet.log"
    command = [sys.executable, "-m", "sekmet.cli", "serve", "--host", "127.0.0.1"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            cwd=folder,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, SekmetServer(base_url, token, folder, synthea_patient_id="")


def load_examples(process: subprocess.Popen[bytes], server: SekmetServer) -> SekmetServer:
    """Wait until the server answers, load the example patients; the server with the
    Synthea patient's id.
    """
    _wait_until_up(process, server.base_url, server.folder / "sekmet.log")
    with server.http() as http:
        for path in HAND_WRITTEN_PATIENTS:
            _post_transaction(http, _with_ids_kept(orjson.loads(path.read_bytes())), path)
        synthea = orjson.loads(SYNTHEA_PATIENT.read_bytes())
        _post_transaction(http, _shared_resources(synthea), SYNTHEA_PATIENT)
        answer = _post_transaction(http, synthea, SYNTHEA_PATIENT)
    return SekmetServer(server.base_url, server.token, server.folder, _created_patient_id(answer))


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, wait, kill if it does not stop."""
    process.terminate()
    try:
        process.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(_STOP_TIMEOUT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_up(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sekmet exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/metadata", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    pytest.fail(
        f"sekmet did not answer {base_url}/metadata in {_START_TIMEOUT:g} s:\n{_tail(log_path)}"
    )


def _tail(log_path: Path) -> str:
    return "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-30:])


def _post_transaction(http: httpx.Client, bundle: dict[str, Any], source: Path) -> dict[str, Any]:
    response = http.post(
        "", content=orjson.dumps(bundle), headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 200, f"loading {source.name}: {response.text[:2000]}"
    answer: dict[str, Any] = response.json()
    return answer


def _with_ids_kept(bundle: dict[str, Any]) -> dict[str, Any]:
    """The transaction with each `POST Type` entry turned into `PUT Type/{its id}`."""
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if entry["request"]["method"] == "POST" and resource.get("id"):
            entry["request"] = {
                "method": "PUT",
                "url": f"{resource['resourceType']}/{resource['id']}",
            }
    return bundle


def _shared_resources(bundle: dict[str, Any]) -> dict[str, Any]:
    """What Synthea's hospital and practitioner Bundles would provide: one resource per
    conditional reference (`Practitioner?identifier=system|value`) in the patient Bundle.
    """
    wanted: dict[str, tuple[str, str, str]] = {}
    for reference in _references(bundle):
        match = _CONDITIONAL_REFERENCE.match(reference)
        if match is not None:
            wanted[reference] = (match.group(1), match.group(2), match.group(3))
    entries = [
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
        for resource_type, system, value in wanted.values()
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


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


def _created_patient_id(answer: dict[str, Any]) -> str:
    for entry in answer["entry"]:
        location = entry["response"].get("location", "")
        match = re.search(r"/Patient/([^/]+)/_history/", location)
        if match:
            return match.group(1)
    raise AssertionError("the Synthea transaction created no Patient")
