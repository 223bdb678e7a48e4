"""Fixtures of the cohort tests: the examples as NDJSON, and a one-worker run over them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cohort_examples import AS_OF, CRITERIA, EXAMPLE_FOLDERS, PARTITIONS, bundles_to_ndjson

from engine.cohort import CohortSummary, NdjsonInput, run_cohort


@pytest.fixture(scope="session")
def ndjson_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "ndjson"
    bundles_to_ndjson(EXAMPLE_FOLDERS, folder)
    with open(folder / "Observation.000.ndjson", "ab") as observations:
        observations.write(b'{"resourceType":"Observation","id":"cut-off\n')
    return folder


@pytest.fixture(scope="session")
def one_worker(ndjson_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> CohortSummary:
    out = tmp_path_factory.mktemp("one-worker")
    return run_cohort(
        CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1, partition_count=PARTITIONS
    )


@pytest.fixture(scope="session")
def full_run(ndjson_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> CohortSummary:
    """The same run with `full`: every patient evaluated in full, settled or not."""
    out = tmp_path_factory.mktemp("full")
    return run_cohort(
        CRITERIA,
        NdjsonInput(ndjson_folder),
        out,
        AS_OF,
        workers=1,
        partition_count=PARTITIONS,
        full=True,
    )
