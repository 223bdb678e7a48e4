"""CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/), as a CDS Service must answer it.

Every test names the section of the specification it checks: Discovery, Calling a CDS
Service, Providing FHIR Resources (Prefetch Template, FHIR Resource Access), CDS Service
Response (HTTP Status Codes, Card Attributes, Source, Link), Data Types (Coding), Use of JSON,
Feedback, Extensions, and Security and Safety (Trusting CDS Clients, JWT Signing Algorithm).
The tests that need a FHIR server use `sekmet` on loopback (tests/conftest.py).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sekmet_server import SekmetServer
from service_support import (
    AUTH,
    CDS_SERVICE,
    PATIENTS,
    ClientFactory,
    assert_unauthorized,
    evaluated_file,
    example,
    free_port,
    hook_call,
    loaded_trial,
    make_settings,
    prefetch_from,
    same_card,
    server_call,
    without,
)

from engine.errors import ServiceConfigError
from engine.fhir_http import RetryPolicy
from engine.service import ApiAuthSettings, SecretReference, create_app
from engine.service.cds_hooks import SUMMARY_LIMIT, _fit, card

ENDPOINT = f"http://testserver{CDS_SERVICE}"
FEEDBACK = f"{CDS_SERVICE}/feedback"
ISSUER = "https://ehr.example.org"
SECRET = "a-shared-secret-of-enough-length-0123456789"
SECRET_VARIABLE = "TRIALSIEVE_TEST_JWT_SECRET"
EXAMPLES = sorted(path.stem for path in PATIENTS.glob("*.json"))
PATIENT_VIEW_CONTEXT = frozenset({"userId", "patientId", "encounterId"})
"""The context fields of patient-view (hook version 1.0), which prefetch tokens may name."""


def empty_elements(node: Any, path: str = "$") -> Iterator[str]:
    """Paths of JSON elements that are null or empty (`""`, `[]`, `{}`)."""
    if node is None or node == "" or node == [] or node == {}:
        yield path
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from empty_elements(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from empty_elements(value, f"{path}[{index}]")


# --------------------------------------------------------------------------- Discovery


def test_discovery_describes_each_service(api: TestClient) -> None:
    """Discovery, "Response": an object with `services`; each with `hook`, `description` and
    `id` (REQUIRED), `title` (RECOMMENDED), `prefetch` an object of string FHIR queries; the
    service answers at `{baseUrl}/cds-services/{id}`. Discovery, "HTTP Status Codes": 200."""
    response = api.get("/cds-services")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    services = response.json()["services"]
    assert services
    for service in services:
        for field_name in ("hook", "description", "id", "title"):
            assert isinstance(service[field_name], str) and service[field_name], field_name
        assert service["hook"] == "patient-view"
        assert all(isinstance(query, str) for query in service["prefetch"].values())
        call = api.post(f"/cds-services/{service['id']}", json=hook_call("p1"), headers=AUTH)
        assert call.status_code == 412  # the service is there (no data given: see Prefetch)
    assert not list(empty_elements(response.json()))


def test_prefetch_tokens_name_context_fields(api: TestClient) -> None:
    """Prefetch Template, "Prefetch tokens": delimited by `{{` and `}}`, holding only the
    qualified path of a hook context field (`context.patientId`); patient-view's fields."""
    (service,) = api.get("/cds-services").json()["services"]
    for key, query in service["prefetch"].items():
        tokens = re.findall(r"\{\{(.*?)\}\}", query)
        assert tokens, key
        assert all(token.startswith("context.") for token in tokens), query
        assert {token.removeprefix("context.") for token in tokens} <= PATIENT_VIEW_CONTEXT
        assert "{" not in re.sub(r"\{\{.*?\}\}", "", query), query


# --------------------------------------------------------------------------- Calling


def test_hook_hook_instance_and_context_are_required(api: TestClient) -> None:
    """Calling a CDS Service, "HTTP Request": `hook`, `hookInstance` and `context` are
    REQUIRED; a call without one is refused (400) naming the field."""
    for field_name in ("hook", "hookInstance", "context"):
        response = api.post(CDS_SERVICE, json=without(hook_call("p1"), field_name), headers=AUTH)
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == [field_name]


@pytest.mark.parametrize(
    ("context", "code", "expression"),
    [
        ({"patientId": "itp-too-old"}, "required", "context.userId"),
        ({"patientId": "itp-too-old", "userId": "abc"}, "invalid", "context.userId"),
        ({"patientId": "itp-too-old", "userId": "Practitioner/"}, "invalid", "context.userId"),
        ({"patientId": "itp-too-old", "userId": "Practitioner/../x"}, "invalid", "context.userId"),
        ({"patientId": "itp-too-old", "userId": 5}, "invalid", "context.userId"),
        (
            {"patientId": "itp-too-old", "userId": "Practitioner/1", "encounterId": "../e"},
            "invalid",
            "context.encounterId",
        ),
    ],
)
def test_the_patient_view_context_is_checked(
    api: TestClient, context: dict[str, Any], code: str, expression: str
) -> None:
    """patient-view (hook version 1.0), "Context": `userId` REQUIRED, "The id of the current
    user. Must be in the format [ResourceType]/[id]"; `encounterId` OPTIONAL, "The FHIR
    Encounter.id of the current encounter". A call without `userId`, or with either malformed,
    is a 400 naming it (was answered with a card); a well-formed one of any user type is
    served."""
    name = "itp-too-old"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    body = {**hook_call(name, prefetch=prefetch), "context": context}
    response = api.post(CDS_SERVICE, json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    (issue,) = response.json()["issue"]
    assert (issue["code"], issue["expression"]) == (code, [expression])
    for user in ("Practitioner/abc", "PractitionerRole/r1", "Patient/123", "RelatedPerson/r"):
        served = {**body, "context": {"patientId": name, "userId": user, "encounterId": "e1"}}
        assert api.post(CDS_SERVICE, json=served, headers=AUTH).status_code == 200


def test_extension_is_an_object(api: TestClient) -> None:
    """Extensions: a call's `extension` is a JSON object of members the client and service
    agree on; one that is not an object is a 400 naming it; an object is accepted unread."""
    name = "itp-too-old"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    for value, status in ((5, 400), (["x"], 400), ({"com.example.flag": True}, 200)):
        body = {**hook_call(name, prefetch=prefetch), "extension": value}
        response = api.post(CDS_SERVICE, json=body, headers=AUTH)
        assert response.status_code == status, response.text
        if status == 400:
            assert response.json()["issue"][0]["expression"] == ["extension"]


def test_fhir_authorization_needs_fhir_server(api: TestClient) -> None:
    """Calling a CDS Service, "HTTP Request": `fhirServer` "If fhirAuthorization is
    provided, this field is REQUIRED"."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    authorization = {
        "access_token": "opaque",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "trialsieve",
    }
    body = hook_call(name, prefetch=prefetch, fhirAuthorization=authorization)
    response = api.post(CDS_SERVICE, json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == ["fhirServer"]
    assert api.post(CDS_SERVICE, json=without(body, "fhirAuthorization"), headers=AUTH).is_success


@pytest.mark.parametrize(
    "hook_instance",
    [
        "h1",
        "",
        "benchmark",
        "d1577c69-dfbe-44ad-ba6d-3e05e953b2e",
        "{d1577c69-dfbe-44ad-ba6d-3e05e953b2ea}",
        "urn:uuid:d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "d1577c69dfbe44adba6d3e05e953b2ea",
        42,
    ],
)
def test_hook_instance_is_a_uuid(api: TestClient, hook_instance: Any) -> None:
    """Calling a CDS Service, "HTTP Request": `hookInstance` is "A universally unique
    identifier (UUID) for this particular hook call": anything else is refused (400) naming
    the field; a UUID in either case is served."""
    body = {**hook_call("p1"), "hookInstance": hook_instance}
    response = api.post(CDS_SERVICE, json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    (issue,) = response.json()["issue"]
    assert issue["expression"] == ["hookInstance"]
    for served in ("d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "D1577C69-DFBE-44AD-BA6D-3E05E953B2EA"):
        answer = api.post(
            CDS_SERVICE, json={**hook_call("p1"), "hookInstance": served}, headers=AUTH
        )
        assert answer.status_code == 412, answer.text  # served: no data given (see Prefetch)


FHIR_AUTHORIZATION = {
    "access_token": "opaque",
    "token_type": "Bearer",
    "expires_in": 300,
    "scope": "patient/*.read",
    "subject": "trialsieve",
}


@pytest.mark.parametrize(
    ("changes", "field_name", "words"),
    [
        *[({name: None}, name, "Field required") for name in FHIR_AUTHORIZATION],
        ({"access_token": ""}, "access_token", "at least 1 character"),
        ({"token_type": "MAC"}, "token_type", "'Bearer'"),
        ({"token_type": "bearer"}, "token_type", "'Bearer'"),
        ({"expires_in": "300"}, "expires_in", "valid integer"),
        ({"expires_in": 300.5}, "expires_in", "valid integer"),
        ({"scope": ""}, "scope", "at least 1 character"),
        ({"subject": 7}, "subject", "valid string"),
        ({"patient": 7}, "patient", "valid string"),
    ],
)
def test_fhir_authorization_holds_every_required_field(
    api: TestClient, changes: dict[str, Any], field_name: str, words: str
) -> None:
    """Passing the Access Token to the CDS Service: `access_token`, `token_type` (fixed value
    `Bearer`), `expires_in` (integer), `scope` and `subject` are REQUIRED, `patient` is
    optional; a `fhirAuthorization` without one, or with a value of another kind, is refused
    (400) naming the field, before any FHIR server is called."""
    authorization = {**FHIR_AUTHORIZATION, **changes}
    authorization = {key: value for key, value in authorization.items() if value is not None}
    body = hook_call("p1", fhirServer="http://127.0.0.1:9/fhir", fhirAuthorization=authorization)
    response = api.post(CDS_SERVICE, json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    (issue,) = response.json()["issue"]
    assert issue["expression"] == [f"fhirAuthorization.{field_name}"]
    assert issue["diagnostics"].startswith(f"fhirAuthorization.{field_name}: ")
    assert words in issue["diagnostics"]


def test_fhir_authorization_with_its_patient_is_served(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    """Passing the Access Token to the CDS Service: `patient` (the FHIR id of the patient a
    patient-scoped token is restricted to) may be given; extensions beside the fields too."""
    api = service_client(trusted_fhir_servers=(sekmet.base_url,))
    name = "itp-relapsed-candidate"
    body = server_call(sekmet, name, None)
    body["fhirAuthorization"].update(patient=name, extension={"org.example.tenant": "t1"})
    response = api.post(CDS_SERVICE, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["cards"]


def test_extensions_are_accepted(api: TestClient) -> None:
    """Extensions: the name `extension` is reserved for implementations' own JSON objects;
    a request carrying one is served as without it."""
    name = "itp-too-old"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    extension = {"com.example.timestamp": "2017-11-27T22:13:25Z"}
    body = hook_call(name, prefetch=prefetch, extension=extension)
    response = api.post(CDS_SERVICE, json=body, headers=AUTH)
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- Prefetch


def test_a_missing_or_failed_prefetch_without_fhir_server_is_412(api: TestClient) -> None:
    """Prefetch Template: "If the CDS Service is unable to obtain required data because it
    cannot access the FHIR server and the request did not contain the necessary prefetch keys,
    the service SHALL respond with an HTTP 412": a key that is absent, or the `patient` key
    holding the OperationOutcome of a failed prefetch (nothing can be evaluated without it),
    with no fhirServer to read it from. (A failed search key is data not available, answered
    with a card: tests/service/test_cds_hooks.py.)"""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    failed = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "search timed out"}],
    }
    for key, given_prefetch in (
        ("condition", without(prefetch, "condition")),
        ("patient", {**prefetch, "patient": failed}),
    ):
        response = api.post(
            CDS_SERVICE, json=hook_call(name, prefetch=given_prefetch), headers=AUTH
        )
        assert response.status_code == 412, response.text
        assert response.json()["issue"][0]["expression"] == [f"prefetch.{key}"]
    assert "search timed out" in response.json()["issue"][0]["diagnostics"]


def test_a_null_prefetch_value_is_no_data(api: TestClient) -> None:
    """Prefetch Template: "If the CDS Client has no data to populate a template prefetch key,
    the prefetch template key MUST have a value of null": nothing is fetched (no fhirServer
    needed) and the type counts as empty."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    body = hook_call(name, prefetch={**prefetch, "observation": None})
    response = api.post(CDS_SERVICE, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    full = api.post(CDS_SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH)
    assert response.json()["cards"][0]["summary"] != full.json()["cards"][0]["summary"]


def test_a_prefetch_with_a_next_page_is_not_complete(api: TestClient) -> None:
    """Prefetch Template: prefetch data "MUST be submitted at once ... (e.g., no 'next page'
    links allowed)": a search Bundle with a `next` link is not taken as the whole answer;
    without a fhirServer to read the rest, 412."""
    name = "itp-relapsed-candidate"
    paged = prefetch_from(example(name), loaded_trial(api), name)
    paged["observation"]["link"] = [{"relation": "next", "url": "http://ehr/fhir?page=2"}]
    response = api.post(CDS_SERVICE, json=hook_call(name, prefetch=paged), headers=AUTH)
    assert response.status_code == 412, response.text
    assert response.json()["issue"][0]["expression"] == ["prefetch.observation"]


def test_only_the_templates_keys_are_read(api: TestClient) -> None:
    """Prefetch Template: "services SHALL only receive the data they requested in their
    prefetch": a key the service did not ask for is not read (here it holds a Condition that
    would exclude the patient)."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    lupus = prefetch_from(example("itp-secondary-lupus"), loaded_trial(api), name)
    extra = {**prefetch, "conditionsOfAnotherService": lupus["condition"]}
    answers = [
        api.post(CDS_SERVICE, json=hook_call(name, prefetch=given_prefetch), headers=AUTH)
        for given_prefetch in (prefetch, extra)
    ]
    assert all(answer.status_code == 200 for answer in answers)
    first, second = (answer.json()["cards"][0] for answer in answers)
    assert same_card(first, second)


# --------------------------------------------------------------------------- FHIR Resource Access


def test_what_the_prefetch_lacks_is_read_from_the_fhir_server(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    """FHIR Resource Access: with `fhirServer` and `fhirAuthorization`, the service reads
    what the prefetch lacks, presenting `access_token` as a bearer token (sekmet refuses
    anything else); Prefetch Template: "It is the CDS Service's responsibility to check
    prefetched data against its template ... and to programmatically retrieve any additional
    necessary data". No prefetch, or keys absent, or the `patient` key failed: the same card
    as from the file."""
    api = service_client(trusted_fhir_servers=(sekmet.base_url,))
    name = "itp-secondary-lupus"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    failed = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    partial = {**without(prefetch, "condition", "medicationRequest"), "patient": failed}
    expected = card(evaluated_file(api, name))
    for given_prefetch in (None, partial):
        response = api.post(
            CDS_SERVICE, json=server_call(sekmet, name, given_prefetch), headers=AUTH
        )
        assert response.status_code == 200, response.text
        (answer,) = response.json()["cards"]
        assert same_card(answer, expected)


def test_a_fhir_server_that_cannot_be_reached_is_412(service_client: ClientFactory) -> None:
    """Prefetch Template / CDS Service Response, "HTTP Status Codes": 412 Precondition Failed,
    "The CDS Service is unable to retrieve the necessary FHIR data ... either through a
    prefetch request or directly calling the FHIR server" (here: nothing listens there)."""
    unreachable = f"http://127.0.0.1:{free_port()}/fhir"
    api = service_client(
        trusted_fhir_servers=(unreachable,),
        fhir_retry=RetryPolicy(attempts=1, timeout=2.0, give_up_after=2.0),
    )
    body = hook_call("itp-too-old", fhirServer=unreachable)
    response = api.post(CDS_SERVICE, json=body, headers=AUTH)
    assert response.status_code == 412, response.text
    assert "could not be reached" in response.json()["issue"][0]["diagnostics"]
    assert unreachable not in response.text


# --------------------------------------------------------------------------- Response and cards


@pytest.mark.parametrize("name", EXAMPLES)
def test_cards_have_the_required_attributes(api: TestClient, name: str) -> None:
    """CDS Service Response, "HTTP Response": 200 with a `cards` array. "Card Attributes":
    `summary` a "<140-character" string, `indicator` one of info/warning/critical, `source`
    with a `label`, `detail` GitHub-flavoured markdown text; "Link": `label`, `url`, `type`
    absolute or smart, `appContext` only for smart links. "Null and empty JSON elements":
    none is null or empty."""
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    response = api.post(CDS_SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer["cards"], list)
    for each in answer["cards"]:
        assert isinstance(each["summary"], str) and 0 < len(each["summary"]) < 140
        assert each["indicator"] in ("info", "warning", "critical")
        assert isinstance(each["source"]["label"], str) and each["source"]["label"]
        assert isinstance(each["detail"], str)
        for link in each.get("links", ()):
            assert {"label", "url", "type"} <= link.keys()
            assert link["type"] in ("absolute", "smart")
            assert link["type"] == "smart" or "appContext" not in link
    assert not list(empty_elements(answer))


def test_each_card_has_a_fresh_uuid_and_a_coded_topic(api: TestClient) -> None:
    """ "Card Attributes": `uuid` "Unique identifier of the card" (feedback names it), so two
    calls give two uuids; "Source": `topic` a Coding; "Data Types", Coding: `code` and
    `system` REQUIRED (the registry's system)."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    first, second = (
        api.post(CDS_SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH).json()[
            "cards"
        ][0]
        for _ in range(2)
    )
    assert uuid.UUID(first["uuid"]) != uuid.UUID(second["uuid"])
    assert same_card(first, second)
    assert first["source"]["topic"] == {
        "system": "https://clinicaltrials.gov",
        "code": "NCT05315778",
        "display": loaded_trial(api).criteria.trial.title,
    }


@given(
    st.text(min_size=1, max_size=60),
    st.lists(st.text(min_size=1, max_size=200), min_size=1, max_size=40),
)
def test_a_summary_of_failing_criteria_is_under_140_characters(
    prefix: str, items: list[str]
) -> None:
    """ "Card Attributes": `summary` is a "<140-character summary message", however many
    criteria exclude the patient and however long their labels."""
    assert SUMMARY_LIMIT < 140
    assert len(_fit(prefix, items)) <= SUMMARY_LIMIT


# --------------------------------------------------------------------------- Feedback


def test_feedback_is_logged_per_card(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """Feedback: `POST {baseUrl}/cds-services/{id}/feedback` with a `feedback` array, each
    item's `card` (the card's uuid), `outcome` (overridden, with or without a reason),
    `outcomeTimestamp` (REQUIRED) and optional `overrideReason` (a Coding and a comment)."""
    body = {
        "feedback": [
            {
                "card": "0f2c8e7a-1111-4a3b-9c1d-000000000001",
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-01T10:00:00Z",
            },
            {
                "card": "0f2c8e7a-1111-4a3b-9c1d-000000000002",
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-01T10:01:00Z",
                "overrideReason": {
                    "reason": {"system": "http://example.org", "code": "not-now"},
                    "userComment": "free text that is not logged",
                },
            },
        ]
    }
    with caplog.at_level("INFO", logger="engine.service"):
        response = api.post(FEEDBACK, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    logged = [r for r in caplog.records if r.getMessage() == "cds card feedback"]
    assert [r.fields["outcome"] for r in logged] == ["overridden", "overridden"]  # type: ignore[attr-defined]
    assert logged[1].fields["override_reason"] == "not-now"  # type: ignore[attr-defined]
    assert "free text" not in caplog.text
    for broken in ({"feedback": [{"card": "x"}]}, {"feedback": []}, {}):
        assert api.post(FEEDBACK, json=broken, headers=AUTH).status_code == 400
    unknown = api.post("/cds-services/NCT00000000/feedback", json=body, headers=AUTH)
    assert unknown.status_code == 404
    assert api.post(FEEDBACK, json=body).status_code == 401


def feedback_on(**changes: Any) -> dict[str, Any]:
    """A feedback request on a fresh card uuid (overridden, no reason), with `changes`;
    `None` values are left out."""
    item = {
        "card": str(uuid.uuid4()),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-01T10:00:00Z",
        **changes,
    }
    return {"feedback": [{key: value for key, value in item.items() if value is not None}]}


REASON = {"reason": {"system": "http://example.org/override", "code": "not-now"}}


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"card": None}, "card"),
        ({"outcome": None}, "outcome"),
        ({"outcomeTimestamp": None}, "outcomeTimestamp"),
        ({"card": "card-1"}, "card"),
        ({"card": "0f2c8e7a11114a3b9c1d000000000001"}, "card"),
        ({"outcome": "ignored"}, "outcome"),
        ({"outcome": "rejected"}, "outcome"),
        ({"outcomeTimestamp": "yesterday"}, "outcomeTimestamp"),
        ({"outcomeTimestamp": "2026-11-01"}, "outcomeTimestamp"),
        ({"outcomeTimestamp": "2026-11-01T10:00:00"}, "outcomeTimestamp"),
        ({"outcomeTimestamp": "2026-11-01T11:00:00+01:00"}, "outcomeTimestamp"),
        ({"outcomeTimestamp": "2026-13-01T10:00:00Z"}, "outcomeTimestamp"),
        ({"overrideReason": {"reason": {"code": "not-now"}}}, "overrideReason.reason.system"),
        ({"overrideReason": {"reason": {"system": "http://x"}}}, "overrideReason.reason.code"),
        ({"acceptedSuggestions": []}, "acceptedSuggestions"),
        ({"acceptedSuggestions": [{}]}, "acceptedSuggestions.0.id"),
    ],
)
def test_feedback_holds_what_the_spec_requires(
    api: TestClient, changes: dict[str, Any], field_name: str
) -> None:
    """Feedback: each item's `card` ("The `card.uuid` from the CDS Hooks response": this
    service's cards carry UUIDs), `outcome` ("A value of `accepted` or `overridden`") and
    `outcomeTimestamp` ("ISO timestamp in UTC when action was taken on card") are REQUIRED;
    an `overrideReason.reason` is a Coding (Data Types, "Coding": `code` and `system`
    REQUIRED); `acceptedSuggestions` is an array of one or more AcceptedSuggestions, each
    with its `id` (REQUIRED). Anything else is refused (400) naming the field."""
    response = api.post(FEEDBACK, json=feedback_on(**changes), headers=AUTH)
    assert response.status_code == 400, response.text
    expressions = [issue["expression"] for issue in response.json()["issue"]]
    assert [f"feedback.0.{field_name}"] in expressions, expressions


def test_an_accepted_outcome_needs_suggestions_this_service_gave(api: TestClient) -> None:
    """Feedback: `acceptedSuggestions` is "Required for `accepted` outcomes", each `id` "The
    `card.suggestion.uuid` from the CDS Hooks response"; "while one or more suggestions can
    be accepted, an entire card is either ignored or overridden". This service's cards carry
    no suggestions: an accepted outcome without acceptedSuggestions, or naming a suggestion
    id (none exists), is refused (400) naming the field; so is an `overrideReason` on an
    outcome that is not `overridden` ("Explicit reject with override reasons")."""
    suggestion = str(uuid.uuid4())
    cases = [
        (feedback_on(outcome="accepted"), ["feedback.0.acceptedSuggestions"]),
        (
            {
                "feedback": [
                    {
                        **feedback_on()["feedback"][0],
                        "outcome": "accepted",
                        "acceptedSuggestions": None,
                    }
                ]
            },
            ["feedback.0.acceptedSuggestions"],
        ),
        (
            feedback_on(outcome="accepted", acceptedSuggestions=[{"id": suggestion}]),
            ["feedback.0.acceptedSuggestions.0.id"],
        ),
        (
            feedback_on(acceptedSuggestions=[{"id": suggestion}, {"id": "s2"}]),
            ["feedback.0.acceptedSuggestions.0.id", "feedback.0.acceptedSuggestions.1.id"],
        ),
        (
            feedback_on(outcome="accepted", overrideReason=REASON),
            ["feedback.0.acceptedSuggestions", "feedback.0.overrideReason"],
        ),
    ]
    for body, fields in cases:
        response = api.post(FEEDBACK, json=body, headers=AUTH)
        assert response.status_code == 400, response.text
        issues = response.json()["issue"]
        assert [issue["expression"] for issue in issues] == [[field] for field in fields]
        assert all(issue["diagnostics"].startswith(issue["expression"][0]) for issue in issues)
    refused = api.post(FEEDBACK, json=cases[2][0], headers=AUTH).json()["issue"][0]
    assert "carry no suggestions" in refused["diagnostics"]
    assert suggestion in refused["diagnostics"]


def test_feedback_on_a_card_the_service_did_not_keep_is_logged(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Feedback: "the feedback endpoint may be called ... even multiple times for a card",
    and "a card once ignored could later be acted upon". The service keeps no card after
    answering, so feedback on any card uuid that is a UUID (this service's cards' form) is
    logged as given, in UTC with `Z` or `+00:00` and in either letter case, with an override
    reason or without (a free-text comment only, no reason: "instead of only leaving a
    userComment")."""
    name = "itp-too-old"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    call = hook_call(name, prefetch=prefetch)
    with caplog.at_level("INFO", logger="engine.service"):
        given = api.post(CDS_SERVICE, json=call, headers=AUTH)
    (answered,) = given.json()["cards"]
    # The call's log line names its hookInstance and the card uuid, so feedback on the card
    # can be matched to the call that answered it.
    (answer_logged,) = [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "cds hook answered"
    ]
    assert answer_logged["hook_instance"] == call["hookInstance"]
    assert answer_logged["card"] == answered["uuid"]
    bodies = [
        feedback_on(card=answered["uuid"], overrideReason=REASON),
        feedback_on(card=str(uuid.uuid4()).upper(), outcomeTimestamp="2026-11-01t10:00:00.25z"),
        feedback_on(outcomeTimestamp="2026-11-01T10:00:00+00:00"),
        feedback_on(overrideReason={"userComment": "seen elsewhere"}),
    ]
    with caplog.at_level("INFO", logger="engine.service"):
        for body in bodies:
            response = api.post(FEEDBACK, json=body, headers=AUTH)
            assert response.status_code == 200, response.text
    logged = [r.fields for r in caplog.records if r.getMessage() == "cds card feedback"]  # type: ignore[attr-defined]
    assert [fields["card"] for fields in logged] == [body["feedback"][0]["card"] for body in bodies]
    assert [fields["override_reason"] for fields in logged] == ["not-now", None, None, None]


# --------------------------------------------------------------------------- Trusting CDS Clients


def claims(**changes: Any) -> dict[str, Any]:
    """A CDS client's JWT payload for the service endpoint; `None` values are left out."""
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": "ehr-client",
        "aud": ENDPOINT,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
    }
    payload.update(changes)
    return {key: value for key, value in payload.items() if value is not None}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def jwks_file(folder: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    """The CDS client's JWK Set: an RSA key declared RS384, a P-384 key without `alg`."""
    rsa_public = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_public = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    document = {
        "keys": [
            {**rsa_public, "kid": "ehr-rs384", "alg": "RS384", "use": "sig"},
            {**ec_public, "kid": "ehr-es384", "use": "sig"},
        ]
    }
    path = folder / "jwks.json"
    path.write_bytes(orjson.dumps(document))
    return path


@pytest.fixture
def jwt_api(
    service_client: ClientFactory,
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> TestClient:
    """A service that trusts the client's JWK Set and issuer (no shared secret)."""
    return service_client(
        api_auth=ApiAuthSettings(
            jwks_file=jwks_file(tmp_path, rsa_key, ec_key), jwt_issuers=frozenset({ISSUER})
        )
    )


def rs384(key: rsa.RSAPrivateKey, payload: dict[str, Any], **header: Any) -> str:
    return jwt.encode(payload, key, algorithm="RS384", headers={"kid": "ehr-rs384", **header})


def call(api: TestClient, token: str | None, path: str = CDS_SERVICE) -> Any:
    """A call with the token; past authentication it is a 412 (no prefetch, no fhirServer)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return api.post(path, json=hook_call("p1", prefetch={"patient": None}), headers=headers)


def test_a_jwt_signed_with_a_key_of_the_jwk_set_is_accepted(
    jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """Trusting CDS Clients: the client signs with its private key; "The `kid` value from the
    JWT header allows a CDS Service to identify the correct JWK in the JWK Set"; JWT Signing
    Algorithm: ES384 and RS384 are RECOMMENDED. A key of another client, or a `kid` the set
    does not hold, is refused."""
    assert call(jwt_api, rs384(rsa_key, claims())).status_code == 412
    es384 = jwt.encode(claims(), ec_key, algorithm="ES384", headers={"kid": "ehr-es384"})
    assert call(jwt_api, es384).status_code == 412
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_unauthorized(call(jwt_api, rs384(other_key, claims())), "Signature verification")
    unknown = rs384(rsa_key, claims(), kid="ehr-unknown")
    assert_unauthorized(call(jwt_api, unknown), "kid names no configured key")
    assert_unauthorized(call(jwt_api, None), "Authorization: Bearer token")


def test_the_jwt_header_names_its_key_and_type(
    jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Trusting CDS Clients, JWT header: `kid` REQUIRED ("The identifier of the key-pair used
    to sign this JWT"); `typ` REQUIRED, "Fixed value: JWT"."""
    unnamed = jwt.encode(claims(), rsa_key, algorithm="RS384")
    assert_unauthorized(call(jwt_api, unnamed), "must name its key (kid)")
    for media_type in ("at+jwt", None):
        typed = rs384(rsa_key, claims(), typ=media_type)
        assert_unauthorized(call(jwt_api, typed), "typ must be JWT")
    assert call(jwt_api, rs384(rsa_key, claims(), typ="JWT")).status_code == 412


def test_symmetric_and_unsigned_jwts_are_refused(
    jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    """JWT Signing Algorithm: "JWTs SHALL NOT be signed using any symmetric algorithm" (HMAC:
    HS256 with any secret, even the public key's text) and "SHALL NOT be signed used the
    `none` algorithm"."""
    hs256 = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "ehr-rs384"})
    assert_unauthorized(call(jwt_api, hs256), "algorithm 'HS256' is not accepted")
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": "ehr-rs384"})
    assert_unauthorized(call(jwt_api, unsigned), "algorithm 'none' is not accepted")


def test_hs256_only_in_the_explicit_test_mode(service_client: ClientFactory) -> None:
    """JWT Signing Algorithm (no symmetric algorithms): a shared secret is refused at start
    unless the HS256 test mode is turned on explicitly; in that mode HS256 is accepted (with
    `kid`, like any JWT) and a token signed with another secret is not."""
    environment = {SECRET_VARIABLE: SECRET}
    secret = SecretReference(environment_variable=SECRET_VARIABLE)
    with pytest.raises(ServiceConfigError, match="HS256 JWT secret is for tests only"):
        create_app(
            make_settings(environment=environment, api_auth=ApiAuthSettings(jwt_secret=secret))
        )
    api = service_client(
        environment=environment,
        api_auth=ApiAuthSettings(jwt_secret=secret, jwt_hs256_test_mode=True),
    )

    def hs256(payload: dict[str, Any], key: str = SECRET) -> str:
        return jwt.encode(payload, key, algorithm="HS256", headers={"kid": "test"})

    assert call(api, hs256(claims())).status_code == 412
    other = hs256(claims(), "another-secret-of-enough-length-000")
    assert_unauthorized(call(api, other), "Signature verification failed")


def test_the_audience_is_the_endpoint_called(
    jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Trusting CDS Clients: `aud` "MUST be the URL of the CDS Service endpoint being
    invoked", a string or an array of strings: the service's base URL, or another service's
    endpoint, is refused; for the feedback endpoint, its own URL."""
    for audience in (ENDPOINT, [ENDPOINT], ["https://elsewhere.example.org", ENDPOINT]):
        assert call(jwt_api, rs384(rsa_key, claims(aud=audience))).status_code == 412
    for audience in ("http://testserver", "http://testserver/", f"{ENDPOINT}-other"):
        refused = call(jwt_api, rs384(rsa_key, claims(aud=audience)))
        assert_unauthorized(refused, "Audience doesn't match")
    feedback = {
        "feedback": [
            {
                "card": str(uuid.uuid4()),
                "outcome": "overridden",
                "outcomeTimestamp": "2026-11-01T10:00:00Z",
            }
        ]
    }
    for audience, status in ((f"http://testserver{FEEDBACK}", 200), (ENDPOINT, 401)):
        token = rs384(rsa_key, claims(aud=audience))
        answer = jwt_api.post(FEEDBACK, json=feedback, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == status, answer.text


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"iss": None}, 'missing the "iss" claim'),
        ({"aud": None}, 'missing the "aud" claim'),
        ({"exp": None}, 'missing the "exp" claim'),
        ({"iat": None}, 'missing the "iat" claim'),
        ({"jti": None}, 'missing the "jti" claim'),
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 660}, "expired"),
        ({"exp": int(time.time()) + 3600}, "longer than 5 minutes"),
        ({"iss": "https://intruder.example.org"}, "issuer is not trusted"),
    ],
)
def test_the_payload_carries_the_required_claims(
    jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey, changes: dict[str, Any], words: str
) -> None:
    """Trusting CDS Clients, JWT payload: `iss`, `aud`, `exp`, `iat`, `jti` REQUIRED; `exp`
    "no more than 5 minutes in the future" (past it, expired); "CDS Services SHOULD maintain
    an allowlist of the `iss`" (the configured issuers)."""
    assert_unauthorized(call(jwt_api, rs384(rsa_key, claims(**changes))), words)


def test_a_replayed_jti_is_refused(jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey) -> None:
    """Trusting CDS Clients: `jti` is "A nonce string value that uniquely identifies this
    authentication JWT (used to protect against replay attacks)": the same JWT twice is
    refused the second time; a new `jti` is accepted."""
    once = rs384(rsa_key, claims())
    assert call(jwt_api, once).status_code == 412
    assert_unauthorized(call(jwt_api, once), "used before (same jti)")
    assert call(jwt_api, rs384(rsa_key, claims())).status_code == 412


def test_the_algorithm_is_bound_to_the_key(
    jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """Trusting CDS Clients (`alg`, the algorithm of the key `kid` names; RFC 7517 4.4, RFC
    8725 3.1): a key declared RS384 verifies RS384 only; a P-384 key without `alg`, ES384
    only."""
    rs256 = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "ehr-rs384"})
    assert_unauthorized(call(jwt_api, rs256), "is for RS384, not RS256")
    rs384_for_the_ec_key = rs384(rsa_key, claims(), kid="ehr-es384")
    assert_unauthorized(call(jwt_api, rs384_for_the_ec_key), "is for ES384, not RS384")
    es384 = jwt.encode(claims(), ec_key, algorithm="ES384", headers={"kid": "ehr-es384"})
    assert call(jwt_api, es384).status_code == 412


# --------------------------------------------------------------------------- malformed prefetch


def _first_condition(prefetch: dict[str, Any]) -> dict[str, Any]:
    return next(
        entry["resource"]
        for entry in prefetch["condition"]["entry"]
        if entry["resource"]["resourceType"] == "Condition"
    )


def _prefetch_changes() -> list[tuple[str, Any, str]]:
    """(label, change to the prefetch, the element the 400 must name)."""
    return [
        ("entry object", lambda p: p["condition"].update(entry={}), "prefetch.condition.entry"),
        ("entry null", lambda p: p["condition"].update(entry=None), "prefetch.condition.entry"),
        ("entry number", lambda p: p["condition"].update(entry=5), "prefetch.condition.entry"),
        ("link number", lambda p: p["condition"].update(link=5), "prefetch.condition.link"),
        ("total text", lambda p: p["condition"].update(total="x"), "prefetch.condition.total"),
        ("total negative", lambda p: p["condition"].update(total=-1), "prefetch.condition.total"),
        ("total true", lambda p: p["condition"].update(total=True), "prefetch.condition.total"),
        (
            "link item number",
            lambda p: p["condition"].update(link=[5]),
            "prefetch.condition.link[0]",
        ),
        ("type number", lambda p: p["condition"].update(type=5), "prefetch.condition.type"),
        (
            "search number",
            lambda p: p["condition"]["entry"][0].update(search=5),
            "prefetch.condition.entry[0].search",
        ),
        (
            "coding [5]",
            lambda p: _first_condition(p)["code"].update(coding=[5]),
            "prefetch.condition.entry[0].resource.code.coding[0]",
        ),
        (
            "coding system number",
            lambda p: _first_condition(p)["code"].update(coding=[{"system": 5, "code": "x"}]),
            "prefetch.condition.entry[0].resource.code.coding[0].system",
        ),
        (
            "coding an object",
            lambda p: _first_condition(p)["code"].update(coding={"code": "x"}),
            "prefetch.condition.entry[0].resource.code.coding",
        ),
        (
            "clinicalStatus a string",
            lambda p: _first_condition(p).update(clinicalStatus="active"),
            "prefetch.condition.entry[0].resource.clinicalStatus",
        ),
        (
            "category an object",
            lambda p: _first_condition(p).update(category={"text": "problem"}),
            "prefetch.condition.entry[0].resource.category",
        ),
        (
            "onsetDateTime a number",
            lambda p: _first_condition(p).update(onsetDateTime=20250101),
            "prefetch.condition.entry[0].resource.onsetDateTime",
        ),
        (
            "a contained resource's code",
            lambda p: _first_condition(p).update(
                contained=[{"resourceType": "Medication", "id": "m", "code": {"coding": 5}}]
            ),
            "prefetch.condition.entry[0].resource.contained[0].code.coding",
        ),
        (
            "an entry without resourceType (the Bundle reader's check)",
            lambda p: p["condition"]["entry"][0]["resource"].pop("resourceType"),
            "prefetch.condition.entry[0].resource.resourceType",
        ),
        (
            "subject number",
            lambda p: _first_condition(p).update(subject=5),
            "prefetch.condition.entry[0].resource.subject",
        ),
        (
            "id number",
            lambda p: _first_condition(p).update(id=5),
            "prefetch.condition.entry[0].resource.id",
        ),
        (
            "an outcome entry whose issue is a number",
            lambda p: p["condition"]["entry"].append(
                {
                    "resource": {"resourceType": "OperationOutcome", "issue": 5},
                    "search": {"mode": "outcome"},
                }
            ),
            "prefetch.condition.entry[1].resource.issue",
        ),
        (
            "an OperationOutcome whose issue is a number",
            lambda p: p.update(condition={"resourceType": "OperationOutcome", "issue": 5}),
            "prefetch.condition.issue",
        ),
        (
            "an Observation in the condition search",
            lambda p: p["condition"]["entry"].append(
                {"resource": p["observation"]["entry"][0]["resource"]}
            ),
            "prefetch.condition.entry[1].resource",
        ),
        (
            "a Patient element of the wrong type",
            lambda p: p["patient"].update(birthDate=5),
            "prefetch.patient.birthDate",
        ),
        (
            "an Observation value that is not a number",
            lambda p: p["observation"]["entry"][0]["resource"].update(
                valueQuantity={"value": "42", "unit": "10*9/L"}
            ),
            "prefetch.observation.entry[0].resource.valueQuantity.value",
        ),
        (
            "a MedicationRequest intent that is a list",
            lambda p: p["medicationRequest"]["entry"][0]["resource"].update(intent=["order"]),
            "prefetch.medicationRequest.entry[0].resource.intent",
        ),
    ]


@pytest.mark.parametrize(
    ("change", "expression"),
    [(change, expression) for _, change, expression in _prefetch_changes()],
    ids=[label for label, _, _ in _prefetch_changes()],
)
def test_a_prefetch_that_is_not_fhir_json_is_refused_naming_the_element(
    api: TestClient, change: Any, expression: str
) -> None:
    """Prefetch Template: the value of a key is the FHIR resource its query returns (a search:
    a Bundle, FHIR R4 JSON 2.6.2: a repeating element is an array); Use of JSON: "JSON
    elements SHALL NOT be null". A value the service cannot read is answered 400 naming the
    element, never read as "no conditions on record" (which turned a card into "Not
    eligible"), and never a 500."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    change(prefetch)
    response = api.post(CDS_SERVICE, json=hook_call(name, prefetch=prefetch), headers=AUTH)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [expression], issue
    assert issue["diagnostics"].startswith(expression), issue


def test_elements_the_engine_does_not_read_are_accepted(api: TestClient) -> None:
    """FHIR R4 JSON and Extensibility (2.6.2, 2.4): a resource may carry extensions, and real
    EHR data carries elements a vendor adds or a later version defines. The prefetch check is
    of the shape of what the engine reads, not a model of every element: a Condition with an
    unknown element (`vendorFlag`), a standard extension and a primitive's `_element` is read
    and evaluated as without them (the same card), not refused."""
    name = "itp-relapsed-candidate"
    plain = prefetch_from(example(name), loaded_trial(api), name)
    extended = prefetch_from(example(name), loaded_trial(api), name)
    conditions = [
        entry["resource"]
        for entry in extended["condition"]["entry"]
        if entry["resource"]["resourceType"] == "Condition"
    ]
    assert conditions
    for condition in conditions:
        condition["vendorFlag"] = True
        condition["extension"] = [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/condition-assertedDate",
                "valueDateTime": "2024-01-01",
            }
        ]
        condition["_recordedDate"] = {
            "extension": [{"url": "http://example.org/x", "valueCode": "y"}]
        }
        condition["code"]["vendorCodeQuality"] = {"score": 0.9}
    answers = [
        api.post(CDS_SERVICE, json=hook_call(name, prefetch=given_prefetch), headers=AUTH)
        for given_prefetch in (plain, extended)
    ]
    assert all(answer.status_code == 200 for answer in answers), answers[1].text
    first, second = (answer.json()["cards"][0] for answer in answers)
    assert same_card(first, second)
    assert "Not eligible" not in second["summary"], second["summary"]


@pytest.mark.parametrize("value", ["numeric string", True, [1]])
@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_exp_and_iat_are_numbers(
    jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey, claim: str, value: Any
) -> None:
    """Trusting CDS Clients, JWT payload: `exp` and `iat` are *number* (RFC 7519 4.1.4: a
    NumericDate is a JSON numeric value): a validly signed JWT whose `exp` or `iat` is a
    numeric string is refused with 401, not a 500."""
    payload = claims()
    payload[claim] = str(payload[claim]) if isinstance(value, str) else value
    words = f"{claim} must be a number" if isinstance(value, str) else ""
    assert_unauthorized(call(jwt_api, rs384(rsa_key, payload)), words)


# --------------------------------------------------------------------------- media types

_ROUTES = ("/evaluate", CDS_SERVICE, FEEDBACK, "/fhir-notify", "/fhir-notify/Patient/p1")


@pytest.mark.parametrize("path", _ROUTES)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "image/png",
        "application/json-patch+json",
        "application/json; charset=utf-16",
        "application/x-www-form-urlencoded",
        "json",
        None,
    ],
)
def test_a_body_that_is_not_json_is_415(
    api: TestClient, path: str, content_type: str | None
) -> None:
    """Use of JSON: data "MUST be sent and received as JSON"; FHIR R4 http.html, "Content
    Types and encodings": `application/fhir+json` (and `application/json`), UTF-8. Another
    media type, another charset, or a body without Content-Type is 415 Unsupported Media
    Type (RFC 9110 15.5.16) with `Accept` naming the accepted types (RFC 9110 12.5.1), not a
    400 blaming the body's shape; on /fhir-notify it was accepted whatever its type."""
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    content = orjson.dumps(hook_call("p1"))
    method = "PUT" if path == "/fhir-notify/Patient/p1" else "POST"
    response = api.request(method, path, content=content, headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["accept"] == "application/fhir+json, application/json"
    issue = response.json()["issue"][0]
    assert issue["code"] == "not-supported"
    assert issue["expression"] == ["Content-Type"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        "application/fhir+json",
        "application/fhir+json; fhirVersion=4.0; charset=utf-8",
    ],
)
def test_json_media_types_are_accepted(api: TestClient, content_type: str) -> None:
    """The JSON media types are taken with any case and a UTF-8 charset (RFC 9110 8.3.1: type,
    subtype and parameter names are case-insensitive; FHIR R4 http.html allows the
    `fhirVersion` parameter)."""
    name = "itp-relapsed-candidate"
    prefetch = prefetch_from(example(name), loaded_trial(api), name)
    content = orjson.dumps(hook_call(name, prefetch=prefetch))
    headers = {**AUTH, "Content-Type": content_type}
    assert api.post(CDS_SERVICE, content=content, headers=headers).status_code == 200


def test_a_notification_without_a_body_needs_no_content_type(api: TestClient) -> None:
    """An R4 rest-hook without payload (R4 2.46.7.1) sends no body, so no Content-Type: past the
    media type check, the service without a FHIR server answers 409."""
    assert api.post("/fhir-notify", headers=AUTH).status_code == 409


def test_credentials_are_checked_before_the_media_type(api: TestClient) -> None:
    """A caller without credentials learns nothing about the route: 401 before 415."""
    response = api.post(CDS_SERVICE, content=b"{}", headers={"Content-Type": "text/plain"})
    assert_unauthorized(response, "")


# --------------------------------------------------------------------------- CORS

SANDBOX = "https://sandbox.cds-hooks.org"


def test_cors_for_the_origins_the_operator_names(service_client: ClientFactory) -> None:
    """Security and Safety, "Cross-Origin Resource Sharing": "CDS Services and browser-based
    CDS Clients will require CORS support". With `--cors-origin`, a preflight from a named
    origin is answered with the methods and headers a call needs, and the call's answer
    names the origin; another origin gets no `Access-Control-Allow-Origin`."""
    api = service_client(cors_origins=(SANDBOX,))
    preflight = {
        "Origin": SANDBOX,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    answer = api.options(CDS_SERVICE, headers=preflight)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == SANDBOX
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    call = api.get("/cds-services", headers={"Origin": SANDBOX})
    assert call.headers["access-control-allow-origin"] == SANDBOX
    other = api.options(CDS_SERVICE, headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    assert (
        "access-control-allow-origin"
        not in api.get("/cds-services", headers={"Origin": "https://evil.example"}).headers
    )


def test_no_cors_by_default(api: TestClient) -> None:
    """Without `--cors-origin` no browser origin may call the service."""
    response = api.get("/cds-services", headers={"Origin": SANDBOX})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("origin", ["*", "https://ehr.example.org/app", "ftp://ehr", "ehr"])
def test_a_cors_origin_is_an_origin(origin: str) -> None:
    """An origin is scheme, host and port (RFC 6454): a path, `*` or another scheme stops
    the start."""
    with pytest.raises(ServiceConfigError, match="must be an origin"):
        create_app(make_settings(cors_origins=(origin,)))
