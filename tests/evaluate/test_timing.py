"""FHIR dates, resource spans and ages."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from language_support import atom_trial, condition, evaluate

from engine.criteria.model import IsoDuration
from engine.errors import DateProblem
from engine.evaluate.outcome import Truth
from engine.evaluate.timing import age_in_years, parse_date_range, resource_span


def test_partial_dates_cover_their_month_and_year() -> None:
    assert parse_date_range("2021-02", "f")[:2] == (dt.date(2021, 2, 1), dt.date(2021, 2, 28))
    assert parse_date_range("2020", "f")[:2] == (dt.date(2020, 1, 1), dt.date(2020, 12, 31))


def test_date_time_keeps_the_local_day_of_its_time_zone() -> None:
    first, last, moment = parse_date_range("2026-10-20T23:30:00+08:00", "f")
    assert first == last == dt.date(2026, 10, 20)
    assert moment.utcoffset() == dt.timedelta(hours=8)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-10-20T09:00:00", "has a time but no time zone"),
        ("2026-13-01", "not a valid date"),
        ("yesterday", "not a FHIR date"),
        ("2026-10-20 09:00:00+00:00", "not a FHIR date"),
    ],
)
def test_bad_dates_name_the_field(text: str, message: str) -> None:
    with pytest.raises(DateProblem) as caught:
        parse_date_range(text, "effectiveDateTime")
    assert "effectiveDateTime" in str(caught.value)
    assert message in str(caught.value)


def test_condition_span_runs_from_onset_to_abatement() -> None:
    span = resource_span(
        {
            "resourceType": "Condition",
            "onsetDateTime": "2020-01-01",
            "abatementDateTime": "2021-06-30",
        }
    )
    assert span is not None
    assert (span.start, span.end) == (dt.date(2020, 1, 1), dt.date(2021, 6, 30))
    assert span.overlaps(dt.date(2021, 6, 1), dt.date(2021, 7, 1))
    assert not span.overlaps(dt.date(2021, 7, 1), dt.date(2021, 8, 1))


def test_active_medication_request_is_ongoing_and_stopped_one_is_a_point() -> None:
    active = resource_span(
        {"resourceType": "MedicationRequest", "status": "active", "authoredOn": "2019-03-01"}
    )
    stopped = resource_span(
        {"resourceType": "MedicationRequest", "status": "stopped", "authoredOn": "2019-03-01"}
    )
    assert active is not None and active.end is None
    assert stopped is not None and stopped.end == dt.date(2019, 3, 1)


def test_observation_without_any_date_has_no_span() -> None:
    assert resource_span({"resourceType": "Observation", "status": "final"}) is None


@pytest.mark.parametrize(
    ("birth", "on", "age"),
    [
        ("1961-11-01", "2026-11-01", 65),
        ("1961-10-31", "2026-11-01", 65),
        ("1960-11-02", "2026-11-01", 65),
        ("1960-11-01", "2026-11-01", 66),
        ("2000-02-29", "2018-02-28", 17),
        ("2000-02-29", "2018-03-01", 18),
    ],
)
def test_age_in_whole_years(birth: str, on: str, age: int) -> None:
    assert age_in_years(dt.date.fromisoformat(birth), dt.date.fromisoformat(on)) == age


@given(st.dates(min_value=dt.date(1900, 1, 1)), st.integers(0, 30), st.integers(0, 400))
def test_window_start_is_never_after_as_of(as_of: dt.date, months: int, days: int) -> None:
    duration = IsoDuration(months=months, days=days)
    start = duration.start_before(as_of)
    assert start <= as_of
    assert (as_of - start).days >= days


def test_three_month_window_uses_calendar_months() -> None:
    assert IsoDuration(months=3).start_before(dt.date(2026, 5, 31)) == dt.date(2026, 2, 28)


def test_a_date_parsed_again_reads_the_same_and_a_bad_one_names_each_field() -> None:
    first = parse_date_range("2024-03-05T10:30:00+01:00", "effectiveDateTime")
    again = parse_date_range("2024-03-05T10:30:00+01:00", "onsetDateTime")
    assert again == first == (dt.date(2024, 3, 5), dt.date(2024, 3, 5), first[2])
    for field in ("effectiveDateTime", "onsetDateTime"):
        with pytest.raises(DateProblem, match=f"^{field}: '2024-13' is not a valid date"):
            parse_date_range("2024-13", field)


def test_results_with_the_same_time_have_the_same_span_and_odd_values_still_fail() -> None:
    def observation(effective: object) -> dict[str, object]:
        return {"resourceType": "Observation", "status": "final", "effectiveDateTime": effective}

    first = resource_span(observation("2024-03-05T10:30:00+01:00"))
    again = resource_span(observation("2024-03-05T10:30:00+01:00"))
    assert first == again
    assert first is not None and first.start == first.end == dt.date(2024, 3, 5)
    for odd in ({"start": "2024"}, ["2024"], 2024):
        with pytest.raises(DateProblem, match=r"^effectiveDateTime: expected a date string"):
            resource_span(observation(odd))


# ------------------------------------------------------------------ onset without a date

_RECORDED = "2026-10-20T09:15:00-05:00"


def _undated(**fields: object) -> tuple[dt.date | None, dt.date | None, str]:
    from engine.evaluate.timing import undated_onset

    resource: dict[str, object] = {"resourceType": "Condition", **fields}
    return undated_onset(resource, resource_span(resource), "1964-02-10")  # type: ignore[arg-type]


def test_an_onset_age_is_the_year_of_that_age_and_recorded_date_caps_it() -> None:
    """onsetAge 62 years, born 1964-02-10: 62nd birthday to the day before the 63rd, no
    later than recordedDate (FHIR R4 Condition.onset[x], Condition.recordedDate)."""
    earliest, latest, how = _undated(
        onsetAge={"value": 62, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}
    )
    assert (earliest, latest) == (dt.date(2026, 2, 10), dt.date(2027, 2, 9))
    assert how == "began aged 62 years (onsetAge): 2026-02-10 to 2027-02-09"
    earliest, latest, how = _undated(onsetAge={"value": 62, "code": "a"}, recordedDate=_RECORDED)
    assert (earliest, latest) == (dt.date(2026, 2, 10), dt.date(2026, 10, 20))
    assert how.endswith("recorded 2026-10-20, so it began on or before that day")


def test_an_onset_range_of_ages_and_unreadable_onsets() -> None:
    earliest, latest, _ = _undated(
        onsetRange={"low": {"value": 40, "code": "a"}, "high": {"value": 45, "code": "a"}}
    )
    assert (earliest, latest) == (dt.date(2004, 2, 10), dt.date(2010, 2, 9))
    assert _undated(onsetString="last month", recordedDate=_RECORDED)[:2] == (
        None,
        dt.date(2026, 10, 20),
    )
    assert _undated(recordedDate=_RECORDED)[2].startswith("has no onset date")
    assert _undated(onsetAge={"value": 62, "code": "kg"})[:2] == (None, None)


def test_a_leap_day_birthday_ages_on_the_first_of_march() -> None:
    from engine.evaluate.timing import _add_age

    assert _add_age(dt.date(2000, 2, 29), 1, "a") == dt.date(2001, 3, 1)
    assert _add_age(dt.date(2000, 2, 29), 4, "a") == dt.date(2004, 2, 29)
    assert _add_age(dt.date(2000, 1, 31), 1, "mo") == dt.date(2000, 3, 1)


# An active Condition with no date at all (haematology QA session 14, finding 10): its
# clinicalStatus says it is active, so it is active on the as-of day; whether it was active
# on an earlier day cannot be told.

ACTIVE_NOW = "resource: Condition\nconcept: myocardial-infarction\nstatus: [active]\n"


def _undated_condition(clinical_status: str | None) -> dict[str, object]:
    resource = condition("22298006", "2020-01-01")
    del resource["onsetDateTime"]
    if clinical_status is not None:
        resource["clinicalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": clinical_status,
                }
            ]
        }
    return resource


@pytest.mark.parametrize(
    ("atom", "clinical_status", "truth", "reason"),
    [
        (ACTIVE_NOW, "active", Truth.MET, "1 found"),
        (ACTIVE_NOW, "relapse", Truth.MET, "1 found"),
        (ACTIVE_NOW, "resolved", Truth.NOT_MET, "none"),
        (ACTIVE_NOW, "inactive", Truth.NOT_MET, "none"),
        (ACTIVE_NOW, None, Truth.UNKNOWN, "has no date"),  # nothing says when, or whether
        (
            "resource: Condition\nconcept: myocardial-infarction\nwithin: P30D\ntiming: active\n",
            "active",
            Truth.MET,
            "1 found",
        ),
        (  # resolved now, but it may have been active earlier in the window
            "resource: Condition\nconcept: myocardial-infarction\nwithin: P30D\ntiming: active\n",
            "resolved",
            Truth.UNKNOWN,
            "has no date",
        ),
        (
            "resource: Condition\nconcept: myocardial-infarction\nwithin: P1Y\ntiming: active\n"
            "before: {anchor: as-of, at_least: P1M}\n",
            "active",
            Truth.UNKNOWN,
            "has no date",
        ),
        (
            "resource: Condition\nconcept: myocardial-infarction\nwithin: P30D\ntiming: onset\n",
            "active",
            Truth.UNKNOWN,
            "cannot be told",
        ),
    ],
)
def test_an_undated_active_condition_is_active_now_only(
    tmp_path: Path, atom: str, clinical_status: str | None, truth: Truth, reason: str
) -> None:
    [outcome] = evaluate(atom_trial(tmp_path, atom), _undated_condition(clinical_status))
    assert outcome.truth is truth, outcome.reason
    assert reason in outcome.reason


def test_a_condition_ended_before_the_as_of_day_is_no_onset_problem(tmp_path: Path) -> None:
    """`status: [active]` with `timing: onset` in a window: a Condition recorded in the window
    without an onset, but resolved (abated) before the as-of day, cannot count, so when it
    began does not matter (it made the atom unknown; haematology QA session 14, a resolved
    pregnancy complication without onset)."""
    atom = (
        "resource: Condition\nconcept: myocardial-infarction\nstatus: [active]\nwithin: P43W\n"
        "timing: onset\n"
    )
    resolved = _undated_condition("resolved")
    resolved["recordedDate"] = "2025-07-15"
    resolved["abatementDateTime"] = "2025-06-01"
    [outcome] = evaluate(atom_trial(tmp_path, atom), resolved)
    assert outcome.truth is Truth.NOT_MET, outcome.reason
    active = _undated_condition("active")
    active["recordedDate"] = "2025-07-15"
    (tmp_path / "active").mkdir()
    [outcome] = evaluate(atom_trial(tmp_path / "active", atom), active)
    assert outcome.truth is Truth.UNKNOWN  # active: when it began cannot be told
    assert "whether it began in the window cannot be told" in outcome.reason
