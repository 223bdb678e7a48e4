"""API authentication: static bearer tokens, and JWTs as CDS Hooks clients send them.

A request carries `Authorization: Bearer <token>`. The token is accepted when it equals one of
the configured static tokens (compared in constant time), or when it is a JWT that

- is signed with the configured shared secret (HS256) or a key of the configured JWKS
  (RS256, RS384, ES256, ES384; chosen by `kid`, or the only key when there is one);
- carries `iss`, `aud`, `exp`, `iat` and `jti` (CDS Hooks 2.0, "Trusting CDS Clients"), with
  `aud` the URL of the endpoint called (or the service's base URL), an `iss` among the
  configured issuers when some are, and an `exp` at most five minutes after `iat`.

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
        key: Any
        if algorithm == "HS256" and self._secret:
            key = self._secret
        elif algorithm in ASYMMETRIC_ALGORITHMS and self._keys:
            key = self._key_for(header.get("kid"))
        else:
            raise _unauthorized(f"JWT algorithm {algorithm!r} is not accepted")
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
        if self._issuers and claims["iss"] not in self._issuers:
            raise _unauthorized("the JWT issuer is not trusted")
        if claims["exp"] - claims["iat"] > LONGEST_LIFETIME:
            raise _unauthorized("the JWT lives longer than 5 minutes (exp - iat)")
        token_id = claims["jti"]
        if not isinstance(token_id, str) or not token_id:
            raise _unauthorized("the JWT's jti must be a non-empty string")
        if not self._replays.first_use(f"{claims['iss']}|{token_id}", float(claims["exp"])):
            raise _unauthorized("the JWT was used before (same jti): each call needs a new one")

    def _key_for(self, key_id: Any) -> Any:
        if isinstance(key_id, str) and key_id in self._keys:
            return self._keys[key_id]
        if key_id is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise _unauthorized("the JWT's kid names no configured key")


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
    """The accepted `aud` values: the endpoint called and the service's base URL."""
    base = base_url.rstrip("/")
    path = endpoint_url[len(base) :] if endpoint_url.startswith(base) else ""
    roots = [base] if public_url is None else [public_url]
    return [url for root in roots for url in (root + path, root, root + "/")]


def _read_jwks(path: Path) -> dict[str, Any]:
    """The public keys of a JWKS file by `kid` (a key without kid is `""`)."""
    where = Location(file=str(path))
    try:
        document = orjson.loads(path.read_bytes())
        key_set = jwt.PyJWKSet.from_dict(document)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ServiceConfigError(f"cannot read the JWKS: {reason}", where) from None
    except (orjson.JSONDecodeError, jwt.PyJWTError) as error:
        raise ServiceConfigError(f"not a usable JSON Web Key Set: {error}", where) from None
    return {key.key_id or "": key.key for key in key_set.keys}


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
        kinds.append("jwt-hs256")
    if settings.jwks_file:
        kinds.append("jwt-jwks")
    return kinds or ["anonymous"]
