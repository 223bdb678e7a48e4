"""SMART Backend Services auth (`SmartBackendAuth`, `auth_from_options`) against scripted token
endpoints (respx), and once against sekmet-fhir's real token endpoint.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from engine.errors import AuthConfigError, ServerError
from engine.fhir_http import (
    ASSERTION_LIFETIME,
    CLIENT_ASSERTION_TYPE,
    DEFAULT_SCOPE,
    REFRESH_MARGIN,
    SmartBackendAuth,
    auth_from_options,
    load_smart_auth,
)
from engine.sources import BearerToken, FhirServerClient, RetryPolicy

FHIR = "https://fhir.example.org/r4"
TOKEN_URL = "https://auth.example.org/oauth/token"
CLIENT_ID = "trialsieve-client-7f3a"
KEY_ID = "trialsieve-2026"
ACCESS_TOKEN = "access-token-0123456789abcdef"


class Clock:
    """Wall time the test moves on."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{FHIR}/metadata").respond(200, json={"resourceType": "CapabilityStatement"})
        yield mock


def token_answer(token: str = ACCESS_TOKEN, expires_in: int = 300) -> httpx.Response:
    body = {"access_token": token, "token_type": "bearer", "expires_in": expires_in}
    return httpx.Response(200, json=body)


def smart_auth(key: PrivateKeyTypes, clock: Clock, **options: str | None) -> SmartBackendAuth:
    settings: dict[str, str | None] = {"token_url": TOKEN_URL, **options}
    return SmartBackendAuth(
        client_id=CLIENT_ID,
        private_key=pem(key),
        key_id=KEY_ID,
        clock=clock,
        sleep=lambda seconds: None,
        **settings,  # type: ignore[arg-type]
    )


def form_of(request: httpx.Request) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(request.content.decode()).items()}


def unverified_claims(assertion: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(assertion, options={"verify_signature": False})
    return claims


def get_metadata(auth: httpx.Auth) -> httpx.Response:
    with httpx.Client(auth=auth) as http:
        return http.get(f"{FHIR}/metadata")


# --------------------------------------------------------------------------- the assertion


@pytest.mark.parametrize(("key_name", "algorithm"), [("rsa_key", "RS384"), ("ec_key", "ES384")])
def test_the_assertion_is_signed_with_the_key_and_says_who_for_whom_until_when(
    request: pytest.FixtureRequest,
    router: respx.MockRouter,
    clock: Clock,
    key_name: str,
    algorithm: str,
) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = request.getfixturevalue(key_name)
    token_route = router.post(TOKEN_URL).mock(return_value=token_answer())
    auth = smart_auth(key, clock, jwks_url="https://trialsieve.example.org/jwks.json")

    response = get_metadata(auth)

    assert response.status_code == 200
    assert response.request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    form = form_of(token_route.calls.last.request)
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assert form["scope"] == DEFAULT_SCOPE
    assertion = form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header == {
        "alg": algorithm,
        "kid": KEY_ID,
        "typ": "JWT",
        "jku": "https://trialsieve.example.org/jwks.json",
    }
    claims = jwt.decode(
        assertion,
        key.public_key(),
        algorithms=[algorithm],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["exp"] - clock.now <= 300
    assert claims["exp"] == int(clock.now) + ASSERTION_LIFETIME
    assert claims["jti"]


def test_every_assertion_has_its_own_jti(rsa_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    auth = smart_auth(rsa_key, clock)
    first, second = (auth.client_assertion(TOKEN_URL) for _ in range(2))
    assert unverified_claims(first)["jti"] != unverified_claims(second)["jti"]


def test_the_assertion_does_not_verify_with_another_key(
    rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assertion = smart_auth(rsa_key, clock).client_assertion(TOKEN_URL)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(assertion, other.public_key(), algorithms=["RS384"], audience=TOKEN_URL)


# --------------------------------------------------------------------------- the access token


def test_the_access_token_is_cached_until_shortly_before_it_expires(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    token_route = router.post(TOKEN_URL).mock(
        side_effect=[token_answer("first-token", 600), token_answer("second-token", 600)]
    )
    auth = smart_auth(rsa_key, clock)

    sent = [get_metadata(auth).request.headers["Authorization"]]
    clock.now += 600 - REFRESH_MARGIN - 1
    sent.append(get_metadata(auth).request.headers["Authorization"])
    clock.now += 2
    sent.append(get_metadata(auth).request.headers["Authorization"])

    assert sent == ["Bearer first-token", "Bearer first-token", "Bearer second-token"]
    assert token_route.call_count == 2


def test_a_401_fetches_a_new_token_and_retries_once(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    router.post(TOKEN_URL).mock(
        side_effect=[token_answer("revoked-token"), token_answer("new-token")]
    )
    patient_route = router.get(f"{FHIR}/Patient/p1").mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json={"resourceType": "Patient"})]
    )
    with httpx.Client(auth=smart_auth(rsa_key, clock)) as http:
        response = http.get(f"{FHIR}/Patient/p1")

    assert response.status_code == 200
    sent = [call.request.headers["Authorization"] for call in patient_route.calls]
    assert sent == ["Bearer revoked-token", "Bearer new-token"]


def test_a_second_401_is_the_answer(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    token_route = router.post(TOKEN_URL).mock(return_value=token_answer())
    patient_route = router.get(f"{FHIR}/Patient/p1").respond(401)
    with httpx.Client(auth=smart_auth(rsa_key, clock)) as http:
        response = http.get(f"{FHIR}/Patient/p1")

    assert response.status_code == 401
    assert patient_route.call_count == 2
    assert token_route.call_count == 2


def test_the_token_endpoint_is_discovered_from_the_fhir_server(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    discovery = router.get(f"{FHIR}/.well-known/smart-configuration").respond(
        200, json={"token_endpoint": TOKEN_URL, "grant_types_supported": ["client_credentials"]}
    )
    token_route = router.post(TOKEN_URL).mock(return_value=token_answer())
    auth = smart_auth(rsa_key, clock, token_url=None, fhir_base_url=FHIR + "/")

    get_metadata(auth)
    get_metadata(auth)

    assert discovery.call_count == 1
    assert auth.token_url == TOKEN_URL
    assertion = form_of(token_route.calls.last.request)["client_assertion"]
    assert unverified_claims(assertion)["aud"] == TOKEN_URL


def test_a_server_without_smart_configuration_is_named(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    router.get(f"{FHIR}/.well-known/smart-configuration").respond(404)
    auth = smart_auth(rsa_key, clock, token_url=None, fhir_base_url=FHIR)
    with pytest.raises(ServerError) as raised:
        get_metadata(auth)
    message = str(raised.value)
    assert FHIR in message
    assert "smart-configuration" in message
    assert "token_url" in message


# --------------------------------------------------------------------------- errors and secrets


def test_a_refused_token_request_names_the_endpoint_and_hides_the_secrets(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        assertion = form_of(request)["client_assertion"]
        description = f"client_assertion verification failed for {assertion}"
        return httpx.Response(
            401, json={"error": "invalid_client", "error_description": description}
        )

    router.post(TOKEN_URL).mock(side_effect=refuse)
    auth = smart_auth(rsa_key, clock)
    with FhirServerClient(FHIR, auth=auth) as client, pytest.raises(ServerError) as raised:
        client.capabilities()

    message = str(raised.value)
    assert TOKEN_URL in message
    assert "invalid_client" in message
    assert "<hidden>" in message
    assert raised.value.status == 401
    secret_texts = [pem(rsa_key).decode(), "eyJ", "BEGIN PRIVATE KEY"]
    assert not any(text in message for text in secret_texts)


def test_an_unreachable_token_endpoint_is_named_after_the_retries(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    token_route = router.post(TOKEN_URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ServerError) as raised:
        get_metadata(smart_auth(rsa_key, clock))
    assert TOKEN_URL in str(raised.value)
    assert "cannot connect" in str(raised.value)
    assert token_route.call_count == 3


def test_an_answer_without_a_bearer_token_is_refused(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    router.post(TOKEN_URL).respond(200, json={"access_token": ACCESS_TOKEN, "token_type": "mac"})
    with pytest.raises(ServerError) as raised:
        get_metadata(smart_auth(rsa_key, clock))
    assert "not bearer" in str(raised.value)
    assert ACCESS_TOKEN not in str(raised.value)


def test_the_repr_shows_neither_client_id_nor_key(
    router: respx.MockRouter, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    router.post(TOKEN_URL).mock(return_value=token_answer())
    auth = smart_auth(rsa_key, clock)
    get_metadata(auth)
    shown = repr(auth) + repr(vars(auth).get("_access"))
    assert CLIENT_ID not in shown
    assert ACCESS_TOKEN not in shown
    assert "PRIVATE" not in shown
    assert TOKEN_URL in repr(auth)


def test_a_weak_or_unsupported_key_is_refused(clock: Clock) -> None:
    with pytest.raises(AuthConfigError, match="P-384"):
        smart_auth(ec.generate_private_key(ec.SECP256R1()), clock)
    with pytest.raises(AuthConfigError, match="not a PEM private key") as raised:
        SmartBackendAuth(
            client_id=CLIENT_ID, private_key="not a key", key_id=KEY_ID, token_url=TOKEN_URL
        )
    assert "not a key" not in str(raised.value)


def test_the_token_endpoint_must_be_https_unless_on_loopback(
    rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    with pytest.raises(AuthConfigError, match="https"):
        smart_auth(rsa_key, clock, token_url="http://auth.example.org/token")
    assert smart_auth(rsa_key, clock, token_url="http://127.0.0.1:8090/auth/token")


# --------------------------------------------------------------------------- configuration


def write_config(folder: Path, body: str) -> Path:
    path = folder / "auth.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_auth_from_options_reads_a_smart_config_with_secrets_from_the_environment(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    (tmp_path / "key.pem").write_bytes(pem(rsa_key))
    config = write_config(
        tmp_path,
        '[smart]\nclient_id_env = "CLIENT"\nprivate_key_file = "key.pem"\n'
        f'key_id = "{KEY_ID}"\ntoken_url = "{TOKEN_URL}"\nscope = "system/*.read"\n',
    )
    auth = auth_from_options(None, None, config, server=FHIR, environment={"CLIENT": CLIENT_ID})
    assert isinstance(auth, SmartBackendAuth)
    assert (auth.token_url, auth.scope, auth.algorithm) == (TOKEN_URL, "system/*.read", "RS384")
    claims = jwt.decode(
        auth.client_assertion(TOKEN_URL),
        rsa_key.public_key(),
        algorithms=["RS384"],
        audience=TOKEN_URL,
    )
    assert claims["iss"] == CLIENT_ID


def test_the_private_key_can_come_from_the_environment(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    config = write_config(
        tmp_path,
        f'[smart]\nclient_id = "{CLIENT_ID}"\nprivate_key_env = "KEY"\nkey_id = "{KEY_ID}"\n',
    )
    auth = load_smart_auth(config, FHIR, {"KEY": pem(ec_key).decode()})
    assert auth.algorithm == "ES384"
    assert auth.fhir_base_url == FHIR


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[smart]\nclient_id = 'c'\nprivate_key_env = 'KEY'\nkey_id = 'k'\nsecret = 1\n", "secret"),
        ("[smart]\nprivate_key_env = 'KEY'\nkey_id = 'k'\n", "client_id or client_id_env"),
        ("[smart]\nclient_id_env = 'NOPE'\nprivate_key_env = 'KEY'\nkey_id = 'k'\n", "NOPE"),
        ("[smart]\nclient_id = 'c'\nprivate_key_file = 'missing.pem'\nkey_id = 'k'\n", "missing"),
        ("[smart]\nclient_id = 'c'\nprivate_key_env = 'KEY'\n", "key_id is required"),
        ("[bearer]\n", "no [smart] table"),
        ("[smart\n", "not valid TOML"),
    ],
)
def test_config_problems_name_the_file_and_field(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, body: str, expected: str
) -> None:
    config = write_config(tmp_path, body)
    key_text = pem(rsa_key).decode()
    with pytest.raises(AuthConfigError) as raised:
        load_smart_auth(config, FHIR, {"KEY": key_text})
    message = str(raised.value)
    assert str(config) in message
    assert expected in message
    assert key_text not in message


def test_auth_from_options_takes_one_kind_of_credential(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n", encoding="utf-8")
    assert auth_from_options(None, None, None, server=FHIR) is None
    assert isinstance(
        auth_from_options("TOKEN", None, None, server=FHIR, environment={"TOKEN": "t"}),
        BearerToken,
    )
    assert isinstance(auth_from_options(None, token_file, None, server=FHIR), BearerToken)
    with pytest.raises(AuthConfigError, match="--token-file, --auth-config"):
        auth_from_options(None, token_file, tmp_path / "auth.toml", server=FHIR)


# --------------------------------------------------------------------------- a real server


@pytest.mark.skipif(importlib.util.find_spec("sekmet") is None, reason="sekmet-fhir missing")
def test_sekmet_grants_tokens_for_the_assertion_and_checks_their_scopes(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    from engine.embedded_server import EmbeddedServer, SmartClientRegistration

    public_key = tmp_path / "public.pem"
    public_key.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": "smart-p1"},
                "request": {"method": "PUT", "url": "Patient/smart-p1"},
            }
        ],
    }
    with EmbeddedServer(smart_clients=[SmartClientRegistration(CLIENT_ID, public_key)]) as server:

        def client(scope: str) -> FhirServerClient:
            auth = SmartBackendAuth(
                client_id=CLIENT_ID,
                private_key=pem(rsa_key),
                key_id=KEY_ID,
                fhir_base_url=server.base_url,
                scope=scope,
            )
            return FhirServerClient(server.base_url, auth=auth, retry=RetryPolicy(attempts=1))

        with client("system/*.read system/*.write") as writer:
            assert writer.capabilities().fhir_version.startswith("4.")
            writer.json("POST", writer.base_url, body=transaction)
            assert writer.read("Patient", "smart-p1") is not None
        with client(DEFAULT_SCOPE) as reader, pytest.raises(ServerError) as raised:
            assert reader.read("Patient", "smart-p1") is not None
            reader.json("POST", reader.base_url, body=transaction)
        assert raised.value.status == 403  # a transaction is a write on "*" for sekmet
