"""One resource listed twice in a Bundle (the same Type/id: a re-export, a merge, two versions
of one result) is one resource: `select: count` counts it once, as references resolve to it
once, and the record's data problems still name the repeat."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from language_support import atom_trial, evaluate, observation

from engine.evaluate.outcome import Truth
from engine.record import build_record
from engine.sources.base import PatientResources
from engine.trial import load_trial

HB = "718-7"
AS_OF = dt.date(2026, 11, 1)
TWO_LOW = (
    "resource: Observation\nconcept: hemoglobin\nwithin: P1Y\n"
    'value: "< 100 g/L"\nselect: count\nat_least: 2\n'
)


def _low(date: str, name: str, **fields: object) -> dict[str, object]:
    return observation(HB, 95, "g/L", date, id=name, **fields)


def test_one_result_listed_twice_is_one_result(tmp_path: Path) -> None:
    once = _low("2026-06-01", "hb-x")
    [outcome] = evaluate(atom_trial(tmp_path, TWO_LOW), once, dict(once), as_of=AS_OF)
    assert outcome.truth is Truth.NOT_MET
    assert outcome.evidence == ("Observation/hb-x",)


def test_two_versions_of_one_result_are_one_result(tmp_path: Path) -> None:
    first = _low("2026-06-01", "hb-x", meta={"versionId": "1"})
    second = _low("2026-06-01", "hb-x", meta={"versionId": "2"})
    [outcome] = evaluate(atom_trial(tmp_path, TWO_LOW), first, second, as_of=AS_OF)
    assert outcome.truth is Truth.NOT_MET


def test_two_results_with_their_own_ids_count_twice(tmp_path: Path) -> None:
    results = (_low("2026-06-01", "hb-x"), _low("2026-07-01", "hb-y"))
    [outcome] = evaluate(atom_trial(tmp_path, TWO_LOW), *results, as_of=AS_OF)
    assert outcome.truth is Truth.MET


def test_the_repeat_stays_a_data_problem(tmp_path: Path) -> None:
    trial = load_trial(atom_trial(tmp_path, TWO_LOW))
    patient = {"resourceType": "Patient", "id": "p"}
    once = _low("2026-06-01", "hb-x")
    listed = [patient, once, dict(once)]
    record = build_record(PatientResources("p", listed, [None] * 3, "test"), trial.terminology)
    assert [str(problem) for problem in record.data_problems] == [
        "Observation/hb-x, field id: another resource has the same id Observation/hb-x; "
        "only the first is read (references resolve to it too)"
    ]
