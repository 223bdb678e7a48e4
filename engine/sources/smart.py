"""SMART Backend Services authorization (client credentials with a signed JWT), and choosing
a server's auth from command-line options.

`SmartBackendAuth` is an `httpx.Auth`: before the first request it asks the token endpoint
(given, or discovered from `{FHIR base}/.well-known/smart-configuration`) for an access token
with a client assertion: a JWT with `iss` = `sub` = the client id, `aud` = the token endpoint,
`exp` four minutes ahead (SMART allows at most five) and a unique `jti`, signed RS384 or
ES384 with the client's private key. The token is cached until shortly before it expires,
then fetched anew; a 401 answer fetches a new token and sends the request once more.

The client id and private key come from a TOML file (`--auth-config FILE`) that holds them or
names the environment variables holding them, never from the command line; neither they, the
assertion nor the access token appear in a repr, a message or a log line:

    [smart]
    client_id_env = "TRIALSIEVE_CLIENT_ID"        # or client_id = "..."
    private_key_file = "trialsieve-private.pem"   # relative to this file; or private_key_env
    key_id = "trialsieve-2026"                    # the kid of the key registered with the server
    # token_url = "https://auth.example.org/token"  # default: discovered
    # scope = "system/*.read system/ResearchSubject.write ..."
    # jwks_url = "https://example.org/trialsieve/jwks.json"  # sent as the JWT's jku header

`auth_from_options` turns `--token-env`, `--token-file` or `--auth-config` into the auth a
`FhirServerClient` is built with. Dependencies: PyJWT and cryptography.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
import tomllib
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from engine.errors import AuthConfigError, Location, ServerError
from engine.sources.fhir_server import BearerToken

DEFAULT_SCOPE = (
    "system/*.read system/ResearchStudy.write system/ResearchSubject.write "
    "system/DetectedIssue.write"
)
"""Read everything the criteria may need; write only what trialsieve writes back."""

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 240
"""Seconds a client assertion is valid: SMART allows at most 300; this leaves room for skew."""

REFRESH_MARGIN = 60.0
"""Seconds before its expiry that a cached access token is replaced."""

DEFAULT_TOKEN_LIFETIME = 300
"""Seconds an access token is kept when the token endpoint does not say (`expires_in`)."""

SUPPORTED_ALGORITHMS = ("RS384", "ES384")
_TOKEN_ATTEMPTS = 3
_TOKEN_TIMEOUT = 30.0
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_CONFIG_KEYS = frozenset(
    {
        "client_id",
        "client_id_env",
        "private_key_file",
        "private_key_env",
        "key_id",
        "algorithm",
        "token_url",
        "scope",
        "jwks_url",
    }
)
_HIDDEN = "<hidden>"
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}")
_LONGEST_DESCRIPTION = 300


@dataclass(frozen=True)
class _AccessToken:
    value: str = field(repr=False)
    expires_at: float


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services: an access token from a signed client assertion, cached.

    `private_key` is a PEM private key (RSA for RS384, P-384 EC for ES384; the algorithm is
    taken from the key). Either `token_url` or `fhir_base_url` (to discover the token
    endpoint from) is needed. `clock` gives the wall time in seconds (tests inject one);
    `transport` carries the token and discovery requests (tests inject one). Token requests
    go through their own HTTP client, retried on connection errors, 429 and 5xx; failures
    raise ServerError naming the token endpoint, never the key, assertion or token.
    """

    def __init__(
        self,
        *,
        client_id: str,
        private_key: str | bytes,
        key_id: str,
        token_url: str | None = None,
        fhir_base_url: str | None = None,
        scope: str = DEFAULT_SCOPE,
        jwks_url: str | None = None,
        algorithm: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not client_id.strip():
            raise AuthConfigError("the SMART client id is empty")
        if not key_id.strip():
            raise AuthConfigError("the SMART key id (kid) is empty")
        if token_url is None and fhir_base_url is None:
            raise AuthConfigError("give the token endpoint, or the FHIR base URL to discover it")
        if not scope.split():
            raise AuthConfigError("the SMART scope is empty")
        self._client_id = client_id
        self._key, self.algorithm = _signing_key(private_key, algorithm)
        self.key_id = key_id
        self.scope = " ".join(scope.split())
        self.jwks_url = jwks_url
        self.fhir_base_url = fhir_base_url.rstrip("/") if fhir_base_url else None
        self._token_url = _checked_endpoint(token_url, "token_url") if token_url else None
        self._clock = clock
        self._sleep = sleep
        self._transport = transport
        self._access: _AccessToken | None = None
        self._lock = threading.Lock()

    @property
    def token_url(self) -> str:
        """The token endpoint (discovered on first use when not given)."""
        with self._lock:
            return self._endpoint()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._current_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self._current_token(rejected=token)}"
            yield request

    def client_assertion(self, token_url: str) -> str:
        """A signed client-assertion JWT for `token_url`, valid for ASSERTION_LIFETIME s."""
        now = int(self._clock())
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": secrets.token_urlsafe(24),
        }
        headers: dict[str, Any] = {"kid": self.key_id, "typ": "JWT"}
        if self.jwks_url:
            headers["jku"] = self.jwks_url
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def __repr__(self) -> str:
        where = self._token_url or f"discovered from {self.fhir_base_url}"
        return f"SmartBackendAuth(token_url={where}, client_id={_HIDDEN}, key_id={self.key_id})"

    # ------------------------------------------------------------------ tokens

    def _current_token(self, rejected: str | None = None) -> str:
        """The cached token, or a new one when none is cached, it is about to expire, or the
        server has just refused it (`rejected`).
        """
        with self._lock:
            access = self._access
            fresh = access is not None and self._clock() < access.expires_at - REFRESH_MARGIN
            if access is None or not fresh or access.value == rejected:
                access = self._access = self._fetch_token()
            return access.value

    def _fetch_token(self) -> _AccessToken:
        token_url = self._endpoint()
        assertion = self.client_assertion(token_url)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": self.scope,
        }
        requested_at = self._clock()
        response = self._post_form(token_url, form, assertion)
        answer = _json_object(response)
        if not response.is_success:
            problem = _oauth_problem(response, answer, assertion)
            raise _token_error(token_url, problem, response.status_code)
        token = answer.get("access_token") if answer is not None else None
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise _token_error(token_url, "the answer has no usable access_token")
        token_type = answer.get("token_type") if answer is not None else None
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise _token_error(token_url, f"token_type is {token_type!r}, not bearer")
        lifetime = answer.get("expires_in") if answer is not None else None
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        return _AccessToken(token, requested_at + float(lifetime))

    def _post_form(self, token_url: str, form: Mapping[str, str], assertion: str) -> httpx.Response:
        """POST the token request, retrying connection errors, 429 and 5xx."""
        problem = "not tried"
        for attempt in range(1, _TOKEN_ATTEMPTS + 1):
            try:
                with self._http() as http:
                    response = http.post(token_url, data=dict(form))
            except httpx.TransportError as error:
                problem = f"cannot connect ({type(error).__name__})"
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
            if attempt < _TOKEN_ATTEMPTS:
                self._sleep(0.5 * 2 ** (attempt - 1))
        message = f"{problem}; gave up after {_TOKEN_ATTEMPTS} attempts"
        raise _token_error(token_url, message.replace(assertion, _HIDDEN))

    def _endpoint(self) -> str:
        """The token endpoint; discovered (once) from the FHIR server when not given."""
        if self._token_url is None:
            assert self.fhir_base_url is not None
            self._token_url = self._discover(self.fhir_base_url)
        return self._token_url

    def _discover(self, fhir_base_url: str) -> str:
        url = f"{fhir_base_url}/.well-known/smart-configuration"
        request = "GET .well-known/smart-configuration"
        hint = "; give token_url in the auth config instead"
        try:
            with self._http() as http:
                response = http.get(url)
        except httpx.TransportError as error:
            problem = f"cannot connect ({type(error).__name__}){hint}"
            raise ServerError(problem, server=fhir_base_url, request=request) from None
        document = _json_object(response)
        if not response.is_success or document is None:
            problem = f"HTTP {response.status_code}, no SMART configuration{hint}"
            raise ServerError(
                problem, server=fhir_base_url, request=request, status=response.status_code
            )
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            problem = f"the SMART configuration names no token_endpoint{hint}"
            raise ServerError(problem, server=fhir_base_url, request=request)
        try:
            return _checked_endpoint(endpoint, "the discovered token_endpoint")
        except AuthConfigError as error:
            raise ServerError(error.message, server=fhir_base_url, request=request) from None

    def _http(self) -> httpx.Client:
        return httpx.Client(
            transport=self._transport,
            timeout=_TOKEN_TIMEOUT,
            headers={"Accept": "application/json"},
            follow_redirects=False,
        )


def _signing_key(
    pem: str | bytes, algorithm: str | None
) -> tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, str]:
    """The private key and its algorithm (RS384 for RSA, ES384 for P-384)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise AuthConfigError(
            "the private key is not a PEM private key without a password"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise AuthConfigError(f"the RSA key has {key.key_size} bits; SMART needs 2048 or more")
        inferred = "RS384"
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        inferred = "ES384"
    else:
        raise AuthConfigError("the private key must be RSA (RS384) or EC on P-384 (ES384)")
    if algorithm is not None and algorithm != inferred:
        raise AuthConfigError(
            f"algorithm {algorithm} does not fit the key, which signs {inferred} "
            f"(supported: {', '.join(SUPPORTED_ALGORITHMS)})"
        )
    return key, inferred


def _checked_endpoint(url: str, what: str) -> str:
    """An https URL, or http on loopback (a local test server)."""
    parts = urlsplit(url)
    loopback_http = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    if not parts.netloc or not (parts.scheme == "https" or loopback_http):
        raise AuthConfigError(f"{what} '{url}' must be an https URL (http only on loopback)")
    return url


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        document = response.json()
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _oauth_problem(response: httpx.Response, answer: dict[str, Any] | None, assertion: str) -> str:
    """`HTTP 401 Unauthorized: invalid_client: <error_description>`, with the assertion and
    anything else that looks like a JWT hidden.
    """
    text = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if answer is None:
        return text
    parts = [
        _JWT_LIKE.sub(_HIDDEN, value.replace(assertion, _HIDDEN))[:_LONGEST_DESCRIPTION]
        for value in (answer.get("error"), answer.get("error_description"))
        if isinstance(value, str) and value
    ]
    return ": ".join([text, *parts])


def _token_error(token_url: str, message: str, status: int | None = None) -> ServerError:
    return ServerError(
        f"no access token: {message}",
        server=token_url,
        request="POST (SMART client_credentials grant)",
        status=status,
    )


# --------------------------------------------------------------------------- configuration


def load_smart_auth(
    path: Path, fhir_base_url: str, environment: Mapping[str, str]
) -> SmartBackendAuth:
    """The `[smart]` table of a TOML auth config as a SmartBackendAuth for a server.

    Secrets are given in the file or by naming environment variables (`client_id_env`,
    `private_key_env` holding PEM text); `private_key_file` is relative to the config file.
    AuthConfigError names the file and field of any problem.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise AuthConfigError(f"cannot read the auth config: {reason}", _at(path)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AuthConfigError(f"not valid TOML: {error}", _at(path)) from None
    table = document.get("smart")
    if not isinstance(table, dict):
        raise AuthConfigError("no [smart] table", _at(path))
    unknown = sorted(set(table) - _CONFIG_KEYS)
    if unknown:
        raise AuthConfigError(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_CONFIG_KEYS))}",
            _at(path, "smart"),
        )
    client_id = _secret(table, "client_id", path, environment)
    private_key = _private_key(table, path, environment)
    try:
        return SmartBackendAuth(
            client_id=client_id,
            private_key=private_key,
            key_id=_text(table, "key_id", path, required=True) or "",
            token_url=_text(table, "token_url", path),
            fhir_base_url=fhir_base_url,
            scope=_text(table, "scope", path) or DEFAULT_SCOPE,
            jwks_url=_text(table, "jwks_url", path),
            algorithm=_text(table, "algorithm", path),
        )
    except AuthConfigError as error:
        raise AuthConfigError(error.message, _at(path, "smart")) from None


def auth_from_options(
    token_env: str | None,
    token_file: Path | None,
    auth_config: Path | None,
    *,
    server: str,
    environment: Mapping[str, str] | None = None,
) -> httpx.Auth | None:
    """The auth for `server` that the command-line options ask for: a bearer token from an
    environment variable or a file, SMART Backend Services from a config file, or none.

    `environment` defaults to `os.environ`. Raises AuthConfigError when more than one is
    given, ServerError or AuthConfigError when the one given is unusable.
    """
    given = [
        option
        for option, value in (
            ("--token-env", token_env),
            ("--token-file", token_file),
            ("--auth-config", auth_config),
        )
        if value
    ]
    if len(given) > 1:
        raise AuthConfigError(f"give one of {', '.join(given)}, not several")
    variables = os.environ if environment is None else environment
    if token_env:
        return BearerToken.from_environment(token_env, variables)
    if token_file:
        return BearerToken.from_file(token_file)
    if auth_config:
        return load_smart_auth(auth_config, server, variables)
    return None


def _at(path: Path, field_name: str | None = None) -> Location:
    return Location(file=str(path), field=field_name)


def _text(table: Mapping[str, Any], name: str, path: Path, required: bool = False) -> str | None:
    value = table.get(name)
    if value is None:
        if required:
            raise AuthConfigError(f"{name} is required", _at(path, f"smart.{name}"))
        return None
    if not isinstance(value, str) or not value.strip():
        raise AuthConfigError(f"{name} must be a non-empty string", _at(path, f"smart.{name}"))
    return value.strip()


def _secret(table: Mapping[str, Any], name: str, path: Path, environment: Mapping[str, str]) -> str:
    """`name` from the file, or from the environment variable `{name}_env` names."""
    inline = _text(table, name, path)
    variable = _text(table, f"{name}_env", path)
    if (inline is None) == (variable is None):
        raise AuthConfigError(f"give {name} or {name}_env (exactly one)", _at(path, "smart"))
    if variable is not None:
        value = environment.get(variable, "").strip()
        if not value:
            raise AuthConfigError(
                f"environment variable {variable} is not set or empty",
                _at(path, f"smart.{name}_env"),
            )
        return value
    assert inline is not None
    return inline


def _private_key(table: Mapping[str, Any], path: Path, environment: Mapping[str, str]) -> bytes:
    """The PEM text from `private_key_file` (relative to the config) or `private_key_env`."""
    key_file = _text(table, "private_key_file", path)
    variable = _text(table, "private_key_env", path)
    if (key_file is None) == (variable is None):
        raise AuthConfigError(
            "give private_key_file or private_key_env (exactly one)", _at(path, "smart")
        )
    if variable is not None:
        value = environment.get(variable, "").strip()
        if not value:
            raise AuthConfigError(
                f"environment variable {variable} is not set or empty",
                _at(path, "smart.private_key_env"),
            )
        return value.encode()
    assert key_file is not None
    key_path = Path(key_file).expanduser()
    if not key_path.is_absolute():
        key_path = path.parent / key_path
    try:
        return key_path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise AuthConfigError(
            f"cannot read the private key file {key_path}: {reason}",
            _at(path, "smart.private_key_file"),
        ) from None
