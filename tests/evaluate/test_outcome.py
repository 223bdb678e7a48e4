"""Kleene three-valued logic with reasons: truth tables and algebraic properties."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from engine.criteria.model import ManualAtom
from engine.evaluate.outcome import (
    Cited,
    Outcome,
    Truth,
    UnknownReason,
    combine_all,
    combine_any,
    negate,
    shared,
    with_atom,
)

MET = Outcome(Truth.MET, "met", evidence=("Observation/a",))
NOT_MET = Outcome(Truth.NOT_MET, "not met", evidence=("Observation/b",))
MISSING = Outcome(Truth.UNKNOWN, "no result", missing=("hemoglobin",))
MANUAL = Outcome(Truth.UNKNOWN, "ask", manual=("informed-consent",))

outcomes = st.sampled_from([MET, NOT_MET, MISSING, MANUAL])


def test_all_is_not_met_as_soon_as_one_operand_is_not_met() -> None:
    result = combine_all([MET, MISSING, NOT_MET])
    assert result.truth is Truth.NOT_MET
    assert result.evidence == ("Observation/b",)


def test_all_is_unknown_with_both_reasons_kept_apart() -> None:
    result = combine_all([MET, MISSING, MANUAL])
    assert result.truth is Truth.UNKNOWN
    assert result.unknown_reasons == {UnknownReason.MISSING_DATA, UnknownReason.MANUAL_REVIEW}
    assert result.missing == ("hemoglobin",)
    assert result.manual == ("informed-consent",)


def test_any_is_met_by_record_evidence_even_with_a_manual_residue() -> None:
    result = combine_any([MANUAL, MET])
    assert result.truth is Truth.MET
    assert result.manual == ()


def test_any_without_evidence_leaves_the_manual_residue() -> None:
    result = combine_any([NOT_MET, MANUAL])
    assert result.truth is Truth.UNKNOWN
    assert result.unknown_reasons == {UnknownReason.MANUAL_REVIEW}


def test_known_outcomes_have_no_unknown_reasons() -> None:
    assert MET.unknown_reasons == frozenset()
    assert NOT_MET.unknown_reasons == frozenset()


@given(outcomes)
def test_double_negation_keeps_truth_and_reasons(outcome: Outcome) -> None:
    twice = negate(negate(outcome))
    assert twice.truth is outcome.truth
    assert twice.unknown_reasons == outcome.unknown_reasons


@given(st.lists(outcomes, min_size=1, max_size=6))
def test_de_morgan(operands: list[Outcome]) -> None:
    left = negate(combine_all(operands))
    right = combine_any([negate(operand) for operand in operands])
    assert left.truth is right.truth
    assert left.unknown_reasons == right.unknown_reasons


@given(st.lists(outcomes, min_size=1, max_size=6))
def test_order_does_not_change_truth(operands: list[Outcome]) -> None:
    assert combine_all(operands).truth is combine_all(operands[::-1]).truth
    assert combine_any(operands).truth is combine_any(operands[::-1]).truth


@given(st.lists(outcomes, min_size=1, max_size=6))
def test_all_matches_kleene_minimum(operands: list[Outcome]) -> None:
    rank = {Truth.NOT_MET: 0, Truth.UNKNOWN: 1, Truth.MET: 2}
    expected = min(operands, key=lambda outcome: rank[outcome.truth]).truth
    assert combine_all(operands).truth is expected
    expected_any = max(operands, key=lambda outcome: rank[outcome.truth]).truth
    assert combine_any(operands).truth is expected_any


def _fresh(outcome: Outcome) -> Outcome:
    """An equal outcome that is another object (so not shared)."""
    return dataclasses.replace(outcome)


@given(st.lists(outcomes, min_size=1, max_size=6), st.booleans())
def test_combinations_of_shared_outcomes_are_made_once_and_equal_those_made_anew(
    operands: list[Outcome], negated: bool
) -> None:
    kept = [shared(_fresh(operand)) for operand in operands]
    fresh = [_fresh(operand) for operand in operands]
    for combine in (combine_all, combine_any):
        first = combine(kept, "label")
        again = combine(list(kept), "label")
        anew = combine(fresh, "label")
        assert again is first  # shared operands: made once
        assert anew is not first and anew == first
        assert first.children == tuple(fresh)
        assert combine(kept, "other label") == combine(fresh, "other label")
        if negated:
            assert negate(first, "not") is negate(first, "not")
            assert negate(first, "not") == negate(anew, "not")
    # one operand that is not shared: made anew
    mixed = combine_all([*kept[:-1], fresh[-1]], "label")
    assert mixed is not combine_all([*kept[:-1], fresh[-1]], "label")
    assert mixed == combine_all(fresh, "label")


def test_with_atom_is_replace_with_the_atom_and_cited() -> None:
    atom = ManualAtom(id="consent", question="Consent?")
    cited = (Cited("Observation/a", {"resourceType": "Observation", "id": "a"}),)
    values: dict[str, object] = {
        "truth": Truth.UNKNOWN,
        "reason": "why",
        "label": "label",
        "evidence": ("Observation/a",),
        "missing": ("hemoglobin",),
        "manual": ("consent",),
        "children": (MET,),
        "atom": None,
        "cited": (Cited("Condition/c", {}),),
        "unavailable": "MedicationStatement not exported by the server",
    }
    # every field is set above, so a field added to Outcome fails here until with_atom has it
    assert set(values) == {each.name for each in dataclasses.fields(Outcome)}
    outcome = Outcome(**values)  # type: ignore[arg-type]
    for made, expected in (
        (with_atom(outcome, atom, cited), dataclasses.replace(outcome, atom=atom, cited=cited)),
        (with_atom(outcome, atom), dataclasses.replace(outcome, atom=atom)),
    ):
        for each in dataclasses.fields(Outcome):
            assert getattr(made, each.name) == getattr(expected, each.name)
