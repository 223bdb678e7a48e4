"""The `sekmet` fixture: a real FHIR server (sekmet-fhir) on loopback, once per session,
loaded with the example patients, stopped at the end. Skipped only when sekmet-fhir is not
installed; see sekmet_server.py.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from sekmet_server import SekmetServer, load_examples, start_sekmet, stop


@pytest.fixture(scope="session")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
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
