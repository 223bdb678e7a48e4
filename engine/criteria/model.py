"""The criteria language as typed data: what a criteria file says, after loading and validation.

A criteria file (YAML, validated by `criteria/criteria.schema.json`) is loaded into these
frozen dataclasses by `engine.criteria.loader`; `engine.evaluate.compile` turns them into
evaluators. Nothing here does I/O. Every node keeps the file line it came from so errors
found later (an unknown concept, say) can still point at the right place.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class CriterionKind(StrEnum):
    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"


class Comparator(StrEnum):
    LESS = "<"
    LESS_OR_EQUAL = "<="
    GREATER = ">"
    GREATER_OR_EQUAL = ">="
    EQUAL = "="
    NOT_EQUAL = "!="


@dataclass(frozen=True)
class SourcePosition:
    """Where a node stands in its criteria file (1-based line and column)."""

    file: str
    line: int
    column: int


# --------------------------------------------------------------------------- time windows


@dataclass(frozen=True)
class Window:
    """A look-back window ending at the as-of date.

    `duration` is None for "ever" (no lower bound). `name` is the named window it came from
    ("screening"), or None when written inline (`within: P3M`).
    """

    duration: IsoDuration | None
    name: str | None = None
    description: str | None = None

    @property
    def is_ever(self) -> bool:
        return self.duration is None


@dataclass(frozen=True)
class IsoDuration:
    """An ISO 8601 duration in calendar units (P3M, P28D, P1Y, P2W); no time part."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    text: str = ""

    @property
    def readable(self) -> str:
        """The duration as a clinician writes it, for explanations: `P4W` -> `4 weeks`,
        `P1Y6M` -> `1 year 6 months`, `P28D` -> `28 days` (the ISO text stays in messages
        about the criteria file, which quote it).

        >>> IsoDuration(weeks=4, text="P4W").readable, IsoDuration(years=1, months=6).readable
        ('4 weeks', '1 year 6 months')
        """
        parts = [
            f"{count} {name}{'' if count == 1 else 's'}"
            for count, name in (
                (self.years, "year"),
                (self.months, "month"),
                (self.weeks, "week"),
                (self.days, "day"),
            )
            if count
        ]
        return " ".join(parts) or "0 days"

    def start_before(self, as_of: dt.date) -> dt.date:
        """The first day of the window that ends on `as_of` (calendar arithmetic, clamped).

        >>> IsoDuration(months=1, text="P1M").start_before(dt.date(2026, 3, 31))
        datetime.date(2026, 2, 28)
        """
        return _start_before(self.years * 12 + self.months, self.weeks * 7 + self.days, as_of)

    def start_after(self, day: dt.date) -> dt.date:
        """The day this duration after `day` (calendar arithmetic, clamped)."""
        month_index = day.year * 12 + (day.month - 1) + (self.years * 12 + self.months)
        year, month = divmod(month_index, 12)
        month += 1
        clamped = min(day.day, _days_in_month(year, month))
        return dt.date(year, month, clamped) + dt.timedelta(weeks=self.weeks, days=self.days)


AS_OF = "as-of"
"""The anchor that is the evaluation's as-of date (visit 1, enrolment, screening)."""


@dataclass(frozen=True)
class Relation:
    """`before:` / `after:` an anchor: the as-of date or the matching event of another atom.

    `before` keeps resources dated on or before the anchor's date minus `at_least` and, with
    `at_most`, not earlier than its date minus `at_most`; `after` the mirror image. `event`
    picks the anchor atom's first or latest matching resource (ignored for the as-of date).
    """

    direction: Literal["before", "after"]
    anchor: str
    at_least: IsoDuration | None = None
    at_most: IsoDuration | None = None
    event: Literal["first", "latest"] = "first"
    position: SourcePosition | None = None


@functools.lru_cache(maxsize=4096)
def _start_before(months: int, days: int, as_of: dt.date) -> dt.date:
    """`IsoDuration.start_before`, remembered: every patient of a run asks the same days."""
    month_index = as_of.year * 12 + (as_of.month - 1) - months
    year, month = divmod(month_index, 12)
    month += 1
    day = min(as_of.day, _days_in_month(year, month))
    return dt.date(year, month, day) - dt.timedelta(days=days)


def _days_in_month(year: int, month: int) -> int:
    next_month = dt.date(year + (month == 12), month % 12 + 1, 1)
    return (next_month - dt.timedelta(days=1)).day


# --------------------------------------------------------------------------- value tests


@dataclass(frozen=True)
class QuantityTest:
    """`< 100 g/L`, `<= 2`: compare the value (in the concept's canonical unit) with a quantity."""

    comparator: Comparator
    value: float
    unit: str | None  # UCUM; None for unitless scores (ECOG)
    text: str


@dataclass(frozen=True)
class ReferenceLimitTest:
    """`> 1.5 x ULN`, `> 20% above ULN`, `< 0.5 x LLN`: compare with a multiple of a limit.

    The limit is the result's own referenceRange (high for ULN, low for LLN), else the
    concept's default range from the mappings. `factor` is already the multiplier
    (`> 20% above ULN` is factor 1.2).
    """

    comparator: Comparator
    factor: float
    limit: Literal["high", "low"]
    text: str


@dataclass(frozen=True)
class AnswerTest:
    """`positive`, `negative`, or any answer concept: the coded value belongs to that concept."""

    answer_concept: str
    text: str


@dataclass(frozen=True)
class RangeTest:
    """`{between: ["6.5 %", "12 %"]}`: low <= value <= high, both bounds inclusive.

    Each bound is a quantity (with its unit, or none for a unitless score); `low` and `high`
    hold them as `>=` and `<=` tests.
    """

    low: QuantityTest
    high: QuantityTest
    text: str


SingleValueTest = QuantityTest | ReferenceLimitTest | AnswerTest | RangeTest


@dataclass(frozen=True)
class AnyValueTest:
    """`value: ["> 1 x ULN", "is positive"]`: a result passes if a test that applies passes.

    A numeric test does not apply to a coded result, nor a coded test to a number, so one
    atom can read a concept whose results come both ways (HCV RNA as a viral load or as
    "detected"). The result fails if the tests that apply all fail; it is unusable if none
    applies.
    """

    tests: tuple[SingleValueTest, ...]
    text: str


@dataclass(frozen=True)
class PerUnitTest:
    """`value: {per_unit: [">= 30 mg/g", ">= 3 mg/mmol"]}`: one cut-off per unit of report.

    A result is tested against the cut-off in the unit it was reported in (or one that
    converts to it without a molar mass: `ug/mg` against `mg/g`), compared in that unit; a
    result in none of them (or a computed value) against the first, in the concept's unit.
    For categories a guideline defines separately in each unit (KDIGO albuminuria: 30 mg/g
    or 3 mg/mmol), which an exact conversion would put on different sides.
    """

    tests: tuple[QuantityTest, ...]
    text: str


ValueTest = SingleValueTest | AnyValueTest | PerUnitTest


# --------------------------------------------------------------------------- atoms

Selection = Literal["latest", "any", "all", "min", "max", "count"]

Timing = Literal["onset", "active"]
"""How a resource with a span (a Condition from onset to abatement, a medication in use) is
in a window: `onset` when it began in the window, `active` when it was active at some point
of it."""

Absence = Literal["not-met", "unknown"]
"""What no matching resource means for an atom: not met (closed world) or unknown (missing
data, open world)."""


@dataclass(frozen=True)
class ComputedValue:
    """`computed:` on an Observation atom: the value may also come from a registered formula.

    `prefer` says which source decides first: `measured` (the latest measured value in the
    window, else the computed one), `computed` (the computed value when its inputs allow,
    else the measured one) or `latest` (the newer of the two; the measured one on the same
    day; the computed value is dated by its oldest measured input). `input_windows` gives a
    window per formula input by input name; an input without one uses the atom's window.
    `same_sample`: the measured inputs must come from one specimen (a ratio of two
    concentrations in one spot sample), else the computed value is unknown. See
    `engine.normalise.formulas`.
    """

    formula: str
    prefer: Literal["measured", "computed", "latest"] = "measured"
    input_windows: tuple[tuple[str, Window], ...] = ()
    position: SourcePosition | None = None
    """Where `formula:` is written."""
    same_sample: bool = False


@dataclass(frozen=True)
class ResourceAtom:
    """A query over the patient's resources of some type(s), optionally of one concept.

    `resource_types` is already expanded: MedicationStatement brings MedicationRequest and
    MedicationAdministration with it. `status` None means the type's default status filter.
    `where` holds jsonpath-ng filters a resource must satisfy (all of them match something).
    `timing` says whether a resource counts when it began in the window or when it was active
    in it; `absence` what finding none means (both resolved from the types' defaults when the
    file does not say). `id` names the atom so that other atoms can refer to it; `relations`
    anchor its window on the as-of date or on another atom's event (`before:` / `after:`).
    `apart`, with `select: count`, counts only results at least that long after the previous
    one counted.
    """

    resource_types: tuple[str, ...]
    concept: str | None
    window: Window
    selection: Selection = "any"
    minimum_count: int = 1
    value: ValueTest | None = None
    status: tuple[str, ...] | None = None
    where: tuple[str, ...] = ()
    where_not: tuple[str, ...] = ()
    label: str | None = None
    position: SourcePosition | None = None
    timing: Timing = "active"
    absence: Absence = "not-met"
    id: str | None = None
    relations: tuple[Relation, ...] = ()
    apart: IsoDuration | None = None
    computed: ComputedValue | None = None
    exposure: MedicationExposure | None = None
    failing: Absence = "not-met"
    """What results that fail the value test mean (select any / count) when none passes:
    `not-met`, or `unknown` for "evidence of X" criteria, where a result failing the test is
    no evidence against X (an earlier normal value does not refute an episode of albuminuria)."""


@dataclass(frozen=True)
class MedicationExposure:
    """`use:` on a medication atom: exposure periods instead of the resources' own dates.

    `continuous_for`: in use on every day of that duration up to the as-of date (gaps of at
    most `allowed_gap` between exposure periods are bridged). `within`: some day of use in
    that window. `daily_dose`: a value test on the daily dose (in use on the as-of date, or
    the latest use in the window), optionally converted through an equivalence table
    (`equivalent`, e.g. `prednisone`). See `engine.normalise.medication_exposure`.
    """

    continuous_for: IsoDuration | None = None
    within: Window | None = None
    allowed_gap: IsoDuration | None = None
    daily_dose: QuantityTest | None = None
    equivalent: str | None = None
    position: SourcePosition | None = None
    """Where `use:` is written."""


@dataclass(frozen=True)
class PatientAtom:
    """Demographics: age in whole years on the as-of date (inclusive bounds), gender."""

    minimum_age: int | None = None
    maximum_age: int | None = None
    genders: tuple[str, ...] = ()
    label: str | None = None
    position: SourcePosition | None = None


@dataclass(frozen=True)
class ManualAtom:
    """Something a person must check. Its truth comes only from an attestation.

    `id` is unique in the file; `question` is phrased so that "yes" makes the atom true.
    """

    id: str
    question: str
    label: str | None = None
    position: SourcePosition | None = None


Atom = ResourceAtom | PatientAtom | ManualAtom


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class AllOf:
    operands: tuple[Expression, ...]
    label: str | None = None
    position: SourcePosition | None = None


@dataclass(frozen=True)
class AnyOf:
    operands: tuple[Expression, ...]
    label: str | None = None
    position: SourcePosition | None = None


@dataclass(frozen=True)
class NotOf:
    operand: Expression
    label: str | None = None
    position: SourcePosition | None = None


Expression = AllOf | AnyOf | NotOf | Atom


# --------------------------------------------------------------------------- file


@dataclass(frozen=True)
class Criterion:
    id: str
    kind: CriterionKind
    text: str
    expression: Expression
    note: str | None = None
    position: SourcePosition | None = None


@dataclass(frozen=True)
class Trial:
    """Identifies the study: `id` is the registry identifier (NCT05315778)."""

    id: str
    title: str
    identifier_system: str = "https://clinicaltrials.gov"


@dataclass(frozen=True)
class CriteriaFile:
    """One trial's criteria, as loaded from one file."""

    path: str
    trial: Trial
    mapping_paths: tuple[str, ...]
    windows: dict[str, Window]
    criteria: tuple[Criterion, ...]
    version: str | None = None
    manual_atoms: dict[str, ManualAtom] = field(default_factory=dict)


def iter_atoms(expression: Expression) -> Iterator[Atom]:
    """Every atom of an expression, depth first, in the order written."""
    stack: list[Expression] = [expression]
    while stack:
        node = stack.pop()
        if isinstance(node, AllOf | AnyOf):
            stack.extend(reversed(node.operands))
        elif isinstance(node, NotOf):
            stack.append(node.operand)
        else:
            yield node
