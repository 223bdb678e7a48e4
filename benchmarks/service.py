"""Benchmark: CDS Hooks request to cards, with and without prefetch, against sekmet on loopback.

    .venv/bin/python benchmarks/service.py [--requests N] [--load-requests N] [--concurrency N]

Starts sekmet-fhir on loopback (the helpers of tests/sekmet_server.py) with the example
patients and a Synthea patient (by default the largest shipped), serves the app with uvicorn on
loopback, and times `POST /cds-services/NCT05315778` for that patient, one request at a time:

- with prefetch: the prefetch the EHR would send (read from sekmet with the discovery
  templates beforehand, not timed);
- without prefetch: the service reads the patient from `fhirServer` (sekmet).

Then a bounded load test (`--load-requests` calls of each kind, `--concurrency` at a time,
loopback only) reports requests per second and errors. Everything started is stopped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "service")]
# The tests' helpers import FastAPI's TestClient, whose notice that Starlette will move from
# httpx to httpx2 is not this benchmark's to act on (the tests filter it too: pyproject.toml).
warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")

from sekmet_server import SekmetServer, load_examples, start_sekmet, stop  # noqa: E402
from service_support import (  # noqa: E402
    AUTH,
    fhir_authorization,
    live_service,
    server_settings,
)

from engine.embedded_server import TransactionLoader  # noqa: E402
from engine.service import create_app  # noqa: E402
from engine.service.cds_hooks import prefetch_templates  # noqa: E402
from engine.service.logs import configure_logging  # noqa: E402
from engine.service.trials import LoadedTrial  # noqa: E402

SYNTHEA = ROOT / "examples" / "synthea"
SERVICE = "/cds-services/NCT05315778"
TARGET_MEDIAN_MS = 200.0


def largest_synthea_file() -> Path:
    return max(SYNTHEA.glob("*.json"), key=lambda path: path.stat().st_size)


def load_patient(server: SekmetServer, path: Path) -> str:
    with server.client() as client:
        (patient_id,) = TransactionLoader(client, keep_ids=False).load(path).patient_ids
    return patient_id


def read_prefetch(server: SekmetServer, trial: LoadedTrial, patient_id: str) -> dict[str, Any]:
    """What an EHR would prefetch: each discovery template, run against sekmet."""
    prefetch: dict[str, Any] = {}
    with server.http() as http:
        for template in prefetch_templates(trial):
            response = http.get(template.query.replace("{{context.patientId}}", patient_id))
            response.raise_for_status()
            prefetch[template.key] = response.json()
    return prefetch


def hook_call(server: SekmetServer, patient_id: str, prefetch: dict[str, Any] | None) -> Any:
    call: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"patientId": patient_id, "userId": "Practitioner/benchmark"},
        "fhirServer": server.base_url,
        "fhirAuthorization": fhir_authorization(server.token),
    }
    if prefetch is not None:
        call["prefetch"] = prefetch
    return call


def timed_calls(http: httpx.Client, body: Any, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        response = http.post(SERVICE, json=body, headers=AUTH)
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
        assert response.json()["cards"], response.text
    return seconds


def load_test(base_url: str, body: Any, count: int, concurrency: int) -> tuple[float, int]:
    """(requests per second, errors) for `count` calls, `concurrency` at a time."""

    def one(http: httpx.Client) -> bool:
        try:
            return http.post(SERVICE, json=body, headers=AUTH).status_code == 200
        except httpx.HTTPError:
            return False

    clients = [httpx.Client(base_url=base_url, timeout=60.0) for _ in range(concurrency)]
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, (clients[i % concurrency] for i in range(count))))
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            client.close()
    return count / elapsed, results.count(False)


def summary(label: str, seconds: list[float]) -> str:
    milliseconds = sorted(value * 1000 for value in seconds)
    p95 = milliseconds[int(0.95 * (len(milliseconds) - 1))]
    return (
        f"{label:<28} median {statistics.median(milliseconds):7.1f} ms   p95 {p95:7.1f} ms"
        f"   max {milliseconds[-1]:7.1f} ms   ({len(seconds)} requests)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="timed calls of each kind")
    parser.add_argument("--load-requests", type=int, default=200, help="load-test calls")
    parser.add_argument("--concurrency", type=int, default=4, help="load-test concurrency")
    parser.add_argument(
        "--synthea",
        type=Path,
        default=largest_synthea_file(),
        help="the Synthea patient Bundle (default: the largest in examples/synthea)",
    )
    arguments = parser.parse_args()
    configure_logging("error")  # the figures only
    with tempfile.TemporaryDirectory(prefix="trialsieve-benchmark-") as folder:
        process, started = start_sekmet(Path(folder))
        try:
            server = load_examples(process, started)
            synthea = arguments.synthea
            patient_id = load_patient(server, synthea)
            app = create_app(server_settings(server.base_url, server.token))
            trial = app.state.service.trials["NCT05315778"]
            prefetch = read_prefetch(server, trial, patient_id)
            resources = sum(
                len(bundle.get("entry", ()))
                for bundle in prefetch.values()
                if bundle.get("resourceType") == "Bundle"
            )
            print(f"Synthea patient {synthea.name}: {resources + 1} resources the criteria read")
            with live_service(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
                with_prefetch = hook_call(server, patient_id, prefetch)
                without_prefetch = hook_call(server, patient_id, None)
                timed_calls(http, with_prefetch, 5)  # warm-up
                timed_calls(http, without_prefetch, 5)
                prefetched = timed_calls(http, with_prefetch, arguments.requests)
                fetched = timed_calls(http, without_prefetch, arguments.requests)
                print(summary("CDS Hooks, with prefetch", prefetched))
                print(summary("CDS Hooks, fetching", fetched))
                for label, body in (
                    ("with prefetch", with_prefetch),
                    ("fetching", without_prefetch),
                ):
                    rate, errors = load_test(
                        base_url, body, arguments.load_requests, arguments.concurrency
                    )
                    print(
                        f"load, {label:<20} {rate:7.1f} requests/s, {errors} errors "
                        f"({arguments.load_requests} requests, concurrency {arguments.concurrency})"
                    )
            worst = max(statistics.median(prefetched), statistics.median(fetched)) * 1000
            verdict = "met" if worst < TARGET_MEDIAN_MS else "NOT met"
            print(f"target: median under {TARGET_MEDIAN_MS:g} ms: {verdict}")
        finally:
            stop(process)


if __name__ == "__main__":
    main()
