"""API authentication: static bearer tokens, token files, anonymous access only when asked;
everything else is 401 with an OperationOutcome. The CDS Hooks JWT rules (2.0, "Trusting CDS
Clients") are checked in tests/conformance/test_conformance_cds_hooks.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import AUTH, ClientFactory, assert_unauthorized, example, make_settings

from engine.errors import ServiceConfigError
from engine.service import ApiAuthSettings, SecretReference, create_app


def test_static_token(api: TestClient) -> None:
    bundle = {"bundle": example("itp-too-old")}
    assert api.post("/evaluate", json=bundle, headers=AUTH).status_code == 200
    assert_unauthorized(api.post("/evaluate", json=bundle), "Authorization: Bearer token")
    wrong = {"Authorization": "Bearer not-the-token"}
    assert_unauthorized(api.post("/evaluate", json=bundle, headers=wrong), "not accepted")
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert_unauthorized(api.post("/evaluate", json=bundle, headers=basic), "'Bearer <token>'")
    for route in ("/fhir-notify", "/fhir-notify/Observation/o1", "/cds-services/NCT05315778"):
        assert api.post(route, json={}).status_code == 401


def test_open_routes(api: TestClient) -> None:
    assert api.get("/health").status_code == 200
    assert api.get("/ready").status_code == 200
    assert api.get("/cds-services").status_code == 200


def test_token_file_with_several_tokens(service_client: ClientFactory, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("first-token\nsecond-token\n", encoding="utf-8")
    api = service_client(api_auth=ApiAuthSettings(tokens=SecretReference(file=tokens)))
    bundle = {"bundle": example("itp-too-old")}
    for token in ("first-token", "second-token"):
        headers = {"Authorization": f"Bearer {token}"}
        assert api.post("/evaluate", json=bundle, headers=headers).status_code == 200


def test_no_authentication_configured_refuses_to_start() -> None:
    with pytest.raises(ServiceConfigError, match="no API authentication configured"):
        create_app(make_settings(api_auth=ApiAuthSettings()))
    with pytest.raises(ServiceConfigError, match="TRIALSIEVE_UNSET_VARIABLE"):
        create_app(
            make_settings(
                api_auth=ApiAuthSettings(
                    tokens=SecretReference(environment_variable="TRIALSIEVE_UNSET_VARIABLE")
                )
            )
        )


def test_anonymous_only_when_asked(service_client: ClientFactory) -> None:
    api = service_client(api_auth=ApiAuthSettings(allow_anonymous=True))
    assert api.post("/evaluate", json={"bundle": example("itp-too-old")}).status_code == 200
