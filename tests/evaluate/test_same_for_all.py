"""A part of a criterion that reads only concepts (and manual items) answers the same for every
patient holding none of it: that outcome is made once and reused (`engine.evaluate.nodes.Reads`).
These tests check that the reuse never answers for a patient it does not apply to."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

from language_support import AS_OF, condition, write_trial

from engine.attestations import Attestation
from engine.evaluate.nodes import AnyNode, Reads
from engine.evaluate.outcome import Outcome, Truth
from engine.evaluate.patient import CriterionResult, CriterionVerdict
from engine.record import UNIDENTIFIED_CONDITION, UNIDENTIFIED_MEDICATION
from engine.screening import screen_patient
from engine.sources.base import PatientResources
from engine.trial import load_trial

CRITERIA = """\
- id: c
  kind: exclusion
  text: t
  expression:
    any:
      - resource: Condition
        concept: myocardial-infarction
      - manual:
          id: asked
          question: Anything else?
"""


def outcome(
    path: Path,
    *resources: dict[str, Any],
    answers: dict[str, Attestation] | None = None,
    unavailable: frozenset[str] = frozenset(),
    as_of: dt.date = AS_OF,
) -> Outcome:
    criteria = replace(load_trial(path), unavailable_types=unavailable)
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    listed = [patient, *resources]
    source = PatientResources("p", listed, [None] * len(listed), "test")
    (result,) = screen_patient(criteria, source, as_of, answers).evaluation.results
    return result.outcome


def test_the_part_knows_what_it_reads(tmp_path: Path) -> None:
    root = load_trial(write_trial(tmp_path, CRITERIA)).criteria[0].root
    assert isinstance(root, AnyNode)
    assert root.reads == Reads(  # (and the Conditions whose diagnosis cannot be told)
        frozenset({"myocardial-infarction", UNIDENTIFIED_CONDITION}),
        frozenset({"Condition"}),
        frozenset({"asked"}),
    )


def test_a_condition_whose_diagnosis_cannot_be_told_is_read(tmp_path: Path) -> None:
    """A text-only Condition may be the diagnosis: the part is evaluated for its patient,
    and unknown (haematology QA session 14, finding 3), not the shared outcome."""
    path = write_trial(tmp_path, CRITERIA)
    shared = outcome(path)
    text_only = condition("22298006", "2025-01-01")
    text_only["code"] = {"text": "heart attack in 2019"}
    found = outcome(path, text_only)
    assert found is not shared
    assert found.truth is Truth.UNKNOWN
    assert (
        "Condition/condition-22298006-2025-01-01: its diagnosis ('heart attack in 2019') has "
        "no code the mappings know: which diagnosis it is cannot be told"
    ) in found.children[0].reason


def test_patients_holding_none_of_it_share_one_outcome(tmp_path: Path) -> None:
    path = write_trial(tmp_path, CRITERIA)
    first, second = outcome(path), outcome(path)
    assert first.truth is Truth.UNKNOWN
    assert first == second


def test_a_patient_holding_the_concept_is_evaluated(tmp_path: Path) -> None:
    path = write_trial(tmp_path, CRITERIA)
    outcome(path)
    found = outcome(path, condition("22298006", "2025-01-01"))
    assert found.truth is Truth.MET
    assert found.evidence == ("Condition/condition-22298006-2025-01-01",)


def test_an_answered_manual_item_is_evaluated(tmp_path: Path) -> None:
    path = write_trial(tmp_path, CRITERIA)
    outcome(path)
    answer = Attestation("asked", True, "Dr Who", None)
    found = outcome(path, answers={"asked": answer})
    assert found.truth is Truth.MET
    assert "attested by Dr Who" in found.reason


def test_an_unavailable_type_is_evaluated(tmp_path: Path) -> None:
    path = write_trial(tmp_path, CRITERIA)
    outcome(path)
    found = outcome(path, unavailable=frozenset({"Condition"}))
    assert found.truth is Truth.UNKNOWN
    assert "not exported by the server" in found.reason


def test_each_as_of_day_has_its_own_outcome(tmp_path: Path) -> None:
    path = write_trial(tmp_path, CRITERIA)
    earlier = outcome(path, as_of=dt.date(2024, 1, 1))
    later = outcome(path)
    assert "up to 2024-01-01" in earlier.children[0].reason
    assert "up to 2025-08-01" in later.children[0].reason


WHOLE_TYPE = """\
- id: c
  kind: exclusion
  text: t
  expression:
    any:
      - resource: AllergyIntolerance
        where: ["$[?($.criticality == 'high')]"]
      - resource: Condition
        concept: myocardial-infarction
"""


def allergy(criticality: str) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "id": f"allergy-{criticality}",
        "patient": {"reference": "Patient/p"},
        "criticality": criticality,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
        "recordedDate": "2025-01-01",
    }


def test_an_atom_without_a_concept_reads_its_whole_type(tmp_path: Path) -> None:
    root = load_trial(write_trial(tmp_path, WHOLE_TYPE)).criteria[0].root
    assert isinstance(root, AnyNode)
    assert root.reads == Reads(
        frozenset({"myocardial-infarction", UNIDENTIFIED_CONDITION}),
        frozenset({"AllergyIntolerance", "Condition"}),
        frozenset(),
        frozenset({"AllergyIntolerance"}),
    )


def test_a_patient_holding_any_resource_of_a_whole_type_is_evaluated(tmp_path: Path) -> None:
    path = write_trial(tmp_path, WHOLE_TYPE)
    first, second = outcome(path), outcome(path)
    assert first.truth is Truth.NOT_MET
    assert first is second
    found = outcome(path, allergy("high"))
    assert found.truth is Truth.MET
    assert found.evidence == ("AllergyIntolerance/allergy-high",)
    low = outcome(path, allergy("low"))
    assert low.truth is Truth.NOT_MET
    assert low == first  # nothing qualifies: the same outcome, found by the walk


AS_OF_ANCHORED = """\
- id: c
  kind: exclusion
  text: t
  expression:
    any:
      - resource: Condition
        concept: myocardial-infarction
        timing: onset
        before: {anchor: as-of, at_least: P3M}
      - manual:
          id: asked
          question: Anything else?
"""


def test_an_atom_anchored_on_the_as_of_date_only_is_the_same_for_all(tmp_path: Path) -> None:
    path = write_trial(tmp_path, AS_OF_ANCHORED)
    root = load_trial(path).criteria[0].root
    assert isinstance(root, AnyNode) and root.reads is not None
    first, second = outcome(path), outcome(path)
    assert first is second
    assert first.children[0].reason.endswith(
        "to 2025-05-01 (at least 3 months before the as-of date 2025-08-01)"
    )
    early = outcome(path, condition("22298006", "2025-04-01"))  # 4 months before 2025-08-01
    assert early.truth is Truth.MET
    assert early.evidence == ("Condition/condition-22298006-2025-04-01",)
    late = outcome(path, condition("22298006", "2025-07-01"))  # within the 3 months
    assert late.truth is Truth.UNKNOWN  # not met, or the manual item: unknown
    assert late.children[0].truth is Truth.NOT_MET
    # the same window, and what lies outside it for this patient (not shared)
    assert late.children[0].reason == (
        f"{first.children[0].reason}; outside the window: the earliest after it, 2025-07-01 "
        "(Condition/condition-22298006-2025-07-01), is too recent"
    )


MEDICATION_MAPPINGS = """\
systems:
  rxnorm: {uri: http://www.nlm.nih.gov/research/umls/rxnorm}
concepts:
  lisinopril:
    display: Lisinopril
    codes: {rxnorm: ["29046"]}
"""

MEDICATION_USE = """\
- id: c
  kind: exclusion
  text: t
  expression:
    any:
      - resource: MedicationStatement
        concept: lisinopril
        use: {within: P8W}
      - manual:
          id: asked
          question: Anything else?
"""


def lisinopril_order(authored: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": f"order-{authored}",
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p"},
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "29046"}]
        },
        "authoredOn": authored,
    }


def test_a_medication_use_reads_its_concept(tmp_path: Path) -> None:
    path = write_trial(tmp_path, MEDICATION_USE, MEDICATION_MAPPINGS)
    root = load_trial(path).criteria[0].root
    assert isinstance(root, AnyNode)
    assert root.reads == Reads(  # (and the medications whose drug cannot be told)
        frozenset({"lisinopril", UNIDENTIFIED_MEDICATION}),
        frozenset({"MedicationStatement", "MedicationRequest", "MedicationAdministration"}),
        frozenset({"asked"}),
    )
    first, second = outcome(path), outcome(path)
    assert first is second
    assert first.children[0].reason.startswith("Lisinopril: no use on record within")
    found = outcome(path, lisinopril_order("2025-07-20"))
    assert found.truth is Truth.MET
    assert found.evidence == ("MedicationRequest/order-2025-07-20",)
    old = outcome(path, lisinopril_order("2020-01-01", "completed"))  # no end of use known
    assert old.truth is Truth.UNKNOWN
    assert (
        "order-2020-01-01 (open-ended order, completed) began 2020-01-01, before the window, "
        "and its end is not known" in old.children[0].reason
    )


def test_a_shared_outcome_has_one_criterion_result(tmp_path: Path) -> None:
    criteria = load_trial(write_trial(tmp_path, CRITERIA))
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}

    def result(*resources: dict[str, Any]) -> CriterionResult:
        listed = [patient, *resources]
        source = PatientResources("p", listed, [None] * len(listed), "test")
        (found,) = screen_patient(criteria, source, AS_OF).evaluation.results
        return found

    first, second = result(), result()
    assert first is second  # so its verdict is worked out once
    assert first.verdict is CriterionVerdict.MANUAL_REVIEW
    held = result(condition("22298006", "2025-01-01"))
    assert held is not first
    assert held.verdict is CriterionVerdict.FAILS
