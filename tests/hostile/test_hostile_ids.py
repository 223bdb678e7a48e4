"""Issue 11, item 1: ids from the data never become paths outside the output folder."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from hostile_support import ROOT, bundle, haemoglobin, patient
from typer.testing import CliRunner

from engine.cli import app
from engine.errors import InputError, SinkError
from engine.sinks import write_json
from engine.sources import parse_bundle
from engine.sources.references import is_fhir_id

HOSTILE_IDS = ["../../escaped-patient", "/srv/other/abs-patient", "..", ".", "p1\n", "a" * 65, ""]


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_an_invalid_patient_id_is_an_input_error_naming_the_field(bad: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_bundle(orjson.dumps(bundle(patient(id=bad))), "upload.json")
    message = str(caught.value)
    assert "upload.json" in message
    assert "id" in message


def test_an_invalid_id_on_any_resource_is_an_input_error() -> None:
    observation = haemoglobin(130, "2026-10-20") | {"id": "../hb"}
    with pytest.raises(InputError, match=r"entry\[1\]\.resource\.id"):
        parse_bundle(orjson.dumps(bundle(patient(), observation)), "upload.json")


def test_an_id_from_a_full_url_is_checked_too() -> None:
    document = bundle({"resourceType": "Patient"})
    document["entry"][0]["fullUrl"] = "urn:uuid:../../x"
    with pytest.raises(InputError, match="fullUrl"):
        parse_bundle(orjson.dumps(document), "upload.json")


def test_fhir_ids() -> None:
    assert is_fhir_id("4d0b58d2-7bd4-4b43-9d5f-8aa0c4a1e6d5")
    assert is_fhir_id("a.b-C9")
    assert not any(is_fhir_id(bad) for bad in HOSTILE_IDS)
    assert not is_fhir_id(None)


@pytest.mark.parametrize("name", ["../escaped.json", "/tmp/abs-patient.json", "sub/../../x.json"])
def test_the_file_sink_refuses_a_target_outside_its_folder(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "out"
    with pytest.raises(SinkError, match="outside the output folder"):
        write_json(folder / name, {"a": 1}, inside=folder)
    assert not (tmp_path / "escaped.json").exists()


def test_the_file_sink_refuses_a_symbolic_link_out(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    os.symlink(tmp_path, folder / "link")
    with pytest.raises(SinkError):
        write_json(folder / "link" / "x.json", {"a": 1}, inside=folder)


def test_evaluate_output_never_writes_outside_the_folder(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = bundle(patient(), haemoglobin(130, "2026-10-20"))
    (inputs / "good.json").write_bytes(orjson.dumps(good))
    hostile = bundle(patient(id="../../escaped-patient"))
    (inputs / "hostile.json").write_bytes(orjson.dumps(hostile))
    out = tmp_path / "a" / "b" / "out"
    outcome = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(ROOT / "criteria" / "NCT05315778.yaml"),
            "--bundle",
            str(inputs),
            "--as-of",
            "2026-11-01",
            "--output",
            str(out),
        ],
    )
    assert outcome.exit_code == 1, outcome.output
    written = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*.json"))
    assert Path("a/b/out/p1.json") in written
    assert not (tmp_path / "a" / "escaped-patient.json").exists()
    assert all(path.parts[0] == "in" or path.parts[:3] == ("a", "b", "out") for path in written)


@pytest.mark.parametrize("reference", ["Medication/..", "Patient/.", "https://x/fhir/Patient/../"])
def test_a_reference_to_a_dot_only_id_names_no_resource(reference: str) -> None:
    from engine.sources.references import reference_key

    assert reference_key(reference) is None
