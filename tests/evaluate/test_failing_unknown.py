"""`failing: unknown`: for an "evidence of X" atom (select any / count), results that fail
the value test are no evidence against X: none passing is unknown, not "not met"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from language_support import atom_trial, evaluate
from test_anchored_window_words import uacr

from engine.errors import TrialsieveError
from engine.evaluate.outcome import Truth
from engine.trial import load_trial

EVIDENCE = """\
resource: Observation
concept: uacr
value: ">= 30 mg/g"
select: SELECT
FAILINGbefore: {anchor: as-of, at_least: P3M}
"""


def trial(folder: Path, failing: str | None = "unknown", select: str = "any") -> Path:
    line = f"failing: {failing}\n" if failing is not None else ""
    return atom_trial(folder, EVIDENCE.replace("FAILING", line).replace("SELECT", select))


def only(path: Path, *resources: dict[str, Any]) -> Any:
    (outcome,) = evaluate(path, *resources)
    return outcome


def test_an_old_normal_result_is_unknown_not_not_met(tmp_path: Path) -> None:
    path = trial(tmp_path)
    result = only(path, uacr(20, "2015-03-01"))
    assert result.truth is Truth.UNKNOWN
    assert "20 mg/g on 2015-03-01 (Observation/uacr-2015-03-01) is not >= 30 mg/g, which " in (
        result.reason
    )
    assert result.missing and result.evidence == ("Observation/uacr-2015-03-01",)


def test_a_passing_result_still_meets_it(tmp_path: Path) -> None:
    path = trial(tmp_path)
    result = only(path, uacr(20, "2015-03-01"), uacr(45, "2020-01-01"))
    assert result.truth is Truth.MET


def test_nothing_is_unknown_as_before(tmp_path: Path) -> None:
    assert only(trial(tmp_path)).truth is Truth.UNKNOWN


def test_the_default_keeps_a_failing_result_not_met(tmp_path: Path) -> None:
    path = trial(tmp_path, failing=None)
    assert only(path, uacr(20, "2015-03-01")).truth is Truth.NOT_MET


def test_count_with_too_few_passing_is_unknown(tmp_path: Path) -> None:
    text = EVIDENCE.replace("FAILING", "failing: unknown\nat_least: 2\n").replace("SELECT", "count")
    path = atom_trial(tmp_path, text)
    result = only(path, uacr(45, "2015-03-01"), uacr(20, "2016-03-01"))
    assert result.truth is Truth.UNKNOWN


@pytest.mark.parametrize("select", ["latest", "all", "min"])
def test_failing_unknown_needs_select_any_or_count(tmp_path: Path, select: str) -> None:
    with pytest.raises(TrialsieveError) as raised:
        load_trial(trial(tmp_path, select=select))
    assert "failing says what results failing the value test mean" in str(raised.value)
