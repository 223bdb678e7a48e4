"""Concept matching: exact codes, prefixes, ICD ranges, includes, local codes, answers, text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.normalise import CodeRange, Terminology

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ATC = "http://www.whocc.no/atc"
LOCAL_LAB = "http://hospital.example.org/lab"


def test_exact_code(small_terminology: Terminology) -> None:
    assert small_terminology.concepts_of_coding(LOINC, "718-7") == {"hemoglobin"}
    assert small_terminology.concepts_of_coding(LOINC, "38483-4") == {"creatinine"}
    assert small_terminology.concepts_of_coding(LOINC, "0000-0") == frozenset()
    assert small_terminology.concepts_of_coding(SNOMED, "718-7") == frozenset()


def test_coding_without_system_matches_nothing(small_terminology: Terminology) -> None:
    assert small_terminology.concepts_of_coding(None, "718-7") == frozenset()


def test_equivalent_system_uri(small_terminology: Terminology) -> None:
    assert small_terminology.concepts_of_coding("urn:oid:2.16.840.1.113883.6.96", "32273002") == {
        "itp"
    }


def test_prefix_and_include(small_terminology: Terminology) -> None:
    assert small_terminology.concepts_of_coding(ATC, "B01AC06") == {
        "antiplatelets",
        "antithrombotics",
    }
    assert small_terminology.concepts_of_coding(ATC, "B01AA03") == {
        "anticoagulants",
        "antithrombotics",
    }
    assert small_terminology.concepts_of_coding(ATC, "B01AB01") == frozenset()
    assert small_terminology.containing_concepts("antiplatelets") == {
        "antiplatelets",
        "antithrombotics",
    }


def test_icd_range_compares_the_category(small_terminology: Terminology) -> None:
    assert small_terminology.concepts_of_coding(ICD10CM, "C50.9") == {"malignancy"}
    assert small_terminology.concepts_of_coding(ICD10CM, "C50.911") == {"malignancy"}
    assert small_terminology.concepts_of_coding(ICD10CM, "C00") == {"malignancy"}
    assert small_terminology.concepts_of_coding(ICD10CM, "C97") == {"malignancy"}
    assert small_terminology.concepts_of_coding(ICD10CM, "C7A.010") == {"malignancy"}
    assert small_terminology.concepts_of_coding(ICD10CM, "D00.0") == frozenset()
    assert small_terminology.concepts_of_coding(ICD10CM, "D68.61") == {"coagulation-disorder"}
    # ITP D69.3 is outside D65-D68, but is an exact ITP code
    assert small_terminology.concepts_of_coding(ICD10CM, "D69.3") == {"itp"}


def test_icd_codes_ignore_dots_and_case(small_terminology: Terminology) -> None:
    assert small_terminology.concepts_of_coding(ICD10CM, "D693") == {"itp"}
    assert small_terminology.concepts_of_coding(ICD10CM, "d69.3") == {"itp"}
    assert small_terminology.concepts_of_coding(ICD10CM, "c509") == {"malignancy"}


def test_local_codes(small_terminology: Terminology) -> None:
    assert small_terminology.concepts_of_coding(LOCAL_LAB, "HGB") == {"hemoglobin"}
    assert small_terminology.concepts_of_coding(LOCAL_LAB, "CREA") == {"creatinine"}
    assert small_terminology.concepts_of_coding(LOCAL_LAB, "hgb") == frozenset()


def test_lookups_are_memoised(small_terminology: Terminology) -> None:
    first = small_terminology.concepts_of_coding(ATC, "B01AC06")
    assert small_terminology.concepts_of_coding(ATC, "B01AC06") is first


def test_answer_value(small_terminology: Terminology) -> None:
    assert small_terminology.answer_value("ecog", LOINC, "LA9623-5") == 1.0
    assert small_terminology.answer_value("ecog", LOINC, "LA9622-7") == 0.0
    assert small_terminology.answer_value("ecog", LOINC, "LA0000-0") is None
    assert small_terminology.answer_value("ecog", None, "LA9623-5") is None
    assert small_terminology.answer_value("hemoglobin", LOINC, "LA9623-5") is None


def test_concepts_of_text(small_terminology: Terminology) -> None:
    assert small_terminology.concepts_of_text("Positive") == {"positive"}
    assert small_terminology.concepts_of_text("  NOT   detected ") == {"negative"}
    assert small_terminology.concepts_of_text("detected") == {"positive"}
    assert small_terminology.concepts_of_text("weird") == frozenset()


def test_unit_aliases(small_terminology: Terminology) -> None:
    assert small_terminology.unit_alias("x10^9/L") == "10*9/L"
    assert small_terminology.unit_alias("X10^9/l") is None
    assert small_terminology.unit_alias_ignoring_case("X10^9/l") == "10*9/L"


ICD_CATEGORY = st.builds(
    lambda letter, first, second: f"{letter}{first}{second}",
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    st.sampled_from("0123456789"),
    st.sampled_from("0123456789A"),
)


@given(ICD_CATEGORY, ICD_CATEGORY, ICD_CATEGORY, st.sampled_from(["", ".0", ".91", ".A1"]))
def test_icd_range_membership_follows_ordering(
    bound_one: str, bound_two: str, category: str, subcode: str
) -> None:
    low, high = sorted([bound_one, bound_two])
    code_range = CodeRange(low=low, high=high, text=f"{low}-{high}")
    code = (category + subcode).replace(".", "")
    assert code_range.contains(code) == (low <= category <= high)


@given(ICD_CATEGORY, ICD_CATEGORY)
def test_icd_range_bounds_are_inclusive(bound_one: str, bound_two: str) -> None:
    low, high = sorted([bound_one, bound_two])
    code_range = CodeRange(low=low, high=high, text=f"{low}-{high}")
    assert code_range.contains(low)
    assert code_range.contains(high + "9")
