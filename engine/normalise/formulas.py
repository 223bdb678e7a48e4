"""Clinical formulas: computed values usable wherever a measured value is.

Each formula is one pure function over plain numbers in fixed units plus one `Formula` entry
in `FORMULAS` that says, for every input, where it comes from (a measurement concept and the
unit the function wants, the patient's age or sex), the plausible range of each input and of
the result, the unit of the result, its version and its published source. Adding a formula =
one function + one registry entry; `docs/criteria-language.md` ("Computed values") lists them.

Nothing here reads resources: `engine.evaluate.computed` gathers the inputs from a patient's
record (latest usable value in each input's window) and calls `Formula.compute`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "FORMULAS",
    "Formula",
    "FormulaInput",
    "InputKind",
    "albumin_creatinine_ratio",
    "body_mass_index",
    "body_surface_area_mosteller",
    "cockcroft_gault_creatinine_clearance",
    "egfr_ckd_epi_2021_creatinine",
    "egfr_ckd_epi_2021_creatinine_cystatin_c",
    "formula",
    "prednisone_equivalent_dose",
]

FEMALE = "female"
MALE = "male"


class InputKind(StrEnum):
    MEASUREMENT = "measurement"
    """The latest usable Observation of `concept` in the input's window, in `unit`."""
    AGE = "age"
    """Whole years, on the day of the formula's first measurement input."""
    SEX = "sex"
    """Patient.gender, `female` or `male`; any other value makes the formula unusable."""


@dataclass(frozen=True)
class FormulaInput:
    name: str
    kind: InputKind
    concept: str | None = None
    """For measurements: the concept id in the mappings."""
    unit: str | None = None
    """For measurements: the UCUM unit the function receives (converted from the record)."""
    plausible: tuple[float, float] | None = None
    """Inclusive bounds in `unit`; a value outside is unusable (a unit slip, a typo)."""


@dataclass(frozen=True)
class Formula:
    """A registered formula: its inputs, result unit, plausible range, version and source."""

    id: str
    display: str
    version: str
    source: str
    unit: str
    """UCUM unit of the result."""
    inputs: tuple[FormulaInput, ...]
    function: Callable[..., float]
    """Called with one keyword argument per input name."""
    plausible: tuple[float, float]
    """Inclusive bounds of a believable result, in `unit`."""

    @property
    def measurement_inputs(self) -> tuple[FormulaInput, ...]:
        return tuple(item for item in self.inputs if item.kind is InputKind.MEASUREMENT)

    def compute(self, values: Mapping[str, float | str]) -> float | str:
        """The result, or why there is none (an input or the result outside its bounds)."""
        for item in self.inputs:
            value = values.get(item.name)
            if value is None:
                return f"input {item.name} is missing"
            if item.kind is InputKind.SEX and value not in (FEMALE, MALE):
                return f"{self.display} needs sex female or male, the record has {value!r}"
            if item.plausible is not None and isinstance(value, int | float):
                low, high = item.plausible
                if not low <= value <= high:
                    unit = f" {item.unit}" if item.unit else ""
                    return (
                        f"{item.name} {value:g}{unit} is outside the plausible range "
                        f"{low:g}-{high:g}{unit}"
                    )
        result = self.function(**{item.name: values[item.name] for item in self.inputs})
        low, high = self.plausible
        if not (math.isfinite(result) and low <= result <= high):
            return (
                f"the computed {result:g} {self.unit} is outside the plausible range "
                f"{low:g}-{high:g} {self.unit}"
            )
        return result


# --------------------------------------------------------------------------- the formulas


def egfr_ckd_epi_2021_creatinine(creatinine: float, age: float, sex: str) -> float:
    """eGFR (mL/min/1.73 m2), CKD-EPI 2021 creatinine equation without race.

    Inker LA, Eneanya ND, Coresh J, et al. New creatinine- and cystatin C-based equations to
    estimate GFR without race. N Engl J Med 2021;385:1737-1749:
    142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age [x 1.012 if female],
    Scr in mg/dL, k = 0.7 (female) / 0.9 (male), a = -0.241 (female) / -0.302 (male).
    """
    female = sex == FEMALE
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine / kappa
    result: float = 142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.200 * 0.9938**age
    return result * 1.012 if female else result


def egfr_ckd_epi_2021_creatinine_cystatin_c(
    creatinine: float, cystatin_c: float, age: float, sex: str
) -> float:
    """eGFR (mL/min/1.73 m2), CKD-EPI 2021 creatinine-cystatin C equation without race.

    Inker et al., N Engl J Med 2021;385:1737-1749: 135 x min(Scr/k, 1)^a x
    max(Scr/k, 1)^-0.544 x min(Scys/0.8, 1)^-0.323 x max(Scys/0.8, 1)^-0.778 x 0.9961^age
    [x 0.963 if female]; Scr mg/dL, Scys mg/L, k = 0.7 / 0.9, a = -0.219 (female) / -0.144.
    """
    female = sex == FEMALE
    kappa, alpha = (0.7, -0.219) if female else (0.9, -0.144)
    ratio = creatinine / kappa
    cystatin = cystatin_c / 0.8
    result: float = (
        135
        * min(ratio, 1) ** alpha
        * max(ratio, 1) ** -0.544
        * min(cystatin, 1) ** -0.323
        * max(cystatin, 1) ** -0.778
        * 0.9961**age
    )
    return result * 0.963 if female else result


def cockcroft_gault_creatinine_clearance(
    creatinine: float, age: float, weight: float, sex: str
) -> float:
    """Creatinine clearance (mL/min), Cockcroft-Gault, with actual body weight.

    Cockcroft DW, Gault MH. Prediction of creatinine clearance from serum creatinine.
    Nephron 1976;16:31-41: (140 - age) x weight (kg) / (72 x Scr (mg/dL)) [x 0.85 if female].
    """
    result = (140 - age) * weight / (72 * creatinine)
    return result * 0.85 if sex == FEMALE else result


def body_mass_index(weight: float, height: float) -> float:
    """Body mass index (kg/m2) = weight (kg) / height (m) squared (WHO, Quetelet index)."""
    return weight / height**2


def body_surface_area_mosteller(weight: float, height: float) -> float:
    """Body surface area (m2), Mosteller: sqrt(height (cm) x weight (kg) / 3600).

    Mosteller RD. Simplified calculation of body-surface area. N Engl J Med 1987;317:1098.
    """
    return math.sqrt(height * weight / 3600)


def albumin_creatinine_ratio(urine_albumin: float, urine_creatinine: float) -> float:
    """Urine albumin/creatinine ratio (mg/g) from its parts: albumin (mg/L) / creatinine (g/L).

    KDIGO 2012 Clinical Practice Guideline for the Evaluation and Management of CKD, ch. 1.4
    (ACR in mg/g; 30 mg/g = 3 mg/mmol).
    """
    return urine_albumin / urine_creatinine


def prednisone_equivalent_dose(dose: float, factor: float) -> float:
    """Prednisone-equivalent dose (mg): the drug's dose (mg) x its equivalence factor.

    The factor (mg of prednisone per mg of the drug) comes from the mappings' equivalence
    table (`dose_equivalents`), see `engine.normalise.medication_exposure`.
    """
    return dose * factor


def _formulas(*formulas: Formula) -> dict[str, Formula]:
    return {entry.id: entry for entry in formulas}


_CREATININE = FormulaInput(
    "creatinine", InputKind.MEASUREMENT, "creatinine", "mg/dL", plausible=(0.1, 25)
)
_AGE = FormulaInput("age", InputKind.AGE, plausible=(18, 120))
_SEX = FormulaInput("sex", InputKind.SEX)
_WEIGHT = FormulaInput("weight", InputKind.MEASUREMENT, "body-weight", "kg", plausible=(20, 400))

FORMULAS: dict[str, Formula] = _formulas(
    Formula(
        id="egfr-ckd-epi-2021-creatinine",
        display="CKD-EPI 2021 (creatinine, race-free)",
        version="2021",
        source="Inker LA et al. N Engl J Med 2021;385:1737-1749",
        unit="mL/min/{1.73_m2}",
        inputs=(_CREATININE, _AGE, _SEX),
        function=egfr_ckd_epi_2021_creatinine,
        plausible=(1, 200),
    ),
    Formula(
        id="egfr-ckd-epi-2021-creatinine-cystatin-c",
        display="CKD-EPI 2021 (creatinine and cystatin C, race-free)",
        version="2021",
        source="Inker LA et al. N Engl J Med 2021;385:1737-1749",
        unit="mL/min/{1.73_m2}",
        inputs=(
            _CREATININE,
            FormulaInput(
                "cystatin_c", InputKind.MEASUREMENT, "cystatin-c", "mg/L", plausible=(0.2, 15)
            ),
            _AGE,
            _SEX,
        ),
        function=egfr_ckd_epi_2021_creatinine_cystatin_c,
        plausible=(1, 200),
    ),
    Formula(
        id="creatinine-clearance-cockcroft-gault",
        display="Cockcroft-Gault (actual body weight)",
        version="1976",
        source="Cockcroft DW, Gault MH. Nephron 1976;16:31-41",
        unit="mL/min",
        inputs=(_CREATININE, _AGE, _WEIGHT, _SEX),
        function=cockcroft_gault_creatinine_clearance,
        plausible=(1, 300),
    ),
    Formula(
        id="body-mass-index",
        display="weight / height squared",
        version="WHO",
        source="WHO. Obesity: preventing and managing the global epidemic. TRS 894, 2000",
        unit="kg/m2",
        inputs=(
            _WEIGHT,
            FormulaInput("height", InputKind.MEASUREMENT, "body-height", "m", plausible=(1, 2.5)),
        ),
        function=body_mass_index,
        plausible=(8, 150),
    ),
    Formula(
        id="body-surface-area-mosteller",
        display="Mosteller body surface area",
        version="1987",
        source="Mosteller RD. N Engl J Med 1987;317:1098",
        unit="m2",
        inputs=(
            _WEIGHT,
            FormulaInput(
                "height", InputKind.MEASUREMENT, "body-height", "cm", plausible=(100, 250)
            ),
        ),
        function=body_surface_area_mosteller,
        plausible=(0.8, 3.5),
    ),
    Formula(
        id="albumin-creatinine-ratio",
        display="urine albumin / urine creatinine",
        version="KDIGO 2012",
        source="KDIGO 2012 CKD guideline, Kidney Int Suppl 2013;3:1-150, ch. 1.4",
        unit="mg/g",
        inputs=(
            FormulaInput(
                "urine_albumin",
                InputKind.MEASUREMENT,
                "urine-albumin",
                "mg/L",
                plausible=(0, 20000),
            ),
            FormulaInput(
                "urine_creatinine",
                InputKind.MEASUREMENT,
                "urine-creatinine",
                "g/L",
                plausible=(0.01, 10),
            ),
        ),
        function=albumin_creatinine_ratio,
        plausible=(0, 50000),
    ),
)
"""Every formula criteria may name (`computed: {formula: <id>}`), by id."""


def formula(formula_id: str) -> Formula:
    """The registered formula; KeyError naming the known ones if there is none."""
    try:
        return FORMULAS[formula_id]
    except KeyError:
        raise KeyError(
            f"unknown formula '{formula_id}'; known formulas: {', '.join(sorted(FORMULAS))}"
        ) from None
