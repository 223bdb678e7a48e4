"""Daily dose totals: what a patient takes a day when several records of a drug are in use.

The daily dose on a day is the total of the courses of the drug in use that day: a patient
on prednisone 5 mg in the morning and 2.5 mg at night, written as two orders, takes 7.5 mg
a day. Two records of one course (an order and the statement of the same therapy, a renewed
order) must not be added: a course is counted once. The record tells which is which only in
part, so the totals it allows are all worked out (`Reading`), and the caller decides when
all of them agree (`engine.evaluate.exposure`, docs/criteria-language.md "Medication use"):

- **One course**: records linked by reference are one course (FHIR R4:
  MedicationStatement.basedOn "A plan, proposal or order that is fulfilled in whole or in
  part by this event", .derivedFrom, .partOf; MedicationRequest.basedOn,
  .priorPrescription "A link to a resource representing an earlier order related order or
  prescription"; MedicationAdministration.request, .partOf), and so are two copies of one
  resource (the same `Type/id`). A course is never added to itself. On a day when several
  of its records are in use, the one begun last gives its dose (a renewal's dose replaces
  the earlier order's from its start); records of it begun the same day with different
  doses are each a possible dose. Read as one course, unlinked records follow the same
  rule: the record begun last gives the dose.
- **Different courses**: records of different drugs (with an equivalence table, drugs with
  different equivalences: prednisone and dexamethasone taken together add up in
  prednisone equivalents), and MedicationRequests with the same `groupIdentifier` ("A
  shared identifier common to all requests that were authorized more or less
  simultaneously by a single author": 5 mg and 2.5 mg tablets prescribed together).
- **Either**: other records of the same drug in use on the same day may be one course
  recorded twice or several taken together; every grouping is a possible reading (two
  records: each alone, or both added). A record whose end is unknown, begun before the day,
  may or may not still be in use: both are readings.

Pure functions over small tuples; no FHIR reading beyond the reference fields.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import product

from engine.normalise.medication_exposure import ExposurePeriod

__all__ = ["COURSE_LIMIT", "DoseDay", "DoseRecord", "Reading", "dose_days"]

COURSE_LIMIT = 8
"""At most this many courses of one drug in use on one day are sorted into readings (2^8
groupings); more are reported as too many to add up (unknown)."""
_READING_LIMIT = 4096
"""At most this many distinct totals for a day (drugs combined)."""


@dataclass(frozen=True)
class DoseRecord:
    """A medication record in use at some time, with its daily dose as read."""

    reference: str
    period: ExposurePeriod
    dose: Fraction | None
    """mg a day (of the equivalence table's drug when there is one); None: not readable."""
    shown: str
    """How the dose reads in a reason ("5 mg/day prednisone-equivalent [5 mg x 1/1 d]"), or
    why it cannot be read."""
    drug: frozenset[str]
    """Which drug it is, as the mappings tell (the concepts giving its equivalence); empty
    when no equivalence table is asked for (the atom's concept is taken as one drug)."""
    group: str | None = None
    """A MedicationRequest's groupIdentifier (`system|value`): requests ordered together."""


@dataclass(frozen=True)
class Reading:
    """One total the records allow on a day: the known doses added, and whether a dose that
    cannot be read is part of it (the total is then a lower bound)."""

    total: Fraction
    unread: bool
    records: tuple[DoseRecord, ...]


@dataclass(frozen=True)
class DoseDay:
    """The records of one day (from it to the next day listed, nothing changes)."""

    day: dt.date
    in_use: tuple[DoseRecord, ...]
    """Records proven in use that day."""
    may_be_in_use: tuple[DoseRecord, ...]
    """Records begun before it whose end is unknown (not proven in use that day)."""
    undecided_groups: tuple[tuple[DoseRecord, ...], ...]
    """Records of one drug, on no link, that may be one course or several."""
    disagreeing: tuple[tuple[DoseRecord, ...], ...]
    """Records of one course, begun the same day, giving different doses."""
    readings: tuple[Reading, ...] | None
    """Every total the record allows that day (at least one); None: too many records to
    add up (more than `COURSE_LIMIT` courses of one drug)."""


def dose_days(
    records: Sequence[DoseRecord],
    same_course: Iterable[tuple[int, int]],
    first_day: dt.date | None,
    as_of: dt.date,
) -> list[DoseDay]:
    """The days on which what is in use changes, from `first_day` (None: the first record's
    start) to `as_of`, each with the totals its records allow. `same_course` pairs indices
    of `records` that are one course (linked by reference)."""
    if not records:
        return []
    parent = list(range(len(records)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for first, second in same_course:
        parent[root(first)] = root(second)
    by_reference: dict[str, int] = {}
    for index, record in enumerate(records):  # two copies of one resource: one course
        known = by_reference.setdefault(record.reference, index)
        parent[root(index)] = root(known)
    courses = [root(index) for index in range(len(records))]
    lower = first_day if first_day is not None else min(r.period.start for r in records)
    changes = {lower}
    one_day = dt.timedelta(days=1)
    for record in records:
        period = record.period
        changes.add(period.start)
        changes.add(period.last_day(as_of) + one_day)
        if not period.end_known:
            changes.add(period.start + one_day)
    days = sorted(day for day in changes if lower <= day <= as_of)
    return [_day(day, records, courses, as_of) for day in days]


def _day(
    day: dt.date, records: Sequence[DoseRecord], courses: Sequence[int], as_of: dt.date
) -> DoseDay:
    proven: dict[int, list[DoseRecord]] = {}
    possible: dict[int, list[DoseRecord]] = {}
    for record, course in zip(records, courses, strict=True):
        period = record.period
        if period.start > day:
            continue
        if day <= period.last_day(as_of):
            proven.setdefault(course, []).append(record)
        elif not period.end_known:
            possible.setdefault(course, []).append(record)
    in_course: dict[int, tuple[list[DoseRecord], bool]] = {
        course: (members, True) for course, members in proven.items()
    }
    for course, members in possible.items():
        in_course.setdefault(course, (members, False))
    families: dict[frozenset[str], list[_Course]] = {}
    disagreeing = []
    for members, surely in in_course.values():
        latest = max(member.period.start for member in members)
        current = [member for member in members if member.period.start == latest]
        doses = list(dict.fromkeys(member.dose for member in current))
        if len(doses) > 1:
            disagreeing.append(tuple(current))
        drug = frozenset().union(*(member.drug for member in members))
        groups = frozenset(member.group for member in members if member.group is not None)
        families.setdefault(drug, []).append(_Course(tuple(current), surely, groups, latest))
    undecided = tuple(
        tuple(course.records[0] for course in family)
        for family in families.values()
        if len(family) > 1 and not _all_distinct(family)
    )
    in_use = tuple(record for members in proven.values() for record in members)
    may_be = tuple(
        record for course, members in possible.items() if course not in proven for record in members
    )
    return DoseDay(
        day, in_use, may_be, undecided, tuple(disagreeing), _readings(list(families.values()))
    )


@dataclass(frozen=True)
class _Course:
    records: tuple[DoseRecord, ...]
    """Its records giving its dose that day (begun last; several when they disagree)."""
    surely: bool
    """Proven in use that day (else it may be, its end unknown)."""
    groups: frozenset[str]
    """The groupIdentifiers of its requests."""
    start: dt.date
    """The start of the records giving its dose."""


def _all_distinct(family: Sequence[_Course]) -> bool:
    return all(
        _distinct(first, second)
        for index, first in enumerate(family)
        for second in family[index + 1 :]
    )


def _distinct(first: _Course, second: _Course) -> bool:
    """Surely two courses: requests ordered together (one groupIdentifier)."""
    return bool(first.groups & second.groups)


def _may_be_recorded_again_by(course: _Course, other: _Course) -> bool:
    """Whether `course` may be `other` recorded again, `other` giving the dose: not surely
    distinct, and `other` begun no earlier (the record begun last gives a course's dose)."""
    return not _distinct(course, other) and other.start >= course.start


def _readings(families: list[list[_Course]]) -> tuple[Reading, ...] | None:
    totals: dict[tuple[Fraction, bool], Reading] = {
        (Fraction(0), False): Reading(Fraction(0), False, ())
    }
    for family in families:
        options = _family_readings(family)
        if options is None:
            return None
        combined: dict[tuple[Fraction, bool], Reading] = {}
        for before, option in product(totals.values(), options):
            total = before.total + option.total
            unread = before.unread or option.unread
            combined.setdefault(
                (total, unread), Reading(total, unread, before.records + option.records)
            )
        if len(combined) > _READING_LIMIT:
            return None
        totals = combined
    return tuple(totals.values())


def _family_readings(family: Sequence[_Course]) -> list[Reading] | None:
    """The totals of one drug's courses: every set of them counted as the distinct courses
    (each other one is one of these recorded again, or, its end unknown, no longer in use),
    each with one of its doses."""
    if len(family) > COURSE_LIMIT:
        return None
    found: dict[tuple[Fraction, bool], Reading] = {}
    for mask in range(1 << len(family)):
        counted = [course for bit, course in enumerate(family) if mask >> bit & 1]
        left_out = [course for bit, course in enumerate(family) if not mask >> bit & 1]
        if any(
            course.surely and not any(_may_be_recorded_again_by(course, other) for other in counted)
            for course in left_out
        ):
            continue  # a course surely in use that none of those counted can stand for
        for chosen in product(*(course.records for course in counted)):
            known = [record.dose for record in chosen if record.dose is not None]
            total = sum(known, Fraction(0))
            unread = len(known) < len(chosen)
            found.setdefault((total, unread), Reading(total, unread, tuple(chosen)))
    return list(found.values())
