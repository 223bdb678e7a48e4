"""Explanations of windows narrowed by `before:` / `after:` the as-of date give the window's
real bounds, name what the record holds just outside it, and ask for a result inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from language_support import AS_OF, atom_trial, condition, evaluate

from engine.evaluate.outcome import Truth
from engine.report.explanation import explain, explanation_text
from engine.screening import screen_patient
from engine.sources.base import PatientResources
from engine.trial import load_trial

BEFORE = """\
resource: Observation
concept: uacr
value: ">= 30 mg/g"
select: any
before: {anchor: as-of, at_least: P3M}
"""

WITHIN = """\
resource: Condition
concept: myocardial-infarction
timing: onset
before: {anchor: as-of, at_most: P6M}
"""


def uacr(value: float, day: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"uacr-{day}",
        "status": "final",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "9318-7"}]},
        "effectiveDateTime": f"{day}T09:00:00+00:00",
        "valueQuantity": {
            "value": value,
            "unit": "mg/g",
            "system": "http://unitsofmeasure.org",
            "code": "mg/g",
        },
    }


def text_of(path: Path, *resources: dict[str, Any]) -> str:
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    listed = [patient, *resources]
    source = PatientResources("p", listed, [None] * len(listed), "test")
    evaluation = screen_patient(load_trial(path), source, AS_OF).evaluation
    return " ".join(explanation_text(explain(evaluation), width=1000).split())


def test_a_result_one_day_too_recent_is_named_and_the_window_dated(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, BEFORE)
    late = uacr(420, "2025-05-02")  # 3 months before 2025-08-01 is 2025-05-01
    (outcome,) = evaluate(path, late, uacr(850, "2025-07-26"))
    assert outcome.truth is Truth.UNKNOWN
    assert outcome.reason.endswith(
        "; outside the window: the earliest after it, 2025-05-02 (Observation/uacr-2025-05-02), "
        "is too recent (2 after it in all)"
    )
    text = text_of(path, late, uacr(850, "2025-07-26"))
    window = "dated on or before 2025-05-01 (at least 3 months before the as-of date 2025-08-01)"
    assert f"no result {window}; outside the window: the earliest after it, 2025-05-02" in text
    assert f"to settle: Urine albumin/creatinine ratio result (LOINC 9318-7) {window}" in text
    assert "at any date" not in text


def test_nothing_at_all_says_the_window_without_a_note(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, BEFORE)
    (outcome,) = evaluate(path)
    assert outcome.truth is Truth.UNKNOWN and "outside the window" not in outcome.reason
    assert "no result dated on or before 2025-05-01 (at least 3 months" in text_of(path)


def test_a_closed_world_atom_names_the_too_old_and_too_recent_ones(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, WITHIN)
    old = condition("22298006", "2024-12-01")  # 6 months before 2025-08-01 is 2025-02-01
    (outcome,) = evaluate(path, old)
    assert outcome.truth is Truth.NOT_MET
    assert outcome.reason.endswith(
        "; outside the window: the latest before it, 2024-12-01 "
        "(Condition/condition-22298006-2024-12-01), is too old"
    )
    text = text_of(path, old)
    assert (
        "none on record with onset 2025-02-01 to 2025-08-01 (at most 6 months before the "
        "as-of date 2025-08-01); outside the window: the latest before it, 2024-12-01" in text
    )
