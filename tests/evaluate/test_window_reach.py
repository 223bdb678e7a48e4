"""An atom with a window skips its concept's resources at once when all of them ended (or, for
`timing: onset`, began) before the window, each with a readable span
(`EvaluationContext.reach_of`). These tests pin what the walk over the resources answers
where the skip must not be taken, or must be taken with the right end of the spans."""

from __future__ import annotations

from pathlib import Path

from language_support import AS_OF, atom_trial, condition, evaluate, observation

from engine.evaluate.nodes import EvaluationContext
from engine.evaluate.outcome import Truth
from engine.record import build_record
from engine.sources.base import PatientResources
from engine.trial import load_trial

MI = "22298006"
HEMOGLOBIN = "718-7"
LATEST_HEMOGLOBIN = (
    'resource: Observation\nconcept: hemoglobin\nwithin: P30D\nselect: latest\nvalue: "< 100 g/L"\n'
)


def test_results_all_older_than_the_window_are_none_in_it(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, LATEST_HEMOGLOBIN)
    old = [observation(HEMOGLOBIN, 90, "g/L", day) for day in ("2025-01-02", "2025-06-30")]
    [outcome] = evaluate(path, *old)
    assert outcome.truth is Truth.UNKNOWN
    assert outcome.reason == "Haemoglobin: no result within 2025-07-02 to 2025-08-01"
    [outcome] = evaluate(path, *old, observation(HEMOGLOBIN, 90, "g/L", "2025-07-02"))
    assert outcome.truth is Truth.MET


def test_an_unreadable_or_missing_date_among_old_results_is_still_a_problem(
    tmp_path: Path,
) -> None:
    path = atom_trial(tmp_path, LATEST_HEMOGLOBIN)
    old = observation(HEMOGLOBIN, 90, "g/L", "2025-01-02")
    no_zone = observation(HEMOGLOBIN, 95, "g/L", "2025-01-03T10:00")
    [outcome] = evaluate(path, old, no_zone)
    assert outcome.truth is Truth.UNKNOWN
    assert "unusable data" in outcome.reason
    assert "has a time but no time zone" in outcome.reason
    undated = observation(HEMOGLOBIN, 95, "g/L", "2025-01-04")
    del undated["effectiveDateTime"]
    [outcome] = evaluate(path, old, undated)
    assert outcome.truth is Truth.UNKNOWN
    assert "has no date" in outcome.reason


def test_onset_reads_when_a_condition_began_and_active_when_it_ended(tmp_path: Path) -> None:
    # Began in 2020, ended in the window: active in it, but it did not begin in it.
    ended = condition(MI, "2020-01-01", abatementDateTime="2025-07-25")
    for timing, truth in (("active", Truth.MET), ("onset", Truth.NOT_MET)):
        folder = tmp_path / timing
        folder.mkdir()
        atom = "resource: Condition\nconcept: myocardial-infarction\nwithin: P30D\n"
        path = atom_trial(folder, f"{atom}timing: {timing}\n")
        [outcome] = evaluate(path, ended)
        assert outcome.truth is truth, timing


def test_the_reach_is_the_latest_end_and_the_latest_start(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, LATEST_HEMOGLOBIN)
    trial = load_trial(path)
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    resources = [
        patient,
        observation(HEMOGLOBIN, 90, "g/L", "2025-06-30"),
        observation(HEMOGLOBIN, 91, "g/L", "2025-02"),
        observation(HEMOGLOBIN, 92, "g/L", "2024-12-31"),
    ]
    source = PatientResources("p", resources, [None] * len(resources), "test")
    record = build_record(source, trial.terminology)
    context = EvaluationContext(record, AS_OF, {}, trial.terminology)
    end, start = context.reach_of("hemoglobin") or (None, None)
    assert (end.isoformat(), start.isoformat()) == ("2025-06-30", "2025-06-30")  # type: ignore[union-attr]
    assert context.reach_of("myocardial-infarction") is None  # nothing to reach
