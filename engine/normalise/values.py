"""Read an Observation's value as a number in the concept's canonical unit, or as answers.

`measure` never guesses: a quantity without a unit, a unit that does not convert, a
censored value (`comparator: "<"`), a coded value the mappings do not know - each is a
`DataProblem` naming the field, which the evaluator turns into "unknown (missing data)".
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from engine.dataclass_init import direct_init
from engine.errors import UnitError
from engine.normalise.terminology import Concept, Terminology, UnitConversion
from engine.normalise.units import convert, is_valid_ucum, ucum_unit

__all__ = ["DataProblem", "Measurement", "compiled_jsonpath", "measure"]

UCUM_SYSTEM = "http://unitsofmeasure.org"
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_VALUE_KEYS = (
    "valueQuantity",
    "valueInteger",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)


@direct_init
@dataclass(frozen=True)
class Measurement:
    """A usable value: a number in the concept's unit and/or the answer concepts it belongs to.

    `reference_low` / `reference_high` come from the resource's own referenceRange,
    converted to the concept's unit (None when absent); the concept's default range is the
    caller's fallback. `field` says where the value was read.
    """

    value: float | None
    unit: str | None
    answer_concepts: frozenset[str]
    reference_low: float | None
    reference_high: float | None
    field: str
    comparator: str | None = None
    """For a censored result (`< 20 IU/mL`): the true value lies on that side of `value`."""
    reported: tuple[float, str] | None = None
    """The number and UCUM unit as the result gave them, when converted to the concept's
    unit (a per-unit test compares in the unit of report)."""


@dataclass(frozen=True)
class DataProblem:
    """Why a resource's value cannot be used, naming the field."""

    message: str
    field: str


@functools.lru_cache(maxsize=1024)
def compiled_jsonpath(expression: str) -> Any:
    """The compiled jsonpath-ng expression (extended syntax, filters allowed), cached."""
    from jsonpath_ng.ext.parser import parse

    return parse(expression)


def measure(
    observation: Mapping[str, Any], concept: Concept, terminology: Terminology
) -> Measurement | DataProblem:
    """Read the value of `observation` for `concept`.

    The value is taken from `concept.value_path` when set; else from value[x] when the
    Observation's code is in the concept (or no component is); else from the first
    component whose code is in the concept. A number that is not finite, or outside the
    concept's plausible range, is an implausible value: a data problem, never evidence.
    """
    result = _measure(observation, concept, terminology)
    if isinstance(result, DataProblem) or result.value is None:
        return result
    return _implausible(result, concept) or result


def _implausible(measurement: Measurement, concept: Concept) -> DataProblem | None:
    """The data problem of a value no patient can have (None when it is plausible)."""
    value = measurement.value
    assert value is not None
    unit = f" {measurement.unit}" if measurement.unit and measurement.unit != "1" else ""
    if not math.isfinite(value):
        return DataProblem(
            f"implausible value {value}{unit}: not a finite number", measurement.field
        )
    low, high = concept.plausible_low, concept.plausible_high
    if (low is not None and value < low) or (high is not None and value > high):
        shown = f"{low if low is not None else '-inf'} to {high if high is not None else 'inf'}"
        return DataProblem(
            f"implausible value {value:g}{unit}: outside the plausible range of "
            f"{concept.id} ({shown}{unit})",
            measurement.field,
        )
    return None


def _measure(
    observation: Mapping[str, Any], concept: Concept, terminology: Terminology
) -> Measurement | DataProblem:
    path = concept.value_path or _inherited_value_path(observation, concept, terminology)
    if path is not None:
        return _measure_at_path(observation, concept, terminology, path)
    top_level_matches = _code_in_concept(observation.get("code"), concept.id, terminology)
    components = observation.get("component")
    matching_components: list[tuple[int, Mapping[str, Any]]] = []
    if isinstance(components, list):
        matching_components = [
            (index, component)
            for index, component in enumerate(components)
            if isinstance(component, Mapping)
            and _code_in_concept(component.get("code"), concept.id, terminology)
        ]
    sources: list[tuple[str, Mapping[str, Any]]] = []
    if top_level_matches or not matching_components:
        sources.append(("", observation))
    sources.extend((f"component[{index}].", component) for index, component in matching_components)
    for prefix, element in sources:
        key = _value_key(element)
        if key is not None:
            return _read_value(element[key], prefix + key, element, concept, terminology)
    prefix, element = sources[0]
    absent = element.get("dataAbsentReason")
    if isinstance(absent, Mapping):
        reason = _codeable_text(absent)
        return DataProblem(f"no value: data absent ({reason})", f"{prefix}dataAbsentReason")
    return DataProblem("no value", f"{prefix}value[x]")


def _inherited_value_path(
    observation: Mapping[str, Any], concept: Concept, terminology: Terminology
) -> str | None:
    """The value_path of a narrower concept the Observation's code belongs to (a site concept
    included in `concept`), so a site can say where it keeps a value without new criteria."""
    if not terminology.has_value_paths():
        return None
    code = observation.get("code")
    codings = code.get("coding") if isinstance(code, Mapping) else None
    if not isinstance(codings, list):
        return None
    members: set[str] = set()
    for coding in codings:
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            system = coding.get("system")
            members |= terminology.concepts_of_coding(
                system if isinstance(system, str) else None, coding["code"]
            )
    return terminology.value_path_within(members, concept.id)


def _measure_at_path(
    observation: Mapping[str, Any], concept: Concept, terminology: Terminology, path: str
) -> Measurement | DataProblem:
    matches = compiled_jsonpath(path).find(observation)
    if not matches:
        return DataProblem(f"no value at value_path {path!r}", path)
    match = matches[0]
    field = _path_text(match.full_path)
    node = match.value
    if isinstance(node, Mapping):
        key = _value_key(node)
        if key is not None:  # an Extension or component holding a value[x]
            return _read_value(node[key], f"{field}.{key}", node, concept, terminology)
        if "value" in node:
            return _read_value(node, field, observation, concept, terminology, "valueQuantity")
        if "coding" in node or "text" in node:
            return _read_value(
                node, field, observation, concept, terminology, "valueCodeableConcept"
            )
        return DataProblem(f"value_path {path!r} points at an element without a value", field)
    kinds = {bool: "valueBoolean", int: "valueInteger", float: "valueInteger", str: "valueString"}
    kind = kinds.get(type(node))
    if kind is None:
        return DataProblem(f"value_path {path!r} points at something that is not a value", field)
    return _read_value(node, field, observation, concept, terminology, kind)


def _read_value(
    value: Any,
    field: str,
    element: Mapping[str, Any],
    concept: Concept,
    terminology: Terminology,
    kind: str | None = None,
) -> Measurement | DataProblem:
    kind = kind or field.rsplit(".", 1)[-1]
    if kind == "valueQuantity":
        return _read_quantity(value, field, element, concept, terminology)
    if kind == "valueInteger":
        return _read_plain_number(value, field, element, concept, terminology)
    if kind == "valueCodeableConcept":
        return _read_codeable(value, field, element, concept, terminology)
    if kind == "valueString":
        return _read_string(value, field, element, concept, terminology)
    if kind == "valueBoolean":
        if not isinstance(value, bool):
            return DataProblem(f"{field} is not true or false", field)
        answers = terminology.concepts_of_text("true" if value else "false")
        if not answers:
            return DataProblem(f"{field} {value} maps to no answer concept", field)
        return Measurement(None, None, answers, None, None, field)
    return DataProblem(f"{kind} values are not supported for {concept.id}", field)


# ---------------------------------------------------------------------- quantities


_BOUND_COMPARATORS = frozenset({"<", "<=", ">", ">="})
"""Quantity comparators that bound the true value (UCUM conversions keep the side)."""


def _read_quantity(
    quantity: Any,
    field: str,
    element: Mapping[str, Any],
    concept: Concept,
    terminology: Terminology,
) -> Measurement | DataProblem:
    if not isinstance(quantity, Mapping):
        return DataProblem(f"{field} is not a Quantity", field)
    number = quantity.get("value")
    if not _is_number(number):
        return DataProblem(f"{field}.value is missing or not a number", f"{field}.value")
    comparator = quantity.get("comparator")
    if comparator is not None and comparator not in _BOUND_COMPARATORS:
        return DataProblem(
            f"{field}.comparator {comparator!r} ({number} {quantity.get('unit') or ''}".rstrip()
            + ") gives no bound on the value",
            f"{field}.comparator",
        )
    fits = None if concept.unit is None else functools.partial(_converts_for, concept)
    unit = _unit_of(quantity, field, terminology, fits)
    if isinstance(unit, DataProblem):
        return unit
    if concept.unit is None or (unit is None and _is_unity(concept.unit)):
        low, high = _reference_range(element, unit, None, None, terminology)
        return Measurement(
            float(number), unit or concept.unit, frozenset(), low, high, field, comparator
        )
    if unit is None:
        return DataProblem(
            f"{field} has no unit; {concept.id} needs a unit convertible to {concept.unit}",
            f"{field}.unit",
        )
    try:
        value = to_concept_unit(float(number), unit, concept)
    except UnitError as error:
        return DataProblem(
            f"{field}.unit {_as_written(quantity, unit)} cannot be converted to "
            f"{concept.unit}: {error.message}",
            f"{field}.unit",
        )
    low, high = _reference_range(
        element, unit, concept.unit, concept.molar_mass, terminology, concept.conversions
    )
    reported = (float(number), unit) if unit != concept.unit else None
    return Measurement(value, concept.unit, frozenset(), low, high, field, comparator, reported)


def to_concept_unit(number: float, unit: str, concept: Concept) -> float:
    """A number in `unit` as a number in the concept's canonical unit: by the concept's own
    declared conversion from that unit (`conversions:` in the mappings, such as the IFCC-NGSP
    master equation for HbA1c), else by UCUM. Raises UnitError when neither applies."""
    for conversion in concept.conversions:
        if conversion.from_unit == unit:
            return conversion.factor * number + conversion.offset
    assert concept.unit is not None
    return convert(number, unit, concept.unit, concept.molar_mass)


def _converts_for(concept: Concept, unit: str) -> bool:
    """Whether a number in `unit` converts to the concept's unit (`to_concept_unit`): which
    reading of an alias with several is meant (`ucum_unit`)."""
    try:
        to_concept_unit(1.0, unit, concept)
    except UnitError:
        return False
    return True


def _as_written(quantity: Mapping[str, Any], unit: str) -> str:
    """The unit as the result wrote it, with the UCUM unit it was read as when that differs:
    `'IU/L' (read as UCUM 'U/L')`, `'mg/dL'`."""
    for written in (quantity.get("unit"), quantity.get("code")):
        if isinstance(written, str) and written.strip():
            if written.strip() == unit:
                return repr(written)
            return f"{written!r} (read as UCUM {unit!r})"
    return repr(unit)


def _unit_of(
    quantity: Mapping[str, Any],
    field: str,
    terminology: Terminology,
    fits: Callable[[str], bool] | None = None,
) -> str | DataProblem | None:
    """The UCUM unit of a Quantity: its code when the system is UCUM, else its unit text,
    else its code (`fits`: which reading of an alias with several is meant, `ucum_unit`). A
    unit text that is a display ("mg/g creatinine") beside a code that is UCUM
    (`mg/g{creat}`) without a system is read by the code, not refused; the problem names the
    text when neither is UCUM."""
    code = quantity.get("code")
    system = quantity.get("system")
    text = quantity.get("unit")
    if (
        isinstance(code, str)
        and isinstance(system, str)
        and terminology.canonical_system(system) == UCUM_SYSTEM
        and is_valid_ucum(code)
    ):
        return code
    first_problem: DataProblem | None = None
    for candidate, where in ((text, "unit"), (code, "code")):
        if isinstance(candidate, str) and candidate.strip():
            try:
                return ucum_unit(candidate, terminology, fits)
            except UnitError:
                first_problem = first_problem or DataProblem(
                    f"{field}.{where} {candidate!r} is not UCUM and has no alias in the mappings",
                    f"{field}.{where}",
                )
    return first_problem


def _reference_range(
    element: Mapping[str, Any],
    value_unit: str | None,
    target_unit: str | None,
    molar_mass: float | None,
    terminology: Terminology,
    conversions: tuple[UnitConversion, ...] = (),
) -> tuple[float | None, float | None]:
    """The element's normal range in the target unit; a bound without unit is in the value's."""
    ranges = element.get("referenceRange")
    if not isinstance(ranges, list):
        return None, None
    for candidate in ranges:
        if not isinstance(candidate, Mapping) or not _is_normal_range(candidate):
            continue
        bounds = [
            _bound(
                candidate.get(name), value_unit, target_unit, molar_mass, terminology, conversions
            )
            for name in ("low", "high")
        ]
        if bounds[0] is not None or bounds[1] is not None:
            return bounds[0], bounds[1]
    return None, None


def _is_normal_range(reference_range: Mapping[str, Any]) -> bool:
    range_type = reference_range.get("type")
    if not isinstance(range_type, Mapping):
        return True
    codes = {
        coding.get("code")
        for coding in range_type.get("coding") or []
        if isinstance(coding, Mapping)
    }
    return not codes or "normal" in codes


def _bound(
    quantity: Any,
    value_unit: str | None,
    target_unit: str | None,
    molar_mass: float | None,
    terminology: Terminology,
    conversions: tuple[UnitConversion, ...] = (),
) -> float | None:
    if not isinstance(quantity, Mapping) or not _is_number(quantity.get("value")):
        return None
    number = float(quantity["value"])
    fits = None if target_unit is None else functools.partial(_converts_to, target_unit, molar_mass)
    unit = _unit_of(quantity, "referenceRange", terminology, fits)
    if isinstance(unit, DataProblem):
        return None
    unit = unit or value_unit
    if target_unit is None:
        return number
    if unit is None:
        return None
    for conversion in conversions:
        if conversion.from_unit == unit:
            return conversion.factor * number + conversion.offset
    try:
        return convert(number, unit, target_unit, molar_mass)
    except UnitError:
        return None


def _converts_to(target_unit: str, molar_mass: float | None, unit: str) -> bool:
    """Whether a number in `unit` converts to `target_unit` (a reference range's bound)."""
    try:
        convert(1.0, unit, target_unit, molar_mass)
    except UnitError:
        return False
    return True


# ---------------------------------------------------------------------- other value types


def _read_plain_number(
    number: Any,
    field: str,
    element: Mapping[str, Any],
    concept: Concept,
    terminology: Terminology,
) -> Measurement | DataProblem:
    if not _is_number(number):
        return DataProblem(f"{field} is not a number", field)
    if concept.unit is not None and not _is_unity(concept.unit):
        return DataProblem(
            f"{field} {number} has no unit; {concept.id} is measured in {concept.unit}", field
        )
    low, high = _reference_range(element, None, None, None, terminology)
    return Measurement(float(number), concept.unit, frozenset(), low, high, field)


def _read_codeable(
    value: Any,
    field: str,
    element: Mapping[str, Any],
    concept: Concept,
    terminology: Terminology,
) -> Measurement | DataProblem:
    if not isinstance(value, Mapping):
        return DataProblem(f"{field} is not a CodeableConcept", field)
    answers: set[str] = set()
    number: float | None = None
    for coding in value.get("coding") or ():
        if not isinstance(coding, Mapping):
            continue
        system, code = coding.get("system"), coding.get("code")
        if not isinstance(code, str):
            continue
        system_text = system if isinstance(system, str) else None
        answers |= terminology.concepts_of_coding(system_text, code)
        if number is None:
            number = terminology.answer_value(concept.id, system_text, code)
    text = value.get("text")
    if isinstance(text, str) and text.strip():
        answers |= terminology.concepts_of_text(text)
    if not answers and number is None:
        return DataProblem(
            f"{field} {_codeable_text(value)} is not an answer the mappings know "
            f"(no answer concept, no score for {concept.id})",
            field,
        )
    low, high = _reference_range(element, None, None, None, terminology)
    unit = concept.unit if number is not None else None
    return Measurement(number, unit, frozenset(answers), low, high, field)


def _read_string(
    value: Any,
    field: str,
    element: Mapping[str, Any],
    concept: Concept,
    terminology: Terminology,
) -> Measurement | DataProblem:
    if not isinstance(value, str):
        return DataProblem(f"{field} is not a string", field)
    answers = terminology.concepts_of_text(value)
    stripped = value.strip()
    number: float | None = None
    if _PLAIN_NUMBER.match(stripped) and (concept.unit is None or _is_unity(concept.unit)):
        number = float(stripped)
    if not answers and number is None:
        if _PLAIN_NUMBER.match(stripped):  # a number, but the concept is measured in a unit
            return DataProblem(
                f"{field} {value!r} is a number without a unit; {concept.id} needs a unit "
                f"convertible to {concept.unit}",
                field,
            )
        return DataProblem(f"{field} {value!r} is neither a known answer nor a plain number", field)
    unit = concept.unit if number is not None else None
    return Measurement(number, unit, answers, None, None, field)


# ---------------------------------------------------------------------- helpers


def _value_key(element: Mapping[str, Any]) -> str | None:
    for key in _VALUE_KEYS:
        if key in element:
            return key
    return None


def _code_in_concept(codeable: Any, concept_id: str, terminology: Terminology) -> bool:
    if not isinstance(codeable, Mapping):
        return False
    for coding in codeable.get("coding") or ():
        if isinstance(coding, Mapping):
            code = coding.get("code")
            system = coding.get("system")
            if isinstance(code, str) and concept_id in terminology.concepts_of_coding(
                system if isinstance(system, str) else None, code
            ):
                return True
    return False


def _codeable_text(codeable: Mapping[str, Any]) -> str:
    parts = []
    for coding in codeable.get("coding") or ():
        if isinstance(coding, Mapping):
            text = f"{coding.get('system', '?')}|{coding.get('code', '?')}"
            if coding.get("display"):
                text += f" {coding['display']!r}"
            parts.append(text)
    if codeable.get("text"):
        parts.append(repr(codeable["text"]))
    return ", ".join(parts) or "(empty)"


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@functools.lru_cache(maxsize=256)
def _is_unity(unit: str) -> bool:
    """True for units equal to the pure number 1 (`1`, `{INR}`, `{score}`)."""
    try:
        return math.isclose(convert(1.0, "1", unit), 1.0)
    except UnitError:
        return False


def _path_text(path: Any) -> str:
    return str(path).replace(".[", "[")
