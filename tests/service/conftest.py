"""Fixtures for the service tests: a sekmet FHIR server of their own (the helpers of
tests/sekmet_server.py); the apps (`service_client`, `api`) are tests/conftest.py's.

The service tests register Subscriptions and write results for the patients they notify
about; their own server keeps that from reaching the other tests' `sekmet`, whatever the order.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from sekmet_server import SekmetServer, load_examples, start_sekmet, stop


@pytest.fixture(scope="session")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    if importlib.util.find_spec("sekmet") is None:
        pytest.skip("sekmet-fhir is not installed (pip install sekmet-fhir==0.1.1)")
    process, server = start_sekmet(tmp_path_factory.mktemp("sekmet-service"))
    try:
        yield load_examples(process, server)
    finally:
        stop(process)
