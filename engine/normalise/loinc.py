"""LOINC code syntax and the mod 10 check digit.

A LOINC term code is a number of up to seven digits, a hyphen and a check digit: `718-7`.
The check digit is LOINC's "Mod 10" algorithm (LOINC Users' Guide, appendix "Calculating
Mod 10 Check Digits"), which is the Luhn algorithm: from the right, every other digit
starting with the rightmost is doubled (the digits of the product summed), everything is
added, and the check digit brings the sum up to the next multiple of 10. It catches every
single mistyped digit and most swaps of neighbours, so `753-3` (for `753-4`) is caught.

LOINC's other identifiers (answers `LA...`, parts `LP...`, groups `LG...`, answer lists
`LL...`) carry a check digit computed another way; only their syntax is checked here.
"""

from __future__ import annotations

import re

__all__ = ["loinc_check_digit", "loinc_code_problem"]

LOINC_URI = "http://loinc.org"
_TERM_CODE = re.compile(r"^(\d{1,7})-(\d)$")
_OTHER_IDENTIFIER = re.compile(r"^L[APGL]\d{1,9}-\d$")


def loinc_check_digit(digits: str) -> int:
    """The mod 10 check digit of the numeric part of a LOINC term code (`"718"` -> 7)."""
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"not a string of digits: {digits!r}")
    total = 0
    for position, character in enumerate(reversed(digits)):
        value = int(character)
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return (10 - total % 10) % 10


def loinc_code_problem(code: str) -> str | None:
    """Why `code` is not a well-formed LOINC code, or None when it is.

    Term codes (`718-7`) must have the right check digit; answer, part, group and answer-list
    identifiers (`LA6576-8`) only the right shape.
    """
    term = _TERM_CODE.match(code)
    if term is not None:
        digits, check = term.groups()
        expected = loinc_check_digit(digits)
        if int(check) != expected:
            return (
                f"LOINC code {code!r} fails the mod 10 check digit: "
                f"{digits}-{expected} would be valid (mistyped?)"
            )
        return None
    if _OTHER_IDENTIFIER.match(code):
        return None
    return f"{code!r} is not a LOINC code (digits, a hyphen and a check digit, e.g. 718-7)"
