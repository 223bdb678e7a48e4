"""What a computed value's formula found, kept apart from its value test: a cohort run stores
it per patient (`EvaluationContext.computed_values`, as JSON), and a re-run after editing the
test (a threshold) reads it back instead of reading the inputs and computing again. Read
back, it gives the very outcome computing does: truth, reason, evidence, missing data and the
resources cited."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_computed_and_exposure import context_of, observation, patient, write_trial
from test_computed_same_sample import sample, trial_at

from engine.evaluate import CompiledCriteria, Truth
from engine.evaluate import computed as computed_module
from engine.evaluate.computed import ComputedNode
from engine.evaluate.outcome import Outcome
from engine.normalise.formulas import Formula
from engine.trial import load_trial


def creatinine(value: float, when: str, identifier: str, **more: Any) -> dict[str, Any]:
    resource = observation("2160-0", value, "mg/dL", "2026-10-25", identifier)
    resource["effectiveDateTime"] = when
    resource.update(more)
    return resource


RECORDS: dict[str, list[dict[str, Any]]] = {
    "no input": [patient()],
    "one creatinine": [patient(), creatinine(2.0, "2026-10-25T09:00:00+00:00", "c")],
    "stale creatinine": [patient(), creatinine(2.0, "2026-08-01T09:00:00+00:00", "c")],
    "tied, disagreeing": [
        patient(),
        creatinine(2.0, "2026-10-25T09:00:00+00:00", "a"),
        creatinine(5.0, "2026-10-25T09:00:00+00:00", "b"),
    ],
    "tied, agreeing": [
        patient(),
        creatinine(2.0, "2026-10-25", "a"),
        creatinine(2.1, "2026-10-25T09:00:00+00:00", "b"),
    ],
    "no birthDate": [
        {"resourceType": "Patient", "id": "p", "gender": "female"},
        creatinine(1.2, "2026-10-25T09:00:00+00:00", "c"),
    ],
    "censored creatinine": [
        patient(),
        creatinine(
            0.3,
            "2026-10-25T09:00:00+00:00",
            "c",
            valueQuantity={"value": 0.3, "comparator": "<", "unit": "mg/dL"},
        ),
    ],
    "measured and computed": [
        patient("female", "1960-02-29"),
        observation("98979-8", 31.0, "mL/min/{1.73_m2}", "2026-10-20", "egfr"),
        creatinine(1.6, "2026-10-26T09:00:00+00:00", "c"),
    ],
    "one sample": [
        patient(),
        sample("14957-5", 300, "mg/L", "2026-10-20T08:00:00+00:00", "albumin", "Specimen/s"),
        sample("2161-8", 100, "mg/dL", "2026-10-20T08:00:00+00:00", "creatinine", "Specimen/s"),
    ],
    "two samples": [
        patient(),
        sample("14957-5", 300, "mg/L", "2026-10-20T08:00:00+00:00", "albumin", "Specimen/s"),
        sample("2161-8", 100, "mg/dL", "2026-10-21T08:00:00+00:00", "creatinine", "Specimen/t"),
    ],
}


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> list[CompiledCriteria]:
    """The computed values of every `prefer`, and a ratio of one sample."""
    made = [
        load_trial(write_trial(tmp_path_factory.mktemp(prefer), prefer))
        for prefer in ("measured", "computed", "latest")
    ]
    return [*made, load_trial(trial_at(tmp_path_factory.mktemp("same")))]


def computed_nodes(trial: CompiledCriteria) -> list[ComputedNode]:
    return [c.root for c in trial.criteria if isinstance(c.root, ComputedNode)]


def said(outcome: Outcome) -> tuple[Any, ...]:
    cited = [(each.reference, each.resource) for each in outcome.cited]
    return (
        outcome.truth,
        outcome.reason,
        outcome.evidence,
        outcome.missing,
        outcome.unavailable,
        cited,
    )


def variant(folder: Path, old: str, new: str) -> CompiledCriteria:
    """The trial of `write_trial` (`prefer: computed`) with `old` replaced by `new`."""
    folder.mkdir()
    path = write_trial(folder, "computed")
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return load_trial(path)


@pytest.mark.parametrize("case", list(RECORDS))
def test_what_the_formula_found_read_back_gives_the_same_outcome(
    trials: list[CompiledCriteria], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for trial in trials:
        for node in computed_nodes(trial):
            first = context_of(trial, RECORDS[case])
            computed = node.evaluate(first)
            stored = orjson.loads(orjson.dumps(first.computed_values))
            with monkeypatch.context() as patched:  # read back: no input read, no formula
                patched.setattr(computed_module, "_latest", _not_called)
                patched.setattr(Formula, "compute", _not_called)
                again = context_of(trial, RECORDS[case], stored)
                assert said(node.evaluate(again)) == said(computed), (case, node.label)
            if node.key in stored:  # as JSON: one read per input, one value per choice
                reads, values = stored[node.key]
                assert len(reads) == len(node.inputs)
                choices = 1
                for item_reads in reads:
                    choices *= len(item_reads)
                assert len(values) == choices


def test_a_patient_holding_nothing_the_formula_reads_stores_nothing(tmp_path: Path) -> None:
    """A ratio of two measurements, for a patient holding neither, is decided once per as-of
    day and shared with every such patient (`ComputedNode._unread`): what the formula found
    of nothing is stored for none of them, the first included (it was stored for the first
    patient of each process, so a cohort run's stored outcomes depended on which patient
    its process met first)."""
    trial = load_trial(trial_at(tmp_path))  # compiled here: nothing decided yet
    nodes = [node for node in computed_nodes(trial) if node.reads is not None]
    assert nodes
    for node in nodes:
        outcomes = []
        for _patient in range(2):
            context = context_of(trial, [patient()])
            outcomes.append(said(node.evaluate(context)))
            assert node.key not in context.computed_values
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][0] is Truth.UNKNOWN


def _not_called(*_arguments: Any) -> Any:
    raise AssertionError("computed again")


def test_the_formula_s_value_is_kept_and_decided_by_the_test_of_the_moment(
    tmp_path: Path,
) -> None:
    """The key leaves the value test out: a stored eGFR of 37.5 meets `>= 25` and, read back
    under `>= 40`, fails it (the reason shows the value with the digits that decide)."""
    resources = RECORDS["one creatinine"]
    at_25 = variant(tmp_path / "25", "", "")
    at_40 = variant(tmp_path / "40", '">= 25 mL', '">= 40 mL')
    [node_25, *_] = computed_nodes(at_25)
    [node_40, *_] = computed_nodes(at_40)
    assert node_25.key == node_40.key
    first = context_of(at_25, resources)
    assert node_25.evaluate(first).truth is Truth.MET
    stored = orjson.loads(orjson.dumps(first.computed_values))
    fresh = node_40.evaluate(context_of(at_40, resources))
    read_back = node_40.evaluate(context_of(at_40, resources, stored))
    assert fresh.truth is Truth.NOT_MET
    assert said(read_back) == said(fresh)
    assert "is not >= 40 mL/min/{1.73_m2}" in read_back.reason


def test_a_window_or_another_formula_input_is_another_computation(tmp_path: Path) -> None:
    at_p14d = variant(tmp_path / "a", "", "")
    at_p21d = variant(tmp_path / "b", "within: P14D", "within: P21D")
    keys = [node.key for node in computed_nodes(at_p14d)]
    assert len(set(keys)) == len(keys) == 2  # eGFR and UACR
    assert not set(keys) & {node.key for node in computed_nodes(at_p21d)}


@pytest.mark.parametrize(
    "stored",
    [
        "not a list",
        [[], []],  # no reads for the inputs
        [[[["Observation/c", "2026-10-25", True]]], []],  # no value for the one choice
        [[[["Observation/c", "2026-10-25", True]]], [[None, [], False, [], []]]],  # neither
        [[[["Observation/c", "25 October", True]]], [[1.0, [], False, [], []]]],  # a day?
        [[[["Observation/c", None, "yes"]]], [[1.0, [], False, [], []]]],
        [[[[None, None, False]]], [[1.0, ["no creatinine"], False, [], []]]],  # both
        [[[[None, None, False]]], [["37.5", [], False, [3], []]]],  # evidence not texts
        # a result the record does not hold
        [[[["Observation/gone", "2026-10-25", True]]], [[3.0, [], False, [], []]]],
    ],
)
def test_anything_else_stored_is_computed_again(
    trials: list[CompiledCriteria], stored: Any
) -> None:
    """A store edited by hand, or of a record that has changed: the value is computed from
    the record, as if nothing were stored, and what the formula found replaces it."""
    trial = trials[1]  # prefer: computed
    [node, *_] = computed_nodes(trial)
    resources = RECORDS["one creatinine"]
    fresh = node.evaluate(context_of(trial, resources))
    context = context_of(trial, resources, {node.key: stored})
    assert said(node.evaluate(context)) == said(fresh)
    assert context.computed_values[node.key] != stored
    assert fresh.truth is Truth.MET


def test_a_value_json_cannot_hold_is_not_kept(trials: list[CompiledCriteria]) -> None:
    trial = trials[1]
    [node, *_] = computed_nodes(trial)
    context = context_of(trial, RECORDS["one creatinine"])
    found = computed_module._Value(float("nan"), (), False, (), ())
    assert computed_module._stored_form([()], [found]) is None
    node.evaluate(context)
    assert dt.date.fromisoformat(context.computed_values[node.key][0][0][0][1])
