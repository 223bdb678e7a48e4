"""A FHIR server that gives part of a pull, or says why not, inside an answer (issue 12, item
3): an OperationOutcome entry in a searchset (R4 3.1.1.5.7 "Searching", Bundle.entry.search.mode
`outcome`) whose issue is an error or fatal leaves the type unavailable as not complete (criteria
over it unknown, not "none on record"), warnings and information become data problems; a search
answered 200 with an OperationOutcome instead of a Bundle is refused; a Medication read refused
(an error status, or 200 with an OperationOutcome) leaves the medicationReference unresolved with
the server's reason. Scripted answers (respx).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from scripted_fhir import BASE, capability_statement, patient_search

from engine.errors import ServerError
from engine.evaluate import CompiledCriteria, Truth
from engine.screening import screen_patient
from engine.sources import FhirServerClient, FhirServerSource, PatientResources, RetryPolicy

AS_OF = dt.date(2026, 11, 1)
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-01-01"}
CONDITION = {
    "resourceType": "Condition",
    "id": "c1",
    "code": {"text": "immune thrombocytopenia"},
    "subject": {"reference": "Patient/p1"},
}
REQUEST = {
    "resourceType": "MedicationRequest",
    "id": "mr1",
    "status": "active",
    "intent": "order",
    "medicationReference": {"reference": "Medication/m1"},
    "subject": {"reference": "Patient/p1"},
    "authoredOn": "2026-10-01",
}
SEARCHED = ("Condition", "MedicationRequest", "MedicationStatement")


def statement(*, everything: bool = False) -> dict[str, Any]:
    """A CapabilityStatement with a patient search on each searched type (and `$everything`)."""
    declared = [patient_search(name, ["read", "search-type"]) for name in SEARCHED]
    return capability_statement(declared, everything=everything)


def outcome(severity: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": "incomplete", "diagnostics": diagnostics}],
    }


def searchset(*resources: dict[str, Any], notes: tuple[dict[str, Any], ...] = ()) -> Any:
    """A searchset of the resources (mode match), then each OperationOutcome (mode outcome)."""
    entries = [
        {
            "fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in resources
    ] + [{"resource": note, "search": {"mode": "outcome"}} for note in notes]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.get("/metadata").mock(return_value=httpx.Response(200, json=statement()))
        router.get("/Patient/p1").mock(return_value=httpx.Response(200, json=PATIENT))
        router.get("/Condition").mock(return_value=httpx.Response(200, json=searchset(CONDITION)))
        router.get("/MedicationStatement").mock(return_value=httpx.Response(200, json=searchset()))
        router.get("/Medication/m1").mock(
            return_value=httpx.Response(
                200, json={"resourceType": "Medication", "id": "m1", "code": {"text": "aspirin"}}
            )
        )
        yield router


def pull(*types: str, everything: bool = True) -> PatientResources:
    needed = {"Patient", *types} if types else {"Patient", *SEARCHED, "Medication"}
    client = FhirServerClient(BASE, retry=RetryPolicy(attempts=1), sleep=lambda _: None)
    with client:
        return FhirServerSource(client, ["p1"], needed, use_everything=everything).pull("p1")


def keys(patient: PatientResources) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in patient.resources}


@pytest.mark.parametrize("severity", ["error", "fatal"])
def test_an_error_outcome_entry_leaves_the_type_not_complete_and_keeps_what_came(
    server: respx.MockRouter, severity: str
) -> None:
    server.get("/MedicationRequest").mock(
        return_value=httpx.Response(
            200,
            json=searchset(REQUEST, notes=(outcome(severity, "only the first 1 of 40 results"),)),
        )
    )
    patient = pull()
    assert keys(patient) == {"Patient/p1", "Condition/c1", "MedicationRequest/mr1", "Medication/m1"}
    assert patient.unavailable_types == {
        "MedicationRequest": "not complete from the server (only the first 1 of 40 results)"
    }
    assert patient.source_problems == ()


def test_an_error_outcome_entry_stops_the_paging_of_that_type(server: respx.MockRouter) -> None:
    page = searchset(notes=(outcome("error", "timed out after the first page"),))
    page["link"] = [{"relation": "next", "url": f"{BASE}/MedicationRequest?page=2"}]
    second = server.get("/MedicationRequest", params={"page": "2"}).mock(
        return_value=httpx.Response(200, json=searchset(REQUEST))
    )
    server.get("/MedicationRequest").mock(return_value=httpx.Response(200, json=page))
    patient = pull()
    assert second.call_count == 0
    assert "MedicationRequest" in patient.unavailable_types


@pytest.mark.parametrize("severity", ["warning", "information"])
def test_a_warning_outcome_entry_keeps_the_data_and_becomes_a_data_problem(
    server: respx.MockRouter, severity: str, trial: CompiledCriteria
) -> None:
    server.get("/MedicationRequest").mock(
        return_value=httpx.Response(
            200, json=searchset(REQUEST, notes=(outcome(severity, "unknown parameter _foo"),))
        )
    )
    patient = pull()
    assert "MedicationRequest/mr1" in keys(patient)
    assert "OperationOutcome" not in {r["resourceType"] for r in patient.resources}
    assert patient.unavailable_types == {}
    said = "MedicationRequest search: the server notes: unknown parameter _foo"
    assert patient.source_problems == (said,)
    assert said in screen_patient(trial, patient, AS_OF).evaluation.data_problems


def test_an_error_outcome_in_everything_falls_back_to_searches(server: respx.MockRouter) -> None:
    server.get("/metadata").mock(return_value=httpx.Response(200, json=statement(everything=True)))
    everything = server.get("/Patient/p1/$everything").mock(
        return_value=httpx.Response(
            200, json=searchset(PATIENT, notes=(outcome("fatal", "$everything ran out of time"),))
        )
    )
    searched = server.get("/MedicationRequest").mock(
        return_value=httpx.Response(200, json=searchset(REQUEST))
    )
    patient = pull()
    assert everything.call_count == 1
    assert searched.call_count == 1
    assert keys(patient) == {"Patient/p1", "Condition/c1", "MedicationRequest/mr1", "Medication/m1"}
    assert patient.unavailable_types == {}


def test_a_search_answered_200_with_an_operation_outcome_is_refused(
    server: respx.MockRouter, trial: CompiledCriteria
) -> None:
    server.get("/MedicationRequest").mock(
        return_value=httpx.Response(200, json=outcome("error", "MedicationRequest is restricted"))
    )
    patient = pull()
    assert keys(patient) == {"Patient/p1", "Condition/c1"}
    why = (
        "not available from the server (HTTP 200 with an OperationOutcome, not a searchset: "
        "MedicationRequest is restricted)"
    )
    assert patient.unavailable_types == {"MedicationRequest": why}
    whole = screen_patient(trial, patient, AS_OF).evaluation
    assert f"MedicationRequest {why}: criteria over it are unknown" in whole.data_problems


def test_everything_answered_200_with_an_operation_outcome_falls_back_to_searches(
    server: respx.MockRouter,
) -> None:
    server.get("/metadata").mock(return_value=httpx.Response(200, json=statement(everything=True)))
    server.get("/Patient/p1/$everything").mock(
        return_value=httpx.Response(200, json=outcome("error", "not for this user"))
    )
    server.get("/MedicationRequest").mock(return_value=httpx.Response(200, json=searchset()))
    patient = pull()
    assert keys(patient) == {"Patient/p1", "Condition/c1"}
    assert patient.unavailable_types == {}


@pytest.mark.parametrize("status", [200, 400, 403, 405, 501])
def test_a_refused_medication_read_leaves_the_reference_unresolved_with_the_reason(
    server: respx.MockRouter, status: int, trial: CompiledCriteria
) -> None:
    server.get("/MedicationRequest").mock(return_value=httpx.Response(200, json=searchset(REQUEST)))
    server.get("/Medication/m1").mock(
        return_value=httpx.Response(status, json=outcome("error", "Medication is not shared"))
    )
    patient = pull()
    assert keys(patient) == {"Patient/p1", "Condition/c1", "MedicationRequest/mr1"}
    (said,) = patient.source_problems
    assert said.startswith(f"Medication/m1 not read from the server (HTTP {status} ")
    assert said.endswith(": Medication is not shared)")
    problems = screen_patient(trial, patient, AS_OF).evaluation.data_problems
    assert said in problems
    assert any("'Medication/m1' resolves to no resource" in problem for problem in problems)


def test_a_medication_read_failing_otherwise_still_aborts(server: respx.MockRouter) -> None:
    server.get("/MedicationRequest").mock(return_value=httpx.Response(200, json=searchset(REQUEST)))
    server.get("/Medication/m1").mock(return_value=httpx.Response(401))
    with pytest.raises(ServerError) as caught:
        pull()
    assert caught.value.status == 401


def test_criteria_over_a_type_not_complete_are_unknown(
    server: respx.MockRouter, trial: CompiledCriteria
) -> None:
    """The antithrombotics exclusion reads MedicationRequest: not complete, with nothing
    antithrombotic among what came, it lacks data rather than reading "none on record"."""
    server.get("/MedicationRequest").mock(
        return_value=httpx.Response(
            200, json=searchset(notes=(outcome("error", "results truncated"),))
        )
    )
    patient = pull()
    evaluation = screen_patient(trial, patient, AS_OF).evaluation
    (antithrombotics,) = [
        r for r in evaluation.results if r.id == "exclusion-2-thrombosis-or-antithrombotics"
    ]
    assert antithrombotics.outcome.truth is Truth.UNKNOWN
    assert "MedicationRequest not complete from the server (results truncated)" in str(
        antithrombotics.outcome
    )
