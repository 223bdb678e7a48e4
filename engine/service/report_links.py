"""Report links a browser can open: the report page's address signed for a short time.

A CDS card's link is opened by the clinician's browser (CDS Hooks 2.0, "Link": an `absolute`
link is a URL "to be opened by the CDS Client"), which sends no bearer token. The link the
service gives to its own report page therefore carries `expires` (a Unix time) and
`signature`: HMAC-SHA256 (RFC 2104) of the trial id, the patient id and `expires` under the
service's report-link key, in unpadded base64url (RFC 4648 section 5). The page accepts such a
link for that one trial and patient until `expires`, instead of a bearer token; anything else
(no link, a wrong or altered signature, a past `expires`) needs the bearer token as before.

The link is a capability: whoever holds it sees that one report page until it expires (the
card that carries it reached the EHR over the authenticated CDS Hooks call). Hence a short
lifetime (15 minutes by default), a key that never leaves the service, and a page answered
with `Cache-Control: no-store` and `Referrer-Policy: no-referrer`, so that neither the
browser's cache nor a followed link keeps the address.

The key: `--report-link-key-file` (or `-env`), at least 32 characters, shared by the
service's replicas; without it, 32 random bytes per process, so links end when the process
does (and one replica does not accept another's).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlencode

from engine.errors import Location, ServiceConfigError
from engine.service.problems import ApiError
from engine.service.settings import REPORT_LINK_MINUTES, ServiceSettings

MINIMUM_KEY_CHARACTERS = 32
"""A report-link key shorter than this is refused at start (RFC 2104 section 3: a key
shorter than the hash's output, 32 bytes for SHA-256, weakens the MAC)."""
_SIGNATURE_CHARACTERS = 43
"""An HMAC-SHA256 in unpadded base64url: 32 bytes, 43 characters."""


class ReportLinks:
    """Signs the report page's address for a trial and patient, and checks a signed one."""

    def __init__(
        self,
        key: bytes | None = None,
        lifetime_minutes: int = REPORT_LINK_MINUTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lifetime_minutes < 1:
            raise ServiceConfigError("a report link must last at least one minute")
        self._key = key if key is not None else secrets.token_bytes(32)
        self.lifetime_seconds = lifetime_minutes * 60
        self._clock = clock

    @classmethod
    def of_secret(
        cls, secret: str, where: str, lifetime_minutes: int = REPORT_LINK_MINUTES
    ) -> ReportLinks:
        """Links signed with a configured key (`where`: where it was read, for the error)."""
        if len(secret) < MINIMUM_KEY_CHARACTERS:
            raise ServiceConfigError(
                f"the report-link key must be at least {MINIMUM_KEY_CHARACTERS} characters "
                f"(it has {len(secret)}): e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
                Location(where),
            )
        return cls(secret.encode(), lifetime_minutes)

    def query(self, trial_id: str, patient_id: str) -> str:
        """The query string (`expires=...&signature=...`) that opens the page for now on."""
        expires = int(self._clock()) + self.lifetime_seconds
        return urlencode(
            {"expires": expires, "signature": self._signature(trial_id, patient_id, expires)}
        )

    def check(self, trial_id: str, patient_id: str, expires: str, signature: str) -> None:
        """Accept a signed link of this page; ApiError 401 saying why it is not accepted."""
        if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
            raise refused("its expires is not a Unix time")
        if len(signature) != _SIGNATURE_CHARACTERS or not hmac.compare_digest(
            signature.encode("ascii", "replace"),
            self._signature(trial_id, patient_id, int(expires)).encode(),
        ):
            raise refused("its signature does not match this page")
        if int(expires) <= self._clock():
            raise refused("it has expired: open the card again for a fresh link")

    def _signature(self, trial_id: str, patient_id: str, expires: int) -> str:
        # NUL never occurs in a FHIR id, a trial id or a number: the fields cannot run together
        message = f"report\0{trial_id}\0{patient_id}\0{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def report_links_of(settings: ServiceSettings) -> ReportLinks:
    """The service's report links: signed with `settings.report_link_key` when configured
    (read now; ServiceConfigError when unreadable or too short), else with a key of this
    process."""
    reference = settings.report_link_key
    if reference is None:
        return ReportLinks(None, settings.report_link_minutes)
    secret = reference.read(settings.environment)
    return ReportLinks.of_secret(secret, str(reference), settings.report_link_minutes)


def refused(reason: str) -> ApiError:
    """The 401 of a report link that is not accepted, saying why."""
    # RFC 9110 15.5.2: a 401 names the scheme that would be accepted (the bearer token)
    return ApiError.of(
        401,
        "login",
        f"the report link is not accepted: {reason}",
        headers={"WWW-Authenticate": "Bearer"},
    )
