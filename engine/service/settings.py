"""What the service is configured with: trials, FHIR server, API authentication, evaluation day.

Secrets (FHIR server token, API tokens, JWT shared secret) are given by reference, an
environment variable or a file, and read once when the app is created; they never appear in a
repr, a message or a log.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import Location, ServiceConfigError
from engine.sources import RetryPolicy, ServerLimits
from engine.sources.fhir_server import DEFAULT_PAGE_SIZE

SCOPE_EVALUATE = "evaluate"
"""Evaluate patients and answer CDS Hooks calls (reads the FHIR server, writes nothing)."""
SCOPE_WRITE = "write"
"""`POST /evaluate` with `write: true`: write results to the configured FHIR server."""
SCOPE_NOTIFY = "notify"
"""`/fhir-notify`: Subscription notifications (re-evaluate and write back)."""
ALL_SCOPES = frozenset({SCOPE_EVALUATE, SCOPE_WRITE, SCOPE_NOTIFY})
JWT_SCOPES = frozenset({SCOPE_EVALUATE})
"""What a CDS Hooks client's JWT may do: read and evaluate, never write or notify."""
MAX_BODY_BYTES = 10 * 1024 * 1024
"""Default request body limit (a large Synthea patient Bundle is about 5 MB)."""
BODY_TIMEOUT = 30.0
"""Seconds a client may take to send a request body once its headers are in (408 beyond)."""
REPORT_LINK_MINUTES = 15
"""How long a CDS card's link to the report page opens it (`engine.service.report_links`)."""
MAX_REQUESTS_IN_PROGRESS = 1000
"""Requests served at once; one more is answered 503 (`limits.RequestLimitMiddleware`)."""
READY_CACHE_SECONDS = 5.0
"""`/ready` asks the FHIR server at most once in this many seconds (it needs no credentials)."""

SERVICE_RETRY = RetryPolicy(attempts=3, first_delay=0.2, longest_delay=2.0, give_up_after=25.0)
"""Interactive callers wait: fewer, shorter retries than the command line's."""


@dataclass(frozen=True)
class SecretReference:
    """Where a secret is: an environment variable or a file (first line, or every line)."""

    environment_variable: str | None = None
    file: Path | None = None

    def __post_init__(self) -> None:
        if (self.environment_variable is None) == (self.file is None):
            raise ServiceConfigError("a secret comes from one environment variable or one file")

    def read_lines(self, environment: Mapping[str, str]) -> tuple[str, ...]:
        """The non-empty lines of the secret (a token file may hold several, one a line)."""
        if self.environment_variable is not None:
            text = environment.get(self.environment_variable, "")
            where = f"environment variable {self.environment_variable}"
        else:
            assert self.file is not None
            where = str(self.file)
            try:
                text = self.file.read_text(encoding="utf-8")
            except OSError as error:
                reason = error.strerror or type(error).__name__
                raise ServiceConfigError(
                    f"cannot read the secret: {reason}", Location(where)
                ) from None
        lines = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not lines:
            raise ServiceConfigError("the secret is not set or empty", Location(where))
        if any(any(character.isspace() for character in line) for line in lines):
            raise ServiceConfigError("a secret must be one word per line", Location(where))
        return lines

    def read(self, environment: Mapping[str, str]) -> str:
        """The secret (the first line)."""
        return self.read_lines(environment)[0]

    def __str__(self) -> str:
        if self.environment_variable is not None:
            return f"environment variable {self.environment_variable}"
        return str(self.file)


@dataclass(frozen=True)
class ApiAuthSettings:
    """Who may call the API.

    - `tokens`: static bearer tokens (an environment variable, or a file with one per line);
    - `jwt_secret`: a shared secret for HS256-signed JWTs (CDS Hooks clients);
    - `jwks_file`: a JSON Web Key Set with the public keys of RS256/RS384/ES256/ES384 JWTs;
    - `jwt_issuers`: the accepted `iss` values (empty: any issuer whose key verifies);
    - `notify_tokens`: static tokens that may only send Subscription notifications (the
      token a Subscription stores on the FHIR server).

    Scopes: static `tokens` may do everything (evaluate, write, notify), `notify_tokens` only
    notify, JWTs only evaluate (`JWT_SCOPES`). Without any credentials the service refuses to
    start unless `allow_anonymous` is set (then every caller has every scope).
    """

    tokens: SecretReference | None = None
    notify_tokens: SecretReference | None = None
    jwt_secret: SecretReference | None = None
    jwt_hs256_test_mode: bool = False
    jwks_file: Path | None = None
    jwt_issuers: frozenset[str] = frozenset()
    allow_anonymous: bool = False

    @property
    def configured(self) -> bool:
        return any(
            item is not None
            for item in (self.tokens, self.notify_tokens, self.jwt_secret, self.jwks_file)
        )


@dataclass(frozen=True)
class ServiceSettings:
    """Everything `create_app` needs.

    `trials_folder`: every `*.yaml`/`*.yml` criteria file in it is loaded and compiled at start.
    `attestations`: answers to manual items (the `--attestations` file of `evaluate`), used for
    every evaluation of the patients it names, notifications included.
    `fhir_server`/`fhir_token`: the server patients are pulled from and results written to.
    `fhir_auth_config`: instead of `fhir_token`, SMART Backend Services for that server (the
    `[smart]` table of a TOML file, docs/server.md): access tokens are fetched with a signed
    client assertion and renewed before they expire, as EHRs grant system access.
    `public_url`: the service's own base URL as callers see it (JWT audience, Subscriptions).
    `report_url_template`: a link for CDS cards, with `{trial_id}` and `{patient_id}`.
    `report_link_key`, `report_link_minutes`: the key that signs the cards' links to the
    service's own report page, and how long such a link opens it
    (`engine.service.report_links`; without a key, one of the process's own).
    `trusted_fhir_servers`: base URLs a CDS Hooks `fhirServer` may name besides `fhir_server`
    (the allow-list); `allow_any_fhir_server` lifts it (the caller's token still goes only to
    the allow-listed servers).
    `max_body_bytes`: larger request bodies are refused with 413.
    `body_timeout`: a body not received whole within this many seconds is refused with 408.
    `cors_origins`: the browser origins allowed to call the service (CORS; none by default).
    `max_requests_in_progress`: requests served at once; one more is answered 503 with
    Retry-After (`limits.RequestLimitMiddleware`; `GET /health` always answers).
    `as_of`: evaluate as of this day instead of today (tests, replays).
    `notification_state`: a JSON file keeping, per Subscription, when the service last asked
    the server what changed (`engine.service.subscription_changes`), across restarts.
    `fhir_retry`: retries and time bounds of every request to a FHIR server;
    `fhir_limits`: how much one server may send (pages per search), for the configured server
    and every server a CDS Hooks call names (`engine.fhir_http.ServerLimits`).
    `ready_cache_seconds`: `/ready` asks the FHIR server at most once in this many seconds.
    `environment`: where environment-variable secrets are read (default `os.environ`).
    """

    trials_folder: Path = Path("criteria")
    attestations: Path | None = None
    fhir_server: str | None = None
    fhir_token: SecretReference | None = None
    fhir_auth_config: Path | None = None
    api_auth: ApiAuthSettings = field(default_factory=ApiAuthSettings)
    public_url: str | None = None
    report_url_template: str | None = None
    report_link_key: SecretReference | None = None
    report_link_minutes: int = REPORT_LINK_MINUTES
    trusted_fhir_servers: tuple[str, ...] = ()
    allow_any_fhir_server: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout: float = BODY_TIMEOUT
    cors_origins: tuple[str, ...] = ()
    max_requests_in_progress: int = MAX_REQUESTS_IN_PROGRESS
    as_of: dt.date | None = None
    fhir_retry: RetryPolicy = SERVICE_RETRY
    fhir_limits: ServerLimits = field(default_factory=ServerLimits)
    page_size: int = DEFAULT_PAGE_SIZE
    notification_workers: int = 2
    notification_state: Path | None = None
    ready_cache_seconds: float = READY_CACHE_SECONDS
    environment: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)

    def fhir_server_allow_list(self) -> frozenset[str]:
        """The base URLs (no trailing slash) the service may call with a caller's token."""
        servers = [*self.trusted_fhir_servers, *([self.fhir_server] if self.fhir_server else [])]
        return frozenset(server.rstrip("/") for server in servers)

    def day(self) -> dt.date:
        """The evaluation day: `as_of`, else today (read at each request)."""
        return self.as_of or dt.date.today()
