"""`computed.same_sample`: a ratio's inputs must come from one specimen (KDIGO 2012 CKD
guideline, 1.4: a UACR is albumin and creatinine of one spot urine sample)."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_computed_and_exposure import ROOT, observation, outcome_of, patient

from engine.errors import TrialsieveError
from engine.evaluate import CompiledCriteria, Truth
from engine.trial import load_trial

CRITERIA = """
trial: {id: NCT00000002, title: Same sample}
mappings: [MAPPINGS]
criteria:
  - id: inclusion-1-acr
    kind: inclusion
    text: UACR >= 200 mg/g
    expression:
      resource: Observation
      concept: urine-albumin-creatinine-ratio
      within: P14D
      value: ">= 200 mg/g"
      computed: {formula: albumin-creatinine-ratio, same_sample: SAME}
"""


def trial_at(tmp_path: Path, same: str = "true") -> Path:
    path = tmp_path / "trial.yaml"
    text = CRITERIA.replace("MAPPINGS", str(ROOT / "mappings")).replace("SAME", same)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def same_sample(tmp_path_factory: pytest.TempPathFactory) -> CompiledCriteria:
    return load_trial(trial_at(tmp_path_factory.mktemp("same")))


def sample(
    code: str, value: float, unit: str, when: str, identifier: str, specimen: str | None = None
) -> dict[str, Any]:
    """An input collected at `when` (a dateTime or a bare day), from `specimen` if given."""
    resource = observation(code, value, unit, "2026-10-20", identifier)
    resource["effectiveDateTime"] = when
    if specimen is not None:
        resource["specimen"] = {"reference": specimen}
    return resource


def albumin(when: str, specimen: str | None = None) -> dict[str, Any]:
    return sample("14957-5", 300, "mg/L", when, "albumin", specimen)


def creatinine(when: str, specimen: str | None = None) -> dict[str, Any]:
    return sample("2161-8", 100, "mg/dL", when, "creatinine", specimen)  # 1 g/L: 300 mg/g


def acr(trial: CompiledCriteria, *resources: dict[str, Any]) -> Any:
    return outcome_of(trial, "inclusion-1-acr", patient(), *resources)


def test_samples_12_days_apart_are_not_one_sample(same_sample: CompiledCriteria) -> None:
    result = acr(
        same_sample, albumin("2026-10-19T09:15:00-05:00"), creatinine("2026-10-31T09:15:00-05:00")
    )
    assert result.truth is Truth.UNKNOWN, result.reason
    assert (
        "urine albumin on 2026-10-19 and urine creatinine on 2026-10-31 are not from the same "
        "sample" in result.reason
    )
    assert result.missing


def test_the_same_minute_is_one_sample(same_sample: CompiledCriteria) -> None:
    result = acr(
        same_sample,
        albumin("2026-10-26T09:15:00-05:00"),
        creatinine("2026-10-26T14:15:40+00:00"),  # the same minute, written in UTC
    )
    assert result.truth is Truth.MET, result.reason
    assert set(result.evidence) == {"Observation/albumin", "Observation/creatinine"}


def test_two_voids_of_one_day_are_two_samples(same_sample: CompiledCriteria) -> None:
    result = acr(
        same_sample, albumin("2026-10-26T08:00:00-05:00"), creatinine("2026-10-26T16:30:00-05:00")
    )
    assert result.truth is Truth.UNKNOWN
    assert "on 2026-10-26 08:00 and urine creatinine on 2026-10-26 16:30" in result.reason


def test_one_day_without_a_time_is_one_sample(same_sample: CompiledCriteria) -> None:
    result = acr(same_sample, albumin("2026-10-26"), creatinine("2026-10-26T16:30:00-05:00"))
    assert result.truth is Truth.MET, result.reason


def test_a_month_only_date_is_not_one_sample(same_sample: CompiledCriteria) -> None:
    result = acr(same_sample, albumin("2026-10-26"), creatinine("2026-10-26"))
    assert result.truth is Truth.MET
    vague = acr(same_sample, albumin("2026-10-26"), creatinine("2026-10"))
    assert vague.truth is Truth.UNKNOWN


def test_the_specimen_decides_when_both_name_one(same_sample: CompiledCriteria) -> None:
    day = "2026-10-26T09:15:00-05:00"
    same = acr(same_sample, albumin(day, "Specimen/u1"), creatinine(day, "Specimen/u1"))
    assert same.truth is Truth.MET
    other = acr(same_sample, albumin(day, "Specimen/u1"), creatinine(day, "Specimen/u2"))
    assert other.truth is Truth.UNKNOWN
    assert "specimen Specimen/u1" in other.reason and "specimen Specimen/u2" in other.reason
    # one specimen, the times written differently: the specimen says it is one sample
    later = acr(
        same_sample,
        albumin(day, "Specimen/u1"),
        creatinine("2026-10-27T09:15:00-05:00", "Specimen/u1"),
    )
    assert later.truth is Truth.MET
    # only one names a specimen: the collection time decides
    one = acr(same_sample, albumin(day, "Specimen/u1"), creatinine(day))
    assert one.truth is Truth.MET


def test_without_same_sample_the_ratio_is_taken_across_samples(tmp_path: Path) -> None:
    trial = load_trial(trial_at(tmp_path, "false"))
    result = acr(
        trial, albumin("2026-10-19T09:15:00-05:00"), creatinine("2026-10-31T09:15:00-05:00")
    )
    assert result.truth is Truth.MET


def test_same_sample_needs_two_measured_inputs(tmp_path: Path) -> None:
    path = tmp_path / "trial.yaml"
    text = (
        CRITERIA.replace("MAPPINGS", str(ROOT / "mappings"))
        .replace("urine-albumin-creatinine-ratio", "egfr-ckd-epi")
        .replace('">= 200 mg/g"', '">= 25 mL/min/{1.73_m2}"')
        .replace("albumin-creatinine-ratio", "egfr-ckd-epi-2021-creatinine")
        .replace("SAME", "true")
    )
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(TrialsieveError) as raised:
        load_trial(path)
    assert "same_sample needs two or more measured inputs" in str(raised.value)


@settings(max_examples=200, deadline=None)
@given(
    instant=st.datetimes(
        min_value=dt.datetime(2000, 1, 1),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.just(dt.UTC),
    ),
    one=st.integers(min_value=-12 * 60, max_value=14 * 60),
    other=st.integers(min_value=-12 * 60, max_value=14 * 60),
    shift=st.integers(min_value=-3000, max_value=3000),
)
def test_one_instant_in_any_zones_is_one_sample_and_another_minute_is_not(
    instant: dt.datetime, one: int, other: int, shift: int
) -> None:
    """Property: the collection minute is compared in UTC, whatever zones the times are
    written in; a different minute is a different sample."""
    from engine.evaluate.computed import _collected

    def written(moment: dt.datetime, minutes: int) -> dict[str, Any]:
        zone = dt.timezone(dt.timedelta(minutes=minutes))
        return {"effectiveDateTime": moment.astimezone(zone).isoformat()}

    first = _collected(written(instant, one))[0]
    assert first is not None and first == _collected(written(instant, other))[0]
    moved = instant + dt.timedelta(minutes=shift)
    same_minute = moved.replace(second=0, microsecond=0) == instant.replace(second=0, microsecond=0)
    assert (_collected(written(moved, other))[0] == first) is same_minute
