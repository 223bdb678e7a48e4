"""`POST /evaluate` on inline Bundles: the result `trialsieve evaluate` gives, and every 4xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from service_support import (
    AS_OF,
    AUTH,
    CRITERIA,
    PATIENTS,
    ClientFactory,
    cli_bundle,
    example,
    make_settings,
    server_settings,
)

from engine.errors import ServiceConfigError, TrialsieveError
from engine.service import create_app


@pytest.mark.parametrize(
    "patient", ["itp-relapsed-candidate", "itp-secondary-lupus", "itp-relapsed-missing-labs"]
)
def test_answers_what_the_command_line_writes(
    api: TestClient, tmp_path: Path, patient: str
) -> None:
    response = api.post("/evaluate", json={"bundle": example(patient)}, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = cli_bundle(tmp_path, patient)["entry"]
    assert answer["researchSubject"] == expected[1]["resource"]
    assert answer["detectedIssue"] == expected[2]["resource"]
    assert answer["status"] == expected[1]["resource"]["status"]
    assert answer["trial"] == "NCT05315778"
    assert answer["asOf"] == AS_OF.isoformat()
    first = answer["criteria"][0]
    assert set(first) == {
        "id",
        "number",
        "label",
        "text",
        "kind",
        "verdict",
        "outcome",
        "explanation",
        "toSettle",
        "questions",
        "truth",
        "reason",
        "evidence",
        "missing",
        "manual",
    }
    assert first["number"] == "I1" and first["text"].startswith("Refractory ITP defined")
    assert len(answer["criteria"]) == 21
    assert answer["newestData"].startswith("2026-")


def test_attestations_as_in_the_file(api: TestClient, tmp_path: Path) -> None:
    from ruamel.yaml import YAML

    document = YAML(typ="safe").load((PATIENTS.parent / "attestations.yaml").read_text())
    entries = [
        {**entry, "date": entry["date"].isoformat()}
        for entry in document["attestations"]
        if entry["patient"] == "itp-relapsed-candidate"
    ]
    response = api.post(
        "/trials/NCT05315778/evaluate",
        json={"bundle": example("itp-relapsed-candidate"), "attestations": entries},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    expected = cli_bundle(
        tmp_path,
        "itp-relapsed-candidate",
        "--attestations",
        str(PATIENTS.parent / "attestations.yaml"),
    )["entry"]
    assert response.json()["status"] == "eligible"
    assert response.json()["researchSubject"] == expected[1]["resource"]
    assert response.json()["detectedIssue"] == expected[2]["resource"]


def test_as_of_from_the_request(api: TestClient) -> None:
    body = {"bundle": example("itp-too-old"), "asOf": "2030-01-01"}
    answer = api.post("/evaluate", json=body, headers=AUTH).json()
    assert answer["asOf"] == "2030-01-01"
    assert answer["detectedIssue"]["identifiedDateTime"] == "2030-01-01"


def trial_copy(folder: Path, file_name: str, trial_id: str = "NCT05315778") -> None:
    """The shipped criteria under another file name and trial id, mappings found."""
    text = (CRITERIA / "NCT05315778.yaml").read_text(encoding="utf-8")
    text = text.replace("id: NCT05315778", f"id: {trial_id}").replace(
        "mappings: [../mappings]", f"mappings: [{CRITERIA.parent / 'mappings'}]"
    )
    folder.mkdir(exist_ok=True)
    (folder / file_name).write_text(text, encoding="utf-8")


def test_several_trials_need_the_trial_named(service_client: ClientFactory, tmp_path: Path) -> None:
    trials = tmp_path / "trials"
    trial_copy(trials, "NCT05315778.yaml")
    trial_copy(trials, "NCT00000001.yml", "NCT00000001")
    shutil.copy(CRITERIA / "criteria.schema.json", trials)
    api = service_client(trials_folder=trials)
    bundle = example("itp-relapsed-candidate")
    unnamed = api.post("/evaluate", json={"bundle": bundle}, headers=AUTH)
    assert unnamed.status_code == 400
    assert unnamed.json()["issue"][0]["expression"] == ["trial"]
    assert "NCT00000001, NCT05315778" in unnamed.json()["issue"][0]["diagnostics"]
    named = api.post("/trials/NCT00000001/evaluate", json={"bundle": bundle}, headers=AUTH)
    assert named.status_code == 200
    assert named.json()["trial"] == "NCT00000001"
    services = api.get("/cds-services").json()["services"]
    assert [service["id"] for service in services] == ["NCT00000001", "NCT05315778"]


def test_a_trial_defined_twice_stops_the_start(tmp_path: Path) -> None:
    trials = tmp_path / "trials"
    trial_copy(trials, "a.yaml")
    trial_copy(trials, "b.yml")
    with pytest.raises(ServiceConfigError, match="NCT05315778 is also defined in"):
        create_app(make_settings(trials_folder=trials))


def test_bad_criteria_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("trial: {id: X}\ncriteria: 3\n", encoding="utf-8")
    with pytest.raises(TrialsieveError, match="criteria: expected a list"):
        create_app(make_settings(trials_folder=tmp_path))
    with pytest.raises(ServiceConfigError, match="not a folder of criteria files"):
        create_app(make_settings(trials_folder=tmp_path / "missing"))


BUNDLE = example("itp-relapsed-candidate")


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "expression"),
    [
        ("/evaluate", {}, 400, "required", ["patient", "bundle"]),
        ("/evaluate", {"patient": "p1", "bundle": BUNDLE}, 400, "required", ["patient", "bundle"]),
        ("/evaluate", {"bundel": BUNDLE}, 400, "invalid", ["bundel"]),
        ("/evaluate", {"bundle": BUNDLE, "asOf": "tomorrow"}, 400, "invalid", ["asOf"]),
        ("/evaluate", {"bundle": BUNDLE, "trial": "NCT1"}, 404, "not-found", ["trial"]),
        ("/evaluate", {"bundle": BUNDLE, "write": True}, 400, "not-supported", ["write"]),
        ("/evaluate", {"patient": "p1"}, 409, "not-supported", None),
        ("/evaluate", {"patient": "../metadata"}, 400, "invalid", ["patient"]),
        (
            "/evaluate",
            {"bundle": {"resourceType": "Bundle", "type": "history", "entry": []}},
            400,
            "invalid",
            ["bundle"],
        ),
        ("/evaluate", {"bundle": {"resourceType": "Patient"}}, 400, "invalid", ["bundle"]),
        (
            "/evaluate",
            {"bundle": BUNDLE, "attestations": [{"by": "Dr. A", "answers": {"nope": True}}]},
            400,
            "invalid",
            ["attestations[0].answers.nope"],
        ),
        (
            "/evaluate",
            {
                "bundle": BUNDLE,
                "attestations": [{"by": "Dr. A", "answers": {"informed-consent": 1}}],
            },
            400,
            "invalid",
            ["attestations.0.answers.informed-consent"],
        ),
        (
            "/evaluate",
            {"bundle": BUNDLE, "attestations": [{"answers": {"informed-consent": True}}]},
            400,
            "required",
            ["attestations.0.by"],
        ),
        (
            "/evaluate",
            {
                "bundle": BUNDLE,
                "attestations": [
                    {
                        "patient": "someone-else",
                        "by": "Dr. A",
                        "answers": {"informed-consent": True},
                    }
                ],
            },
            400,
            "invalid",
            ["attestations[0].patient"],
        ),
        (
            "/trials/NCT05315778/evaluate",
            {"bundle": BUNDLE, "trial": "NCT2"},
            400,
            "invalid",
            ["trial"],
        ),
        ("/trials/NCT9/evaluate", {"bundle": BUNDLE}, 404, "not-found", ["trial"]),
    ],
)
def test_malformed_requests_get_an_operation_outcome(
    api: TestClient,
    path: str,
    body: dict[str, Any],
    status: int,
    code: str,
    expression: list[str] | None,
) -> None:
    response = api.post(path, json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] == "error"
    assert issue["code"] == code
    assert issue["diagnostics"]
    assert issue.get("expression") == expression


def test_a_body_that_is_not_json(api: TestClient) -> None:
    response = api.post(
        "/evaluate",
        content=b'{"bundle": ',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["issue"][0]["diagnostics"]


def test_unknown_routes_and_methods(api: TestClient) -> None:
    missing = api.get("/nothing-here", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"
    wrong_method = api.get("/evaluate", headers=AUTH)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["issue"][0]["code"] == "not-supported"


def test_health_and_openapi(api: TestClient) -> None:
    assert api.get("/health").json() == {"status": "ok"}
    assert api.get("/ready").json() == {
        "status": "ready",
        "trials": ["NCT05315778"],
        "fhirServer": "not configured",
    }
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/evaluate", "/cds-services", "/cds-services/{service_id}", "/fhir-notify"} <= set(
        paths
    )
    assert api.get("/docs").status_code == 200


@pytest.mark.parametrize("value", ["yes", "on", "1", "true", 1, 0, "no", None])
def test_write_is_a_json_boolean(api: TestClient, value: Any) -> None:
    """The OpenAPI schema says `write` is a boolean: a field whose effect is a transaction on
    the clinical server is not guessed from "yes", "on", "1" or 1 (pydantic's lax mode took
    them as true), nor from "no" or 0: only JSON true and false, else 400 naming it."""
    response = api.post("/evaluate", json={"patient": "p1", "write": value}, headers=AUTH)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["write"]
    assert "boolean" in issue["diagnostics"]


@pytest.mark.parametrize("path", ["/evaluate", "/cds-services/NCT05315778", "/fhir-notify"])
@pytest.mark.parametrize(
    ("content", "words"),
    [
        (
            b"[" * 1200 + b"]" * 1200,
            "nested deeper than 254 levels (reading stopped at line 1, column 1026)",
        ),
        (b"[" * 255 + b"]" * 255, "nested deeper than 254 levels"),
        (b'{"bundle": "\xff"}', "not UTF-8: byte 0xff at line 1, column 13"),
        (b'{"bundle":\n  {"a": 1,}}', "trailing comma is not allowed at line 2, column 10"),
    ],
)
def test_a_body_that_is_not_json_says_why_and_where(
    service_client: ClientFactory, path: str, content: bytes, words: str
) -> None:
    """Deep nesting and bytes that are not UTF-8 were answered "There was an error parsing
    the body" on /evaluate and the CDS service (FastAPI's own parsing): the 400 now says what
    is wrong and where, as /fhir-notify did."""
    api = service_client(server_settings("http://fhir.invalid/r4", "server-token"))
    headers = {**AUTH, "Content-Type": "application/json"}
    response = api.post(path, content=content, headers=headers)
    assert response.status_code == 400, response.text
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "not valid JSON" in diagnostics or "not JSON" in diagnostics
    assert words in diagnostics, diagnostics


@pytest.mark.parametrize(("content", "found"), [(b"[]", "an array"), (b'"x"', "a string")])
@pytest.mark.parametrize("path", ["/evaluate", "/cds-services/NCT05315778"])
def test_a_body_that_is_not_an_object_says_so(
    api: TestClient, path: str, content: bytes, found: str
) -> None:
    """A JSON body that is not an object was answered with pydantic's "Input should be a valid
    dictionary or object to extract fields from"."""
    headers = {**AUTH, "Content-Type": "application/json"}
    response = api.post(path, content=content, headers=headers)
    assert response.status_code == 400
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert diagnostics == f"the request body must be a JSON object, found {found}"


def _first_condition(bundle: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return next(
        (index, entry["resource"])
        for index, entry in enumerate(bundle["entry"])
        if entry["resource"]["resourceType"] == "Condition"
    )


def test_an_inline_bundle_element_of_the_wrong_shape_is_400_naming_it(api: TestClient) -> None:
    """What the record would skip as unreadable (`code.coding: [5]`, a `subject` that is a
    number) is refused, naming the element, as in a CDS Hooks prefetch; never read as "none
    on record"."""
    for change, element in (
        (lambda condition: condition["code"].update(coding=[5]), "code.coding[0]"),
        (lambda condition: condition.update(subject=5), "subject"),
    ):
        bundle = example("itp-relapsed-candidate")
        index, condition = _first_condition(bundle)
        change(condition)
        response = api.post("/evaluate", json={"bundle": bundle}, headers=AUTH)
        assert response.status_code == 400, response.text
        issue = response.json()["issue"][0]
        assert issue["expression"] == [f"bundle.entry[{index}].resource.{element}"]


def test_an_inline_bundle_with_elements_the_engine_does_not_read_is_evaluated(
    api: TestClient,
) -> None:
    """A vendor's own element and a standard extension are not checked (only the shape of
    what the engine reads is): the Bundle is evaluated as without them."""
    plain = api.post("/evaluate", json={"bundle": BUNDLE}, headers=AUTH)
    bundle = example("itp-relapsed-candidate")
    _, condition = _first_condition(bundle)
    condition["vendorFlag"] = True
    condition["extension"] = [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/condition-assertedDate",
            "valueDateTime": "2024-01-01",
        }
    ]
    extended = api.post("/evaluate", json={"bundle": bundle}, headers=AUTH)
    assert plain.status_code == extended.status_code == 200, extended.text
    assert extended.json()["criteria"] == plain.json()["criteria"]


def test_the_request_check_does_not_load_the_fhir_models() -> None:
    """The check of a prefetch or inline Bundle is structural (engine/service/fhir_json.py):
    the fhir.resources models, for what trialsieve writes, are not loaded to read a request."""
    script = (
        "import sys, orjson\n"
        "from engine.service.fhir_json import check_fhir_resource\n"
        f"check_fhir_resource(orjson.loads({orjson.dumps(BUNDLE)!r}), 'bundle')\n"
        "print(sorted(name for name in sys.modules if name.startswith('fhir.resources')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.parametrize(
    ("patient", "null_at"),
    [
        ({"gender": None}, "bundle.gender"),
        ({"name": [{"family": None}]}, "bundle.name[0].family"),
        ({"text": {"status": "generated", "div": '<div>"x":null</div>'}}, None),
        ({"extension": [{"url": "u", "valueInteger": 10**30}], "gender": None}, "bundle.gender"),
        ({"extension": [{"url": "u", "valueInteger": 10**30}]}, None),
    ],
)
def test_a_null_is_found_whatever_the_text_and_numbers_around_it(
    patient: dict[str, Any], null_at: str | None
) -> None:
    """The null test reads orjson's serialisation first: a string holding `":null` is no null,
    and a value orjson cannot write (an integer beyond 64 bits) is walked instead."""
    from engine.service.fhir_json import check_fhir_resource
    from engine.service.problems import ApiError

    resource = {"resourceType": "Patient", "id": "p1", **patient}
    if null_at is None:
        check_fhir_resource(resource, "bundle")
        return
    with pytest.raises(ApiError) as caught:
        check_fhir_resource(resource, "bundle")
    assert f"{null_at} is null" in str(caught.value.issues[0].diagnostics)
