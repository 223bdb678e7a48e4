"""API authentication: static bearer tokens, HS256 and JWKS-verified JWTs as CDS Hooks clients
send them; everything else is 401 with an OperationOutcome.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from service_support import AUTH, ClientFactory, example, make_settings

from engine.errors import ServiceConfigError
from engine.service import ApiAuthSettings, SecretReference, create_app

SECRET = "a-shared-secret-of-enough-length-0123456789"
SECRET_VARIABLE = "TRIALSIEVE_TEST_JWT_SECRET"
ENDPOINT = "http://testserver/cds-services/NCT05315778"
HOOK_CALL = {
    "hook": "patient-view",
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "context": {"patientId": "itp-relapsed-candidate", "userId": "Practitioner/1"},
}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "https://ehr.example.org",
        "sub": "ehr-client",
        "aud": ENDPOINT,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwt_api(
    service_client: ClientFactory, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> TestClient:
    public = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [{**public, "kid": "ehr-1", "alg": "RS384"}]}))
    return service_client(
        environment={SECRET_VARIABLE: SECRET},
        api_auth=ApiAuthSettings(
            jwt_secret=SecretReference(environment_variable=SECRET_VARIABLE),
            jwt_hs256_test_mode=True,
            jwks_file=jwks,
            jwt_issuers=frozenset({"https://ehr.example.org"}),
        ),
    )


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers={"kid": "test"})


def call(api: TestClient, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    prefetch_less = {**HOOK_CALL, "prefetch": {"patient": None}}
    return api.post("/cds-services/NCT05315778", json=prefetch_less, headers=headers)


def assert_unauthorized(response: Any, words: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    issue = response.json()["issue"][0]
    assert issue["code"] == "login"
    assert words in issue["diagnostics"]


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


def test_hs256_jwt(jwt_api: TestClient) -> None:
    # No prefetch and no fhirServer: past authentication, the call is a 412 (CDS Hooks 2.0).
    assert call(jwt_api, hs256(claims())).status_code == 412
    assert_unauthorized(
        call(jwt_api, hs256(claims(), "another-secret-of-enough-length-000")),
        "Signature verification failed",
    )


def test_rs384_jwt_from_the_jwks(jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey) -> None:
    signed = jwt.encode(claims(), rsa_key, algorithm="RS384", headers={"kid": "ehr-1"})
    assert call(jwt_api, signed).status_code == 412
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(), other_key, algorithm="RS384", headers={"kid": "ehr-1"})
    assert_unauthorized(call(jwt_api, forged), "Signature verification failed")
    unknown = jwt.encode(claims(), rsa_key, algorithm="RS384", headers={"kid": "ehr-2"})
    assert_unauthorized(call(jwt_api, unknown), "kid names no configured key")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"aud": "http://testserver/cds-services/another"}, "Audience doesn't match"),
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 660}, "expired"),
        ({"jti": None}, 'missing the "jti" claim'),
        ({"iss": "https://intruder.example.org"}, "issuer is not trusted"),
        ({"exp": int(time.time()) + 3600}, "longer than 5 minutes"),
    ],
)
def test_jwt_claims_are_checked(jwt_api: TestClient, changes: dict[str, Any], words: str) -> None:
    assert_unauthorized(call(jwt_api, hs256(claims(**changes))), words)


def test_the_audience_is_the_service_endpoint_not_the_base_url(jwt_api: TestClient) -> None:
    """CDS Hooks 2.0, "Trusting CDS Clients": `aud` is "The CDS Service endpoint that is being
    called by the CDS Client"; the service's base URL is refused."""
    for base in ("http://testserver", "http://testserver/"):
        assert_unauthorized(call(jwt_api, hs256(claims(aud=base))), "Audience doesn't match")
    assert call(jwt_api, hs256(claims(aud=ENDPOINT))).status_code == 412


def test_the_jwt_header_must_name_its_key(jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey) -> None:
    """CDS Hooks 2.0, "Trusting CDS Clients": the JWT header's `kid` "MUST" identify the key."""
    unnamed = jwt.encode(claims(), rsa_key, algorithm="RS384")
    assert_unauthorized(call(jwt_api, unnamed), "must name its key (kid)")
    no_kid_hs256 = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert_unauthorized(call(jwt_api, no_kid_hs256), "must name its key (kid)")


def test_the_algorithm_is_bound_to_the_key(jwt_api: TestClient, rsa_key: rsa.RSAPrivateKey) -> None:
    """RFC 7517 4.4 / RFC 8725 3.1: a key declared RS384 verifies RS384 only; an RS256 token
    signed with it is refused."""
    other = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "ehr-1"})
    assert_unauthorized(call(jwt_api, other), "is for RS384, not RS256")
    bound = jwt.encode(claims(), rsa_key, algorithm="RS384", headers={"kid": "ehr-1"})
    assert call(jwt_api, bound).status_code == 412


def test_hs256_needs_the_explicit_test_mode() -> None:
    """CDS Hooks 2.0, "Trusting CDS Clients": CDS clients sign with an asymmetric key; a shared
    secret is refused at start unless the HS256 test mode is turned on."""
    with pytest.raises(ServiceConfigError, match="HS256 JWT secret is for tests only"):
        create_app(
            make_settings(
                environment={SECRET_VARIABLE: SECRET},
                api_auth=ApiAuthSettings(
                    jwt_secret=SecretReference(environment_variable=SECRET_VARIABLE)
                ),
            )
        )


def test_unsigned_jwt_is_refused(jwt_api: TestClient) -> None:
    assert_unauthorized(call(jwt_api, jwt.encode(claims(), None, "none")), "'none' is not")


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
