"""`POST /evaluate` against a FHIR server (sekmet): pull, write back, and 502/504 when the
server fails.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
import respx
from scripted_fhir import capability_statement, patient_search, searchset
from sekmet_server import SekmetServer
from service_support import (
    AUTH,
    CDS_SERVICE,
    ClientFactory,
    as_on_a_server,
    cli_bundle,
    copy_patient,
    example,
    hook_call,
    loaded_trial,
    make_settings,
    prefetch_from,
    server_settings,
    smart_config,
)

from engine.errors import ServiceConfigError
from engine.service import create_app
from engine.service.settings import ServiceSettings
from engine.sources import RetryPolicy, ServerLimits

FAST_FAILURE = RetryPolicy(attempts=1, timeout=1.0, give_up_after=2.0)


def test_pulls_the_patient_as_the_command_line_reads_the_file(
    service_client: ClientFactory, sekmet: SekmetServer, tmp_path: Path
) -> None:
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    response = api.post("/evaluate", json={"patient": "itp-relapsed-candidate"}, headers=AUTH)
    assert response.status_code == 200, response.text
    expected = cli_bundle(tmp_path, "itp-relapsed-candidate")["entry"]
    assert response.json()["researchSubject"] == expected[1]["resource"]
    assert response.json()["detectedIssue"] == expected[2]["resource"]
    assert "written" not in response.json()


def test_writes_back_in_place(service_client: ClientFactory, sekmet: SekmetServer) -> None:
    patient_id = f"service-write-{uuid.uuid4().hex[:8]}"
    with sekmet.http() as http:
        copy_patient(http, "itp-relapsed-missing-labs", patient_id)
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    body = {"patient": patient_id, "write": True}
    first = api.post("/trials/NCT05315778/evaluate", json=body, headers=AUTH)
    second = api.post("/trials/NCT05315778/evaluate", json=body, headers=AUTH)
    assert first.status_code == 200, first.text
    assert [entry["status"] for entry in first.json()["written"]][1:] == ["201 Created"] * 2
    assert [entry["status"] for entry in second.json()["written"]] == ["200 OK"] * 3
    location = second.json()["written"][1]["location"]
    subject_path = location[location.index("ResearchSubject/") :].split("/_history")[0]
    with sekmet.http() as http:
        stored = http.get(subject_path).json()
    assert stored["status"] == "potential-candidate"
    assert stored["meta"]["versionId"] == "2"


def test_report_page_of_a_patient_on_the_server(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    path = "/trials/NCT05315778/patients/itp-relapsed-missing-labs/report"
    assert api.get(path).status_code == 401
    response = api.get(path, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page.startswith("<!DOCTYPE html>")
    assert "potential-candidate" in page and "Data to add" in page
    unknown = api.get("/trials/NCT05315778/patients/nobody-here/report", headers=AUTH)
    assert unknown.status_code == 404
    assert api.get("/trials/NCT0/patients/x/report", headers=AUTH).status_code == 404


def test_a_cds_card_links_to_the_report_page_a_browser_opens(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    """The card's link to the service's own report page is opened by the clinician's browser,
    which sends no bearer token (CDS Hooks 2.0, "Link": an absolute link is opened by the CDS
    client): it is signed for that page for a short time (`engine.service.report_links`) and
    the page answers it, never cached and sending its address on to no link (it was a 401)."""
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    name = "itp-relapsed-missing-labs"
    call = hook_call(name, prefetch=prefetch_from(example(name), loaded_trial(api), name))
    answer = api.post(CDS_SERVICE, json=call, headers=AUTH)
    assert answer.status_code == 200, answer.text
    (link,) = answer.json()["cards"][0]["links"]
    url = urlsplit(link["url"])
    assert url.path == f"/trials/NCT05315778/patients/{name}/report"
    assert sorted(parse_qs(url.query)) == ["expires", "signature"]
    page = api.get(f"{url.path}?{url.query}")  # no Authorization header
    assert page.status_code == 200, page.text
    assert "potential-candidate" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    query = parse_qs(url.query)
    other = api.get(
        "/trials/NCT05315778/patients/itp-relapsed-candidate/report", params=query
    )  # the same signature, another patient
    assert other.status_code == 401
    assert other.headers["www-authenticate"] == "Bearer"
    assert "does not match" in other.json()["issue"][0]["diagnostics"]
    twice = api.get(f"{url.path}?{url.query}&signature=x")
    assert twice.status_code == 401
    assert "once each" in twice.json()["issue"][0]["diagnostics"]
    assert api.get(url.path, params={"expires": query["expires"][0]}).status_code == 401
    assert api.get(url.path, headers=AUTH).status_code == 200  # the bearer token as before
    # a system holding the token that follows a card's link (expired, or altered) is served
    assert api.get(f"{url.path}?{url.query}&signature=x", headers=AUTH).status_code == 200


def test_unknown_patient_is_404(service_client: ClientFactory, sekmet: SekmetServer) -> None:
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    response = api.post("/evaluate", json={"patient": "nobody-here"}, headers=AUTH)
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


def test_ready_checks_the_server(service_client: ClientFactory, sekmet: SekmetServer) -> None:
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    assert api.get("/ready").json()["fhirServer"] == "reachable"
    down = service_client(server_settings("http://127.0.0.1:9/fhir", "token"))
    response = down.get("/ready")
    assert response.status_code == 503
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "could not be reached" in diagnostics
    assert "127.0.0.1" not in diagnostics


FAKE_SERVER = "http://fhir.invalid/r4"


def fake_server_settings() -> ServiceSettings:
    return server_settings(FAKE_SERVER, "token", fhir_retry=FAST_FAILURE)


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (httpx.Response(503, text="down for maintenance"), 502, "transient"),
        (httpx.Response(401), 502, "exception"),
        (httpx.ReadTimeout("too slow"), 504, "timeout"),
        (httpx.ConnectError("refused"), 502, "transient"),
    ],
)
def test_server_faults_are_502_or_504(
    service_client: ClientFactory, failure: httpx.Response | Exception, status: int, code: str
) -> None:
    api = service_client(fake_server_settings())
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{FAKE_SERVER}/metadata").mock(side_effect=[failure])
        response = api.post("/evaluate", json={"patient": "p1"}, headers=AUTH)
    assert response.status_code == status, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == code
    assert "the FHIR server" in issue["diagnostics"]
    assert FAKE_SERVER not in issue["diagnostics"]  # no upstream address in the answer
    assert "GET metadata" in issue["diagnostics"]


def test_a_server_whose_search_never_ends_is_a_502_not_a_busy_worker(
    service_client: ClientFactory,
) -> None:
    """The service's clients carry `fhir_limits` (the page limit): a server whose `next` links
    never end ties up no worker."""
    limited = server_settings(
        FAKE_SERVER, "token", fhir_retry=FAST_FAILURE, fhir_limits=ServerLimits(max_pages=4)
    )
    api = service_client(limited)
    statement = capability_statement([patient_search("Observation", ["search-type"])])
    patient = {"resourceType": "Patient", "id": "p1"}

    def endless(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "0"))
        link = f"{FAKE_SERVER}/Observation?patient=Patient/p1&page={page + 1}"
        return httpx.Response(200, json=searchset(next_url=link))

    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{FAKE_SERVER}/metadata").mock(return_value=httpx.Response(200, json=statement))
        mock.get(f"{FAKE_SERVER}/Patient/p1").mock(return_value=httpx.Response(200, json=patient))
        observations = mock.get(f"{FAKE_SERVER}/Observation").mock(side_effect=endless)
        mock.get(url__regex=rf"{FAKE_SERVER}/[A-Za-z]+$").mock(
            return_value=httpx.Response(200, json=searchset())
        )
        response = api.post("/evaluate", json={"patient": "p1"}, headers=AUTH)
    assert response.status_code == 502, response.text
    assert observations.call_count == 4
    assert "(GET Observation)" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("field", ["status", "intent"])
@pytest.mark.parametrize("value", [5, {"code": "active"}, ["active"]])
def test_a_status_or_intent_that_is_not_a_code_on_the_server_is_no_500(
    service_client: ClientFactory, field: str, value: object
) -> None:
    """A MedicationRequest read from the server whose status or intent is no code (a number,
    an object, a list; an object or a list was a 500) is evaluated: the criterion that reads
    it is unknown, naming it, and the card and report page are answered too."""
    resources = as_on_a_server(example("itp-relapsed-candidate"))
    for resource in resources:
        if resource["resourceType"] == "MedicationRequest":
            resource[field] = value
    patient_id = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    api = service_client(fake_server_settings())
    statement = capability_statement([], everything=True)

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metadata"):
            return httpx.Response(200, json=statement)
        if request.url.path.endswith(f"/Patient/{patient_id}/$everything"):
            return httpx.Response(200, json=searchset(*resources))
        return httpx.Response(200, json=searchset())  # every other search: none

    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith=FAKE_SERVER).mock(side_effect=server)
        evaluated = api.post("/evaluate", json={"patient": patient_id}, headers=AUTH)
        call = hook_call(patient_id, fhirServer=FAKE_SERVER)
        card = api.post(CDS_SERVICE, json=call, headers=AUTH)
        page = api.get(f"/trials/NCT05315778/patients/{patient_id}/report", headers=AUTH)
    assert evaluated.status_code == 200, evaluated.text
    (first_line,) = [
        item for item in evaluated.json()["criteria"] if item["id"].startswith("inclusion-1")
    ]
    assert first_line["truth"] == "unknown"
    assert f"its {field} is " in first_line["reason"] and "not a code" in first_line["reason"]
    assert card.status_code == 200, card.text
    assert page.status_code == 200, page.text


def test_the_service_authenticates_to_its_server_with_smart_backend_services(
    service_client: ClientFactory, tmp_path: Path
) -> None:
    """SMART Backend Services (hl7.org/fhir/smart-app-launch, "Backend Services"): with an
    auth config (`serve --auth-config`), the service asks the token endpoint for an access
    token with a signed client assertion (`grant_type=client_credentials`,
    `client_assertion_type` jwt-bearer, the assertion's `aud` the token endpoint) and sends it
    to the FHIR server as a bearer token, for every request (pull, readiness). Before, serve
    took only a static token, which an EHR's system access expires."""
    token_url = "https://auth.example.org/token"
    config, key = smart_config(tmp_path, token_url, scope="system/*.rs")
    settings = make_settings(
        fhir_server=FAKE_SERVER, fhir_auth_config=config, fhir_retry=FAST_FAILURE
    )
    api = service_client(settings)
    resources = as_on_a_server(example("itp-too-old"))
    patient_id = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    statement = capability_statement([], everything=True)
    forms: list[dict[str, list[str]]] = []
    bearers: set[str | None] = set()

    def token(request: httpx.Request) -> httpx.Response:
        forms.append(parse_qs(request.content.decode()))
        return httpx.Response(
            200, json={"access_token": "smart-token-1", "token_type": "bearer", "expires_in": 300}
        )

    def server(request: httpx.Request) -> httpx.Response:
        bearers.add(request.headers.get("authorization"))
        if request.url.path.endswith("/metadata"):
            return httpx.Response(200, json=statement)
        if request.url.path.endswith(f"/Patient/{patient_id}/$everything"):
            return httpx.Response(200, json=searchset(*resources))
        return httpx.Response(200, json=searchset())

    with respx.mock(assert_all_called=False) as mock:
        mock.post(token_url).mock(side_effect=token)
        mock.get(url__startswith=FAKE_SERVER).mock(side_effect=server)
        evaluated = api.post("/evaluate", json={"patient": patient_id}, headers=AUTH)
        ready = api.get("/ready")
    assert evaluated.status_code == 200, evaluated.text
    assert ready.status_code == 200, ready.text
    assert bearers == {"Bearer smart-token-1"}
    assert len(forms) == 1  # the token is cached and reused
    (form,) = forms
    assert form["grant_type"] == ["client_credentials"]
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assert form["scope"] == ["system/*.rs"]
    claims = jwt.decode(
        form["client_assertion"][0], key.public_key(), algorithms=["ES384"], audience=token_url
    )
    assert claims["iss"] == claims["sub"] == "trialsieve"


def test_a_token_and_an_auth_config_together_are_refused(tmp_path: Path) -> None:
    """One way to authenticate to the server: a static token and a SMART config together stop
    the start (ServiceConfigError), as `evaluate --server` refuses both."""
    config = tmp_path / "auth.toml"
    config.write_text("[smart]\n", encoding="utf-8")
    settings = server_settings(FAKE_SERVER, "token", fhir_auth_config=config)
    with pytest.raises(ServiceConfigError, match="not both"):
        create_app(settings)


def test_ready_asks_the_server_at_most_once_in_a_while(service_client: ClientFactory) -> None:
    """`/ready` needs no credentials: an anonymous client polling it made the service send the
    FHIR server one request per call, with the service's own token. The probe's answer is
    shared for `ready_cache_seconds` (5 s by default), a failure as well as a success; with 0
    every call asks."""
    for cache_seconds, asked in ((5.0, 1), (0.0, 20)):
        api = service_client(
            server_settings(
                FAKE_SERVER, "token", fhir_retry=FAST_FAILURE, ready_cache_seconds=cache_seconds
            )
        )
        with respx.mock(assert_all_called=False) as mock:
            metadata = mock.get(f"{FAKE_SERVER}/metadata").mock(
                return_value=httpx.Response(503, text="down")
            )
            answers = [api.get("/ready") for _ in range(20)]
        assert {answer.status_code for answer in answers} == {503}
        assert metadata.call_count == asked, cache_seconds
