"""UCUM units: validation, alias resolution and conversion (via ucumvert on pint).

Conversion goes through pint, never through hand-written factor tables. The pint registry
takes about half a second to build, so it is built lazily, once per process. Every
conversion is reduced to a linear map `value * scale + offset` and cached per
(from unit, to unit, molar mass): pint is consulted once per distinct pair.

UCUM arbitrary units (`[IU]`, `[arb'U]`, `[CFU]`, ...) are dimensionless in pint, which
would let `[IU]/mL` convert to `10*9/L`. UCUM forbids that: an arbitrary unit converts
only to the same arbitrary unit. `convert` enforces it.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import UnitError

if TYPE_CHECKING:
    from engine.normalise.terminology import Terminology

__all__ = ["convert", "is_valid_ucum", "ucum_suggestion", "ucum_unit"]

# A unit made only of annotations (`{INR}`, `{score}`, `{INR}.{ratio}`) is the unity in UCUM.
_ANNOTATION_ONLY = re.compile(r"^\{[^{}]*\}(\.\{[^{}]*\})*$")
# Dimensionless pint units that are plain numbers, not arbitrary (incommensurable) units.
_NUMERIC_UNITS = frozenset(
    {
        "_10",
        "percent",
        "permille",
        "ppm",
        "ppb",
        "ppt",
        "ppth",
        "pptr",
        "ppq",
        "dimensionless",
        "radian",
        "degree",
        "steradian",
        "arcminute",
        "arcsecond",
        "gradian",
    }
)

UNIT_REGISTRY_MODULE = "engine.normalise.unit_registry"
"""The module whose import builds the unit registry (for a forkserver to preload)."""


def prepare_unit_conversions() -> None:
    """Build the unit registry now (about half a second) rather than at the first conversion.

    A cohort run calls it before it forks the worker processes that will convert units, so
    that they share one registry instead of each building its own. Nothing is built when
    conversions are already known (restored from the cache by `engine.compiled_cache`): a
    worker then builds the registry only if it meets a pair of units no earlier run met.
    """
    if _conversion_cache:
        return
    _pint_registry()


def build_unit_registry() -> None:
    """Build the unit registry now, whatever conversions are known: for a process that must
    not build it at a moment someone waits for (a service, whose requests may meet a pair of
    units no earlier run met; `prepare_unit_conversions` builds nothing when some are
    known)."""
    _pint_registry()


def _pint_registry() -> Any:
    """The process-wide ucumvert registry, built on first use."""
    from engine.normalise.unit_registry import REGISTRY

    return REGISTRY


@functools.cache
def _ucum_parser() -> Any:
    """ucumvert's UCUM grammar as its `get_ucum_parser` builds it, without importing ucumvert:
    its package imports pint (about 0.2 s), which only conversions need, not syntax checks."""
    from lark import Lark

    spec = importlib.util.find_spec("ucumvert")
    folders = spec.submodule_search_locations if spec is not None else None
    grammar = Path(folders[0]) / "ucum_grammar.lark" if folders else None
    if grammar is None or not grammar.is_file():  # another ucumvert layout: its own way
        from ucumvert import get_ucum_parser

        return get_ucum_parser()
    return Lark(grammar.read_text(encoding="utf8"), start="main_term", strict=True)


def _parse_ucum(unit_text: str) -> None:
    """Parse as ucumvert's `parse_ucum` does; raise ValueError with the text of its errors."""
    from lark.exceptions import UnexpectedInput

    try:
        _ucum_parser().parse(unit_text)
    except UnexpectedInput as error:
        position = error.pos_in_stream
        if position is not None and 0 <= position < len(unit_text):
            detail = f"unexpected character {unit_text[position]!r} at column {error.column}"
        else:
            detail = "unexpected end of input"
        context = error.get_context(unit_text).rstrip("\n")
        raise ValueError(f"{unit_text!r} is not a valid UCUM unit: {detail}.\n{context}") from error


@functools.lru_cache(maxsize=4096)
def _ucum_syntax_problem(unit_text: str) -> str | None:
    """None if `unit_text` is UCUM syntax, else why not."""
    if not unit_text or unit_text != unit_text.strip():
        return "empty, or surrounded by spaces"
    if _ANNOTATION_ONLY.match(unit_text) or unit_text == "1" or unit_text in _valid_units:
        return None
    try:
        _parse_ucum(unit_text)
    except Exception as error:  # lark raises several classes; all mean "not UCUM"
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        return first_line
    # Kept as the identity conversion, which the conversion cache carries to the next run and
    # to workers (`known_conversions`): they need not build the UCUM parser for this unit.
    _conversion_cache.setdefault((unit_text, unit_text, None), _IDENTITY)
    _valid_units.add(unit_text)
    return None


def is_valid_ucum(unit_text: str) -> bool:
    """True if `unit_text` is a syntactically valid UCUM unit (case-sensitive).

    >>> is_valid_ucum("10*9/L"), is_valid_ucum("mcg")
    (True, False)
    """
    return _ucum_syntax_problem(unit_text) is None


_SUGGESTION_SCORE = 80
"""The lowest similarity (rapidfuzz `fuzz.ratio`, 0-100, ignoring case) at which a common UCUM
unit is suggested for a unit that is not UCUM: 'gm/dl' is 88.9 from 'g/dL', 'mls/min' 92.3
from 'mL/min'."""


@functools.cache
def _common_units() -> dict[str, str]:
    """UCUM's table of example codes for electronic messaging, the common units of clinical
    data (ucum-org, common-units/TableOfExampleUcumCodesForElectronicMessaging, as ucumvert
    vendors it): each code with its description ("g/dL": "gram per deciliter"), in the
    table's order. Empty if this ucumvert does not ship the table. (A few codes of the table
    are not UCUM, 'Torr': `ucum_suggestion` checks the one it suggests.)"""
    spec = importlib.util.find_spec("ucumvert")
    folders = spec.submodule_search_locations if spec is not None else None
    table = Path(folders[0]) / "vendor" / "ucum_examples.tsv" if folders else None
    if table is None or not table.is_file():
        return {}
    units: dict[str, str] = {}
    with table.open(encoding="utf8", newline="") as lines:
        rows = csv.reader(lines, delimiter="\t")
        next(rows, None)  # the header
        for row in rows:
            if len(row) < 3:
                continue
            code, description = row[1].strip(), " ".join(row[2].rstrip("*").split())
            if code and code not in units:
                units[code] = description
    return units


_NON_UCUM_SPELLINGS = (
    (re.compile(r"mcg"), "ug"),
    (re.compile(r"\bgm\b", re.IGNORECASE), "g"),
    (re.compile(r"\bcc\b"), "mL"),
    (re.compile(r"\bhrs?\b"), "h"),
    (re.compile(r"\bsec\b"), "s"),
    (re.compile(r"(?<![\[\w])(m?)IU\b"), r"\1[IU]"),
)
"""Common spellings that are not UCUM, each with UCUM's (the microgram is `ug`, the
international unit `[IU]`, the hour `h`): tried before a spelling-alike, which could be
another magnitude ('mcg/mL' is nearest 'mg/mL')."""


def _respelled(unit_text: str) -> str:
    for pattern, ucum in _NON_UCUM_SPELLINGS:
        unit_text = pattern.sub(ucum, unit_text)
    return unit_text


def ucum_suggestion(unit_text: str) -> str:
    """ " (did you mean 'g/dL', gram per deciliter?)" for a unit that is not UCUM ('gm/dl'):
    first the unit with its common non-UCUM spellings replaced (`_NON_UCUM_SPELLINGS`:
    'mcg/mL' is 'ug/mL'), else the most similar of UCUM's common units (`_common_units`),
    ignoring case, by rapidfuzz; "" when none is similar enough. The description is part of
    the suggestion because a similar spelling may be another magnitude."""
    from rapidfuzz import fuzz, process

    units = _common_units()
    respelled = _respelled(unit_text.strip())
    if respelled != unit_text.strip() and is_valid_ucum(respelled):
        common = [code for code in units if code.lower() == respelled.lower()]
        code = next((code for code in common if is_valid_ucum(code)), respelled)
        description = units.get(code)
        return (
            f" (did you mean '{code}', {description}?)"
            if description
            else f" (did you mean '{code}'?)"
        )
    found = process.extract(
        unit_text.strip(),
        list(units),
        scorer=fuzz.ratio,
        processor=str.lower,
        score_cutoff=_SUGGESTION_SCORE,
        limit=5,
    )
    valid = [code for code, _, _ in found if is_valid_ucum(code)]
    if not valid:
        return ""
    code = valid[0]
    description = units[code]
    return (
        f" (did you mean '{code}', {description}?)" if description else f" (did you mean '{code}'?)"
    )


def ucum_unit(
    unit_text: str,
    terminology: Terminology | None = None,
    fits: Callable[[str], bool] | None = None,
) -> str:
    """The UCUM unit for a unit string as found in data.

    Resolution order: the terminology's exact `unit_aliases`, then the text itself as
    UCUM, then the aliases case- and space-insensitively (so "g/l", valid UCUM, is never
    taken for the alias "G/L"). An alias with several readings ("IU/L": the WHO
    International Unit `[IU]/L` of hCG, or the enzyme unit `U/L` of ALT) is the first
    reading `fits` accepts (whether it converts to the unit of the concept measured), else
    its first. Raises UnitError.

    >>> ucum_unit(" mg/dL ")
    'mg/dL'
    """
    text = unit_text.strip()
    if terminology is not None:
        readings = terminology.unit_readings(text)
        if readings:
            return _fitting(readings, fits)
    problem = _ucum_syntax_problem(text)
    if problem is None:
        return text
    if terminology is not None:
        readings = terminology.unit_readings_ignoring_case(text)
        if readings:
            return _fitting(readings, fits)
    raise UnitError(f"unit {unit_text!r} is not UCUM and has no alias in the mappings ({problem})")


def _fitting(readings: tuple[str, ...], fits: Callable[[str], bool] | None) -> str:
    """The first reading `fits` accepts, else the first (the one messages then name)."""
    if fits is not None and len(readings) > 1:
        for reading in readings:
            if fits(reading):
                return reading
    return readings[0]


@dataclass(frozen=True)
class _LinearMap:
    scale: float
    offset: float


@dataclass(frozen=True)
class _Failure:
    message: str


_conversion_cache: dict[tuple[str, str, float | None], _LinearMap | _Failure] = {}
_IDENTITY = _LinearMap(scale=1.0, offset=0.0)
_valid_units: set[str] = set()
"""Units known to be UCUM syntax without parsing them: both units of every conversion worked
out (each was checked) or restored from another process (`add_known_conversions`)."""


def known_conversions() -> dict[tuple[str, str, float | None], Any]:
    """The conversions this process has worked out, by (from unit, to unit, molar mass):
    picklable, for `add_known_conversions` in another process (`engine.compiled_cache`)."""
    return dict(_conversion_cache)


def add_known_conversions(conversions: dict[Any, Any]) -> None:
    """Take conversions `known_conversions` gave (entries of another type are ignored), so
    that converting between those units needs no unit registry."""
    for key, value in conversions.items():
        if isinstance(value, _LinearMap | _Failure) and key not in _conversion_cache:
            _conversion_cache[key] = value
        if isinstance(value, _LinearMap) and isinstance(key, tuple) and len(key) == 3:
            _valid_units.update(unit for unit in key[:2] if isinstance(unit, str))


def convert(value: float, from_unit: str, to_unit: str, molar_mass: float | None = None) -> float:
    """Convert `value` from one UCUM unit to another.

    Mass and substance concentrations convert into each other when `molar_mass` (g/mol)
    is given (creatinine mg/dL <-> umol/L). Raises UnitError when the units are not UCUM
    or not commensurable. Cached per (from_unit, to_unit, molar_mass).

    >>> convert(1.0, "g/dL", "g/L")
    10.0
    >>> round(convert(1.0, "mg/dL", "umol/L", molar_mass=113.12), 2)  # creatinine
    88.4
    """
    if from_unit == to_unit:
        return value
    key = (from_unit, to_unit, molar_mass)
    linear = _conversion_cache.get(key)
    if linear is None:
        linear = _build_linear_map(from_unit, to_unit, molar_mass)
        _conversion_cache[key] = linear
    if isinstance(linear, _Failure):
        raise UnitError(linear.message)
    return value * linear.scale + linear.offset


def _build_linear_map(
    from_unit: str, to_unit: str, molar_mass: float | None
) -> _LinearMap | _Failure:
    for unit in (from_unit, to_unit):
        problem = _ucum_syntax_problem(unit)
        if problem is not None:
            return _Failure(f"unit {unit!r} is not UCUM ({problem})")
    try:
        source = _pint_quantity(from_unit)
        target = _pint_quantity(to_unit)
    except Exception as error:
        return _Failure(f"cannot interpret {from_unit!r} or {to_unit!r} as a quantity: {error}")
    source_per = _denominator_annotations(from_unit)
    target_per = _denominator_annotations(to_unit)
    if source_per != target_per:
        return _Failure(
            f"cannot convert {from_unit!r} to {to_unit!r}: an annotation in a denominator "
            f"says what the value is per ({_describe(Counter(source_per))} vs "
            f"{_describe(Counter(target_per))}), so these are different quantities "
            "(an eGFR per 1.73 m2 of body surface area is not a clearance in mL/min)"
        )
    kinds = _ratio_kinds(from_unit, source), _ratio_kinds(to_unit, target)
    if kinds[0] is not None and kinds[1] is not None and kinds[0].isdisjoint(kinds[1]):
        return _Failure(
            f"cannot convert {from_unit!r} to {to_unit!r}: both are ratios, but of different "
            f"kinds ({_describe_kinds(kinds[0])} vs {_describe_kinds(kinds[1])}); UCUM would "
            "scale one into the other, which is wrong for calibrated scales (HbA1c mmol/mol "
            "is not a tenth of HbA1c %): declare the conversion on the concept "
            "(`conversions:` in the mappings) instead"
        )
    source_arbitrary = _arbitrary_units(source)
    target_arbitrary = _arbitrary_units(target)
    if source_arbitrary != target_arbitrary:
        return _Failure(
            f"cannot convert {from_unit!r} to {to_unit!r}: arbitrary units "
            f"({_describe(source_arbitrary)} vs {_describe(target_arbitrary)}) "
            "are only commensurable with themselves"
        )
    try:
        at_zero = _convert_with_pint(0.0, source, target, molar_mass)
        at_one = _convert_with_pint(1.0, source, target, molar_mass)
    except _NeedsMolarMass:
        return _Failure(
            f"cannot convert {from_unit!r} to {to_unit!r} without a molar mass "
            "(mass and substance amounts)"
        )
    except _Incommensurable as error:
        return _Failure(f"cannot convert {from_unit!r} to {to_unit!r}: {error}")
    except Exception as error:
        return _Failure(f"cannot convert {from_unit!r} to {to_unit!r}: {error}")
    return _LinearMap(scale=at_one - at_zero, offset=at_zero)


def _pint_quantity(unit_text: str) -> Any:
    registry = _pint_registry()
    if unit_text == "1" or _ANNOTATION_ONLY.match(unit_text):
        return registry.Quantity(1.0, "dimensionless")
    quantity = registry.from_ucum(unit_text)
    if not hasattr(quantity, "dimensionality"):  # a bare annotation token
        return registry.Quantity(1.0, "dimensionless")
    return quantity


_TERM_SPLIT = re.compile(r"([./])")


_STANDALONE_ANNOTATION = re.compile(r"\{[^{}]*\}")


def _denominator_annotations(unit_text: str) -> tuple[str, ...]:
    """The annotations a unit divides by in place of a unit (`{1.73_m2}`), sorted.

    UCUM gives annotations no meaning for conversion (UCUM 2.1, section 2.4, "curly
    braces"), but one that stands as a term of its own in a denominator says what the value
    is per (`mL/min/{1.73_m2}`: per 1.73 m2 of body surface area), which makes another
    quantity. One attached to a unit symbol only labels it, wherever it stands: `mg/g{creat}`
    (LOINC's unit for a UACR: mg of albumin per g of creatinine) is mg/g, as UCUM says, and
    `{cells}/uL` is /uL. UCUM reads `.` and `/` left to right with the same precedence: a
    term after `/` divides.
    """
    if "{" not in unit_text:
        return ()
    # Annotations may hold `.` or `/`: blank them out before splitting into terms.
    masked = re.sub(r"\{[^{}]*\}", lambda match: "{" + "_" * (len(match[0]) - 2) + "}", unit_text)
    found: list[str] = []
    dividing = False
    position = 0
    for part in _TERM_SPLIT.split(masked):
        if part in (".", "/"):
            dividing = part == "/"
        elif dividing and _STANDALONE_ANNOTATION.fullmatch(part):
            found.append(unit_text[position : position + len(part)])
        position += len(part)
    return tuple(sorted(found))


def _ratio_kinds(unit_text: str, quantity: Any) -> frozenset[frozenset[str]] | None:
    """For a dimensionless unit, the kinds of ratio it may be read as (None for a unit with
    a dimension): the dimensions its terms cancel out as written (`mg/g` and `g/g`: mass;
    `mmol/mol`: substance; `%`: none, a plain number), and as pint reduces it, which cancels
    a unit divided by itself (`g/g`, `L/L`: a plain number). Two ratios convert when they
    share a kind: `g/g` is `mg/g` x 1000 (both mass: UCUM's mass ratios are one
    dimensionless quantity with units) and, as a plain number, 100 %; `mmol/mol` (HbA1c
    IFCC) never becomes `%` (HbA1c NGSP), a calibrated scale."""
    if not quantity.dimensionless:
        return None
    registry = _pint_registry()
    reduced = set()
    for name in quantity._units:
        dimensionality = registry.get_dimensionality(name)
        if dimensionality:
            reduced.add(str(dimensionality))
    return frozenset({frozenset(reduced), _written_kinds(unit_text)})


def _written_kinds(unit_text: str) -> frozenset[str]:
    """The dimensions of a unit's terms as written, before any cancels out (`g/g`: mass).
    Annotations are dropped (`mg/g{creat}` is mg/g); a term pint cannot read is left out."""
    masked = re.sub(r"\{[^{}]*\}", "", unit_text)
    kinds = set()
    for term in _TERM_SPLIT.split(masked):
        if term in (".", "/", "") or not any(character.isalpha() for character in term):
            continue
        try:
            dimensionality = _pint_quantity(term).dimensionality
        except Exception:  # a term alone may not parse (`10*3` is read whole)
            continue
        if dimensionality:
            kinds.add(str(dimensionality))
    return frozenset(kinds)


def _describe_kinds(kinds: frozenset[frozenset[str]]) -> str:
    """A unit's ratio kinds in words: the most specific first (`a ratio of [mass]`)."""
    return " or ".join(
        "a ratio of " + " and ".join(sorted(kind)) if kind else "a plain number"
        for kind in sorted(kinds, key=lambda kind: (not kind, sorted(kind)))
    )


def _arbitrary_units(quantity: Any) -> Counter[str]:
    registry = _pint_registry()
    arbitrary: Counter[str] = Counter()
    for name, exponent in quantity._units.items():
        _prefix, unit_name, _suffix = registry.parse_unit_name(name)[0]
        if unit_name in _NUMERIC_UNITS:
            continue
        if registry.get_dimensionality(unit_name) or registry.get_dimensionality(name):
            continue
        arbitrary[unit_name] += int(exponent)
    return +arbitrary


def _describe(units: Counter[str]) -> str:
    return ", ".join(sorted(units)) or "none"


class _NeedsMolarMass(Exception):
    pass


class _Incommensurable(Exception):
    pass


def _convert_with_pint(value: float, source: Any, target: Any, molar_mass: float | None) -> float:
    registry = _pint_registry()
    quantity = registry.Quantity(value * source.magnitude, source.units)
    target_units = target.units
    if quantity.dimensionality != target.dimensionality:
        molar_unit = registry.Quantity(1.0, "gram / mole")
        if (quantity / molar_unit).dimensionality == target.dimensionality:
            divide = True
        elif (quantity * molar_unit).dimensionality == target.dimensionality:
            divide = False
        else:
            raise _Incommensurable(f"{quantity.dimensionality} is not {target.dimensionality}")
        if molar_mass is None:
            raise _NeedsMolarMass
        molar = registry.Quantity(molar_mass, "gram / mole")
        quantity = quantity / molar if divide else quantity * molar
    converted = quantity.to(target_units).magnitude / target.magnitude
    return float(converted)
