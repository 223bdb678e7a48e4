"""Issue 9: event-relative windows (before: / after: an anchor), at least N results M days
apart, and the load errors of anchors that name no atom or go in a circle."""

from __future__ import annotations

from pathlib import Path

import pytest
from language_support import atom_trial, condition, evaluate, observation, write_trial

from engine.errors import TrialsieveError
from engine.evaluate.outcome import Truth
from engine.trial import load_trial

CKD = "709044004"
UACR = "9318-7"


def uacr(value: float, date: str) -> dict[str, object]:
    return observation(UACR, value, "mg/g", date)


# ------------------------------------------------------------------ anchored on the as-of date


def test_at_least_three_months_before_the_as_of_date(tmp_path: Path) -> None:
    """DAPA-CKD: "albuminuria ... 3 months or more before visit 1" (visit 1 = the as-of date)."""
    path = atom_trial(
        tmp_path,
        'resource: Observation\nconcept: uacr\nvalue: ">= 200 mg/g"\nselect: any\n'
        "before: {anchor: as-of, at_least: P3M}\n",
    )
    [outcome] = evaluate(path, uacr(450, "2025-07-01"))  # one month before 2025-08-01
    assert outcome.truth is Truth.UNKNOWN  # none old enough: missing data (open world)
    assert "to 2025-05-01 (at least 3 months before the as-of date 2025-08-01)" in outcome.reason
    [outcome] = evaluate(path, uacr(450, "2025-07-01"), uacr(300, "2025-04-15"))
    assert outcome.truth is Truth.MET
    assert outcome.evidence == ("Observation/observation-9318-7-2025-04-15-300",)


def test_within_six_months_before_the_as_of_date(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        "resource: Condition\nconcept: chronic-kidney-disease\ntiming: onset\n"
        "before: {anchor: as-of, at_most: P6M}\n",
    )
    [outcome] = evaluate(path, condition(CKD, "2024-12-01"))
    assert outcome.truth is Truth.NOT_MET
    [outcome] = evaluate(path, condition(CKD, "2025-03-01"))
    assert outcome.truth is Truth.MET


# ------------------------------------------------------------------ anchored on another atom

AFTER_DIAGNOSIS = """\
- id: c
  kind: inclusion
  text: albuminuria after the diagnosis of CKD
  expression:
    all:
      - resource: Condition
        id: ckd-diagnosis
        concept: chronic-kidney-disease
      - resource: Observation
        concept: uacr
        value: ">= 200 mg/g"
        select: any
        after: ckd-diagnosis
"""


def test_after_the_diagnosis_of_another_atom(tmp_path: Path) -> None:
    path = write_trial(tmp_path, AFTER_DIAGNOSIS)
    [outcome] = evaluate(path, condition(CKD, "2024-01-10"), uacr(300, "2023-06-01"))
    assert outcome.truth is Truth.UNKNOWN  # only an older result: none after the diagnosis
    [outcome] = evaluate(path, condition(CKD, "2024-01-10"), uacr(300, "2024-05-01"))
    assert outcome.truth is Truth.MET


AT_LEAST_A_WEEK_AFTER = AFTER_DIAGNOSIS.replace(
    "after: ckd-diagnosis", "after: {anchor: ckd-diagnosis, at_least: P1W}"
)


@pytest.mark.parametrize(
    ("result_day", "truth"),
    [
        ("2024-04-29", Truth.UNKNOWN),  # before April's end: in the window at the widest only
        ("2024-04-15", Truth.UNKNOWN),
        ("2024-03-31", Truth.UNKNOWN),  # before April: outside whatever the day (open world)
        ("2024-04-30", Truth.MET),  # on or after every day of April
    ],
)
def test_an_anchor_dated_to_the_month_is_any_day_of_it(
    tmp_path: Path, result_day: str, truth: Truth
) -> None:
    """A diagnosis dated `2024-04` may be 30 April: a result of 15 April may precede it."""
    path = write_trial(tmp_path, AFTER_DIAGNOSIS)
    [outcome] = evaluate(path, condition(CKD, "2024-04"), uacr(300, result_day))
    assert outcome.truth is truth
    if truth is Truth.UNKNOWN and result_day >= "2024-04":
        assert "is dated 2024-04 only" in outcome.reason
        assert " 2024-04)" in outcome.reason  # the month as written, not its first day


@pytest.mark.parametrize(
    ("result_day", "truth"),
    [
        ("2024-04-08", Truth.UNKNOWN),  # a week after 1 April, not after 30 April
        ("2024-05-06", Truth.UNKNOWN),
        ("2024-05-07", Truth.MET),  # a week after every day of April
    ],
)
def test_at_least_a_week_after_a_month(tmp_path: Path, result_day: str, truth: Truth) -> None:
    path = write_trial(tmp_path, AT_LEAST_A_WEEK_AFTER)
    [outcome] = evaluate(path, condition(CKD, "2024-04"), uacr(300, result_day))
    assert outcome.truth is truth


def test_an_anchor_dated_to_the_day_is_that_day(tmp_path: Path) -> None:
    path = write_trial(tmp_path, AT_LEAST_A_WEEK_AFTER)
    [outcome] = evaluate(path, condition(CKD, "2024-04-01"), uacr(300, "2024-04-08"))
    assert outcome.truth is Truth.MET
    [outcome] = evaluate(path, condition(CKD, "2024-04-01"), uacr(300, "2024-04-07"))
    assert outcome.truth is Truth.UNKNOWN  # none a week after it: open world
    assert "cannot be told" not in outcome.reason


def test_without_the_anchor_event_the_relation_cannot_hold(tmp_path: Path) -> None:
    path = write_trial(tmp_path, AFTER_DIAGNOSIS)
    [outcome] = evaluate(path, uacr(300, "2024-05-01"))
    assert outcome.truth is Truth.NOT_MET
    uacr_outcome = outcome.children[1]
    assert "after the first Chronic kidney disease: there is none to date it" in uacr_outcome.reason
    assert "(ever)" not in uacr_outcome.reason


def test_the_latest_anchor_event_when_asked(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        "all:\n"
        "  - resource: Observation\n    id: first-high\n    concept: uacr\n"
        '    value: ">= 1000 mg/g"\n    select: any\n'
        "  - resource: Observation\n    concept: uacr\n"
        '    value: "< 30 mg/g"\n    select: any\n'
        "    after: {anchor: first-high, event: latest, at_least: P1W}\n",
    )
    resources = (uacr(1500, "2024-01-01"), uacr(20, "2024-03-01"), uacr(1200, "2024-06-01"))
    [outcome] = evaluate(path, *resources)
    assert outcome.truth is Truth.UNKNOWN  # the low result precedes the latest high one
    [outcome] = evaluate(path, *resources, uacr(10, "2024-09-01"))
    assert outcome.truth is Truth.MET


# ------------------------------------------------------------------ apart


@pytest.mark.parametrize(
    ("dates", "truth"),
    [
        (("2025-01-05", "2025-02-01", "2025-03-01"), Truth.NOT_MET),  # all within 90 days
        (("2025-01-05", "2025-02-01", "2025-05-01"), Truth.MET),
    ],
)
def test_at_least_two_results_90_days_apart(
    tmp_path: Path, dates: tuple[str, ...], truth: Truth
) -> None:
    path = atom_trial(
        tmp_path,
        'resource: Observation\nconcept: uacr\nvalue: ">= 30 mg/g"\nselect: count\n'
        "at_least: 2\napart: P90D\n",
    )
    [outcome] = evaluate(path, *(uacr(100, date) for date in dates))
    assert outcome.truth is truth


# ------------------------------------------------------------------ load errors


def test_an_anchor_that_names_no_atom_is_a_load_error(tmp_path: Path) -> None:
    misspelt = AFTER_DIAGNOSIS.replace("after: ckd-diagnosis", "after: ckd-diagnosys")
    path = write_trial(tmp_path, misspelt)
    with pytest.raises(TrialsieveError) as raised:
        load_trial(path)
    message = str(raised.value)
    assert "trial.yaml:16:" in message
    assert "field after" in message
    assert "unknown anchor 'ckd-diagnosys' (did you mean 'ckd-diagnosis'?)" in message


def test_circular_anchors_are_a_load_error(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        "all:\n"
        "  - resource: Observation\n    id: a\n    concept: uacr\n    after: b\n"
        "  - resource: Observation\n    id: b\n    concept: uacr\n"
        "    before: {anchor: a, at_least: P1M}\n",
    )
    with pytest.raises(TrialsieveError, match=r"circular anchors: a -> b -> a"):
        load_trial(path)


def test_an_atom_anchored_on_itself_is_a_load_error(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, "resource: Observation\nid: a\nconcept: uacr\nafter: a\n")
    with pytest.raises(TrialsieveError, match=r"circular anchors: a -> a"):
        load_trial(path)


def test_duplicate_atom_ids_are_a_load_error(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path,
        "any:\n"
        "  - resource: Observation\n    id: a\n    concept: uacr\n"
        "  - resource: Observation\n    id: a\n    concept: hba1c\n",
    )
    with pytest.raises(TrialsieveError, match=r"duplicate atom id 'a'"):
        load_trial(path)


def test_apart_needs_select_count(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, "resource: Observation\nconcept: uacr\napart: P90D\n")
    with pytest.raises(TrialsieveError, match="apart needs select: count"):
        load_trial(path)
