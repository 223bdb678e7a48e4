"""The outcome store's records file (`engine.cohort.outcome_store`): each patient's part of a
segment is serialised when the patient is added, and the segments are joined from those
texts; a segment must read back exactly as `orjson.dumps` of the whole mapping would."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from engine.cohort.outcome_store import _json_object

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
