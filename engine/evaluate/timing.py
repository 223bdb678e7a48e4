"""When a resource happened: FHIR date/dateTime parsing and per-type time spans.

A span is the stretch of days a fact covers, in the time zone it was written in: one day for
an Observation, onset to abatement for a Condition, a prescription's validity for a
MedicationRequest. Partial dates (`2021`, `2021-05`) cover their whole year or month. A
dateTime with a time but no time zone is invalid FHIR and is reported, never guessed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from engine.criteria.model import IsoDuration
from engine.errors import DateProblem
from engine.resource_types import RESOURCE_TYPES, DateField, Dating, ResourceType, code_of

_YEAR = re.compile(r"^\d{4}$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_ZONE = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True, slots=True)
class Span:
    """Days covered by a fact; `end` None means still ongoing. `moment` orders facts in time.

    `start` is the earliest day the fact may have begun and `end` the latest it may have
    ended. A partial date (`2026`, `2026-05`) leaves a range: `latest_start` is the latest day
    it may have begun and `earliest_end` the earliest it may have ended (None: as precise as
    `start`/`end`). A point fact dated `2026` spans 2026-01-01..2026-12-31 at the widest and
    may be any single day of it.
    """

    start: dt.date | None
    end: dt.date | None
    moment: dt.datetime
    latest_start: dt.date | None = None
    earliest_end: dt.date | None = None
    timed: bool = False
    """The start has a time of day (a dateTime with its time zone): `moment` is that
    instant. Otherwise the start is a day (or a month, a year) and `moment` its first
    midnight in UTC, which orders it but says nothing of the hour."""

    def overlaps(self, first_day: dt.date | None, last_day: dt.date) -> bool:
        """True if the span may touch [first_day, last_day] (first_day None: no lower bound)."""
        if self.start is not None and self.start > last_day:
            return False
        return first_day is None or self.end is None or self.end >= first_day

    def widest(self) -> Span:
        """The same span read optimistically: every partial date as wide as it can be."""
        return Span(self.start, self.end, self.moment, timed=self.timed)

    def surely_overlaps(self, first_day: dt.date | None, last_day: dt.date) -> bool:
        """True if the span touches [first_day, last_day] however its partial dates resolve.

        `overlaps` true but this false: the date's precision cannot place the fact inside the
        window (an Observation dated `2026` for a window ending 2026-11-01).
        """
        start = self.latest_start or self.start
        if start is not None and start > last_day:
            return False
        end = self.earliest_end or self.end
        return first_day is None or self.end is None or (end is not None and end >= first_day)


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)


def parse_date_range(text: object, field: str) -> tuple[dt.date, dt.date, dt.datetime]:
    """First day, last day and an ordering instant of a FHIR date, dateTime or instant.

    >>> first, last, _instant = parse_date_range("2024-02", "onsetDateTime")
    >>> first, last
    (datetime.date(2024, 2, 1), datetime.date(2024, 2, 29))
    >>> try:
    ...     parse_date_range("2024-03-05T10:30", "effectiveDateTime")
    ... except DateProblem as problem:
    ...     print(problem)
    effectiveDateTime: '2024-03-05T10:30' has a time but no time zone
    """
    if not isinstance(text, str):
        raise DateProblem(field, f"expected a date string, found {type(text).__name__}")
    known = _PARSED_DATES.get(text)
    if known is not None:
        return known
    parsed = _parse_date_range(text, field)
    if len(_PARSED_DATES) >= _PARSED_DATES_LIMIT:
        _PARSED_DATES.clear()
    _PARSED_DATES[text] = parsed
    return parsed


_PARSED_DATES: dict[str, tuple[dt.date, dt.date, dt.datetime]] = {}
"""Dates parsed so far, by their text: the same value recurs (every result of an encounter
carries its time; 2,624 distinct texts among 88,450 in a 10x export), and a parse is a
regular expression and `fromisoformat`. Only dates that parse are kept: a problem names
the field, so it is raised anew."""
_PARSED_DATES_LIMIT = 100_000
_POINT_SPANS: dict[str, Span] = {}
"""The span of a date or dateTime field by its text (a span is immutable): made once per
distinct text, as its parse is (`_PARSED_DATES`)."""


def _parse_date_range(text: str, field: str) -> tuple[dt.date, dt.date, dt.datetime]:
    try:
        if len(text) > 10:
            if "T" not in text:
                raise DateProblem(field, f"'{text}' is not a FHIR date or dateTime")
            if not _TIME_ZONE.search(text):
                raise DateProblem(field, f"'{text}' has a time but no time zone")
            moment = dt.datetime.fromisoformat(text)
            day = moment.date()
            return day, day, moment
        if _DAY.match(text):
            day = dt.date.fromisoformat(text)
            return day, day, dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        if _MONTH.match(text):
            first = dt.date(int(text[:4]), int(text[5:7]), 1)
            following = dt.date(first.year + (first.month == 12), first.month % 12 + 1, 1)
            return first, following - dt.timedelta(days=1), _midnight(first)
        if _YEAR.match(text):
            first = dt.date(int(text), 1, 1)
            return first, dt.date(first.year, 12, 31), _midnight(first)
    except ValueError as error:
        if isinstance(error, DateProblem):
            raise
        raise DateProblem(field, f"'{text}' is not a valid date: {error}") from None
    raise DateProblem(field, f"'{text}' is not a FHIR date or dateTime")


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _read(resource: dict[str, Any], date_field: DateField) -> Span | None:
    """The span of one date field, None when the resource does not have it."""
    holder: Any = resource
    if date_field.container is not None:
        holder = resource.get(date_field.container)
        if not isinstance(holder, dict):
            return None
    value = holder.get(date_field.name)
    if value is None:
        return None
    if not date_field.is_period:
        span = _POINT_SPANS.get(value) if type(value) is str else None
        if span is None:
            start, end, moment = parse_date_range(value, date_field.name)
            span = Span(
                start, end, moment, latest_start=end, earliest_end=start, timed=len(value) > 10
            )
            if type(value) is str:
                if len(_POINT_SPANS) >= _PARSED_DATES_LIMIT:
                    _POINT_SPANS.clear()
                _POINT_SPANS[value] = span
        return span
    return _period(value, date_field.name, date_field.open_ended)


def _period(period: object, field: str, open_ended: bool) -> Span:
    if not isinstance(period, dict):
        raise DateProblem(field, "expected a Period object")
    start = end = latest_start = earliest_end = None
    moment = _EARLIEST
    timed = False
    if "start" in period:
        start, latest_start, moment = parse_date_range(period["start"], f"{field}.start")
        timed = len(period["start"]) > 10  # (a text, or the parse had raised)
    if "end" in period:
        earliest_end, end, end_moment = parse_date_range(period["end"], f"{field}.end")
        if start is None:
            moment = end_moment
    elif not open_ended:
        end, earliest_end = latest_start, start
    if start is None and end is None:
        raise DateProblem(field, "a Period with neither start nor end")
    return Span(start, end, moment, latest_start, earliest_end, timed)


def _first(
    resource: dict[str, Any], date_fields: tuple[DateField, ...]
) -> tuple[Span, DateField] | None:
    for date_field in date_fields:
        span = _read(resource, date_field)
        if span is not None:
            return span, date_field
    return None


def _instant_span(resource: dict[str, Any], known: ResourceType) -> Span | None:
    found = _first(resource, known.start_fields)
    if found is None:
        return None
    span = found[0]
    if span.end is None:  # an observation is a point in time
        return Span(
            span.start, span.latest_start, span.moment, span.latest_start, span.start, span.timed
        )
    return span


def _onset_abatement_span(resource: dict[str, Any], known: ResourceType) -> Span | None:
    onset_found = _first(resource, known.start_fields)
    abatement_found = _first(resource, known.end_fields)
    if onset_found is None and abatement_found is None:
        return None
    onset = onset_found[0] if onset_found is not None else None
    start = onset.start if onset is not None else None
    latest_start = onset.latest_start if onset is not None else None
    moment = onset.moment if onset is not None else _EARLIEST
    timed = onset is not None and onset.timed
    if abatement_found is not None:
        abatement = abatement_found[0]
        end = abatement.end or abatement.start
        earliest_end = abatement.earliest_end or abatement.start
        return Span(start, end, moment, latest_start, earliest_end, timed)
    if clinical_status(resource) in known.ended_statuses:
        # Resolved without an abatement date: all we know is that it happened at onset.
        end = onset.end if onset is not None else None
        return Span(start, end, moment, latest_start, start if end is not None else None, timed)
    return Span(start, None, moment, latest_start, timed=timed)


def _as_given_span(resource: dict[str, Any], known: ResourceType) -> Span | None:
    found = _first(resource, known.start_fields)
    return found[0] if found is not None else None


def _in_use_span(resource: dict[str, Any], known: ResourceType) -> Span | None:
    found = _first(resource, known.start_fields)
    if found is None:
        return None
    span, date_field = found
    if not date_field.is_period and code_of(resource, "status") in known.ongoing_statuses:
        # A single date on a medication still in use: in use from then on.
        return Span(span.start, None, span.moment, span.latest_start, timed=span.timed)
    return span


_DATING: dict[Dating, Callable[[dict[str, Any], ResourceType], Span | None]] = {
    "instant": _instant_span,
    "onset-abatement": _onset_abatement_span,
    "as-given": _as_given_span,
    "in-use": _in_use_span,
}

SPAN_READERS: dict[str, Callable[[dict[str, Any]], Span | None]] = {
    name: partial(_DATING[known.dating], known=known)  # type: ignore[call-arg]
    for name, known in RESOURCE_TYPES.items()
}
"""The span reader of each resource type, from its dating in `engine.resource_types`."""


_FIRST_POINT_FIELDS: dict[str, str] = {
    name: known.start_fields[0].name
    for name, known in RESOURCE_TYPES.items()
    if known.dating in ("instant", "as-given")
    and known.start_fields
    and not known.start_fields[0].is_period
    and known.start_fields[0].container is None
}
"""For types dated by their first field as it is (an Observation's `effectiveDateTime`, a
Procedure's `performedDateTime`), when that field is a top-level date or dateTime: its name.
Such a resource's span is that field's span (`_POINT_SPANS`), whatever its other fields."""


def resource_span(resource: dict[str, Any]) -> Span | None:
    """The span of a resource, None if it carries no date. Raises DateProblem for bad dates."""
    resource_type = resource.get("resourceType", "")
    point_field = _FIRST_POINT_FIELDS.get(resource_type)
    if point_field is not None:
        # The usual case, read inline: the first dating field holds a date text whose span
        # is known (what `_first` and the type's reader give: a point span is returned as is).
        value = resource.get(point_field)
        if type(value) is str:
            span = _POINT_SPANS.get(value)
            if span is not None:
                return span
    reader = SPAN_READERS.get(resource_type)
    return reader(resource) if reader is not None else None


def clinical_status(resource: dict[str, Any]) -> str | None:
    """The first clinicalStatus code of a Condition or AllergyIntolerance, if any."""
    return _first_code(resource.get("clinicalStatus"))


def verification_status(resource: dict[str, Any]) -> str | None:
    """The first verificationStatus code of a Condition or AllergyIntolerance, if any."""
    return _first_code(resource.get("verificationStatus"))


UNCERTAIN_VERIFICATION: dict[str, dict[str, str]] = {
    name: dict(known.uncertain_statuses)
    for name, known in RESOURCE_TYPES.items()
    if known.uncertain_statuses
}
"""Per resource type, the verificationStatus codes of a resource not established, with the
words that say so (from `engine.resource_types`). Condition (FHIR R4 condition-ver-status):
`unconfirmed` "There is not sufficient diagnostic and/or clinical evidence to treat this as a
confirmed condition", with its children `provisional` "a tentative diagnosis - still a
candidate that is under consideration" and `differential` "One of a set of potential (and
typically mutually exclusive) diagnoses". AllergyIntolerance (FHIR R4
allergyintolerance-verification): `unconfirmed` "A low level of certainty about the
propensity for a reaction to the identified substance", and its child `presumed`, which the
same code system gained after R4 (HL7 Terminology 1.0.1, FHIR R5: "The available clinical
information supports a high likelihood of the propensity for a reaction"). Such a resource
keeps an atom unknown (confirm it) rather than counting as the diagnosis or the allergy."""

ONSET_FIELDS = ("onsetDateTime", "onsetPeriod")
"""The onset[x] choices that date a Condition's onset (FHIR R4 Condition.onset[x]); the
others, onsetAge, onsetRange and onsetString, are read by `undated_onset`."""


def undated_onset(
    resource: dict[str, Any], span: Span | None, birth_date: object
) -> tuple[dt.date | None, dt.date | None, str]:
    """When a Condition (or AllergyIntolerance) without onsetDateTime / onsetPeriod may have
    begun: the earliest and latest possible days (None: unbounded) and how that was read.

    onsetAge / onsetRange ("Estimated or actual date, date-time, or age", FHIR R4
    Condition.onset[x]) pin it from the birth date: aged 62 years is the year from the 62nd
    birthday to the day before the 63rd. onsetString cannot be dated. The record cannot have
    been made before the condition began, so `recordedDate` (in `span`, its start, when no
    onset is dated: "Date record was first recorded") is the latest possible onset day; it is
    never read as the onset itself.
    """
    earliest: dt.date | None = None
    latest: dt.date | None = None
    words: list[str] = []
    pinned = _age_onset(resource, birth_date)
    if isinstance(pinned, str):
        words.append(pinned)
    elif pinned is not None:
        earliest, latest, text = pinned
        words.append(text)
    elif isinstance(resource.get("onsetString"), str):
        words.append(f"has its onset as text only ('{resource['onsetString']}', onsetString)")
    else:
        words.append("has no onset date")
    recorded = resource.get("recordedDate")
    if span is not None and span.start is not None and isinstance(recorded, str):
        last = span.latest_start or span.start
        if latest is None or last < latest:
            latest = last
        words.append(f"recorded {recorded[:10]}, so it began on or before that day")
    return earliest, latest, "; ".join(words)


_AGE_UNITS = {"a": "years", "mo": "months", "wk": "weeks", "d": "days"}


def _age_onset(
    resource: dict[str, Any], birth_date: object
) -> tuple[dt.date | None, dt.date | None, str] | str | None:
    """The days onsetAge / onsetRange allow (None without either; why not, as text)."""
    age, ages = resource.get("onsetAge"), resource.get("onsetRange")
    if age is None and ages is None:
        return None
    name = "onsetAge" if age is not None else "onsetRange"
    low, high = (age, age) if age is not None else (_get(ages, "low"), _get(ages, "high"))
    if not isinstance(birth_date, str):
        return f"began at an age ({name}) but the birth date is not on record"
    try:
        born_first, born_last, _ = parse_date_range(birth_date, "birthDate")
    except DateProblem:
        return f"began at an age ({name}) but the birth date cannot be read"
    earliest: dt.date | None = born_first
    latest: dt.date | None = None
    shown: list[str] = []
    for bound, is_low in ((low, True), (high, False)):
        if bound is None:
            continue
        read = _age_quantity(bound)
        if read is None:
            return f"has an onset age ({name}) that cannot be read"
        value, unit = read
        shown.append(f"{value:g} {_AGE_UNITS[unit]}")
        if is_low:
            earliest = _add_age(born_first, value, unit)
        else:
            latest = _add_age(born_last, value + 1, unit) - dt.timedelta(days=1)
    ages_text = " to ".join(dict.fromkeys(shown)) or "an unknown age"
    days = (
        f"{earliest.isoformat() if earliest else 'any day'} to "
        f"{latest.isoformat() if latest else 'any day'}"
    )
    return earliest, latest, f"began aged {ages_text} ({name}): {days}"


def _get(holder: object, name: str) -> object:
    return holder.get(name) if isinstance(holder, dict) else None


def _age_quantity(quantity: object) -> tuple[float, str] | None:
    """An Age's value and UCUM unit (a, mo, wk, d), None when it is not one of those."""
    if not isinstance(quantity, dict):
        return None
    value, unit = quantity.get("value"), quantity.get("code") or quantity.get("unit")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    unit = {"year": "a", "years": "a", "month": "mo", "months": "mo"}.get(str(unit), unit)
    if unit not in _AGE_UNITS or (unit in ("a", "mo") and value != int(value)):
        return None
    return float(value), str(unit)


def _add_age(day: dt.date, value: float, unit: str) -> dt.date:
    """The day `value` years / months / weeks / days after `day` (a 29 February birthday
    falls on 1 March in other years)."""
    if unit in ("wk", "d"):
        return day + dt.timedelta(days=value * (7 if unit == "wk" else 1))
    months = day.month - 1 + int(value) * (12 if unit == "a" else 1)
    year, month = day.year + months // 12, months % 12 + 1
    try:
        return dt.date(year, month, day.day)
    except ValueError:  # no such day in that month: the first of the next
        following = dt.date(year + (month == 12), month % 12 + 1, 1)
        return following


def _first_code(concept: object) -> str | None:
    if isinstance(concept, dict):
        for coding in concept.get("coding") or ():
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return None


def age_in_years(birth_date: dt.date, on: dt.date) -> int:
    """Whole years of age on a day (a birthday counts on the day itself).

    >>> age_in_years(dt.date(2000, 2, 29), dt.date(2026, 2, 28))
    25
    """
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


_DAYS_BEFORE: dict[tuple[int, dt.date], tuple[IsoDuration, dt.date]] = {}
_DAYS_BEFORE_LIMIT = 10_000


def day_before(duration: IsoDuration, day: dt.date) -> dt.date:
    """`duration.start_before(day)` (a window's first day), worked out once per process for
    each duration and day: every patient's windows end on the same as-of day."""
    key = (id(duration), day)
    known = _DAYS_BEFORE.get(key)
    if known is not None and known[0] is duration:
        return known[1]
    start = duration.start_before(day)
    if len(_DAYS_BEFORE) >= _DAYS_BEFORE_LIMIT:
        _DAYS_BEFORE.clear()
    _DAYS_BEFORE[key] = (duration, start)  # the duration kept alive: its id is not reused
    return start
