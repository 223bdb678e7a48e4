"""Signed report links (`engine.service.report_links`): what a CDS card's link to the report
page carries, for which page and how long it is accepted, and what is refused.

HMAC: RFC 2104 (a key at least as long as the hash's output, section 3); the signature's
text: base64url without padding, RFC 4648 section 5; a 401 names the accepted scheme in
WWW-Authenticate, RFC 9110 section 15.5.2.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import ServiceConfigError
from engine.service.problems import ApiError
from engine.service.report_links import ReportLinks, report_links_of
from engine.service.settings import SecretReference, ServiceSettings

KEY = b"k" * 32
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _signed(links: ReportLinks, trial_id: str = "NCT1", patient_id: str = "p1") -> tuple[str, str]:
    query = parse_qs(links.query(trial_id, patient_id), strict_parsing=True)
    return query["expires"][0], query["signature"][0]


def _refusal(links: ReportLinks, *arguments: str) -> str:
    with pytest.raises(ApiError) as raised:
        links.check(*arguments)
    error = raised.value
    assert error.status == 401
    assert error.headers == {"WWW-Authenticate": "Bearer"}
    return error.issues[0].diagnostics


def test_a_link_opens_its_page_until_it_expires() -> None:
    clock = Clock()
    links = ReportLinks(KEY, lifetime_minutes=15, clock=clock)
    expires, signature = _signed(links)
    assert int(expires) == NOW + 15 * 60
    assert len(signature) == 43 and "=" not in signature  # 32 bytes, unpadded base64url
    links.check("NCT1", "p1", expires, signature)
    clock.now = NOW + 15 * 60 - 1
    links.check("NCT1", "p1", expires, signature)
    clock.now = NOW + 15 * 60
    assert "expired" in _refusal(links, "NCT1", "p1", expires, signature)


@pytest.mark.parametrize(
    ("trial_id", "patient_id", "later"),
    [("NCT1", "p2", 0), ("NCT2", "p1", 0), ("NCT1", "p1", 3600), ("NCT1p", "1", 0)],
    ids=["another patient", "another trial", "a later expiry", "ids run together"],
)
def test_a_link_opens_no_other_page_nor_for_longer(
    trial_id: str, patient_id: str, later: int
) -> None:
    links = ReportLinks(KEY, clock=Clock())
    expires, signature = _signed(links)
    reason = _refusal(links, trial_id, patient_id, str(int(expires) + later), signature)
    assert "signature does not match" in reason


def test_another_key_signs_other_links() -> None:
    """Two processes without a configured key each sign with their own (a random one)."""
    expires, signature = _signed(ReportLinks(clock=Clock()))
    assert "does not match" in _refusal(
        ReportLinks(clock=Clock()), "NCT1", "p1", expires, signature
    )
    same = ReportLinks(KEY, clock=Clock())
    same.check("NCT1", "p1", *_signed(ReportLinks(KEY, clock=Clock())))


@pytest.mark.parametrize("expires", ["", "soon", "1e9", "-5", "１８", "9" * 13, " 1800000900"])
def test_an_expiry_that_is_no_unix_time_is_refused(expires: str) -> None:
    links = ReportLinks(KEY, clock=Clock())
    _, signature = _signed(links)
    assert "not a Unix time" in _refusal(links, "NCT1", "p1", expires, signature)


@given(st.text(max_size=80), st.text(max_size=80))
def test_any_text_is_refused_with_a_401(expires: str, signature: str) -> None:
    links = ReportLinks(KEY, clock=Clock())
    with pytest.raises(ApiError) as raised:
        links.check("NCT1", "p1", expires, signature)
    assert raised.value.status == 401


def test_a_configured_key_is_read_and_must_be_long_enough(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("too-short\n", encoding="utf-8")
    settings = ServiceSettings(report_link_key=SecretReference(file=short))
    with pytest.raises(ServiceConfigError, match="at least 32 characters") as raised:
        report_links_of(settings)
    assert str(short) in str(raised.value)
    settings = ServiceSettings(
        report_link_key=SecretReference(environment_variable="LINK_KEY"),
        report_link_minutes=5,
        environment={"LINK_KEY": "x" * 40},
    )
    links = report_links_of(settings)
    assert links.lifetime_seconds == 300
    expires, signature = _signed(links)
    ReportLinks(b"x" * 40).check("NCT1", "p1", expires, signature)  # a replica's same key


def test_a_link_lasts_a_minute_at_least() -> None:
    with pytest.raises(ServiceConfigError, match="at least one minute"):
        ReportLinks(KEY, lifetime_minutes=0)
