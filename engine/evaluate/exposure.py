"""Medication use: continuous use for a duration, last use in a window, daily dose.

`ExposureNode` reads the medication resources of a concept (MedicationStatement, -Request,
-Administration, with the atom's status filter) as periods of use
(`engine.normalise.medication_exposure.exposure_period`) instead of their own dates:

- `continuous_for: P4W`: met when the periods (joined across gaps of at most
  `allowed_gap`) cover every day from the as-of date minus the duration to the as-of date;
  unknown when they would only if periods whose end is unknown had lasted; else not met.
- `within: P8W`: met when a period of proven use touches the window; unknown when only a
  period with an unknown end, begun before the window, might reach into it; else not met.
- `daily_dose: ">= 7.5 mg"` (optionally `equivalent: prednisone`): the total daily dose of
  the courses in use on each day of the window (the as-of day when no `within`), counting
  a course once (`engine.evaluate.dose_totals`): met when on some day every total the
  records allow passes, not met when on every day every one fails, else unknown, naming
  the records and the totals (records that may be one course or two, a period whose end is
  unknown, a dose that cannot be read).

Closed world, as for every medication atom: no such medication on record means not met.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from fractions import Fraction
from operator import attrgetter
from typing import Any, NamedTuple

from engine.criteria.model import Comparator, MedicationExposure
from engine.errors import CriteriaError, Location, UnitError
from engine.evaluate.dose_totals import DoseDay, DoseRecord, Reading, dose_days
from engine.evaluate.nodes import (
    EVIDENCE_LIMIT,
    EvaluationContext,
    Reads,
    ResourceNode,
    first_problems,
    passes_filters,
    unidentified_medication_text,
    unknown_use,
)
from engine.evaluate.outcome import MET, NOT_MET, UNKNOWN, Cited, Outcome, shared, with_atom
from engine.evaluate.timing import day_before
from engine.evaluate.values import COMPARISONS
from engine.normalise import Terminology
from engine.normalise.medication_exposure import (
    ExposurePeriod,
    daily_dose,
    exposure_period,
    milligrams,
    unknown_end_text,
    use_in_days,
)
from engine.record import UNIDENTIFIED_MEDICATION

__all__ = ["ExposureNode", "compile_exposure"]


def compile_exposure(
    node: ResourceNode, exposure: MedicationExposure, terminology: Terminology, where: Location
) -> ExposureNode:
    """The node for an atom with `use:`; CriteriaError (naming `where`) for a dose unit that
    is not a mass or an equivalence table no concept defines."""
    threshold = None
    if exposure.daily_dose is not None:
        assert exposure.daily_dose.unit is not None
        try:
            threshold = milligrams(exposure.daily_dose.value, exposure.daily_dose.unit)
        except UnitError as error:
            raise CriteriaError(
                f"daily_dose '{exposure.daily_dose.text}' must be a mass per day "
                f"(mg, g, ug): {error.message}",
                Location(where.file, where.line, where.column, where.criterion, "use.daily_dose"),
            ) from None
    if exposure.equivalent is not None and not any(
        exposure.equivalent in terminology.concept(concept_id).dose_equivalents
        for concept_id in terminology.concept_ids()
    ):
        raise CriteriaError(
            f"no concept in the mappings has dose_equivalents for '{exposure.equivalent}'",
            Location(where.file, where.line, where.column, where.criterion, "use.equivalent"),
        )
    return ExposureNode(node, exposure, threshold, node.label)


class _Use(NamedTuple):
    """A medication resource in use, with its reference and period of use (a tuple: made per
    resource and exposure)."""

    reference: str
    period: ExposurePeriod
    resource: dict[str, Any]


@dataclass(frozen=True)
class ExposureNode:
    query: ResourceNode
    exposure: MedicationExposure
    threshold: Fraction | None
    """The `daily_dose` test's mass in mg, exactly (a dose equal to it compares equal)."""
    label: str
    _nothing_found: dict[dt.date, Outcome] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """The outcome by as-of day when no medication of the concept is in use (and none has a
    problem): it depends on the atom and the day only (as `ResourceNode._nothing_found`)."""
    reads: Reads | None = field(init=False, repr=False, compare=False)
    """What the use reads (its concept and types; None without a concept), so that an
    `all`/`any` over it answers once for every patient holding none of it
    (`engine.evaluate.nodes.Reads`): a record without a resource of the concept has no use,
    and the outcome is the shared `_nothing_found`."""

    def __post_init__(self) -> None:
        concept = self.query.concept
        reads = (
            None
            if concept is None
            else Reads(
                frozenset({concept.id, UNIDENTIFIED_MEDICATION}), self.query.types, frozenset()
            )
        )
        object.__setattr__(self, "reads", reads)

    def evaluate(self, context: EvaluationContext) -> Outcome:
        """The exposure's outcome; unknown when some of its types are unavailable (not
        exported, refused by the server) unless the types there prove it."""
        unavailable = self.query.types & context.unavailable_types
        if unavailable == self.query.types:
            return self.query.unavailable(unavailable, context)
        outcome = self._evaluate_record(context)
        if unavailable and outcome.truth is not MET:
            return self.query.unavailable(unavailable, context)
        return outcome

    def _evaluate_record(self, context: EvaluationContext) -> Outcome:
        concept = self.query.concept
        if (
            concept is not None
            and not context.record.resources_of_concept(concept.id)
            and not self.query.has_unidentified(context.record)
        ):
            nothing = self._nothing_found.get(context.as_of)
            if nothing is not None:  # nothing to look at: as when nothing is in use
                return nothing
        uses, problems = self._uses(context)
        if not uses and not problems:
            nothing = self._nothing_found.get(context.as_of)
            if nothing is None:  # shared when made
                nothing = self._nothing_found[context.as_of] = shared(
                    with_atom(self._decide(uses, problems, context), self.query.atom, ())
                )
            return nothing
        outcome = self._decide(uses, problems, context)
        evidence = outcome.evidence
        medication_of = context.record.medication_of
        cited = []
        for use in uses:  # a loop, not a generator: no frame of its own (Python 3.11)
            if use.reference in evidence:
                cited.append(Cited(use.reference, use.resource, medication_of(use.resource)))
        return with_atom(outcome, self.query.atom, tuple(cited))

    def _decide(self, uses: list[_Use], problems: list[str], context: EvaluationContext) -> Outcome:
        subject = self.query.subject
        if self.exposure.daily_dose is not None:
            return self._dose(uses, problems, context)
        if self.exposure.continuous_for is not None:
            return self._continuous(uses, problems, context)
        window = self.exposure.within
        assert window is not None
        first_day = day_before(window.duration, context.as_of) if window.duration else None
        text = _window_text(first_day, context.as_of, window.name)
        as_of = context.as_of
        placed = [(u, use_in_days(u.period, first_day, as_of, as_of)) for u in uses]
        proven = [u for u, in_window in placed if in_window]
        if proven:
            latest = max(proven, key=lambda u: u.period.last_day(context.as_of))
            return Outcome(
                MET,
                f"{subject}: in use {text} ({_shown(latest, context.as_of)})",
                self.label,
                evidence=_evidence(proven),
            )
        maybe = [u for u, in_window in placed if in_window is None]
        if maybe or problems:
            why = [_may_have_lasted(u) for u in maybe]
            return unknown_use(subject, text, why + problems, self.label, _evidence(maybe))
        return Outcome(
            NOT_MET,
            f"{subject}: no use on record {text}"
            + (f"; last use {max(u.period.last_day(context.as_of) for u in uses)}" if uses else ""),
            self.label,
            evidence=_evidence(uses),
        )

    # ------------------------------------------------------------------ the three tests

    def _continuous(
        self, uses: list[_Use], problems: list[str], context: EvaluationContext
    ) -> Outcome:
        duration = self.exposure.continuous_for
        assert duration is not None
        first_day = day_before(duration, context.as_of)
        gap = (
            day_before(self.exposure.allowed_gap, context.as_of) - context.as_of
            if self.exposure.allowed_gap
            else dt.timedelta(0)
        )
        allowed = -gap
        subject = self.query.subject
        text = f"for {duration.readable} ({first_day.isoformat()} to {context.as_of.isoformat()})"
        as_of = context.as_of
        periods = [(u.period.start, u.period.last_day(as_of)) for u in uses]
        proven = _covers(periods, first_day, as_of, allowed)
        if proven is not None:
            covering = [u for u, (_, last) in zip(uses, periods, strict=True) if last >= first_day]
            return Outcome(
                MET,
                f"{subject}: in use continuously {text}, since {proven.isoformat()}",
                self.label,
                evidence=_evidence(covering),
            )
        hopeful = [
            (
                u.period.start,
                context.as_of if not u.period.end_known else u.period.last_day(context.as_of),
            )
            for u in uses
        ]
        unsure = [u for u in uses if not u.period.end_known]
        if _covers(hopeful, first_day, context.as_of, allowed) is not None or problems:
            why = [f"{u.reference} ({u.period.rule}): end of use unknown" for u in unsure]
            return self._unknown(
                f"{subject}: continuous use {text} cannot be confirmed", why + problems, unsure
            )
        return Outcome(
            NOT_MET,
            f"{subject}: not in use continuously {text}"
            + (
                f" (latest use from {max(u.period.start for u in uses)})"
                if uses
                else " (none on record)"
            ),
            self.label,
            evidence=_evidence(uses),
        )

    def _dose(self, uses: list[_Use], problems: list[str], context: EvaluationContext) -> Outcome:
        """The daily dose test over the days of the window (`engine.evaluate.dose_totals`): met
        when on some day every total the records allow passes, not met when on every day
        every total fails (and every dose is read), else unknown, saying why."""
        test = self.exposure.daily_dose
        assert test is not None
        window = self.exposure.within
        as_of = context.as_of
        first_day = (
            day_before(window.duration, as_of)
            if window is not None and window.duration is not None
            else (None if window is not None else as_of)
        )
        text = _window_text(first_day, as_of, window.name if window else None)
        subject = self.query.subject
        relevant = [u for u in uses if use_in_days(u.period, first_day, as_of, as_of) is not False]
        records = [self._dose_record(use, context) for use in relevant]
        days = dose_days(records, _same_course(relevant, context), first_day, as_of)
        verdicts = [self._day_verdict(day) for day in days]
        passing = [day for day, verdict in zip(days, verdicts, strict=True) if verdict is True]
        if passing:
            day = passing[-1]
            cited = dict.fromkeys(r.reference for r in day.in_use + day.may_be_in_use)
            return Outcome(
                MET,
                f"{subject}: {self._passing_text(day)} is {test.text}",
                self.label,
                evidence=tuple(cited)[:EVIDENCE_LIMIT],
            )
        undecided = [day for day, verdict in zip(days, verdicts, strict=True) if verdict is None]
        reasons = (self._undecided_text(undecided[-1]) if undecided else []) + problems
        if reasons:  # (a dose not read that cannot change the verdict is no reason)
            return self._unknown(f"{subject}: daily dose {text} unknown", reasons, relevant)
        if not relevant:
            return Outcome(NOT_MET, f"{subject}: not in use {text}", self.label)
        shown = ", ".join(map(_record_text, records))
        return Outcome(
            NOT_MET,
            f"{subject}: daily dose {shown} is not {test.text}{self._added_text(days)}",
            self.label,
            evidence=_evidence(relevant),
        )

    def _judge(self, reading: Reading) -> bool | None:
        """Whether a total passes the test: None when a dose of it cannot be read and the
        known part does not settle it (a total at least X passes `> X` tests only)."""
        test = self.exposure.daily_dose
        assert test is not None and self.threshold is not None
        if not reading.records:
            return False  # nothing in use that day: no dose to pass
        passes = COMPARISONS[test.comparator](reading.total, self.threshold)
        if not reading.unread:
            return passes
        if test.comparator in _RISING and passes:
            return True  # more than the known part passes too
        if test.comparator in _FALLING and not passes:
            return False
        return None

    def _day_verdict(self, day: DoseDay) -> bool | None:
        if day.readings is None:
            return None
        verdicts = {self._judge(reading) for reading in day.readings}
        return verdicts.pop() if len(verdicts) == 1 else None

    def _amount_text(self, reading: Reading) -> str:
        """A total as a reason gives it: "10 mg/day prednisone-equivalent" ("at least" when a
        dose of it cannot be read)."""
        equivalent = f" {self.exposure.equivalent}-equivalent" if self.exposure.equivalent else ""
        least = "at least " if reading.unread else ""
        return f"{least}{float(reading.total):g} mg/day{equivalent}"

    def _total_text(self, reading: Reading) -> str:
        """A total with the records it adds up."""
        added = " + ".join(r.reference for r in reading.records) or "none in use"
        return f"{self._amount_text(reading)} ({added})"

    def _passing_text(self, day: DoseDay) -> str:
        """What passes on a day every reading of which passes."""
        assert day.readings is not None
        if len(day.readings) == 1:
            (reading,) = day.readings
            if len(reading.records) == 1:
                (record,) = reading.records
                return f"daily dose {record.shown} ({record.reference})"
            shown = " and ".join(map(_record_text, reading.records))
            return (
                f"daily dose {self._amount_text(reading)} on {day.day.isoformat()}, the total "
                f"of {shown}, courses taken together,"
            )
        low = min(day.readings, key=_total_of)
        high = max(day.readings, key=_total_of)
        shown = ", ".join(map(_record_text, day.in_use + day.may_be_in_use))
        return (
            f"daily dose on {day.day.isoformat()} ({shown}), one course or several, "
            f"{float(low.total):g} to {self._amount_text(high)},"
        )

    def _undecided_text(self, day: DoseDay) -> list[str]:
        """Why the records of a day allow totals that pass and totals that fail (one reason,
        its clauses joined, so that none is cut off)."""
        on = day.day.isoformat()
        if day.readings is None:
            shown = ", ".join(r.reference for r in day.in_use)
            return [f"{shown} are in use on {on}: too many records of one drug to add up"]
        reasons = []
        for group in day.undecided_groups:
            records = " and ".join(f"{r.reference} ({r.shown})" for r in group)
            reasons.append(
                f"{records} are in use on {on}, neither linked as one course (basedOn, "
                "priorPrescription) nor ordered together (groupIdentifier): one course "
                "recorded twice or courses taken together, the record does not tell"
            )
        for group in day.disagreeing:
            records = " and ".join(f"{r.reference} ({r.shown})" for r in group)
            reasons.append(f"{records}, one course, give different doses from {on}")
        for record in day.may_be_in_use:
            reasons.append(f"{record.reference} ({record.shown}) {unknown_end_text(record.period)}")
        for record in day.in_use + day.may_be_in_use:
            if record.dose is None:
                reasons.append(f"{record.reference}: {record.shown}")
        judged = [(reading, self._judge(reading)) for reading in day.readings]
        passing = [reading for reading, verdict in judged if verdict is True]
        failing = [reading for reading, verdict in judged if verdict is False]
        test = self.exposure.daily_dose
        assert test is not None
        if passing and failing:
            reasons.append(
                f"{self._total_text(max(passing, key=_size))} would be {test.text}, "
                f"{self._total_text(min(failing, key=_size))} would not"
            )
        return ["; ".join(reasons)] if reasons else []

    def _added_text(self, days: list[DoseDay]) -> str:
        """For a failing test: the largest total of records taken together, if any."""
        totals = [
            reading
            for day in days
            for reading in day.readings or ()
            if len(reading.records) > 1 and not reading.unread
        ]
        if not totals:
            return ""
        return f"; added up, {self._total_text(max(totals, key=_total_of))} is not either"

    # ------------------------------------------------------------------ helpers

    def _uses(self, context: EvaluationContext) -> tuple[list[_Use], list[str]]:
        record = context.record
        uses: list[_Use] = []
        problems: list[str] = []
        query = self.query
        concept = query.concept
        pool = record.resources_of_concept(concept.id) if concept is not None else ()
        periods = context.exposure_periods
        as_of = context.as_of
        predicates = query.status_predicates
        filters, exclusions = query.filters, query.exclusions
        filtered = bool(filters or exclusions)
        for resource in pool:
            predicate = predicates.get(resource.get("resourceType", ""))
            if predicate is None or not predicate(resource, None, as_of):
                continue
            if filtered and not passes_filters(resource, filters, exclusions, context.path_matches):
                continue
            period = periods.get(id(resource))
            if period is None:  # read once per patient: several exposures read the same drugs
                period = periods[id(resource)] = exposure_period(resource)
            if isinstance(period, str):
                problems.append(f"{record.label(resource)}: {period}")
                continue
            if period.start > as_of:
                continue
            uses.append(_Use(record.label(resource), period, resource))
        uses.sort(key=_start_of_use, reverse=True)
        if query.has_unidentified(record):
            problems += self._unidentified(context)
        return uses, problems

    def _unidentified(self, context: EvaluationContext) -> list[str]:
        """Why each medication of the query's types whose drug cannot be told (of its
        statuses and filters) may be a use of the concept in the window that matters (one
        ended before it cannot)."""
        record = context.record
        query = self.query
        as_of = context.as_of
        first_day = self._first_day(as_of)
        problems: list[str] = []
        for resource in record.resources_of_concept(UNIDENTIFIED_MEDICATION, query.types):
            predicate = query.status_predicates.get(resource.get("resourceType", ""))
            if predicate is None or not predicate(resource, None, as_of):
                continue
            if (query.filters or query.exclusions) and not passes_filters(
                resource, query.filters, query.exclusions, context.path_matches
            ):
                continue
            period = exposure_period(resource)
            if (
                not isinstance(period, str)
                and use_in_days(period, first_day, as_of, as_of) is False
            ):
                continue  # begun after the as-of date, or ended before the window
            problems.append(unidentified_medication_text(record, resource))
        return problems

    def _first_day(self, as_of: dt.date) -> dt.date | None:
        """The first day of the window the exposure reads (None: no start)."""
        exposure = self.exposure
        if exposure.continuous_for is not None:
            return day_before(exposure.continuous_for, as_of)
        window = exposure.within
        if window is None:
            return as_of
        return day_before(window.duration, as_of) if window.duration else None

    def _dose_record(self, use: _Use, context: EvaluationContext) -> DoseRecord:
        """A use with its daily dose as the test reads it (or why it cannot be read)."""
        dose = self._daily_mg(use, context)
        group = use.resource.get("groupIdentifier")
        group_key = (
            f"{group.get('system', '')}|{group['value']}"
            if use.resource.get("resourceType") == "MedicationRequest"
            and isinstance(group, dict)
            and isinstance(group.get("value"), str)
            else None
        )
        value, shown, drug = dose
        return DoseRecord(use.reference, use.period, value, shown, drug, group_key)

    def _daily_mg(
        self, use: _Use, context: EvaluationContext
    ) -> tuple[Fraction | None, str, frozenset[str]]:
        """The use's daily dose in mg (of the equivalence table's drug; None when it cannot
        be read), how it reads (or why not), and which drug it is (the concepts giving its
        equivalence; none without a table, or when the mappings give it none)."""
        record = context.record
        reference = use.resource.get("medicationReference")
        medication = (
            record.resolve(reference.get("reference"), use.resource)
            if isinstance(reference, dict)
            else None
        )
        dose = daily_dose(use.resource, medication)
        table = self.exposure.equivalent
        if table is None:
            if isinstance(dose, str):
                return None, dose, frozenset()
            return dose.value, f"{float(dose.value):g} mg/day [{dose.shown}]", frozenset()
        equivalents: dict[Fraction, str] = {}
        drugs: set[str] = set()
        concept = record.medication_of(use.resource) or {}
        terminology = context.terminology
        for coding in concept.get("coding") or ():
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                for concept_id in terminology.concepts_of_coding(
                    coding.get("system"), coding["code"]
                ):
                    drug = terminology.concept(concept_id)
                    equivalent = drug.dose_equivalents.get(table)
                    if equivalent is not None:  # (the table's own drug needs no words)
                        drugs.add(concept_id)
                        equivalents.setdefault(
                            equivalent.factor,
                            ""
                            if concept_id == table
                            else f"; {equivalent.text(drug.display.lower(), table)}",
                        )
        if len(equivalents) != 1:
            why = (
                f"no {table} equivalence for this drug in the mappings"
                if not equivalents
                else f"conflicting {table} equivalences"
                + "".join(sorted(equivalents.values())).replace(";", ":", 1)
            )
            return None, why, frozenset()
        if isinstance(dose, str):
            return None, dose, frozenset(drugs)
        ((factor, equivalence),) = equivalents.items()
        value = dose.value * factor
        shown = f"{float(value):g} mg/day {table}-equivalent [{dose.shown}{equivalence}]"
        return value, shown, frozenset(drugs)

    def _unknown(self, text: str, reasons: list[str], uses: list[_Use]) -> Outcome:
        return Outcome(
            UNKNOWN,
            f"{text}: {first_problems(reasons)}",
            self.label,
            evidence=_evidence(uses),
            missing=(f"{self.query.subject}: {reasons[0]}" if reasons else text,),
        )


def _start_of_use(use: _Use) -> dt.date:
    return use.period.start


_RISING = frozenset({Comparator.GREATER, Comparator.GREATER_OR_EQUAL})
"""Tests a larger dose passes whenever a smaller one does."""
_FALLING = frozenset({Comparator.LESS, Comparator.LESS_OR_EQUAL})
"""Tests a larger dose fails whenever a smaller one does."""
_LINK_FIELDS = ("basedOn", "derivedFrom", "partOf", "priorPrescription", "request")
"""Reference fields by which a medication record names another record of its course (FHIR
R4 MedicationStatement.basedOn/.derivedFrom/.partOf, MedicationRequest.basedOn/
.priorPrescription, MedicationAdministration.request/.partOf)."""


def _same_course(uses: list[_Use], context: EvaluationContext) -> list[tuple[int, int]]:
    """Pairs of uses (by index) that one of them links to the other (`_LINK_FIELDS`)."""
    index_of = {id(use.resource): index for index, use in enumerate(uses)}
    pairs = []
    for index, use in enumerate(uses):
        for name in _LINK_FIELDS:
            value = use.resource.get(name)
            for link in value if isinstance(value, list) else (value,):
                if isinstance(link, dict) and isinstance(link.get("reference"), str):
                    target = context.record.resolve(link["reference"], use.resource)
                    other = index_of.get(id(target)) if target is not None else None
                    if other is not None and other != index:
                        pairs.append((index, other))
    return pairs


def _record_text(record: DoseRecord) -> str:
    """A record's daily dose in a reason, with its reference."""
    if record.dose is None:
        return f"a dose that cannot be read ({record.reference}: {record.shown})"
    return f"{record.shown} ({record.reference})"


def _total_of(reading: Reading) -> Fraction:
    return reading.total


def _size(reading: Reading) -> tuple[int, Fraction]:
    return (len(reading.records), reading.total)


def _may_have_lasted(use: _Use) -> str:
    """Why a use whose end is unknown, begun before the window, keeps it unknown."""
    return f"{use.reference} {unknown_end_text(use.period)}"


def _covers(
    periods: list[tuple[dt.date, dt.date]],
    first_day: dt.date,
    last_day: dt.date,
    allowed_gap: dt.timedelta,
) -> dt.date | None:
    """The start of the joined stretch that covers [first_day, last_day], else None."""
    stretch_start: dt.date | None = None
    stretch_end: dt.date | None = None
    for start, end in sorted(periods):
        if stretch_end is not None and start - stretch_end <= allowed_gap + dt.timedelta(days=1):
            stretch_end = max(stretch_end, end)
        else:
            stretch_start, stretch_end = start, end
        if stretch_start is not None and stretch_start <= first_day and stretch_end >= last_day:
            return stretch_start
    return None


def _shown(use: _Use, as_of: dt.date) -> str:
    return (
        f"{use.reference}, {use.period.start.isoformat()} to "
        f"{use.period.last_day(as_of).isoformat()}, {use.period.rule}"
    )


def _evidence(uses: list[_Use]) -> tuple[str, ...]:
    return tuple(map(_reference_of, uses[:EVIDENCE_LIMIT]))


_reference_of = attrgetter("reference")


def _window_text(first_day: dt.date | None, as_of: dt.date, name: str | None) -> str:
    if first_day == as_of and name is None:
        return f"on {as_of.isoformat()}"
    if first_day is None:
        return f"ever (up to {as_of.isoformat()})"
    label = f"{name} " if name else ""
    return f"within {label}{first_day.isoformat()} to {as_of.isoformat()}"
