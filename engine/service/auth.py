"""API authentication: static bearer tokens, and JWTs as CDS Hooks clients send them.

A request carries `Authorization: Bearer <token>`. The token is accepted when it equals one of
the configured static tokens (compared in constant time), or when it is a JWT that, as
CDS Hooks 2.0 "Trusting CDS Clients" asks,

- says `typ: JWT`, names its key with `kid` and is signed with that key of the configured
  JWKS, by an asymmetric algorithm (RS256, RS384, ES256, ES384) the key is bound to: the JWK's
  `alg` when it declares one, else its type's (RSA: RS256/RS384; EC P-256: ES256; P-384:
  ES384). HS256 with a shared secret is accepted only in an explicitly configured test mode
  (`jwt_hs256_test_mode`): the spec requires asymmetric signatures;
- carries `iss`, `aud`, `exp`, `iat` and `jti`, with `aud` the URL of the service endpoint
  called (not the service's base URL), an `iss` among the configured issuers when some are,
  and an `exp` at most five minutes after `iat`.

A JWT is accepted once: its `jti` is remembered until it expires, and a second request with
the same `jti` (a replay) is refused.

Each accepted token carries scopes (`engine.service.settings`): static API tokens may do
everything, notification tokens only notify, JWTs only evaluate. A route needing a scope the
caller lacks answers 403.

Anything else is 401 with an OperationOutcome and `WWW-Authenticate: Bearer`. Tokens are never
logged or echoed.
"""

from __future__ import annotations

import hmac
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import orjson

from engine.errors import Location, ServiceConfigError
from engine.service.problems import ApiError
from engine.service.settings import (
    ALL_SCOPES,
    JWT_SCOPES,
    SCOPE_NOTIFY,
    ApiAuthSettings,
    ServiceSettings,
)

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")
LONGEST_LIFETIME = 300  # seconds, CDS Hooks: "exp ... no more than 5 minutes in the future"
LEEWAY = 30  # seconds of clock skew tolerated
REPLAY_CACHE_LIMIT = 100_000
"""`jti`s remembered at most (each for its token's lifetime, at most 5.5 minutes)."""


class ReplayCache:
    """The `jti`s of the JWTs accepted and not yet expired; thread-safe."""

    def __init__(self, limit: int = REPLAY_CACHE_LIMIT) -> None:
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def first_use(self, token_id: str, expires: float) -> bool:
        """Remember `token_id` until `expires` (epoch seconds); False if it was seen before."""
        now = time.time()
        with self._lock:
            if len(self._expiry) >= self._limit:
                self._expiry = {key: when for key, when in self._expiry.items() if when > now}
                if len(self._expiry) >= self._limit:
                    return False  # refuse rather than forget a jti that may be replayed
            known = self._expiry.get(token_id)
            if known is not None and known > now:
                return False
            self._expiry[token_id] = expires + LEEWAY
            return True


class ApiAuthenticator:
    """Checks the bearer token of a request against the configured tokens and keys."""

    def __init__(self, settings: ServiceSettings) -> None:
        auth = settings.api_auth
        if not auth.configured and not auth.allow_anonymous:
            raise ServiceConfigError(
                "no API authentication configured: give API tokens (--api-token-env or "
                "--api-token-file), a CDS Hooks JWT secret (--jwt-secret-env or "
                "--jwt-secret-file) or a JWKS file (--jwks-file), or allow anonymous access "
                "explicitly (--no-auth, local testing only)"
            )
        self.anonymous = not auth.configured
        environment = settings.environment
        self._tokens = tuple(
            token.encode() for token in (auth.tokens.read_lines(environment) if auth.tokens else ())
        )
        self._notify_tokens = tuple(
            token.encode()
            for token in (auth.notify_tokens.read_lines(environment) if auth.notify_tokens else ())
        )
        self._replays = ReplayCache()
        if auth.jwt_secret and not auth.jwt_hs256_test_mode:
            raise ServiceConfigError(
                "an HS256 JWT secret is for tests only: CDS Hooks 2.0 requires CDS clients to "
                "sign with an asymmetric key (give a JWKS file), or turn on the HS256 test mode "
                "explicitly (--jwt-hs256-test-mode)"
            )
        self._secret = auth.jwt_secret.read(environment) if auth.jwt_secret else None
        self._keys = _read_jwks(auth.jwks_file) if auth.jwks_file else {}
        self._issuers = auth.jwt_issuers
        self._public_url = settings.public_url.rstrip("/") if settings.public_url else None

    def check(self, authorization: str | None, endpoint_url: str, base_url: str) -> frozenset[str]:
        """The scopes of the caller; ApiError 401 unless the header holds an accepted token.

        `endpoint_url` is the URL called (no query), `base_url` the service's root URL as the
        request reached it; with a configured public URL, that one is the JWT audience base.
        """
        if self.anonymous:
            return ALL_SCOPES
        if not authorization:
            raise _unauthorized("an Authorization: Bearer token is required")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        encoded = token.encode()
        if _matches(encoded, self._tokens):
            return ALL_SCOPES
        if _matches(encoded, self._notify_tokens):
            return frozenset({SCOPE_NOTIFY})
        if token.count(".") == 2 and (self._secret or self._keys):
            self._check_jwt(token, _audiences(endpoint_url, base_url, self._public_url))
            return JWT_SCOPES
        raise _unauthorized("the bearer token is not accepted")

    def _check_jwt(self, token: str, audiences: list[str]) -> None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthorized("the bearer token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        key_id = header.get("kid")
        media_type = header.get("typ")
        if not isinstance(media_type, str) or media_type.upper() != "JWT":
            # CDS Hooks 2.0, "Trusting CDS Clients": typ is REQUIRED, "Fixed value: JWT"
            # (RFC 7515 4.1.9: compared case-insensitively).
            raise _unauthorized("the JWT header's typ must be JWT")
        key: Any
        if algorithm == "HS256" and self._secret:
            key = self._secret  # the test mode only (see ApiAuthenticator.__init__)
        elif algorithm in ASYMMETRIC_ALGORITHMS and self._keys:
            key = None
        else:
            shown = repr(algorithm)
            shown = shown if len(shown) <= 40 else f"{shown[:39]}…"  # the caller's text, clipped
            raise _unauthorized(f"JWT algorithm {shown} is not accepted")
        if not isinstance(key_id, str) or not key_id:
            raise _unauthorized("the JWT header must name its key (kid)")
        if key is None:
            key = self._key_for(key_id, algorithm)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=audiences,
                leeway=LEEWAY,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as error:
            raise _unauthorized(f"the JWT is not accepted: {error}") from None
        for name in ("exp", "iat", "nbf"):
            # RFC 7519 4.1.4: a NumericDate is a JSON number (PyJWT also takes "1796000000");
            # CDS Hooks 2.0, "Trusting CDS Clients": exp and iat are numbers.
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise _unauthorized(f"the JWT's {name} must be a number (a NumericDate)")
        if not isinstance(claims["iss"], str):
            raise _unauthorized("the JWT's iss must be a string")
        if self._issuers and claims["iss"] not in self._issuers:
            raise _unauthorized("the JWT issuer is not trusted")
        if claims["exp"] - claims["iat"] > LONGEST_LIFETIME:
            raise _unauthorized("the JWT lives longer than 5 minutes (exp - iat)")
        token_id = claims["jti"]
        if not isinstance(token_id, str) or not token_id:
            raise _unauthorized("the JWT's jti must be a non-empty string")
        if not self._replays.first_use(f"{claims['iss']}|{token_id}", float(claims["exp"])):
            raise _unauthorized("the JWT was used before (same jti): each call needs a new one")

    def _key_for(self, key_id: str, algorithm: str) -> Any:
        """The key `kid` names, when the token's algorithm is one it is bound to."""
        bound = self._keys.get(key_id)
        if bound is None:
            raise _unauthorized("the JWT's kid names no configured key")
        key, algorithms = bound
        if algorithm not in algorithms:
            raise _unauthorized(
                f"the key {key_id} is for {', '.join(sorted(algorithms))}, not {algorithm}"
            )
        return key


def _matches(token: bytes, known: tuple[bytes, ...]) -> bool:
    """Constant-time comparison with every known token (no early exit)."""
    found = False
    for candidate in known:
        found |= hmac.compare_digest(token, candidate)
    return found


def forbidden(scope: str) -> ApiError:
    """403: the caller's credentials do not allow what the route does."""
    what = {
        "evaluate": "evaluate patients",
        "write": "write results to the FHIR server",
        "notify": "send Subscription notifications",
    }.get(scope, scope)
    return ApiError.of(403, "forbidden", f"these credentials may not {what} (scope {scope})")


def _audiences(endpoint_url: str, base_url: str, public_url: str | None) -> list[str]:
    """The accepted `aud`: the service endpoint called (CDS Hooks 2.0: "The CDS Service
    endpoint that is being called by the CDS Client"), under the public URL when one is set."""
    base = base_url.rstrip("/")
    path = endpoint_url[len(base) :] if endpoint_url.startswith(base) else ""
    root = base if public_url is None else public_url
    return [root + path]


_ALGORITHMS_OF_KEY_TYPE: dict[tuple[str, str | None], frozenset[str]] = {
    ("RSA", None): frozenset({"RS256", "RS384"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
}


def _read_jwks(path: Path) -> dict[str, tuple[Any, frozenset[str]]]:
    """The public keys of a JWKS file by `kid`, each with the algorithms it is bound to (its
    declared `alg`, else its key type's); a key without `kid` cannot be named, so is left out."""
    where = Location(file=str(path))
    try:
        document = orjson.loads(path.read_bytes())
        jwt.PyJWKSet.from_dict(document)  # the set as a whole is checked here
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ServiceConfigError(f"cannot read the JWKS: {reason}", where) from None
    except (orjson.JSONDecodeError, jwt.PyJWTError) as error:
        raise ServiceConfigError(f"not a usable JSON Web Key Set: {error}", where) from None
    keys: dict[str, tuple[Any, frozenset[str]]] = {}
    for data in document.get("keys") or ():
        if not isinstance(data, dict) or not data.get("kid"):
            continue  # a key without kid cannot be named
        try:
            key = jwt.PyJWK(data)
        except jwt.PyJWTError:
            continue  # PyJWKSet accepted the set; a key it could not use is not offered
        declared = data.get("alg")
        curve = data.get("crv") if data.get("kty") == "EC" else None
        algorithms = (
            frozenset({declared})
            if isinstance(declared, str)
            else _ALGORITHMS_OF_KEY_TYPE.get((str(data.get("kty")), curve), frozenset())
        )
        keys[str(data["kid"])] = (key.key, algorithms & frozenset(ASYMMETRIC_ALGORITHMS))
    return keys


def _unauthorized(message: str) -> ApiError:
    return ApiError.of(401, "login", message, headers={"WWW-Authenticate": "Bearer"})


def describe(settings: ApiAuthSettings) -> list[str]:
    """The kinds of credentials accepted, for the startup log (no secrets)."""
    kinds = []
    if settings.tokens:
        kinds.append("bearer-token")
    if settings.notify_tokens:
        kinds.append("notify-token")
    if settings.jwt_secret:
        kinds.append("jwt-hs256-test-mode")
    if settings.jwks_file:
        kinds.append("jwt-jwks")
    return kinds or ["anonymous"]
