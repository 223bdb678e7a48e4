"""The outcome store's records file (`engine.cohort.outcome_store`): each patient's part of a
segment is serialised when the patient is added, and the segments are joined from those
texts; a segment must read back exactly as `orjson.dumps` of the whole mapping would."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import orjson
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
        by_place: dict[tuple[int, int], list[str]] = {}
        for concept, place in concepts.items():
            by_place.setdefault(tuple(place), []).append(concept)
        store = RecordStore(path)
        for names in by_place.values():
            segments = [store.segment("concept", name) for name in names]
            assert all(segment == segments[0] for segment in segments)
            shared += len(names) - 1
        store.close()
        if len(by_place) < len(concepts):
            written = sum(length for _offset, length in by_place)
            assert written < sum(length for _offset, length in concepts.values())
            if "creatinine" in concepts:
                assert concepts["creatinine"] == concepts["creatinine-female-limits"]
    assert shared >= 2
