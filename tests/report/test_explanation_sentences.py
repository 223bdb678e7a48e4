"""Explanation sentences that must not contradict the data they explain: counts with
`apart:`, per-unit cut-offs, the codes asked for, what was found when none counts, anchored
windows. Each on hand-written patients, read as `--explain` prints them."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pytest

from engine.evaluate.outcome import Outcome, Truth
from engine.report.explanation import explain, explanation_text
from engine.screening import Screening, screen_patient
from engine.sources.base import PatientResources
from engine.trial import load_trial

MAPPINGS = """\
systems:
  loinc: {uri: http://loinc.org}
  snomed: {uri: http://snomed.info/sct}
concepts:
  hemoglobin:
    display: Haemoglobin
    unit: g/L
    codes: {loinc: ["718-7", "20509-6", "59260-0"]}
  uacr:
    display: Urine albumin/creatinine ratio
    unit: mg/g
    molar_mass: 113.12
    codes: {loinc: ["9318-7", "14959-1"]}
  chronic-kidney-disease:
    display: Chronic kidney disease
    codes: {snomed: ["709044004"]}
"""


def atom_trial(folder: Path, atom: str) -> Path:
    """A trial with one inclusion criterion `c` whose expression is `atom` (YAML)."""
    (folder / "mappings.yaml").write_text(MAPPINGS)
    expression = textwrap.indent(textwrap.dedent(atom), "      ")
    path = folder / "trial.yaml"
    path.write_text(
        "trial: {id: NCT00000000, title: Test}\nmappings: [mappings.yaml]\ncriteria:\n"
        f"  - id: c\n    kind: inclusion\n    text: t\n    expression:\n{expression}"
    )
    return path


def observation(code: str, value: float, unit: str, date: str, name: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": name,
        "status": "final",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": date,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


AS_OF = dt.date(2026, 11, 1)
HB = "718-7"


def _screen(path: Path, *resources: dict[str, Any]) -> Screening:
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    listed = [patient, *resources]
    source = PatientResources("p", listed, [None] * len(listed), "test")
    return screen_patient(load_trial(path), source, AS_OF)


def _outcome(path: Path, *resources: dict[str, Any]) -> Outcome:
    [result] = _screen(path, *resources).evaluation.results
    return result.outcome


def _text(path: Path, *resources: dict[str, Any]) -> str:
    return explanation_text(explain(_screen(path, *resources).evaluation), width=1000)


def _hb(value: float, date: str, name: str) -> dict[str, Any]:
    return observation(HB, value, "g/L", date, name)


# ------------------------------------------------------------------ count and apart

TWO_APART = (
    'resource: Observation\nconcept: hemoglobin\nvalue: "< 100 g/L"\nselect: count\n'
    "at_least: 2\napart: P90D\n"
)


def test_results_too_close_together_name_the_apart_rule_and_the_days(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, TWO_APART)
    results = (_hb(95, "2026-01-01", "hb0"), _hb(95, "2026-03-31", "hb1"))
    outcome = _outcome(path, *results)
    assert outcome.truth is Truth.NOT_MET
    expected = (
        "2 results < 100 g/L, on 2026-01-01 and 2026-03-31, 89 days apart: less than 90 days "
        "(2 needed at least 90 days apart)"
    )
    assert outcome.reason == f"Haemoglobin: {expected}"
    text = _text(path, *results)
    assert expected in text
    assert "is not < 100" not in text and "not < 100 g/L" not in text
    assert "at least 2 results must pass at least 90 days apart" in text


@pytest.mark.parametrize(
    ("dates", "truth", "said"),
    [
        (("2026-01-01", "2026-03-31"), Truth.NOT_MET, "89 days apart: less than 90 days"),
        (("2026-01-01", "2026-04-01"), Truth.MET, "2 results < 100 g/L at least 90 days apart"),
        (("2026-01-01",), Truth.NOT_MET, "1 result < 100 g/L (2 needed at least 90 days apart)"),
    ],
)
def test_a_count_says_what_it_found(
    tmp_path: Path, dates: tuple[str, ...], truth: Truth, said: str
) -> None:
    results = [_hb(95, date, f"hb{index}") for index, date in enumerate(dates)]
    outcome = _outcome(atom_trial(tmp_path, TWO_APART), *results)
    assert outcome.truth is truth
    assert said in outcome.reason
    assert "is not <" not in outcome.reason and "is < 100" not in outcome.reason


def test_a_count_without_apart_says_found_and_needed(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, TWO_APART.replace("apart: P90D\n", ""))
    outcome = _outcome(path, _hb(95, "2026-01-01", "hb0"), _hb(130, "2026-02-01", "hb1"))
    assert outcome.truth is Truth.NOT_MET
    assert outcome.reason == "Haemoglobin: 1 result < 100 g/L (2 needed); 1 result not < 100 g/L"


# ------------------------------------------------------------------ a cut-off per unit

A2_PER_UNIT = (
    "resource: Observation\nconcept: uacr\nselect: any\n"
    'value: {per_unit: [">= 30 mg/g", ">= 3 mg/mmol"]}\n'
)


@pytest.mark.parametrize(
    ("value", "unit", "shown", "relation"),
    [
        (3, "mg/mmol", "3 mg/mmol (compared as reported)", ": >= 3 mg/mmol"),
        (2.9, "mg/mmol", "2.9 mg/mmol (compared as reported)", ": not >= 3 mg/mmol"),
        (30, "ug/mg", "30 µg/mg (= 30 mg/g, compared in mg/g)", ": >= 30 mg/g"),
        (29, "mg/g", "29 mg/g on", ": not >= 30 mg/g"),
    ],
)
def test_a_per_unit_result_is_shown_in_the_unit_it_is_compared_in(
    tmp_path: Path, value: float, unit: str, shown: str, relation: str
) -> None:
    text = _text(
        atom_trial(tmp_path, A2_PER_UNIT), observation("9318-7", value, unit, "2026-06-01", "u0")
    )
    assert shown in text
    assert relation in text
    assert "26.5" not in text and "25.6" not in text  # never converted through a molar mass


# ------------------------------------------------------------------ the code asked for


def test_what_settles_names_the_code_the_mapping_lists_first(tmp_path: Path) -> None:
    """The mapping lists 718-7 (what laboratories order) before 20509-6 (Hemoglobin by
    calculation), which sorts first as text."""
    path = atom_trial(tmp_path, 'resource: Observation\nconcept: hemoglobin\nvalue: "< 100 g/L"\n')
    text = _text(path)
    assert "to settle: Haemoglobin result (LOINC 718-7)" in text
    assert "20509-6" not in text


# ------------------------------------------------------------------ what the status left out


def _ckd(status: str, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": name,
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "709044004"}]},
        "clinicalStatus": {"coding": [{"code": status}]},
        "onsetDateTime": "2020-01-01",
        **fields,
    }


def test_none_active_says_what_is_on_record_and_why_it_does_not_count(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path, "resource: Condition\nconcept: chronic-kidney-disease\nstatus: [active]\n"
    )
    resolved = (
        _ckd("resolved", "ckd-1", abatementDateTime="2021-01-01"),
        _ckd("resolved", "ckd-2", abatementDateTime="2022-01-01"),
    )
    outcome = _outcome(path, *resolved)
    assert outcome.truth is Truth.NOT_MET
    assert outcome.reason == (
        "Chronic kidney disease: none with status active ever (up to 2026-11-01); "
        "on record, not counted by status: 2 resolved"
    )
    assert "on record, not counted by status: 2 resolved" in _text(path, *resolved)
    # nothing on record at all: as before
    assert _outcome(path).reason == "Chronic kidney disease: none on record ever (up to 2026-11-01)"


def test_a_result_of_a_status_that_does_not_count_is_named(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, 'resource: Observation\nconcept: hemoglobin\nvalue: "< 100 g/L"\n')
    preliminary = _hb(95, "2026-10-20", "hb0") | {"status": "preliminary"}
    outcome = _outcome(path, preliminary)
    assert outcome.truth is Truth.UNKNOWN
    assert "no result with a status that counts" in outcome.reason
    assert outcome.reason.endswith("; on record, not counted by status: 1 preliminary")
    assert "not counted by status: 1 preliminary" in _text(path, preliminary)


# ------------------------------------------------------------------ anchored windows


def test_an_anchor_is_named_as_the_first_event_without_its_window(tmp_path: Path) -> None:
    atom = """\
    all:
      - resource: Condition
        id: ckd
        concept: chronic-kidney-disease
      - resource: Observation
        concept: uacr
        value: ">= 200 mg/g"
        select: any
        after: {anchor: ckd, at_least: P1W}
    """
    path = atom_trial(tmp_path, atom)
    ckd = _ckd("active", "ckd-1") | {"onsetDateTime": "2026-05-01"}
    uacr = observation("9318-7", 300, "mg/g", "2026-05-07", "u0")
    outcome = _outcome(path, ckd, uacr)
    assert outcome.truth is Truth.UNKNOWN
    reason = outcome.children[1].reason
    assert "(at least 1 week after the first Chronic kidney disease, 2026-05-01)" in reason
    assert "(ever)" not in reason
