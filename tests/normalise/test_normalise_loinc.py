"""LOINC code syntax and the mod 10 (Luhn) check digit (LOINC Users' Guide, "Calculating Mod 10
Check Digits")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.normalise.loinc import loinc_check_digit, loinc_code_problem


@pytest.mark.parametrize(
    "code",
    [
        "718-7",  # Hemoglobin [Mass/volume] in Blood
        "753-4",  # Neutrophils [#/volume] in Blood by Manual count
        "751-8",  # Neutrophils [#/volume] in Blood by Automated count
        "2160-0",  # Creatinine [Mass/volume] in Serum or Plasma
        "89247-1",  # ECOG Performance Status score
        "59408-5",  # Oxygen saturation by pulse oximetry
        "LA6576-8",  # answer: Positive (shape only)
        "LP7753-9",  # part (shape only)
    ],
)
def test_real_codes_are_accepted(code: str) -> None:
    assert loinc_code_problem(code) is None


def test_the_users_guide_example() -> None:
    # The Users' Guide works 12345 through to the check digit 5.
    assert loinc_check_digit("12345") == 5


def test_a_mistyped_check_digit_names_the_valid_code() -> None:
    problem = loinc_code_problem("753-3")
    assert problem is not None
    assert "mod 10" in problem and "753-4" in problem


@pytest.mark.parametrize("code", ["7533", "753-", "-4", "753-34", "LA6576", "abc-1", "753 -4"])
def test_malformed_codes_are_not_loinc(code: str) -> None:
    problem = loinc_code_problem(code)
    assert problem is not None and "not a LOINC code" in problem


def test_non_digits_are_refused() -> None:
    with pytest.raises(ValueError, match="digits"):
        loinc_check_digit("75a")


@given(st.text(alphabet="0123456789", min_size=1, max_size=7))
def test_the_computed_check_digit_validates(digits: str) -> None:
    assert loinc_code_problem(f"{digits}-{loinc_check_digit(digits)}") is None


@given(
    st.text(alphabet="0123456789", min_size=1, max_size=7),
    st.integers(min_value=0, max_value=6),
    st.integers(min_value=1, max_value=9),
)
def test_every_single_mistyped_digit_is_caught(digits: str, position: int, shift: int) -> None:
    position %= len(digits)
    mistyped = (
        digits[:position] + str((int(digits[position]) + shift) % 10) + digits[position + 1 :]
    )
    assert loinc_code_problem(f"{mistyped}-{loinc_check_digit(digits)}") is not None
