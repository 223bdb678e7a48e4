"""The outcome store's records file (`engine.cohort.outcome_store`): each patient's part of a
segment is serialised when the patient is added, and the segments are joined from those
texts; a segment must read back exactly as `orjson.dumps` of the whole mapping would."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cohort.outcome_store import _json_object, complete_digest
from engine.cohort.partition import result_data
from engine.cohort.rerun import PreviousResult, patient_lines

_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


def _records_digest(path: Path) -> Any:
    """The records file's header digest its partition's outcomes file names."""
    return orjson.loads(path.with_suffix(".outcomes").read_bytes())["records_sha256"]


@given(st.dictionaries(st.text(), st.lists(st.dictionaries(st.text(), _JSON), max_size=3)))
def test_a_segment_joined_from_texts_is_the_whole_mapping_serialised(
    by_patient: dict[str, list[dict[str, Any]]],
) -> None:
    texts = {patient: orjson.dumps(resources) for patient, resources in by_patient.items()}
    joined = _json_object(texts)
    assert joined == orjson.dumps(by_patient)
    assert orjson.loads(joined) == by_patient


@given(st.lists(st.text(), unique=True, max_size=6), st.booleans())
def test_previous_result_lines_are_found_by_patient_whatever_their_ids(
    ids: list[str], problems: bool
) -> None:
    """A re-run keeps an unchanged patient's earlier line (`rerun.patient_lines`): the id is
    read from the line's text unless it holds a JSON escape; a file whose lines do not match
    its `complete` line's digest, or another file, gives none. The earlier file is reused
    whole only for its own lines, in its order, and its problems."""
    lines = [orjson.dumps({"patient": each, "status": "eligible"}) + b"\t{}\t{}" for each in ids]
    problem_lines = [b'{"problem":{"line":1}}'] if problems else []
    data = result_data([*lines, *problem_lines], len(lines), len(problem_lines))
    digest = complete_digest(data)
    assert digest == hashlib.sha256(data[: data.rindex(b'{"complete":')]).hexdigest()
    previous = patient_lines(data, digest)
    assert previous.lines == dict(zip(ids, lines, strict=True))
    assert previous.data is data
    kept = [previous.lines[each] for each in ids]
    assert previous.holds(kept, problem_lines)
    assert not previous.holds(kept, [*problem_lines, b'{"problem":{"line":2}}'])
    if len(kept) > 1:
        assert not previous.holds(kept[::-1], problem_lines)
        assert not previous.holds(kept[:-1], problem_lines)
    if kept:
        new_line = bytes(bytearray(kept[0]))  # the same text, built anew
        assert not previous.holds([new_line, *kept[1:]], problem_lines)
    assert patient_lines(data, "0" * 64) == PreviousResult()
    assert not PreviousResult().holds([], [])  # no earlier file (or one refused): no reuse
    if lines:
        holed = bytes(len(lines[0])) + data[len(lines[0]) :]  # a block never written
        assert patient_lines(holed, digest) == PreviousResult()
    assert complete_digest(data[: data.rindex(b'{"complete":')]) is None


def test_concepts_holding_the_same_resources_share_one_segment(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    """Concepts with the same codes (creatinine and its sex-specific limits) index the same
    resources for every patient: their segment is written once and each concept names its
    place. (`tests/cohort/test_rerun.py` evaluates every criterion on the stored records.)"""
    from cohort_examples import AS_OF, CRITERIA

    from engine.cohort import NdjsonInput, run_cohort
    from engine.cohort.outcome_store import RecordStore

    run_cohort(CRITERIA, NdjsonInput(ndjson_folder), tmp_path, AS_OF, workers=1, full=True)
    shared = 0
    for path in sorted((tmp_path / "partitions" / "store").glob("*.records")):
        data = path.read_bytes()
        (length,) = struct.unpack("<Q", data[:8])
        concepts = orjson.loads(data[8 : 8 + length])["concepts"]
        by_place: dict[tuple[int, ...], list[str]] = {}
        for concept, place in concepts.items():
            by_place.setdefault(tuple(place), []).append(concept)
        store = RecordStore(path, _records_digest(path))
        for names in by_place.values():
            segments = [store.segment("concept", name) for name in names]
            assert all(segment == segments[0] for segment in segments)
            shared += len(names) - 1
        store.close()
        if len(by_place) < len(concepts):
            written = sum(place[1] for place in by_place)
            assert written < sum(place[1] for place in concepts.values())
            if "creatinine" in concepts:
                assert concepts["creatinine"] == concepts["creatinine-female-limits"]
    assert shared >= 2


@given(
    st.lists(st.dictionaries(st.text(), _JSON), max_size=4),
    st.lists(st.sampled_from([b"", b"\n", b" \r\n", b"\t"]), min_size=4, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_an_array_of_resources_written_from_their_texts_reads_back_the_same(
    resources: list[dict[str, Any]], ends: list[bytes], kept: list[bool]
) -> None:
    """The store writes a resource as the JSON text it was parsed from (its line end and
    all) where it has one (`PatientResources.texts`), else serialises it."""
    from engine.cohort.outcome_store import _json_array

    texts = {
        id(resource): b" " + orjson.dumps(resource, option=orjson.OPT_INDENT_2) + end
        for resource, end, keep in zip(resources, ends, kept, strict=False)
        if keep
    }
    assert orjson.loads(_json_array(resources, texts)) == resources


def test_records_kept_from_the_input_lines_read_back_as_serialised(
    ndjson_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run keeps each resource's input line in the records file instead of serialising
    the parsed resource again: every segment reads back the same as when serialised (input
    lines written with other white space and escapes than orjson's, so that the texts do
    differ), in full and default (preview) runs."""
    from cohort_examples import AS_OF, CRITERIA

    from engine.cohort import NdjsonInput, run_cohort
    from engine.cohort.outcome_store import RecordStore, StoreBuilder

    spaced = tmp_path / "spaced"
    spaced.mkdir()
    for path in sorted(ndjson_folder.glob("*.ndjson")):
        lines = []
        for line in path.read_bytes().splitlines(keepends=True):
            try:
                resource = json.loads(line)
            except ValueError:
                lines.append(line)  # the cut-off line stays as it is
            else:
                lines.append(json.dumps(resource, separators=(", ", " : ")).encode() + b"\n")
        (spaced / path.name).write_bytes(b"".join(lines))

    def segments(out: Path) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for path in sorted((out / "partitions" / "store").glob("*.records")):
            data = path.read_bytes()
            (length,) = struct.unpack("<Q", data[:8])
            header = orjson.loads(data[8 : 8 + length])
            store = RecordStore(path, _records_digest(path))
            found[path.name] = (
                header["plain_types"],
                store.segment("patients", ""),
                {name: store.segment("concept", name) for name in header["concepts"]},
                {name: store.segment("type", name) for name in header["types"]},
                data,
            )
            store.close()
        return found

    add = StoreBuilder.add
    for full in (True, False):
        kept = tmp_path / f"kept-{full}"
        run_cohort(CRITERIA, NdjsonInput(spaced), kept, AS_OF, workers=1, full=full)
        with monkeypatch.context() as patch:
            patch.setattr(StoreBuilder, "add", lambda self, *given: add(self, *given[:4]))
            serialised = tmp_path / f"serialised-{full}"
            run_cohort(CRITERIA, NdjsonInput(spaced), serialised, AS_OF, workers=1, full=full)
        kept_segments, serialised_segments = segments(kept), segments(serialised)
        assert kept_segments.keys() == serialised_segments.keys() and kept_segments
        for name, (*read, data) in kept_segments.items():
            *read_serialised, data_serialised = serialised_segments[name]
            assert read == read_serialised
            if read[1]:  # a partition with patients: their lines were kept, not serialised
                assert data != data_serialised
        for path in sorted((kept / "partitions" / "store").glob("*.outcomes")):
            # the same but for the digest of each one's own records file's header
            outcomes = orjson.loads(path.read_bytes())
            outcomes_serialised = orjson.loads(
                (serialised / "partitions" / "store" / path.name).read_bytes()
            )
            del outcomes["records_sha256"], outcomes_serialised["records_sha256"]
            assert outcomes == outcomes_serialised


def test_a_damaged_or_foreign_records_file_is_not_stored(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    """A records file spoiled after it was written (cut short, zeros, another partition's or
    run's file) answers `NotStored` (the partition is evaluated from the input), never a
    traceback: its header must have the SHA-256 the outcomes name, and each segment read
    must be whole and a JSON object."""
    from cohort_examples import AS_OF, CRITERIA

    from engine.cohort import NdjsonInput, run_cohort
    from engine.cohort.outcome_store import NotStored, RecordStore

    run_cohort(CRITERIA, NdjsonInput(ndjson_folder), tmp_path, AS_OF, workers=1, full=True)
    paths = sorted((tmp_path / "partitions" / "store").glob("*.records"))
    path, other = paths[0], paths[1]
    data = path.read_bytes()
    digest = _records_digest(path)
    (length,) = struct.unpack("<Q", data[:8])
    header = orjson.loads(data[8 : 8 + length])
    start = 8 + length
    store = RecordStore(path, digest)  # as written: every segment reads
    whole = {name: store.segment("concept", name) for name in header["concepts"]}
    store.close()
    assert any(whole.values())
    for damaged in (b"", data[:5], data[: start - 1], bytes(len(data)), other.read_bytes()):
        path.write_bytes(damaged)
        with pytest.raises(NotStored):
            RecordStore(path, digest)
    with pytest.raises(NotStored):
        RecordStore(path, None)  # outcomes of an earlier format: no digest
    name, (offset, size) = max(header["concepts"].items(), key=lambda item: item[1][1])
    for damaged in (
        data[: start + offset + size // 2],  # cut inside the segment
        data[: start + offset] + bytes(size) + data[start + offset + size :],  # zeros
        data[: start + offset] + b"[" + bytes(size - 2) + b"]" + data[start + offset + size :],
    ):
        path.write_bytes(damaged)
        store = RecordStore(path, digest)  # the header is whole
        with pytest.raises(NotStored):
            store.segment("concept", name)
        store.close()


def _rewritten_segment(data: bytes, start: int, place: list[int], value: bytes) -> bytes:
    """The records file with a segment's every patient given `value` instead of their own,
    padded with spaces to the segment's size (the header, and so its digest, unchanged)."""
    offset, size = place
    patients = orjson.loads(data[start + offset : start + offset + size])
    text = b"{" + b",".join(orjson.dumps(each) + b":" + value for each in patients) + b"}"
    assert len(text) <= size
    return data[: start + offset] + text.ljust(size) + data[start + offset + size :]


def test_a_patient_value_of_the_wrong_kind_is_not_stored(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    """A segment that is a whole JSON object but holds, for a patient, something other than
    a list of resources (or, in the patients segment, other than their entry) answers
    `NotStored` when that patient's record is read (each patient's value is parsed alone,
    `RecordStore.patient_value`), never a traceback; read whole, the segment is the object."""
    from cohort_examples import AS_OF, CRITERIA

    from engine.cohort import NdjsonInput, run_cohort
    from engine.cohort.outcome_store import NotStored, RecordStore

    run_cohort(CRITERIA, NdjsonInput(ndjson_folder), tmp_path, AS_OF, workers=1, full=True)
    path = max(
        (tmp_path / "partitions" / "store").glob("*.records"), key=lambda each: each.stat().st_size
    )
    data = path.read_bytes()
    digest = _records_digest(path)
    (length,) = struct.unpack("<Q", data[:8])
    header = orjson.loads(data[8 : 8 + length])
    start = 8 + length
    name, place = max(header["concepts"].items(), key=lambda item: item[1][1])
    store = RecordStore(path, digest)
    holding = [each for each, found in store.segment("concept", name).items() if found]
    store.close()
    assert holding
    for value in (b"0", b'"text"', b"{}"):
        path.write_bytes(_rewritten_segment(data, start, place, value))
        store = RecordStore(path, digest)
        assert store.segment("concept", name) == dict.fromkeys(holding, orjson.loads(value))
        record = store.record(holding[0], "stored record", False)
        with pytest.raises(NotStored):
            record.resources_of_concept(name)
        store.close()
    # JSON to msgspec's split of the segment, not to orjson: a number that overflows a double
    path.write_bytes(_rewritten_segment(data, start, place, b"[1e999]"))
    store = RecordStore(path, digest)
    with pytest.raises(NotStored, match="is damaged"):
        store.segment("concept", name)
    with pytest.raises(NotStored, match="is damaged"):
        store.record(holding[0], "stored record", False).resources_of_concept(name)
    store.close()
    for value in (b"[]", b'{"patient":{}}', b'{"patient":[],"resolved":{}}'):
        path.write_bytes(_rewritten_segment(data, start, header["patients"], value))
        store = RecordStore(path, digest)
        with pytest.raises(NotStored):
            _ = store.record(holding[0], "stored record", False).patient
        store.close()
    path.write_bytes(data)
    store = RecordStore(path, digest)  # as written: each patient's value as in the segment
    whole = store.segment("concept", name)
    for each in holding:
        assert store.record(each, "stored record", False).resources_of_concept(name) == whole[each]
    store.close()


def test_a_stored_patient_is_cited_by_its_reference_and_read_when_looked_into(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    """`StoredRecord.cited_patient` names the Patient by the reference the outcomes keep,
    without reading the patients segment; the Patient it gives reads as the stored one when
    looked into, and a damaged entry then answers `NotStored`, as reading it directly does."""
    from cohort_examples import AS_OF, CRITERIA

    from engine.cohort import NdjsonInput, run_cohort
    from engine.cohort.outcome_store import NotStored, PatientWhenRead, RecordStore

    run_cohort(CRITERIA, NdjsonInput(ndjson_folder), tmp_path, AS_OF, workers=1, full=True)
    outcomes = max(
        (tmp_path / "partitions" / "store").glob("*.outcomes"), key=lambda each: each.stat().st_size
    )
    entry = orjson.loads(outcomes.read_bytes())["patients"][0]
    path = outcomes.with_suffix(".records")
    data = path.read_bytes()
    digest = _records_digest(path)
    store = RecordStore(path, digest)
    record = store.record(entry["id"], "stored record", False, entry["reference"])
    reference, patient = record.cited_patient()
    assert reference == entry["reference"] == f"Patient/{entry['id']}"
    assert isinstance(patient, PatientWhenRead) and record._stored is None  # not read
    stored = store.record(entry["id"], "stored record", False).patient
    assert dict(patient) == stored and patient.get("id") == entry["id"]
    assert patient.get("no such field") is None and len(patient) == len(stored)
    # read once: later citations give the Patient itself
    assert record.cited_patient() == (reference, record.patient)
    # without a reference (a store read another way) the Patient is read to label it
    plain = store.record(entry["id"], "stored record", False)
    assert plain.cited_patient() == (reference, stored)
    store.close()
    (length,) = struct.unpack("<Q", data[:8])
    header = orjson.loads(data[8 : 8 + length])
    path.write_bytes(_rewritten_segment(data, 8 + length, header["patients"], b"[]"))
    store = RecordStore(path, digest)
    _, damaged = store.record(
        entry["id"], "stored record", False, entry["reference"]
    ).cited_patient()
    with pytest.raises(NotStored):
        damaged.get("gender")
    store.close()
