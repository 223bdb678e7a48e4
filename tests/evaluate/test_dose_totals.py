"""Daily dose totals over the records of a drug in use (engine.evaluate.dose_totals)."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

from engine.evaluate.dose_totals import COURSE_LIMIT, DoseDay, DoseRecord, dose_days
from engine.normalise.medication_exposure import ExposurePeriod

AS_OF = dt.date(2026, 11, 1)
PREDNISONE = frozenset({"prednisone"})


def record(
    reference: str,
    milligrams: float | None,
    start: str = "2026-10-01",
    end: str | None = None,
    end_known: bool = True,
    drug: frozenset[str] = PREDNISONE,
    group: str | None = None,
) -> DoseRecord:
    period = ExposurePeriod(
        dt.date.fromisoformat(start),
        dt.date.fromisoformat(end) if end else None,
        end_known,
        "test",
    )
    dose = None if milligrams is None else Fraction(str(milligrams))
    return DoseRecord(reference, period, dose, f"{milligrams} mg/day", drug, group)


def totals(day: DoseDay) -> set[Fraction]:
    assert day.readings is not None
    return {reading.total for reading in day.readings}


def on(days: list[DoseDay], when: str) -> DoseDay:
    (found,) = [day for day in days if day.day == dt.date.fromisoformat(when)]
    return found


def test_two_unlinked_records_of_one_drug_are_one_course_or_two() -> None:
    days = dose_days([record("a", 5), record("b", 5)], [], AS_OF, AS_OF)
    (day,) = days
    assert totals(day) == {5, 10}
    assert [[r.reference for r in group] for group in day.undecided_groups] == [["a", "b"]]


def test_requests_ordered_together_are_two_courses() -> None:
    grouped = [record("a", 5, group="rx|1"), record("b", 2.5, group="rx|1")]
    (day,) = dose_days(grouped, [], AS_OF, AS_OF)
    assert totals(day) == {Fraction(15, 2)} and not day.undecided_groups


def test_different_drugs_are_added() -> None:
    other = record("dexa", 5, drug=frozenset({"dexamethasone"}))
    (day,) = dose_days([record("pred", 5), other], [], AS_OF, AS_OF)
    assert totals(day) == {10}


def test_linked_records_are_one_course_and_the_latest_begun_gives_its_dose() -> None:
    (day,) = dose_days([record("order", 5), record("statement", 5)], [(1, 0)], AS_OF, AS_OF)
    assert totals(day) == {5}
    old, renewal = record("old", 10, "2026-09-01"), record("renewal", 5, "2026-10-15")
    days = dose_days([old, renewal], [(1, 0)], dt.date(2026, 9, 1), AS_OF)
    assert [day.day.isoformat() for day in days] == ["2026-09-01", "2026-10-15"]
    assert totals(on(days, "2026-09-01")) == {10}
    assert totals(on(days, "2026-10-15")) == {5}
    disagreeing = dose_days([record("order", 10), record("statement", 5)], [(1, 0)], AS_OF, AS_OF)
    assert totals(disagreeing[0]) == {5, 10} and len(disagreeing[0].disagreeing) == 1


def test_unlinked_a_newer_record_gives_the_dose_when_both_are_one_course() -> None:
    """Read as one course, the record begun last gives the dose (as for linked records):
    old 10 mg and new 5 mg are 5 mg (one course) or 15 mg (two), never 10 mg alone."""
    days = dose_days(
        [record("old", 10, "2026-09-01"), record("new", 5, "2026-10-15")], [], None, AS_OF
    )
    assert totals(on(days, "2026-10-15")) == {5, 15}
    assert totals(on(days, "2026-09-01")) == {10}


def test_a_record_whose_end_is_unknown_may_or_may_not_still_be_in_use() -> None:
    stopped = record("stopped", 10, "2026-09-01", end_known=False)
    days = dose_days([stopped], [], dt.date(2026, 8, 1), AS_OF)
    assert [day.day.isoformat() for day in days] == ["2026-08-01", "2026-09-01", "2026-09-02"]
    assert totals(on(days, "2026-08-01")) == {0}
    assert totals(on(days, "2026-09-01")) == {10}
    later = on(days, "2026-09-02")
    assert totals(later) == {0, 10} and [r.reference for r in later.may_be_in_use] == ["stopped"]


def test_a_dose_not_read_is_a_lower_bound() -> None:
    (day,) = dose_days(
        [record("pred", 10), record("dexa", None, drug=frozenset({"dexamethasone"}))],
        [],
        AS_OF,
        AS_OF,
    )
    assert day.readings is not None
    assert {(reading.total, reading.unread) for reading in day.readings} == {(10, True)}


def test_too_many_courses_of_one_drug_are_not_added_up() -> None:
    many = [record(f"r{index}", 1) for index in range(COURSE_LIMIT + 1)]
    (day,) = dose_days(many, [], AS_OF, AS_OF)
    assert day.readings is None
