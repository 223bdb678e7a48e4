"""Issue 9's silent wrong answers, each pinned: Condition timing (onset or active), explicit
absence semantics, the inclusive range test."""

from __future__ import annotations

from pathlib import Path

import pytest
from language_support import atom_trial, condition, evaluate, observation

from engine.errors import TrialsieveError
from engine.evaluate.outcome import Truth
from engine.trial import load_trial

MI = "22298006"


# ------------------------------------------------------------------ 1. onset or active


def test_a_condition_in_a_bounded_window_must_say_onset_or_active(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path, "resource: Condition\nconcept: myocardial-infarction\nwithin: P12W\n"
    )
    with pytest.raises(TrialsieveError, match="timing: onset"):
        load_trial(path)


def test_an_old_unclosed_infarction_did_not_begin_in_the_last_12_weeks(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        "resource: Condition\nconcept: myocardial-infarction\nwithin: P12W\ntiming: onset\n",
    )
    [outcome] = evaluate(path, condition(MI, "1971-10-20"))
    assert outcome.truth is Truth.NOT_MET
    [outcome] = evaluate(path, condition(MI, "2025-06-01"))
    assert outcome.truth is Truth.MET
    assert "2025-06-01" in outcome.reason


def test_active_in_the_window_says_it_began_before_it(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        "resource: Condition\nconcept: myocardial-infarction\nwithin: P12W\ntiming: active\n",
    )
    [outcome] = evaluate(path, condition(MI, "1971-10-20"))
    assert outcome.truth is Truth.MET
    assert "began 1971-10-20 (before the window) and active in it" in outcome.reason
    assert "latest 1971" not in outcome.reason


def test_onset_timing_respects_abatement_free_onset_dates_only(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        "resource: Condition\nconcept: myocardial-infarction\nwithin: P12W\ntiming: onset\n",
    )
    no_onset = condition(MI, "2025-06-01")
    del no_onset["onsetDateTime"]
    no_onset["abatementDateTime"] = "2025-07-01"
    [outcome] = evaluate(path, no_onset)
    assert outcome.truth is Truth.UNKNOWN
    assert "has no onset date" in outcome.reason


# ------------------------------------------------------------------ 5. absence semantics


def test_types_with_different_absence_defaults_must_say_what_absence_means(
    tmp_path: Path,
) -> None:
    path = atom_trial(tmp_path, "resource: [Observation, Condition]\nconcept: hba1c\n")
    with pytest.raises(TrialsieveError, match="absent: not-met"):
        load_trial(path)


@pytest.mark.parametrize(
    ("absent", "truth"), [("unknown", Truth.UNKNOWN), ("not-met", Truth.NOT_MET)]
)
def test_absence_is_what_the_atom_says(tmp_path: Path, absent: str, truth: Truth) -> None:
    path = atom_trial(
        tmp_path, f"resource: [Observation, Condition]\nconcept: hba1c\nabsent: {absent}\n"
    )
    [outcome] = evaluate(path)
    assert outcome.truth is truth


def test_a_closed_world_type_may_be_read_open_world(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path, "resource: Condition\nconcept: myocardial-infarction\nabsent: unknown\n"
    )
    [outcome] = evaluate(path)
    assert outcome.truth is Truth.UNKNOWN
    assert outcome.missing


# ------------------------------------------------------------------ 4. inclusive range


@pytest.mark.parametrize(
    ("value", "truth"),
    [
        (5.3, Truth.NOT_MET),
        (6.5, Truth.MET),
        (9.0, Truth.MET),
        (12.0, Truth.MET),
        (12.1, Truth.NOT_MET),
    ],
)
def test_between_is_an_inclusive_range(tmp_path: Path, value: float, truth: Truth) -> None:
    path = atom_trial(
        tmp_path,
        'resource: Observation\nconcept: hba1c\nvalue: {between: ["6.5 %", "12 %"]}\n',
    )
    [outcome] = evaluate(path, observation("4548-4", value, "%", "2025-07-01"))
    assert outcome.truth is truth
    assert "between 6.5 % and 12 %" in outcome.reason


def test_a_range_bound_with_a_comparator_is_a_load_error(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        'resource: Observation\nconcept: hba1c\nvalue: {between: [">= 6.5 %", "12 %"]}\n',
    )
    with pytest.raises(TrialsieveError, match="Not a quantity"):
        load_trial(path)


def test_a_range_upside_down_is_a_load_error(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        'resource: Observation\nconcept: hemoglobin\nvalue: {between: ["12 g/dL", "100 g/L"]}\n',
    )
    with pytest.raises(TrialsieveError, match="low bound is above the high bound"):
        load_trial(path)


def test_an_anchored_condition_must_say_onset_or_active_too(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        "resource: Condition\nconcept: myocardial-infarction\n"
        "before: {anchor: as-of, at_most: P12W}\n",
    )
    with pytest.raises(TrialsieveError, match="timing: onset"):
        load_trial(path)
