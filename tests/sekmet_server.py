"""A real FHIR server for the tests: sekmet-fhir on loopback.

`engine.embedded_server.EmbeddedServer` runs it in a temporary folder (it keeps its data in
./data), with its base URL set to the port it listens on (else its paging links point at
localhost:8090), a bearer token required, and its order simulator off (it would answer the
example MedicationRequests with new resources). It is loaded with every hand-written example
patient, their ids kept (POST entries become PUT-as-create), and one Synthea patient, whose ids
the server assigns. `start_sekmet` starts it, `load_examples` loads it; the `sekmet` fixture
(tests/conftest.py) runs it once per session and stops it at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.embedded_server import EmbeddedServer, TransactionLoader
from engine.sources import BearerToken, FhirServerClient, RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
HAND_WRITTEN_PATIENTS = sorted((ROOT / "examples" / "patients").glob("*.json"))
SYNTHEA_PATIENT = ROOT / "examples" / "synthea" / "8527d65c-ebd5-8b79-3ad6-86574283792e.json"
"""The smallest Synthea patient whose MedicationRequests use medicationReference."""

TOKEN_VARIABLE = "TRIALSIEVE_TEST_SEKMET_TOKEN"


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


def start_sekmet(folder: Path) -> tuple[EmbeddedServer, SekmetServer]:
    """Start sekmet in `folder` (kept afterwards) and wait until it answers.

    The caller stops it with `stop`; a start that fails stops what it started.
    """
    embedded = EmbeddedServer(folder=folder).start()
    return embedded, SekmetServer(embedded.base_url, embedded.token, folder, synthea_patient_id="")


def load_examples(embedded: EmbeddedServer, server: SekmetServer) -> SekmetServer:
    """Load the example patients; the server with the Synthea patient's id.

    `embedded` is the running server `start_sekmet` returned (it has already waited for it).
    """
    with server.client() as client:
        keeping_ids = TransactionLoader(client, keep_ids=True)
        for path in HAND_WRITTEN_PATIENTS:
            keeping_ids.load(path)
        synthea = TransactionLoader(client, keep_ids=False).load(SYNTHEA_PATIENT)
    (patient_id,) = synthea.patient_ids
    return SekmetServer(server.base_url, server.token, server.folder, patient_id)


def stop(embedded: EmbeddedServer) -> None:
    """Terminate, wait, kill if it does not stop."""
    embedded.stop()
