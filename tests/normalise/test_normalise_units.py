"""UCUM units: validation, aliases, conversions via pint, caching, errors."""

from __future__ import annotations

import math

import pytest
from fresh_interpreter import run_python
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import UnitError
from engine.normalise import Measurement, Terminology, convert, is_valid_ucum, measure, ucum_unit
from engine.normalise import units as units_module


@pytest.mark.parametrize(
    ("value", "from_unit", "to_unit", "molar_mass", "expected"),
    [
        (13.5, "g/dL", "g/L", None, 135.0),
        (135.0, "g/L", "g/dL", None, 13.5),
        (250.0, "10*3/uL", "10*9/L", None, 250.0),
        (250.0, "10*3/mm3", "10*9/L", None, 250.0),
        (1.0, "mg/dL", "umol/L", 113.12, 88.40),  # creatinine
        (1.0, "mg/dL", "umol/L", 584.66, 17.10),  # bilirubin
        (55.0, "%", "1", None, 0.55),
        (1.1, "{INR}", "1", None, 1.1),
        (1.1, "1", "{INR}", None, 1.1),
        (40.0, "U/L", "U/L", None, 40.0),
        (1.0, "k[IU]/mL", "[IU]/mL", None, 1000.0),
        (1.5, "[IU]/mL", "[IU]/L", None, 1500.0),
        (30.0, "s", "min", None, 0.5),
        (37.0, "Cel", "[degF]", None, 98.6),
        (1.0, "mmol/L", "g/L", 16114.0, 16.114),  # haemoglobin as monomer
        # An annotation attached to a unit only labels it (UCUM 2.1, 2.4): LOINC's UACR units
        (850.0, "mg/g{creat}", "mg/g", None, 850.0),
        (96.0, "mg/mmol{creat}", "mg/g", 113.12, 848.66),
        (30.0, "mg/g", "mg/mmol{creat}", 113.12, 3.394),
        (42.0, "mL/min/{1.73_m2}", "mL/s/{1.73_m2}", None, 0.7),
    ],
)
def test_conversions(
    value: float, from_unit: str, to_unit: str, molar_mass: float | None, expected: float
) -> None:
    assert convert(value, from_unit, to_unit, molar_mass) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize(
    ("from_unit", "to_unit", "molar_mass", "message"),
    [
        ("mg/dL", "umol/L", None, "without a molar mass"),
        ("mg", "g/L", None, "cannot convert 'mg' to 'g/L'"),
        ("[IU]/mL", "10*9/L", None, "arbitrary units"),
        ("{copies}/mL", "[IU]/mL", None, "arbitrary units"),
        ("g/LL", "g/L", None, "'g/LL' is not UCUM"),
        ("U/L", "[IU]/L", None, "arbitrary units"),
        # An annotation standing for a unit in a denominator makes another quantity: an
        # eGFR per 1.73 m2 is not a clearance, whatever label its units carry.
        ("mL/min/{1.73_m2}", "mL/min", None, "({1.73_m2} vs none)"),
        ("mL/min{creat}/{1.73_m2}", "mL/min", None, "({1.73_m2} vs none)"),
    ],
)
def test_conversion_errors(
    from_unit: str, to_unit: str, molar_mass: float | None, message: str
) -> None:
    with pytest.raises(UnitError) as raised:
        convert(1.0, from_unit, to_unit, molar_mass)
    assert message in raised.value.message


def test_conversion_is_cached_per_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    convert(2.0, "mg/dL", "umol/L", 99.0)
    calls: list[tuple[str, str]] = []
    original = units_module._build_linear_map

    def counting(from_unit: str, to_unit: str, molar_mass: float | None) -> object:
        calls.append((from_unit, to_unit))
        return original(from_unit, to_unit, molar_mass)

    monkeypatch.setattr(units_module, "_build_linear_map", counting)
    for value in range(100):
        convert(float(value), "mg/dL", "umol/L", 99.0)
    assert calls == []
    with pytest.raises(UnitError):
        convert(1.0, "mg", "g/L")
    with pytest.raises(UnitError):
        convert(1.0, "mg", "g/L")
    assert calls.count(("mg", "g/L")) <= 1


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("g/dL", True),
        ("10*9/L", True),
        ("[IU]/mL", True),
        ("{INR}", True),
        ("%", True),
        ("mm[Hg]", True),
        ("x10^9/L", False),
        ("IU/mL", False),
        ("mEq/L", False),
        ("g/LL", False),
        ("", False),
        (" g/L", False),
    ],
)
def test_is_valid_ucum(text: str, valid: bool) -> None:
    assert is_valid_ucum(text) is valid


def test_ucum_unit_uses_aliases(small_terminology: Terminology) -> None:
    assert ucum_unit("g/dL") == "g/dL"
    assert ucum_unit(" g/dL ") == "g/dL"
    assert ucum_unit("x10^9/L", small_terminology) == "10*9/L"
    assert ucum_unit("X10^9/l", small_terminology) == "10*9/L"
    assert ucum_unit("K/uL", small_terminology) == "10*3/uL"  # alias beats UCUM's kelvin
    with pytest.raises(UnitError) as raised:
        ucum_unit("x10^9/L")
    assert "not UCUM" in raised.value.message


@pytest.mark.parametrize(
    "printed",
    ["mL/min/1.73m2", "ml/min/1.73 m2", "mL/min/1.73m²", "mL/min/1.73m^2", "mL/min/{1.73m2}"],
)
def test_an_egfr_unit_as_laboratories_print_it_is_per_1_73_m2(
    printed: str, real_terminology: Terminology
) -> None:
    assert ucum_unit(printed, real_terminology) == "mL/min/{1.73_m2}"


def test_an_egfr_in_si_units_converts_to_ml_per_min(real_terminology: Terminology) -> None:
    unit = ucum_unit("mL/s/1.73m2", real_terminology)
    assert convert(0.5, unit, "mL/min/{1.73_m2}") == pytest.approx(30.0)


def test_case_insensitive_alias_never_overrides_valid_ucum(real_terminology: Terminology) -> None:
    # units.yaml has "G/L" -> 10*9/L for European cell counts; g/L stays gram per litre
    assert ucum_unit("G/L", real_terminology) == "10*9/L"
    assert ucum_unit("g/L", real_terminology) == "g/L"
    assert ucum_unit("g/l", real_terminology) == "g/l"


UNIT_PAIRS = [
    ("g/dL", "g/L", None),
    ("10*3/uL", "10*9/L", None),
    ("mg/dL", "umol/L", 113.12),
    ("mg/dL", "umol/L", 584.66),
    ("%", "1", None),
    ("[IU]/mL", "[IU]/L", None),
    ("Cel", "[degF]", None),
    ("s", "min", None),
]


@settings(max_examples=200)
@given(
    st.sampled_from(UNIT_PAIRS),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
)
def test_round_trip(pair: tuple[str, str, float | None], value: float) -> None:
    from_unit, to_unit, molar_mass = pair
    there = convert(value, from_unit, to_unit, molar_mass)
    back = convert(there, to_unit, from_unit, molar_mass)
    assert math.isclose(back, value, rel_tol=1e-9, abs_tol=1e-9)


def test_units_of_restored_conversions_are_valid_without_building_the_ucum_parser() -> None:
    """A worker given an earlier run's conversions (`known_conversions`, which carry every unit
    found valid as its identity conversion) checks those units without the UCUM parser."""
    code = (
        "from engine.normalise import units\n"
        "units.ucum_unit('mg/dL')\n"
        "units.convert(1.0, 'g/dL', 'g/L')\n"
        "known = units.known_conversions()\n"
        "print(known[('mg/dL', 'mg/dL', None)].scale, known[('mg/dL', 'mg/dL', None)].offset)\n"
        "units._conversion_cache.clear()\n"
        "units._valid_units.clear()\n"
        "units._ucum_syntax_problem.cache_clear()\n"
        "units._ucum_parser.cache_clear()\n"
        "units.add_known_conversions(known)\n"
        "print(units.ucum_unit('mg/dL'), units.is_valid_ucum('g/dL'), units.is_valid_ucum('g/L'))\n"
        "print(units._ucum_parser.cache_info().currsize)\n"
        "print(units.is_valid_ucum('mg/dl'), units.is_valid_ucum('mcg'))\n"
        "print(units._ucum_parser.cache_info().currsize)\n"
    )
    done = run_python(code)
    assert done.stdout.split("\n")[:4] == ["1.0 0.0", "mg/dL True True", "0", "True False"]
    assert done.stdout.split("\n")[4] == "1"  # a unit not met before is parsed


# ------------------------------------------------------------------ ratios of one kind

CREATININE_MOLAR_MASS = 113.12
"""g/mol: a UACR in mg/mmol is mg of albumin per mmol of creatinine."""

UACR_IN_MG_PER_G = {
    "g/g": 1000.0,
    "mg/g": 1.0,
    "ug/mg": 1.0,
    "g/kg": 1.0,
    "mg/mg": 1000.0,
    "ug/g": 0.001,
    "mg/mmol": 1000.0 / CREATININE_MOLAR_MASS,  # 8.84 mg/g (KDIGO 2012: 3 mg/mmol ~ 30 mg/g)
    "g/mol": 1000.0 / CREATININE_MOLAR_MASS,
}
"""Each UACR unit's value in mg/g. Mass per mass is one quantity in UCUM whatever the
prefixes (g/g, mg/g and ug/mg are dimensionless with units; 1 g/g = 1000 mg/g); mass per
substance converts to it through creatinine's molar mass."""


@settings(max_examples=300)
@given(
    st.sampled_from(sorted(UACR_IN_MG_PER_G)),
    st.sampled_from(sorted(UACR_IN_MG_PER_G)),
    st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
)
def test_uacr_units_convert_as_ucum_says(from_unit: str, to_unit: str, value: float) -> None:
    converted = convert(value, from_unit, to_unit, CREATININE_MOLAR_MASS)
    expected = value * UACR_IN_MG_PER_G[from_unit] / UACR_IN_MG_PER_G[to_unit]
    assert math.isclose(converted, expected, rel_tol=1e-9, abs_tol=1e-12)
    back = convert(converted, to_unit, from_unit, CREATININE_MOLAR_MASS)
    assert math.isclose(back, value, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize(
    ("value", "from_unit", "to_unit", "expected"),
    [
        (0.03, "g/g", "mg/g", 30.0),  # refused before: g/g was read as a plain number only
        (30.0, "mg/g", "g/g", 0.03),
        (0.45, "L/L", "%", 45.0),  # a fraction of one unit is also a plain number
        (0.5, "g/g", "%", 50.0),
        (1.0, "mmol/mol", "umol/mol", 1000.0),
    ],
)
def test_ratios_of_one_kind_convert(
    value: float, from_unit: str, to_unit: str, expected: float
) -> None:
    assert convert(value, from_unit, to_unit) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("from_unit", "to_unit", "kinds"),
    [
        ("mmol/mol", "%", "a ratio of [substance] vs a plain number"),  # HbA1c IFCC vs NGSP
        ("g/g", "mmol/mol", "a ratio of [mass] or a plain number vs a ratio of [substance]"),
        ("mg/g", "%", "a ratio of [mass] vs a plain number"),
    ],
)
def test_ratios_of_different_kinds_do_not_convert(from_unit: str, to_unit: str, kinds: str) -> None:
    with pytest.raises(UnitError) as raised:
        convert(1.0, from_unit, to_unit)
    assert f"different kinds ({kinds})" in raised.value.message


# International units: the WHO International Unit ([IU] = [iU], an arbitrary unit) and the
# enzyme unit U (the IUB 1964 "international unit" of enzyme activity, 1 umol/min) are two
# units that laboratories both write "IU" (haematology QA session 14, finding 6).

INTERNATIONAL_UNITS_PER_LITRE = {
    # as written (unit text, no UCUM code) -> IU per litre for one of it
    "IU/L": 1.0,
    "iu/l": 1.0,
    "IU/l": 1.0,
    "mIU/mL": 1.0,
    "mIU/ml": 1.0,
    "[iU]/L": 1.0,
    "[IU]/L": 1.0,
    "m[iU]/mL": 1.0,
    "m[IU]/mL": 1.0,
    "IU/mL": 1000.0,
    "[IU]/mL": 1000.0,
}


@settings(max_examples=200)
@given(
    st.sampled_from(sorted(INTERNATIONAL_UNITS_PER_LITRE)),
    st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False),
)
def test_international_units_of_a_hormone_convert_to_iu_per_litre(
    real_terminology: Terminology, written: str, value: float
) -> None:
    """hCG in any way of writing the WHO International Unit is that number of IU/L (times
    1000 per mL): never the enzyme unit U/L, which cannot convert to [IU]/L at all."""
    concept = real_terminology.concept("pregnancy-test")
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "19080-1"}]},
        "valueQuantity": {"value": value, "unit": written},
    }
    result = measure(resource, concept, real_terminology)
    assert isinstance(result, Measurement), result
    expected = value * INTERNATIONAL_UNITS_PER_LITRE[written]
    assert result.value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert result.unit == "[IU]/L"


@settings(max_examples=100)
@given(
    st.sampled_from(["IU/L", "iu/l", "U/L"]),
    st.floats(min_value=0, max_value=5e4, allow_nan=False, allow_infinity=False),
)
def test_iu_per_litre_of_an_enzyme_is_the_enzyme_unit(
    real_terminology: Terminology, written: str, value: float
) -> None:
    """ALT "IU/L" is the enzyme unit U/L (= umol/min per litre), the same number."""
    concept = real_terminology.concept("alt")
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1742-6"}]},
        "valueQuantity": {"value": value, "unit": written},
    }
    result = measure(resource, concept, real_terminology)
    assert isinstance(result, Measurement), result
    assert result.value == pytest.approx(value, rel=1e-9, abs=1e-9)
    assert result.unit == "U/L"


def test_an_alias_with_two_readings_takes_the_one_that_fits(real_terminology: Terminology) -> None:
    assert real_terminology.unit_readings("IU/L") == ("[IU]/L", "U/L")
    assert ucum_unit("IU/L", real_terminology) == "[IU]/L"  # no concept: the first reading
    assert ucum_unit("IU/L", real_terminology, lambda unit: unit == "U/L") == "U/L"
    assert ucum_unit("IU/L", real_terminology, lambda unit: False) == "[IU]/L"
    assert ucum_unit("[iU]/L", real_terminology) == "[iU]/L"  # UCUM as written
    assert convert(3.0, "[iU]/L", "[IU]/L") == 3.0
    with pytest.raises(UnitError):
        convert(3.0, "U/L", "[IU]/L")
