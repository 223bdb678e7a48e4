"""A cohort over a Bulk export that left a type out (the server did not declare it): atoms
over that type are unknown, "not exported by the server", never "none on record" (issue 12)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import respx

from engine.cohort import NdjsonInput, run_cohort
from engine.sources.bulk_export import export_to_folder

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
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server", "resource": [{"type": "Patient"}]}],
    }
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
    assert "Type 2 diabetes (Condition not exported by the server) (1)" in availability
    assert "none on record" not in (out / "issues.ndjson").read_text()
