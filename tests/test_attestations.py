"""The attestation file (`engine.attestations`): what it reads, and bad files named by line and
field."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.attestations import load_attestations
from engine.errors import AttestationError

KNOWN = ("informed-consent", "relapse-after-response")


def entry(patient: str, by: str, answer: str, trial: str | None = None) -> str:
    trial_line = f"    trial: {trial}\n" if trial else ""
    return (
        f"  - patient: {patient}\n{trial_line}    by: {by}\n    answers:\n"
        f"      relapse-after-response: {answer}\n"
    )


def refused(tmp_path: Path, text: str) -> AttestationError:
    path = tmp_path / "attestations.yaml"
    path.write_text(text)
    with pytest.raises(AttestationError) as caught:
        load_attestations(path, KNOWN)
    return caught.value


def test_two_answers_that_disagree_for_one_patient_are_refused(tmp_path: Path) -> None:
    """The later one used to win silently: an outdated 'true' above a 'false' could make a
    patient eligible. Both lines are named; the same answer twice is no conflict."""
    text = "attestations:\n" + entry("p", "Dr A", "true") + entry("p", "Dr B", "false")
    error = refused(tmp_path, text)
    assert (error.location.line, error.location.field) == (9, "answers.relapse-after-response")
    assert error.message == (
        "patient p's 'relapse-after-response' is answered false here and true on line 5 (by "
        "Dr A): remove the answer that no longer holds"
    )
    path = tmp_path / "agree.yaml"
    path.write_text("attestations:\n" + entry("p", "Dr A", "true") + entry("p", "Dr B", "true"))
    assert load_attestations(path, KNOWN)["p"]["relapse-after-response"].answer is True


def test_a_bad_answer_is_named_at_its_own_line(tmp_path: Path) -> None:
    error = refused(tmp_path, "attestations:\n" + entry("p", "Dr A", "maybe"))
    assert (error.location.line, error.location.field) == (5, "answers.relapse-after-response")
    assert error.message == "an answer must be true or false"


@pytest.mark.parametrize(
    ("patient", "by", "message"),
    [
        ("5", "Dr A", "'patient' (a patient id, as text) is required, found 5"),
        ("p", "[a, b]", "'by' (who attests, as text) is required, found ['a', 'b']"),
    ],
)
def test_a_patient_or_attester_that_is_not_text_is_named_as_found(
    tmp_path: Path, patient: str, by: str, message: str
) -> None:
    error = refused(tmp_path, "attestations:\n" + entry(patient, by, "true"))
    assert (error.location.line, error.location.field) == (2, "attestations[0]")
    assert error.message == message
