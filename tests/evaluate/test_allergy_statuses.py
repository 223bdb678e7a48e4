"""An AllergyIntolerance's verificationStatus and clinicalStatus read as a Condition's are:
unconfirmed keeps an atom unknown ("confirm"), refuted and entered-in-error never count, and
inactive / resolved without an end date cover the onset only (FHIR R4
allergyintolerance-verification, allergyintolerance-clinical)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from language_support import MAPPINGS, atom_trial, condition, evaluate, write_trial

from engine.evaluate.outcome import Truth

MI = "22298006"
PENICILLIN = "7980"
ALLERGY_MAPPINGS = MAPPINGS.replace(
    "systems:\n",
    "systems:\n  rxnorm: {uri: http://www.nlm.nih.gov/research/umls/rxnorm}\n",
).replace(
    "concepts:\n",
    "concepts:\n  penicillin:\n    display: Penicillin\n    codes: {rxnorm: ['7980']}\n",
)
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def allergy(
    id: str, clinical: str | None = "active", verification: str | None = "confirmed"
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "id": id,
        "patient": {"reference": "Patient/p"},
        "code": {
            "coding": [
                {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": PENICILLIN}
            ]
        },
        "onsetDateTime": "2010-03-01",
    }
    if clinical is not None:
        resource["clinicalStatus"] = {"coding": [{"system": ALLERGY_CLINICAL, "code": clinical}]}
    if verification is not None:
        coding = {"system": ALLERGY_VERIFICATION, "code": verification}
        resource["verificationStatus"] = {"coding": [coding]}
    return resource


def allergy_trial(folder: Path, window: str) -> Path:
    return atom_trial(
        folder, f"resource: AllergyIntolerance\nconcept: penicillin\n{window}", ALLERGY_MAPPINGS
    )


@pytest.mark.parametrize("verification", ["unconfirmed", "presumed"])
def test_an_unconfirmed_allergy_keeps_the_atom_unknown_naming_it(
    tmp_path: Path, verification: str
) -> None:
    [outcome] = evaluate(allergy_trial(tmp_path, ""), allergy("pen", verification=verification))
    assert outcome.truth is Truth.UNKNOWN
    assert (
        f"AllergyIntolerance/pen: {verification} allergy or intolerance "
        f"(verificationStatus {verification}): confirm"
    ) in outcome.reason


def test_an_unconfirmed_allergy_beside_a_confirmed_one_is_met_by_the_confirmed(
    tmp_path: Path,
) -> None:
    [outcome] = evaluate(
        allergy_trial(tmp_path, ""),
        allergy("doubt", verification="unconfirmed"),
        allergy("sure"),
    )
    assert outcome.truth is Truth.MET
    assert outcome.evidence == ("AllergyIntolerance/sure",)


@pytest.mark.parametrize(
    ("clinical", "verification", "truth"),
    [
        ("active", "confirmed", Truth.MET),
        ("active", None, Truth.MET),
        ("active", "refuted", Truth.NOT_MET),
        (None, "entered-in-error", Truth.NOT_MET),
    ],
)
def test_refuted_and_entered_in_error_allergies_never_count(
    tmp_path: Path, clinical: str | None, verification: str | None, truth: Truth
) -> None:
    [outcome] = evaluate(allergy_trial(tmp_path, ""), allergy("pen", clinical, verification))
    assert outcome.truth is truth


ACTIVE_IN_THE_LAST_YEAR = """\
- id: allergy
  kind: inclusion
  text: t
  expression:
    resource: AllergyIntolerance
    concept: penicillin
    within: P1Y
    timing: active
- id: infarction
  kind: inclusion
  text: t
  expression:
    resource: Condition
    concept: myocardial-infarction
    within: P1Y
    timing: active
"""


@pytest.mark.parametrize(
    ("clinical", "truth"),
    [
        ("active", Truth.MET),
        (None, Truth.MET),
        ("inactive", Truth.NOT_MET),
        ("resolved", Truth.NOT_MET),
    ],
)
def test_an_inactive_or_resolved_allergy_covers_its_onset_only_as_a_condition_does(
    tmp_path: Path, clinical: str | None, truth: Truth
) -> None:
    infarction = condition(MI, "2010-03-01")
    if clinical is not None:
        infarction["clinicalStatus"] = {"coding": [{"code": clinical}]}
    path = write_trial(tmp_path, ACTIVE_IN_THE_LAST_YEAR, ALLERGY_MAPPINGS)
    allergy_outcome, condition_outcome = evaluate(path, allergy("pen", clinical), infarction)
    assert allergy_outcome.truth is truth
    assert condition_outcome.truth is truth


@pytest.mark.parametrize("clinical", ["active", "inactive", "resolved"])
def test_an_allergy_of_any_clinical_status_is_history(tmp_path: Path, clinical: str) -> None:
    [outcome] = evaluate(allergy_trial(tmp_path, "within: ever\n"), allergy("pen", clinical))
    assert outcome.truth is Truth.MET
