"""Shared fixtures: the real NCT05315778 criteria, compiled once per test session; a FHIR
server on loopback holding the Synthea examples."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from engine.evaluate import CompiledCriteria
from engine.trial import load_trial

ROOT = Path(__file__).resolve().parent.parent

# Property tests check correctness, not speed: a first call that builds the UCUM registry or
# compiles a schema must not fail a test on a busy machine (speed is for benchmarks/).
settings.register_profile("trialsieve", deadline=None)
settings.load_profile("trialsieve")


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
