"""How the sink finds or creates the trial's ResearchStudy on a server that answers wrongly
(respx): a search that answers another trial's study, a conditional create that matches one.
FHIR R4 http.html#ccreate (conditional create) and search.html#errors (handling=strict)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from scripted_fhir import BASE, searchset

from engine.errors import ServerError
from engine.evaluate import CompiledCriteria
from engine.sinks import FhirServerSink
from engine.sources import FhirServerClient, RetryPolicy

SEARCH = "identifier=https://clinicaltrials.gov%7CNCT05315778"
OTHER_TRIAL = {
    "resourceType": "ResearchStudy",
    "id": "other-trial-study",
    "status": "active",
    "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT00000001"}],
}
THIS_TRIAL = {
    "resourceType": "ResearchStudy",
    "id": "this-trial-study",
    "status": "active",
    "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT05315778"}],
}
CREATED = {"Location": f"{BASE}/ResearchStudy/study-real/_history/1"}


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def sink() -> FhirServerSink:
    policy = RetryPolicy(attempts=1)
    return FhirServerSink(FhirServerClient(BASE, retry=policy, sleep=lambda _seconds: None))


def search_answers(server: respx.MockRouter, *studies: dict[str, Any]) -> respx.Route:
    return server.get("/ResearchStudy").mock(
        return_value=httpx.Response(200, json=searchset(*studies))
    )


def test_a_study_without_the_trial_identifier_is_not_taken_for_the_trial(
    server: respx.MockRouter, trial: CompiledCriteria
) -> None:
    """A server that ignores or mis-matches `identifier` answers another trial's study: it is
    left out, and the study is created (R4 http.html#ccreate), never referenced."""
    search = search_answers(server, OTHER_TRIAL)
    create = server.post("/ResearchStudy").mock(
        return_value=httpx.Response(201, json=dict(THIS_TRIAL, id="study-real"), headers=CREATED)
    )
    assert sink().study_reference(trial.trial) == "ResearchStudy/study-real"
    request = search.calls.last.request
    assert request.headers["Prefer"] == "handling=strict"
    assert str(request.url) == f"{BASE}/ResearchStudy?{SEARCH}"
    assert create.calls.last.request.headers["If-None-Exist"] == SEARCH


def test_the_read_back_finds_no_study_when_none_carries_the_identifier(
    server: respx.MockRouter, trial: CompiledCriteria
) -> None:
    search_answers(server, OTHER_TRIAL)
    assert sink().study_reference(trial.trial, create=False) is None


def test_the_study_that_carries_the_identifier_is_found_among_others(
    server: respx.MockRouter, trial: CompiledCriteria
) -> None:
    search_answers(server, OTHER_TRIAL, THIS_TRIAL)
    create = server.post("/ResearchStudy")
    assert sink().study_reference(trial.trial) == "ResearchStudy/this-trial-study"
    assert create.call_count == 0


def test_a_conditional_create_that_matches_another_trials_study_is_an_error(
    server: respx.MockRouter, trial: CompiledCriteria
) -> None:
    """R4 http.html#ccreate: one match, "the server ignores the post and returns 200 OK";
    the matched study must be the trial's."""
    search_answers(server)
    server.post("/ResearchStudy").mock(
        return_value=httpx.Response(
            200,
            json=OTHER_TRIAL,
            headers={"Location": f"{BASE}/ResearchStudy/other-trial-study/_history/3"},
        )
    )
    with pytest.raises(ServerError) as caught:
        sink().study_reference(trial.trial)
    assert "matched ResearchStudy/other-trial-study, which does not carry the identifier " in str(
        caught.value
    )
    assert "https://clinicaltrials.gov|NCT05315778" in str(caught.value)


def test_a_study_search_answered_with_an_outcome_is_an_error(
    server: respx.MockRouter, trial: CompiledCriteria
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": "search disabled"}],
    }
    server.get("/ResearchStudy").mock(return_value=httpx.Response(200, json=outcome))
    create = server.post("/ResearchStudy")
    with pytest.raises(ServerError, match="not a searchset: search disabled"):
        sink().study_reference(trial.trial)
    assert create.call_count == 0


OUTCOME_CREATED = {
    "resourceType": "OperationOutcome",
    "id": "oo-123",
    "issue": [{"severity": "information", "code": "informational", "diagnostics": "Created"}],
}


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (f"{BASE}/ResearchStudy/study-real/_history/1", "ResearchStudy/study-real"),
        ("ResearchStudy/study-real/_history/1", "ResearchStudy/study-real"),
        (f"{BASE}/ResearchStudy/study-real", "ResearchStudy/study-real"),
    ],
)
def test_the_created_study_id_comes_from_the_location_not_an_outcome_body(
    server: respx.MockRouter, trial: CompiledCriteria, location: str, expected: str
) -> None:
    """R4 http.html#create: "Location: [base]/[type]/[id]/_history/[vid]" names the new
    resource; a server may answer an OperationOutcome instead of it (http.html#return), whose
    id is not the study's."""
    search_answers(server)
    server.post("/ResearchStudy").mock(
        return_value=httpx.Response(201, json=OUTCOME_CREATED, headers={"Location": location})
    )
    assert sink().study_reference(trial.trial) == expected


def test_without_a_location_the_body_id_counts_only_for_a_research_study(
    server: respx.MockRouter, trial: CompiledCriteria
) -> None:
    search_answers(server)
    server.post("/ResearchStudy").mock(
        side_effect=[
            httpx.Response(201, json=dict(THIS_TRIAL, id="from-body")),
            httpx.Response(201, json=OUTCOME_CREATED),
        ]
    )
    assert sink().study_reference(trial.trial) == "ResearchStudy/from-body"
    with pytest.raises(ServerError) as caught:
        sink().study_reference(trial.trial)
    assert str(caught.value) == (
        f"{BASE}: POST ResearchStudy (If-None-Exist: {SEARCH}): HTTP 201: the answer names no "
        "ResearchStudy id (no Location header, no ResearchStudy body)"
    )


def test_a_location_of_another_type_is_not_taken_for_the_study(
    server: respx.MockRouter, trial: CompiledCriteria
) -> None:
    search_answers(server)
    server.post("/ResearchStudy").mock(
        return_value=httpx.Response(
            201,
            json=OUTCOME_CREATED,
            headers={"Location": f"{BASE}/OperationOutcome/oo-123"},
        )
    )
    with pytest.raises(ServerError, match="names no ResearchStudy id"):
        sink().study_reference(trial.trial)
