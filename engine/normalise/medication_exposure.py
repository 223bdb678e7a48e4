"""Medication exposure: when a drug was in use, and at what daily dose, from FHIR resources.

Pure functions over one resource (a plain dict). The rules (documented in
docs/criteria-language.md, "Medication use"):

Period of use
- MedicationStatement / MedicationAdministration: `effectivePeriod` start to end;
  `effectiveDateTime` is one day. A period without an end, or a single date, on a resource
  whose status says it is still going on (`active`, `in-progress`) runs to the as-of date;
  on any other status (`on-hold`, `stopped`, `completed`...) its end is unknown.
- MedicationRequest: from `dispenseRequest.validityPeriod.start`, else `authoredOn`; it ends
  after `dispenseRequest.expectedSupplyDuration` x (1 + `numberOfRepeatsAllowed`) when the
  supply duration is given, else at `validityPeriod.end`; an order with neither is
  open-ended: while `active` it runs to the as-of date, otherwise (`on-hold`, `completed`,
  `stopped`, ...) its end is unknown.
- A period whose end is unknown proves use on its first day only; whether it lasted longer
  is unknown (the evaluator says so rather than guess). Such a period has no `end`, whichever
  fields it was read from (`use_in_days` places it in a window).

Daily dose (MedicationRequest.dosageInstruction, MedicationStatement.dosage)
- dose = doseAndRate[0].doseQuantity (a doseRange is not a single dose: unusable);
  doses per day = timing.repeat.frequency (default 1) per period x periodUnit (s, min, h, d,
  wk, mo = 30 d, a = 365 d); `asNeeded` dosage has no regular daily dose. Dosage lines with
  the same `sequence` (or none) are taken together and summed (split doses); lines of
  different sequences (a taper) make the daily dose unusable.
- Doses are exact fractions of a milligram: every number is read as the decimal it is
  written as, and a mass unit converts by its exact decimal scale (1 g = 1000 mg), so that a
  dose equal to a threshold compares equal.
- A dose in a mass unit is used as is. A dose counted in units of the product (no unit,
  `tablet`, `{tbl}`, `capsule`) is multiplied by the strength of a single-ingredient
  product: the referenced Medication's `ingredient[0].strength` (a mass per one unit), else
  the strength in an RxNorm clinical-drug name (`prednisone 5 MG Oral Tablet`: 5 mg; RxNorm
  names are normalised as ingredient, strength, dose form). Anything else is unusable.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeGuard

from engine.dataclass_init import direct_init
from engine.errors import UnitError
from engine.normalise.terminology import exact_decimal
from engine.normalise.units import convert
from engine.resource_types import MEDICATION_ONGOING, code_of

__all__ = [
    "DOSE_UNIT",
    "MAY_HAVE_LASTED",
    "DailyDose",
    "ExposurePeriod",
    "daily_dose",
    "exposure_period",
    "milligrams",
    "unknown_end_text",
    "use_in_days",
]

DOSE_UNIT = "mg"
MAY_HAVE_LASTED = "it may have lasted into the window"
"""How `unknown_end_text` ends: what explanations recognise an unknown use by."""
"""Daily doses are returned in milligrams."""

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
_PERIOD_DAYS = {
    "s": Fraction(1, 86400),
    "min": Fraction(1, 1440),
    "h": Fraction(1, 24),
    "d": Fraction(1),
    "wk": Fraction(7),
    "mo": Fraction(30),
    "a": Fraction(365),
}
_PRODUCT_UNITS = frozenset(
    {"", "1", "tablet", "tablets", "tab", "{tbl}", "{tablet}", "capsule", "{capsule}", "cap"}
)
_MASS_UNITS = {"mcg": "ug", "µg": "ug", "μg": "ug"}
_RXNORM_STRENGTH = re.compile(r"^[A-Za-z][A-Za-z ,-]*? (\d+(?:\.\d+)?) (MG|MCG|G)(?: |$)")


@direct_init
@dataclass(frozen=True)
class ExposurePeriod:
    """Days a resource shows the drug in use. `end` None: still in use on the as-of date
    when `end_known`, else an end the record does not give.

    `end_known` False: only `start` is proven (an ended order without supply information, a
    stopped statement with a single date). `rule` says which fields decided, for explanations.
    """

    start: dt.date
    end: dt.date | None
    end_known: bool
    rule: str

    def last_day(self, as_of: dt.date) -> dt.date:
        """The last day of proven use, as of a day."""
        if self.end is None:
            return as_of if self.end_known else self.start
        return min(self.end, as_of)


@dataclass(frozen=True)
class DailyDose:
    value: Fraction
    """Milligrams per day, exactly."""
    shown: str


def milligrams(value: float, unit: str) -> Fraction:
    """A mass in mg, exactly (UnitError when `unit` is not a mass): `value` as the decimal
    it is written as, times the unit's scale, a decimal (UCUM's metric prefixes; pint
    computes it in floating point, so it is read to 12 significant digits: 1e-06, not
    1.0000000000000002e-06)."""
    scale = convert(1.0, unit, DOSE_UNIT)
    return exact_decimal(value) * Fraction(f"{scale:.12g}")


def _day(text: object) -> dt.date | None:
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def _duration_days(duration: object) -> float | None:
    if not _is_mapping(duration):
        return None
    value, unit = duration.get("value"), duration.get("code") or duration.get("unit")
    if not isinstance(value, int | float) or not isinstance(unit, str):
        return None
    days = {"d": 1.0, "day": 1.0, "days": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}.get(unit)
    return None if days is None else value * days


def exposure_period(resource: Mapping[str, Any]) -> ExposurePeriod | str:
    """The period of use a medication resource shows, or why it has none (no usable date)."""
    status = code_of(resource, "status")
    ongoing = status in MEDICATION_ONGOING
    if resource.get("resourceType") == "MedicationRequest":
        return _request_period(resource, ongoing)
    period = resource.get("effectivePeriod")
    if _is_mapping(period):
        start, end = _day(period.get("start")), _day(period.get("end"))
        if start is None:
            return "effectivePeriod has no usable start"
        if end is not None:
            return ExposurePeriod(start, end, True, "effectivePeriod")
        return ExposurePeriod(start, None, ongoing, f"effectivePeriod without end, {status}")
    start = _day(resource.get("effectiveDateTime"))
    if start is None:
        return "no usable effective[x] date"
    if resource.get("resourceType") == "MedicationAdministration":
        return ExposurePeriod(start, start, True, "effectiveDateTime")
    return ExposurePeriod(start, None, ongoing, f"effectiveDateTime, {status}")


def use_in_days(
    period: ExposurePeriod, first_day: dt.date | None, last_day: dt.date, as_of: dt.date
) -> bool | None:
    """Whether a period of use touches the days `first_day` to `last_day` (`first_day` None:
    from the start of the record): True when it proves use on one of them, False when it
    surely does not (begun after them, or ended before them), None when only its unknown end
    could reach into them (begun before them, end not in the record)."""
    if period.start > last_day:
        return False
    if first_day is None or period.last_day(as_of) >= first_day:
        return True
    return None if not period.end_known else False


def unknown_end_text(period: ExposurePeriod) -> str:
    """Why a period with an unknown end, begun before a window, may be use in it (after the
    resource's reference)."""
    return (
        f"({period.rule}) began {period.start.isoformat()}, before the window, and its end is "
        f"not known: {MAY_HAVE_LASTED}"
    )


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    """`isinstance(value, Mapping)`, answering a parsed JSON object (a dict) and a missing
    field (None) without the ABC's check (a Python-level `__instancecheck__` in 3.11)."""
    if type(value) is dict:
        return True
    return value is not None and isinstance(value, Mapping)


def _request_period(resource: Mapping[str, Any], ongoing: bool) -> ExposurePeriod | str:
    dispense = resource.get("dispenseRequest")
    dispense = dispense if _is_mapping(dispense) else {}
    validity = dispense.get("validityPeriod")
    validity = validity if _is_mapping(validity) else {}
    start = _day(validity.get("start")) or _day(resource.get("authoredOn"))
    if start is None:
        return "no usable authoredOn or dispenseRequest.validityPeriod.start"
    supply = _duration_days(dispense.get("expectedSupplyDuration"))
    if supply is not None:
        repeats = dispense.get("numberOfRepeatsAllowed")
        fills = 1 + (repeats if isinstance(repeats, int) and repeats > 0 else 0)
        end = start + dt.timedelta(days=max(round(supply * fills) - 1, 0))
        return ExposurePeriod(
            start, end, True, f"expectedSupplyDuration x {fills} fill{'s' * (fills > 1)}"
        )
    validity_end = _day(validity.get("end"))
    if validity_end is not None:
        return ExposurePeriod(start, validity_end, True, "dispenseRequest.validityPeriod")
    status = resource.get("status")
    return ExposurePeriod(start, None, ongoing, f"open-ended order, {status}")


def daily_dose(
    resource: Mapping[str, Any], medication: Mapping[str, Any] | None
) -> DailyDose | str:
    """The daily dose in mg, or why it cannot be read. `medication`: the referenced
    Medication resource, if any (for the strength of a product counted in tablets)."""
    if resource.get("resourceType") == "MedicationAdministration":
        return "a MedicationAdministration records one administration, not a daily dose"
    lines = resource.get("dosageInstruction") or resource.get("dosage")
    if not isinstance(lines, list) or not lines:
        return "no dosage"
    sequences = {line.get("sequence") for line in lines if isinstance(line, Mapping)}
    if len(sequences) > 1:
        return "dosage lines of different sequences (a changing dose)"
    total = Fraction(0)
    parts: list[str] = []
    for line in lines:
        if not isinstance(line, Mapping):
            return "a dosage line is not an object"
        one = _line_dose(line, resource, medication)
        if isinstance(one, str):
            return one
        total += one[0]
        parts.append(one[1])
    return DailyDose(total, " + ".join(parts))


def _line_dose(
    line: Mapping[str, Any], resource: Mapping[str, Any], medication: Mapping[str, Any] | None
) -> tuple[Fraction, str] | str:
    if line.get("asNeededBoolean") is True or "asNeededCodeableConcept" in line:
        return "taken as needed: no regular daily dose"
    rates = line.get("doseAndRate")
    dose = rates[0].get("doseQuantity") if isinstance(rates, list) and rates else None
    if not isinstance(dose, Mapping) or not isinstance(dose.get("value"), int | float):
        return "no doseAndRate.doseQuantity"
    repeat = (line.get("timing") or {}).get("repeat")
    if not isinstance(repeat, Mapping):
        return "no timing.repeat"
    frequency = repeat.get("frequency", 1)
    period, unit = repeat.get("period"), repeat.get("periodUnit")
    if not isinstance(period, int | float) or period <= 0 or unit not in _PERIOD_DAYS:
        return "no timing.repeat period and periodUnit"
    if not isinstance(frequency, int) or frequency < 1:
        return "timing.repeat.frequency is not a positive integer"
    per_day = frequency / (exact_decimal(period) * _PERIOD_DAYS[unit])
    amount = _dose_in_mg(dose, resource, medication)
    if isinstance(amount, str):
        return amount
    milligrams, shown = amount
    return milligrams * per_day, f"{shown} x {frequency}/{period:g} {unit}"


def _dose_in_mg(
    dose: Mapping[str, Any], resource: Mapping[str, Any], medication: Mapping[str, Any] | None
) -> tuple[Fraction, str] | str:
    value = dose["value"]
    unit = str(dose.get("code") or dose.get("unit") or "")
    unit = _MASS_UNITS.get(unit, unit)
    if unit.lower() not in _PRODUCT_UNITS:
        try:
            return milligrams(value, unit), f"{value:g} {unit}"
        except UnitError:
            return f"dose unit {unit!r} is neither a mass nor a count of the product"
    strength = _strength(resource, medication)
    if isinstance(strength, str):
        return strength
    return exact_decimal(value) * strength, f"{value:g} x {float(strength):g} mg"


def _strength(resource: Mapping[str, Any], medication: Mapping[str, Any] | None) -> Fraction | str:
    if medication is not None:
        ingredients = medication.get("ingredient")
        if isinstance(ingredients, list) and len(ingredients) == 1:
            ratio = ingredients[0].get("strength") if isinstance(ingredients[0], Mapping) else None
            numerator = ratio.get("numerator") if isinstance(ratio, Mapping) else None
            denominator = ratio.get("denominator") if isinstance(ratio, Mapping) else None
            if (
                isinstance(numerator, Mapping)
                and isinstance(numerator.get("value"), int | float)
                and (
                    not isinstance(denominator, Mapping)
                    or denominator.get("value") in (1, 1.0, None)
                )
            ):
                unit = str(numerator.get("code") or numerator.get("unit") or "")
                try:
                    return milligrams(numerator["value"], _MASS_UNITS.get(unit, unit))
                except UnitError:
                    return f"Medication strength unit {unit!r} is not a mass"
    for coding in _codings(resource, medication):
        if coding.get("system") == RXNORM and isinstance(coding.get("display"), str):
            display = coding["display"]
            found = _RXNORM_STRENGTH.match(display)
            if found and "/" not in display:
                factor = {"MG": Fraction(1), "MCG": Fraction(1, 1000), "G": Fraction(1000)}
                return Fraction(found.group(1)) * factor[found.group(2)]
    return "the dose counts tablets or units, and no single-ingredient strength is known"


def _codings(
    resource: Mapping[str, Any], medication: Mapping[str, Any] | None
) -> Sequence[Mapping[str, Any]]:
    concept = resource.get("medicationCodeableConcept")
    if not isinstance(concept, Mapping) and medication is not None:
        concept = medication.get("code")
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    return [c for c in codings if isinstance(c, Mapping)] if isinstance(codings, list) else []
