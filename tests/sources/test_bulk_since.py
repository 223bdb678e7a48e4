"""Applying an incremental Bulk Data export (`_since`) onto the complete export in a folder
(engine/sources/bulk_since.py): Bulk Data Access IG v2.0.0, "Query Parameters" (`_since`:
"Resources will be included in the response if their state has changed after the supplied
time") and "Response - Complete Status" (`deleted`: Bundles of DELETE requests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from bulk_support import (
    BASE,
    FILES,
    TOKEN,
    FakeTime,
    condition,
    delete_route,
    done,
    export,
    file_route,
    kickoff_route,
    manifest,
    ndjson,
    patient,
    scripted_server,
    state,
    status_route,
)

from engine.errors import BulkExportError
from engine.sources import BearerToken, RetryPolicy
from engine.sources.bulk_export import MERGE_JOURNAL, check_complete_records
from engine.sources.bulk_since import (
    apply_since_export,
    finish_interrupted_merge,
    staging_folder,
)

SINCE = "2026-11-26T00:00:00Z"


def _base(folder: Path) -> None:
    with scripted_server() as server:
        kickoff_route(server)
        outputs = [("Patient", f"{FILES}/p.ndjson"), ("Condition", f"{FILES}/c.ndjson")]
        status_route(server, done(manifest(outputs)))
        file_route(server, "p.ndjson", ndjson(patient("p1"), patient("p2")))
        file_route(server, "c.ndjson", ndjson(condition("c1", "p1"), condition("c2", "p2")))
        delete_route(server)
        export(folder, FakeTime())


def _deleted_bundle(*references: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": reference}} for reference in references],
    }


def _apply(folder: Path, changed: bytes, deleted: bytes) -> Any:
    body = manifest([("Condition", f"{FILES}/changed.ndjson")])
    body["transactionTime"] = "2026-11-27T10:00:00Z"
    body["deleted"] = [{"type": "Bundle", "url": f"{FILES}/deleted.ndjson"}]
    fake_time = FakeTime()
    with scripted_server() as server:
        kickoff = kickoff_route(server)
        status_route(server, done(body))
        file_route(server, "changed.ndjson", changed)
        file_route(server, "deleted.ndjson", deleted)
        delete_route(server)
        result = apply_since_export(
            BASE,
            folder,
            SINCE,
            types=("Condition",),
            auth=BearerToken(TOKEN),
            retry=RetryPolicy(attempts=3, first_delay=0.5, give_up_after=60.0),
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            jitter=lambda: 0.5,
        )
        assert kickoff.calls.last.request.url.params["_since"] == SINCE
    return result


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _contents(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_changes_replace_by_type_and_id_and_deleted_resources_go(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    _base(folder)
    changed_c1 = {**condition("c1", "p1"), "clinicalStatus": {"text": "resolved"}}
    _apply(
        folder,
        ndjson(changed_c1, condition("c3", "p1")),
        ndjson(_deleted_bundle("Condition/c2", f"{BASE}/Patient/p2")),
    )
    assert _lines(folder / "Condition.000.ndjson") == [changed_c1, condition("c3", "p1")]
    assert _lines(folder / "Patient.000.ndjson") == [patient("p1")]
    assert sorted(path.name for path in folder.glob("*.ndjson")) == [
        "Condition.000.ndjson",
        "Patient.000.ndjson",
    ]
    recorded = state(folder)
    assert recorded["manifest"]["transactionTime"] == "2026-11-25T10:00:00Z"
    assert recorded["increments"] == [
        {
            "since": SINCE,
            "transaction_time": "2026-11-27T10:00:00Z",
            "resources_changed": 2,
            "deleted": 2,
        }
    ]
    assert not (folder / MERGE_JOURNAL).exists() and not staging_folder(folder).exists()
    assert not [path for path in folder.iterdir() if path.name.endswith(".merged")]
    check_complete_records(folder)


def test_a_failed_merge_leaves_the_earlier_export_intact(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    _base(folder)
    before = _contents(folder)
    with pytest.raises(BulkExportError, match="without resourceType and id"):
        _apply(folder, b'{"resourceType": "Condition"}\n', ndjson(_deleted_bundle()))
    assert _contents(folder) == before


def test_a_merge_interrupted_after_its_journal_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "export"
    _base(folder)
    real_replace = os.replace

    def crash_on_ndjson(source: Any, target: Any) -> None:
        if Path(target).parent == folder and str(target).endswith(".ndjson"):
            raise OSError("disk gone")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash_on_ndjson)
    with pytest.raises(OSError, match="disk gone"):
        _apply(folder, ndjson(condition("c3", "p1")), ndjson(_deleted_bundle("Condition/c2")))
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(BulkExportError, match="interrupted"):
        check_complete_records(folder)
    finish_interrupted_merge(folder)
    check_complete_records(folder)
    assert _lines(folder / "Condition.000.ndjson") == [
        condition("c1", "p1"),
        condition("c3", "p1"),
    ]


def test_changes_onto_another_request_are_refused_before_asking(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    _base(folder)
    with respx.mock(assert_all_called=False) as server:
        anything = server.route().mock(return_value=httpx.Response(500))
        with pytest.raises(BulkExportError, match="another request"):
            apply_since_export(BASE, folder, SINCE, types=("Observation",))
    assert not anything.called


def test_a_merged_file_removed_is_not_downloaded_again(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    _base(folder)
    _apply(folder, ndjson(condition("c3", "p1")), ndjson(_deleted_bundle()))
    (folder / "Condition.000.ndjson").unlink()
    with respx.mock(assert_all_called=False) as server:
        anything = server.route().mock(return_value=httpx.Response(500))
        with pytest.raises(BulkExportError, match="cannot be downloaded again"):
            export(folder, FakeTime())
    assert not anything.called
