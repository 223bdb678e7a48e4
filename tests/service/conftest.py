"""Fixtures for the service tests: an app with the shipped criteria and an API token, and a
sekmet FHIR server of their own (the helpers of tests/sekmet_server.py).

The service tests register Subscriptions and write results for the patients they notify
about; their own server keeps that from reaching the other tests' `sekmet`, whatever the order.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sekmet_server import SekmetServer, load_examples, start_sekmet, stop
from service_support import ClientFactory, make_settings

from engine.service import ServiceSettings, create_app


@pytest.fixture(scope="session")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    if importlib.util.find_spec("sekmet") is None:
        pytest.skip("sekmet-fhir is not installed (pip install sekmet-fhir==0.1.1)")
    process, server = start_sekmet(tmp_path_factory.mktemp("sekmet-service"))
    try:
        yield load_examples(process, server)
    finally:
        stop(process)


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
