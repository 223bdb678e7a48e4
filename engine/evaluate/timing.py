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
from typing import Any

_YEAR = re.compile(r"^\d{4}$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_ZONE = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


class DateProblem(ValueError):
    """A date field cannot be used: names the field and says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Span:
    """Days covered by a fact; `end` None means still ongoing. `moment` orders facts in time."""

    start: dt.date | None
    end: dt.date | None
    moment: dt.datetime

    def overlaps(self, first_day: dt.date | None, last_day: dt.date) -> bool:
        """True if the span touches [first_day, last_day] (first_day None: no lower bound)."""
        if self.start is not None and self.start > last_day:
            return False
        return first_day is None or self.end is None or self.end >= first_day


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)


def parse_date_range(text: object, field: str) -> tuple[dt.date, dt.date, dt.datetime]:
    """First day, last day and an ordering instant of a FHIR date, dateTime or instant."""
    if not isinstance(text, str):
        raise DateProblem(field, f"expected a date string, found {type(text).__name__}")
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


def _point(resource: dict[str, Any], field: str) -> Span | None:
    value = resource.get(field)
    if value is None:
        return None
    start, end, moment = parse_date_range(value, field)
    return Span(start, end, moment)


def _period(resource: dict[str, Any], field: str, open_ended: bool = True) -> Span | None:
    period = resource.get(field)
    if period is None:
        return None
    if not isinstance(period, dict):
        raise DateProblem(field, "expected a Period object")
    start = end = None
    moment = _EARLIEST
    if "start" in period:
        start, _, moment = parse_date_range(period["start"], f"{field}.start")
    if "end" in period:
        _, end, end_moment = parse_date_range(period["end"], f"{field}.end")
        if start is None:
            moment = end_moment
    elif not open_ended:
        end = start
    if start is None and end is None:
        raise DateProblem(field, "a Period with neither start nor end")
    return Span(start, end, moment)


def _first(
    resource: dict[str, Any], *readers: Callable[[dict[str, Any]], Span | None]
) -> Span | None:
    for reader in readers:
        span = reader(resource)
        if span is not None:
            return span
    return None


def _observation_span(resource: dict[str, Any]) -> Span | None:
    span = _first(
        resource,
        lambda r: _point(r, "effectiveDateTime"),
        lambda r: _point(r, "effectiveInstant"),
        lambda r: _period(r, "effectivePeriod", open_ended=False),
        lambda r: _point(r, "issued"),
    )
    if span is not None and span.end is None:  # an observation is a point in time
        return Span(span.start, span.start, span.moment)
    return span


def _condition_span(resource: dict[str, Any]) -> Span | None:
    onset = _first(
        resource,
        lambda r: _point(r, "onsetDateTime"),
        lambda r: _period(r, "onsetPeriod"),
        lambda r: _point(r, "recordedDate"),
    )
    abatement = _first(
        resource,
        lambda r: _point(r, "abatementDateTime"),
        lambda r: _period(r, "abatementPeriod", open_ended=False),
    )
    if onset is None and abatement is None:
        return None
    start = onset.start if onset is not None else None
    moment = onset.moment if onset is not None else _EARLIEST
    if abatement is not None:
        return Span(start, abatement.end or abatement.start, moment)
    if clinical_status(resource) in _CONDITION_ENDED:
        # Resolved without an abatement date: all we know is that it happened at onset.
        return Span(start, onset.end if onset is not None else None, moment)
    return Span(start, None, moment)


def _medication_span(resource: dict[str, Any]) -> Span | None:
    period = _first(
        resource,
        lambda r: _period(r, "effectivePeriod"),
        lambda r: _validity(r),
    )
    if period is not None:
        return period
    point = _first(
        resource,
        lambda r: _point(r, "effectiveDateTime"),
        lambda r: _point(r, "authoredOn"),
        lambda r: _point(r, "dateAsserted"),
    )
    if point is not None and resource.get("status") in _MEDICATION_ONGOING:
        # A single date on a medication still in use: in use from then on.
        return Span(point.start, None, point.moment)
    return point


def _validity(resource: dict[str, Any]) -> Span | None:
    request = resource.get("dispenseRequest")
    if not isinstance(request, dict) or "validityPeriod" not in request:
        return None
    return _period(request, "validityPeriod")


def _procedure_span(resource: dict[str, Any]) -> Span | None:
    return _first(
        resource,
        lambda r: _point(r, "performedDateTime"),
        lambda r: _period(r, "performedPeriod", open_ended=False),
    )


def _allergy_span(resource: dict[str, Any]) -> Span | None:
    span = _first(
        resource,
        lambda r: _point(r, "onsetDateTime"),
        lambda r: _period(r, "onsetPeriod"),
        lambda r: _point(r, "recordedDate"),
    )
    return Span(span.start, None, span.moment) if span is not None else None


def _research_subject_span(resource: dict[str, Any]) -> Span | None:
    return _period(resource, "period")


_CONDITION_ENDED = frozenset({"inactive", "remission", "resolved"})
_MEDICATION_ONGOING = frozenset({"active", "in-progress", "on-hold", "intended"})

SPAN_READERS: dict[str, Callable[[dict[str, Any]], Span | None]] = {
    "Observation": _observation_span,
    "Condition": _condition_span,
    "Procedure": _procedure_span,
    "MedicationStatement": _medication_span,
    "MedicationRequest": _medication_span,
    "MedicationAdministration": _medication_span,
    "AllergyIntolerance": _allergy_span,
    "ResearchSubject": _research_subject_span,
}


def resource_span(resource: dict[str, Any]) -> Span | None:
    """The span of a resource, None if it carries no date. Raises DateProblem for bad dates."""
    reader = SPAN_READERS.get(resource.get("resourceType", ""))
    return reader(resource) if reader is not None else None


def clinical_status(resource: dict[str, Any]) -> str | None:
    """The first clinicalStatus code of a Condition or AllergyIntolerance, if any."""
    return _first_code(resource.get("clinicalStatus"))


def verification_status(resource: dict[str, Any]) -> str | None:
    """The first verificationStatus code of a Condition or AllergyIntolerance, if any."""
    return _first_code(resource.get("verificationStatus"))


def _first_code(concept: object) -> str | None:
    if isinstance(concept, dict):
        for coding in concept.get("coding") or ():
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return None


def age_in_years(birth_date: dt.date, on: dt.date) -> int:
    """Whole years of age on a day (a birthday counts on the day itself)."""
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))
