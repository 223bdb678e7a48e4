"""Fuzz targets (hypothesis): the Bundle reader and the criteria loader, fed generated and
mutated input. Whatever comes in, they answer with a result or with the engine's own error
(InputError / CriteriaError naming where): never another exception, never a hang.

Bounded for CI: FUZZ_EXAMPLES examples per target (set TRIALSIEVE_FUZZ_EXAMPLES to run
longer locally, e.g. 20000). The hostile inputs of issue 11 are kept in tests/hostile/corpus
and run as seeds of the criteria target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hostile_support import AS_OF, HOSTILE, ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.criteria.loader import load_criteria
from engine.errors import TrialsieveError
from engine.evaluate import CompiledCriteria, evaluate_patient
from engine.record import build_record
from engine.sources import parse_bundle
from engine.trial import load_trial

FUZZ_EXAMPLES = int(os.environ.get("TRIALSIEVE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXAMPLE_BUNDLE = (ROOT / "examples" / "patients" / "itp-relapsed-candidate.json").read_bytes()
CRITERIA_TEXT = (ROOT / "criteria" / "NCT05315778.yaml").read_text(encoding="utf-8")
TRIAL: CompiledCriteria = load_trial(ROOT / "criteria" / "NCT05315778.yaml")

# --------------------------------------------------------------------------- JSON values

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["2026", "2026-10", "2026-10-20", "2026-10-20T08:00:00", "../x", "Patient/p1"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=25,
)
resource_types = st.sampled_from(
    ["Patient", "Observation", "Condition", "MedicationRequest", "Procedure", "Medication", ""]
)


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": draw(resource_types)}
    if draw(st.booleans()):
        resource["id"] = draw(st.one_of(st.text(max_size=8), st.sampled_from(["p1", "o1"])))
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=5)):
        resource[field] = draw(json_values)
    if draw(st.booleans()):
        resource["subject"] = {"reference": draw(st.sampled_from(["Patient/p1", "urn:x", 5]))}
    return resource


FIELDS = [
    "birthDate",
    "code",
    "valueQuantity",
    "effectiveDateTime",
    "effectivePeriod",
    "onsetDateTime",
    "abatementDateTime",
    "clinicalStatus",
    "status",
    "medicationReference",
    "medicationCodeableConcept",
    "component",
    "referenceRange",
    "gender",
]


@st.composite
def bundles(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(json_values)
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": draw(json_values)}
    entries = [{"resource": patient}] + [
        {"resource": draw(resources())} for _ in range(draw(st.integers(0, 5)))
    ]
    if kind == 2:
        entries.append(draw(json_values))
    return {
        "resourceType": "Bundle",
        "type": draw(st.sampled_from(["collection", "searchset", "transaction", "batch", 3])),
        "entry": entries,
    }


def read_and_evaluate(data: bytes) -> None:
    """The pipeline's front: read a Bundle, build the record, evaluate; only our errors."""
    try:
        resources = parse_bundle(data, "fuzzed.json")
        record = build_record(resources, TRIAL.terminology)
        evaluate_patient(TRIAL, record, AS_OF)
    except TrialsieveError as error:
        assert str(error)  # a message a person can read


@FUZZ
@given(bundles())
def test_fuzz_bundle_reader_structured(document: Any) -> None:
    try:
        data = orjson.dumps(document)
    except TypeError:
        return
    read_and_evaluate(data)


@FUZZ
@given(st.data())
def test_fuzz_bundle_reader_mutated_bytes(data: st.DataObject) -> None:
    raw = bytearray(EXAMPLE_BUNDLE)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.integers(0, 2))
        if action == 0:
            raw[position] = data.draw(st.integers(0, 255))
        elif action == 1:
            del raw[position : position + data.draw(st.integers(1, 64))]
        else:
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=16))
    read_and_evaluate(bytes(raw))


# --------------------------------------------------------------------------- criteria


def load_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "criteria.yaml"
        path.write_text(text.replace("[../mappings]", f"[{ROOT / 'mappings'}]"), encoding="utf-8")
        try:
            load_criteria(path)
        except TrialsieveError as error:
            assert str(error)


CORPUS = sorted(path.read_text(encoding="utf-8") for path in HOSTILE.glob("*criteria.yaml"))
YAML_PIECES = [
    "[",
    "]",
    "{",
    "}",
    ": ",
    "- ",
    "&a ",
    "*a",
    "<<: *a",
    "!!python/object ",
    "\t",
    "\n",
    "'",
    '"',
    "|",
    ">",
    "P99999999999Y",
    "within: P1Y",
    "value: '< -1e309 g/L'",
    "\x00",
]


@FUZZ
@given(st.data())
def test_fuzz_criteria_loader_mutated(data: st.DataObject) -> None:
    lines = CRITERIA_TEXT.splitlines()
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.integers(0, 3))
        if action == 0:
            del lines[position]
        elif action == 1:
            lines.insert(position, lines[data.draw(st.integers(0, len(lines) - 1))])
        elif action == 2:
            line = lines[position]
            cut = data.draw(st.integers(0, len(line)))
            lines[position] = line[:cut] + data.draw(st.sampled_from(YAML_PIECES)) + line[cut:]
        else:
            lines[position] = data.draw(st.text(max_size=30))
    load_text("\n".join(lines) + "\n")


@FUZZ
@given(st.lists(st.sampled_from([*YAML_PIECES, "trial", "criteria", "id", "x"]), max_size=60))
@example(pieces=[CORPUS[0]] if CORPUS else [])
@example(pieces=["[within: P1Y]", ": "])  # a key that is a list: was a TypeError traceback
def test_fuzz_criteria_loader_generated(pieces: list[str]) -> None:
    load_text("".join(pieces))


def test_a_key_that_is_a_list_or_a_mapping_is_a_marked_error(tmp_path: Path) -> None:
    """ruamel's round-trip constructor cannot hash a list holding a mapping as a key and
    raised a bare TypeError."""
    path = tmp_path / "criteria.yaml"
    for text, position in (("[within: P1Y]: x\n", ":1:1:"), ("trial:\n  [a: 1]: b\n", ":2:3:")):
        path.write_text(text, encoding="utf-8")
        try:
            load_criteria(path)
        except TrialsieveError as error:
            assert f"{path}{position} YAML: a key that is a list or a mapping" in str(error)
        else:
            raise AssertionError(f"{text!r} was accepted")


def test_the_corpus_is_refused_cleanly() -> None:
    assert len(CORPUS) >= 4
    for text in CORPUS:
        load_text(text)
