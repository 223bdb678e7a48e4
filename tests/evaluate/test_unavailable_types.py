"""Resource types the source could not provide (a Bulk export's `types_left_out`): an atom over
them is unknown, "not exported by the server", never "none on record" (issue 12)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from language_support import AS_OF, atom_trial

from engine.evaluate.outcome import Outcome, Truth
from engine.screening import screen_patient
from engine.sources.base import PatientResources
from engine.trial import load_trial

ACE_INHIBITORS = """\
systems:
  rxnorm: {uri: http://www.nlm.nih.gov/research/umls/rxnorm}
concepts:
  ace-inhibitor:
    display: ACE inhibitor
    codes: {rxnorm: ["29046"]}
"""

ATOM = """\
resource: MedicationStatement
concept: ace-inhibitor
"""


def request(status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "lisinopril",
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p"},
        "authoredOn": "2025-06-01",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "29046"}]
        },
    }


def outcome(path: Path, unavailable: frozenset[str], *resources: dict[str, Any]) -> Outcome:
    criteria = replace(load_trial(path), unavailable_types=unavailable)
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    listed = [patient, *resources]
    source = PatientResources("p", listed, [None] * len(listed), "test")
    (result,) = screen_patient(criteria, source, AS_OF).evaluation.results
    return result.outcome


def test_with_every_type_exported_finding_none_is_none_on_record(tmp_path: Path) -> None:
    found = outcome(atom_trial(tmp_path, ATOM, ACE_INHIBITORS), frozenset())
    assert found.truth is Truth.NOT_MET
    assert "none on record" in found.reason


def test_an_atom_over_a_type_not_exported_is_unknown_not_none_on_record(tmp_path: Path) -> None:
    found = outcome(atom_trial(tmp_path, ATOM, ACE_INHIBITORS), frozenset({"MedicationStatement"}))
    assert found.truth is Truth.UNKNOWN
    assert "MedicationStatement not exported by the server" in found.reason
    assert "none on record" not in found.reason
    assert found.missing == ("ACE inhibitor: MedicationStatement not exported by the server",)


def test_an_atom_met_by_the_types_exported_stays_met(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, ATOM, ACE_INHIBITORS)
    found = outcome(path, frozenset({"MedicationStatement"}), request())
    assert found.truth is Truth.MET


def test_an_atom_whose_every_type_is_unavailable_is_unknown(tmp_path: Path) -> None:
    atom = "resource: Condition\nconcept: ace-inhibitor\n"
    found = outcome(atom_trial(tmp_path, atom, ACE_INHIBITORS), frozenset({"Condition"}))
    assert found.truth is Truth.UNKNOWN
    assert found.reason.endswith("Condition not exported by the server")


REFUSED = "not available from the server (HTTP 403 Forbidden: no access to MedicationStatement)"


def outcome_with_source_reasons(
    path: Path, reasons: dict[str, str], *resources: dict[str, Any]
) -> Outcome:
    criteria = load_trial(path)
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    listed = [patient, *resources]
    source = PatientResources("p", listed, [None] * len(listed), "test", reasons)
    (result,) = screen_patient(criteria, source, AS_OF).evaluation.results
    return result.outcome


def test_a_type_one_patients_source_could_not_provide_is_unknown_with_the_sources_reason(
    tmp_path: Path,
) -> None:
    path = atom_trial(tmp_path, ATOM, ACE_INHIBITORS)
    found = outcome_with_source_reasons(path, {"MedicationStatement": REFUSED})
    assert found.truth is Truth.UNKNOWN
    assert found.reason.endswith(f"MedicationStatement {REFUSED}")
    assert found.missing == (f"ACE inhibitor: MedicationStatement {REFUSED}",)
    met = outcome_with_source_reasons(path, {"MedicationStatement": REFUSED}, request())
    assert met.truth is Truth.MET


def test_types_unavailable_for_different_reasons_are_named_each_with_its_reason(
    tmp_path: Path,
) -> None:
    criteria = replace(
        load_trial(atom_trial(tmp_path, ATOM, ACE_INHIBITORS)),
        unavailable_types=frozenset({"MedicationRequest"}),
    )
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1950-01-01"}
    source = PatientResources("p", [patient], [None], "test", {"MedicationStatement": REFUSED})
    (result,) = screen_patient(criteria, source, AS_OF).evaluation.results
    assert result.outcome.truth is Truth.UNKNOWN
    assert result.outcome.reason.endswith(
        f"MedicationRequest not exported by the server; MedicationStatement {REFUSED}"
    )
