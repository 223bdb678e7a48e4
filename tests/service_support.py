"""Helpers for the service and CDS Hooks conformance tests (and benchmarks/service.py):
settings, example data, prefetch built from a Bundle, a patient copied under a new id, and the
app served by uvicorn on loopback in a thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sekmet_server import SekmetServer
from typer.testing import CliRunner

from engine.cli import app as cli_app
from engine.evaluate import PatientEvaluation
from engine.screening import screen_patient
from engine.service import ApiAuthSettings, SecretReference, ServiceSettings
from engine.service.cds_hooks import prefetch_templates
from engine.service.trials import LoadedTrial
from engine.sources import read_bundle_file

ROOT = Path(__file__).resolve().parents[1]
CRITERIA = ROOT / "criteria"
PATIENTS = ROOT / "examples" / "patients"
AS_OF = dt.date(2026, 11, 1)
API_TOKEN = "service-test-token-7f3a9c"
API_TOKEN_VARIABLE = "TRIALSIEVE_TEST_API_TOKEN"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SERVER_TOKEN_VARIABLE = "TRIALSIEVE_TEST_SERVER_TOKEN"

ClientFactory = Callable[..., TestClient]
"""The `service_client` fixture: settings (or make_settings overrides) -> a running TestClient."""


def itp_trials_folder() -> Path:
    """A trials folder holding only NCT05315778 (the shipped `criteria/` holds two trials, and
    these tests screen for one without naming it), its mappings found, made once per run."""
    text = (
        (CRITERIA / "NCT05315778.yaml")
        .read_text(encoding="utf-8")
        .replace("mappings: [../mappings]", f"mappings: [{ROOT / 'mappings'}]")
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"trialsieve-service-trials-{digest}"
    if not (folder / "NCT05315778.yaml").exists():
        folder.mkdir(exist_ok=True)
        (folder / "NCT05315778.yaml.part").write_text(text, encoding="utf-8")
        (folder / "NCT05315778.yaml.part").replace(folder / "NCT05315778.yaml")
    return folder


def make_settings(
    environment: dict[str, str] | None = None,
    api_auth: ApiAuthSettings | None = None,
    **overrides: Any,
) -> ServiceSettings:
    """The shipped criteria, evaluation as of AS_OF, the API token API_TOKEN."""
    return ServiceSettings(
        trials_folder=overrides.pop("trials_folder", None) or itp_trials_folder(),
        api_auth=api_auth
        or ApiAuthSettings(tokens=SecretReference(environment_variable=API_TOKEN_VARIABLE)),
        as_of=overrides.pop("as_of", AS_OF),
        environment={API_TOKEN_VARIABLE: API_TOKEN, **(environment or {})},
        **overrides,
    )


def server_settings(base_url: str, token: str, **overrides: Any) -> ServiceSettings:
    """make_settings with a FHIR server and its token."""
    return make_settings(
        environment={SERVER_TOKEN_VARIABLE: token},
        fhir_server=base_url,
        fhir_token=SecretReference(environment_variable=SERVER_TOKEN_VARIABLE),
        **overrides,
    )


def example(name: str) -> dict[str, Any]:
    """An example patient's transaction Bundle."""
    bundle: dict[str, Any] = orjson.loads((PATIENTS / f"{name}.json").read_bytes())
    return bundle


EHR_BASE = "https://ehr.example.org/fhir"


def as_on_a_server(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The Bundle's resources as a server holds them: `urn:uuid` references made `Type/id`."""
    local = {
        entry["fullUrl"]: f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
        for entry in bundle["entry"]
        if entry.get("fullUrl")
    }
    text = orjson.dumps([entry["resource"] for entry in bundle["entry"]]).decode()
    for full_url, reference in local.items():
        text = text.replace(f'"{full_url}"', f'"{reference}"')
    resources: list[dict[str, Any]] = orjson.loads(text)
    return resources


def prefetch_from(bundle: dict[str, Any], trial: LoadedTrial, patient_id: str) -> dict[str, Any]:
    """The prefetch an EHR would send for the patient of `bundle`: the Patient and one
    searchset Bundle per template (Medications with the medication searches).
    """
    resources = as_on_a_server(bundle)
    prefetch: dict[str, Any] = {}
    for template in prefetch_templates(trial):
        if template.resource_type == "Patient":
            patient = next(r for r in resources if r["resourceType"] == "Patient")
            prefetch[template.key] = {**patient, "id": patient_id}
            continue
        matches = [r for r in resources if r["resourceType"] == template.resource_type]
        if "_include" in template.query:
            matches += [r for r in resources if r["resourceType"] == "Medication"]
        prefetch[template.key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {
                    "fullUrl": f"{EHR_BASE}/{r['resourceType']}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in matches
            ],
        }
    return prefetch


CDS_SERVICE = "/cds-services/NCT05315778"
"""The CDS Hooks service of the trial the service tests load."""


def hook_call(patient_id: str, **fields: Any) -> dict[str, Any]:
    """A patient-view call for `patient_id` (a fresh hookInstance), with `fields` added."""
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": patient_id, "userId": "Practitioner/example"},
        **fields,
    }


def loaded_trial(api: TestClient) -> LoadedTrial:
    """NCT05315778 as the app loaded it."""
    trial: LoadedTrial = api.app.state.service.trials["NCT05315778"]  # type: ignore[attr-defined]
    return trial


def evaluated_file(api: TestClient, name: str) -> PatientEvaluation:
    """An example patient evaluated from its file, as of AS_OF (what a card should say)."""
    trial = loaded_trial(api).criteria
    return screen_patient(trial, read_bundle_file(PATIENTS / f"{name}.json"), AS_OF).evaluation


def same_card(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """The same card but for its uuid (fresh on every call)."""
    return {k: v for k, v in one.items() if k != "uuid"} == {
        k: v for k, v in other.items() if k != "uuid"
    }


def smart_config(
    folder: Path, token_url: str, scope: str | None = None
) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    """A SMART Backend Services config (`--auth-config`) in `folder`, its client "trialsieve"
    signing with a new EC P-384 key written beside it (key.pem, key id "k1"): the config's
    path and the key."""
    key = ec.generate_private_key(ec.SECP384R1())
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = folder / "auth.toml"
    config.write_text(
        '[smart]\nclient_id = "trialsieve"\nprivate_key_file = "key.pem"\n'
        f'key_id = "k1"\ntoken_url = "{token_url}"\n'
        + (f'scope = "{scope}"\n' if scope is not None else ""),
        encoding="utf-8",
    )
    return config, key


def r5_notification(*entries: dict[str, Any], **status: Any) -> dict[str, Any]:
    """An R4B/R5 notification Bundle: a SubscriptionStatus of type event-notification with
    the elements `status` gives, then `entries`."""
    resource = {"resourceType": "SubscriptionStatus", "type": "event-notification", **status}
    return {
        "resourceType": "Bundle",
        "type": "subscription-notification",
        "entry": [{"resource": resource}, *entries],
    }


def without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`mapping` without `keys` (a prefetch missing some keys, a call missing a field)."""
    return {key: value for key, value in mapping.items() if key not in keys}


def fhir_authorization(access_token: str) -> dict[str, Any]:
    """A `fhirAuthorization` with every field CDS Hooks 2.0 requires ("Passing the Access
    Token to the CDS Service")."""
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "trialsieve",
    }


def server_call(server: SekmetServer, name: str, prefetch: dict[str, Any] | None) -> dict[str, Any]:
    """A call naming `server` as fhirServer, with its token as fhirAuthorization."""
    fields: dict[str, Any] = {
        "fhirServer": server.base_url,
        "fhirAuthorization": fhir_authorization(server.token),
    }
    if prefetch is not None:
        fields["prefetch"] = prefetch
    return hook_call(name, **fields)


def assert_unauthorized(response: Any, words: str) -> None:
    """401 with `WWW-Authenticate: Bearer` and a login issue whose diagnostics hold `words`."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    issue = response.json()["issue"][0]
    assert issue["code"] == "login"
    assert words in issue["diagnostics"]


def copy_patient(http: httpx.Client, name: str, patient_id: str) -> None:
    """Load an example patient on the server under a new id (its other resources get server
    ids), so that a test can change and write it without touching the shared examples.
    """
    bundle = example(name)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["id"] = patient_id
            entry["request"] = {"method": "PUT", "url": f"Patient/{patient_id}"}
    response = http.post(
        "", content=orjson.dumps(bundle), headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 200, response.text[:2000]


def cli_bundle(tmp_path: Path, patient: str, *arguments: str) -> dict[str, Any]:
    """The transaction Bundle `trialsieve evaluate --bundle` writes for an example patient."""
    output = tmp_path / f"{patient}.json"
    result = CliRunner().invoke(
        cli_app,
        [
            "evaluate",
            str(CRITERIA / "NCT05315778.yaml"),
            "--bundle",
            str(PATIENTS / f"{patient}.json"),
            "--as-of",
            AS_OF.isoformat(),
            "--output",
            str(output),
            *arguments,
        ],
    )
    assert result.exit_code == 0, result.output
    bundle: dict[str, Any] = orjson.loads(output.read_bytes())
    return bundle


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def live_service(app: FastAPI, start_timeout: float = 10.0) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its base URL; stop
    it (lifespan shutdown included) at the end.
    """
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="trialsieve-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the service did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(start_timeout)
