"""`computed.prefer: latest`: the newer of the measured and the computed value decides (the
measured one on the same day); the other is shown beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_computed_and_exposure import observation, outcome_of, patient, write_trial

from engine.evaluate import CompiledCriteria, Truth
from engine.trial import load_trial


@pytest.fixture(scope="module")
def newest(tmp_path_factory: pytest.TempPathFactory) -> CompiledCriteria:
    return load_trial(write_trial(tmp_path_factory.mktemp("latest"), prefer="latest"))


def egfr(value: float, day: str) -> dict[str, object]:
    return observation("98979-8", value, "mL/min/{1.73_m2}", day, "egfr")


def creatinine(value: float, day: str) -> dict[str, object]:
    return observation("2160-0", value, "mg/dL", day, "creatinine")


def test_a_newer_creatinine_decides_over_an_older_reported_egfr(
    newest: CompiledCriteria,
) -> None:
    result = outcome_of(
        newest, "inclusion-1-egfr", patient(), egfr(45, "2026-10-19"), creatinine(3.5, "2026-10-30")
    )
    assert result.truth is Truth.NOT_MET, result.reason
    assert "computed: 19" in result.reason
    assert "the measured one is older and says otherwise" in result.reason
    assert "45 mL/min/{1.73_m2} on 2026-10-19" in result.reason
    # days apart: the same-day rule is not what decided, and is not said
    assert "decides, and the measured one is older" in result.reason
    assert "on the same day" not in result.reason
    assert set(result.evidence) == {"Observation/creatinine", "Patient/p", "Observation/egfr"}
    assert {cited.reference for cited in result.cited} == set(result.evidence)


def test_a_newer_reported_egfr_decides_over_an_older_creatinine(newest: CompiledCriteria) -> None:
    result = outcome_of(
        newest, "inclusion-1-egfr", patient(), egfr(20, "2026-10-30"), creatinine(1.0, "2026-10-19")
    )
    assert result.truth is Truth.NOT_MET, result.reason
    assert result.evidence[0] == "Observation/egfr"
    assert "the computed one is older and says otherwise" in result.reason
    assert "on the same day" not in result.reason


def test_on_the_same_day_the_reported_value_wins(newest: CompiledCriteria) -> None:
    result = outcome_of(
        newest, "inclusion-1-egfr", patient(), egfr(30, "2026-10-26"), creatinine(4.2, "2026-10-26")
    )
    assert result.truth is Truth.MET, result.reason
    assert result.evidence[0] == "Observation/egfr"
    assert "the computed one is of the same day and says otherwise" in result.reason
    assert "decides (the measured one on the same day)" in result.reason


def test_agreeing_values_say_so_without_a_warning(newest: CompiledCriteria) -> None:
    result = outcome_of(
        newest, "inclusion-1-egfr", patient(), egfr(45, "2026-10-19"), creatinine(1.8, "2026-10-30")
    )
    assert result.truth is Truth.MET
    assert "older (" in result.reason and "says otherwise" not in result.reason


def test_one_value_alone_decides_and_none_is_unknown(newest: CompiledCriteria) -> None:
    only_measured = outcome_of(newest, "inclusion-1-egfr", patient(), egfr(45, "2026-10-19"))
    assert only_measured.truth is Truth.MET and "creatinine" not in only_measured.reason
    assert only_measured.evidence == ("Observation/egfr",)
    assert [cited.reference for cited in only_measured.cited] == ["Observation/egfr"]
    only_computed = outcome_of(newest, "inclusion-1-egfr", patient(), creatinine(3.5, "2026-10-30"))
    assert only_computed.truth is Truth.NOT_MET and "computed" in only_computed.reason
    neither = outcome_of(newest, "inclusion-1-egfr", patient())
    assert neither.truth is Truth.UNKNOWN and neither.missing


def test_prefer_measured_still_takes_an_older_measured_value(tmp_path: Path) -> None:
    trial = load_trial(write_trial(tmp_path, prefer="measured"))
    result = outcome_of(
        trial, "inclusion-1-egfr", patient(), egfr(45, "2026-10-19"), creatinine(3.5, "2026-10-30")
    )
    assert result.truth is Truth.MET
