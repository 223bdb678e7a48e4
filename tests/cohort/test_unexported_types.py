"""A cohort over a Bulk export that left a type out (the server did not declare it): atoms
over that type are unknown, "not exported by the server", never "none on record" (issue 12)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import respx
from bulk_support import capability_statement

from engine.cohort import NdjsonInput, run_cohort
from engine.cohort.engines import _compiled_criteria, compile_on_dask_worker
from engine.cohort.partition import CriteriaFiles
from engine.errors import CohortError
from engine.sources.bulk_export import export_to_folder
from engine.trial import load_trial

BASE = "http://bulk.test/fhir"
STATUS = f"{BASE}/bulk-status/job-1"
AS_OF = dt.date(2025, 8, 1)

CRITERIA = """\
trial: {id: NCT00000000, title: Test}
mappings: [mappings.yaml]
criteria:
  - id: inclusion-1-diabetes
    kind: inclusion
    text: Type 2 diabetes
    expression: {resource: Condition, concept: diabetes}
"""

MAPPINGS = """\
systems:
  snomed: {uri: http://snomed.info/sct}
concepts:
  diabetes:
    display: Type 2 diabetes
    codes: {snomed: ["44054006"]}
"""


@pytest.fixture
def exported_without_conditions(tmp_path: Path) -> Iterator[Path]:
    """An NDJSON folder a Bulk export filled from a server whose statement lacks Condition."""
    statement = capability_statement(("Patient",))
    manifest = {
        "transactionTime": "2026-11-25T10:00:00Z",
        "request": f"{BASE}/$export",
        "requiresAccessToken": False,
        "output": [{"type": "Patient", "url": f"{BASE}/files/p.ndjson"}],
        "error": [],
    }
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1960-01-01"}
    folder = tmp_path / "export"
    with respx.mock() as server:
        server.get(f"{BASE}/metadata").respond(200, json=statement)
        kickoff = server.get(f"{BASE}/$export").respond(202, headers={"Content-Location": STATUS})
        server.get(STATUS).respond(200, json=manifest)
        server.get(f"{BASE}/files/p.ndjson").respond(200, content=orjson.dumps(patient) + b"\n")
        server.delete(STATUS).respond(202)
        result = export_to_folder(BASE, folder, types=["Condition"])
    assert kickoff.calls.last.request.url.params["_type"] == "Patient"
    assert result.types_left_out == ("Condition",)
    yield folder


def test_an_atom_over_a_type_the_export_left_out_is_unknown(
    exported_without_conditions: Path, tmp_path: Path
) -> None:
    (tmp_path / "mappings.yaml").write_text(MAPPINGS)
    criteria = tmp_path / "trial.yaml"
    criteria.write_text(CRITERIA)
    out = tmp_path / "out"

    summary = run_cohort(criteria, NdjsonInput(exported_without_conditions), out, AS_OF, workers=1)

    assert summary.statuses.get("potential-candidate") == 1, summary.statuses
    availability = (out / "data_availability.csv").read_text()
    assert "Type 2 diabetes: Condition not exported by the server (1)" in availability
    assert "none on record" not in (out / "issues.ndjson").read_text()


def trial_files(tmp_path: Path) -> Path:
    (tmp_path / "mappings.yaml").write_text(MAPPINGS)
    criteria = tmp_path / "trial.yaml"
    criteria.write_text(CRITERIA)
    return criteria


def assert_unknown_not_exported(out: Path) -> None:
    availability = (out / "data_availability.csv").read_text()
    assert "Type 2 diabetes: Condition not exported by the server (1)" in availability
    assert "none on record" not in (out / "issues.ndjson").read_text()


def test_spawned_workers_keep_the_types_not_exported(
    exported_without_conditions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where processes are spawned (macOS, Windows), workers compile the criteria anew from
    the files: the unavailable types go with them."""
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    out = tmp_path / "out"
    source = NdjsonInput(exported_without_conditions)

    summary = run_cohort(trial_files(tmp_path), source, out, AS_OF, workers=2, partition_count=2)

    assert summary.statuses.get("potential-candidate") == 1, summary.statuses
    assert_unknown_not_exported(out)


def test_dask_workers_keep_the_types_not_exported(
    exported_without_conditions: Path, tmp_path: Path
) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    source = NdjsonInput(exported_without_conditions)

    summary = run_cohort(
        trial_files(tmp_path), source, out, AS_OF, engine="dask", workers=1, partition_count=2
    )

    assert summary.statuses.get("potential-candidate") == 1, summary.statuses
    assert_unknown_not_exported(out)


def test_criteria_sent_to_workers_carry_the_unavailable_types(tmp_path: Path) -> None:
    """`CriteriaFiles`: compiled anew from the files (no pickled criteria), and in a Dask
    worker's cache, the same files with other types unavailable are other criteria."""
    criteria = load_trial(trial_files(tmp_path))
    narrowed = replace(criteria, unavailable_types=frozenset({"Condition"}))
    plain_files, narrowed_files = CriteriaFiles.collect(criteria), CriteriaFiles.collect(narrowed)
    assert plain_files.digest == narrowed_files.digest  # the files are the same

    assert narrowed_files.load().unavailable_types == {"Condition"}
    assert compile_on_dask_worker(plain_files) == plain_files.digest
    assert _compiled_criteria(plain_files).unavailable_types == frozenset()
    assert _compiled_criteria(narrowed_files).unavailable_types == {"Condition"}


def test_a_resumed_run_with_other_types_not_exported_is_refused(
    exported_without_conditions: Path, tmp_path: Path
) -> None:
    criteria = trial_files(tmp_path)
    out = tmp_path / "out"
    source = NdjsonInput(exported_without_conditions)
    run_cohort(criteria, source, out, AS_OF, workers=1)
    assert orjson.loads((out / "manifest.json").read_bytes())["unavailable_types"] == ["Condition"]

    state_path = exported_without_conditions / "export.json"
    state = orjson.loads(state_path.read_bytes())
    state["types_left_out"] = []
    state_path.write_bytes(orjson.dumps(state))
    with pytest.raises(CohortError, match="other types not exported by the server"):
        run_cohort(criteria, source, out, AS_OF, workers=1)
