"""The per-patient report page (engine.report.page), read as text and in a real browser.

The browser tests render the page with Debian's headless chromium (the `chromium` fixture
installs it when missing) and check what a person sees: the DOM chromium built, and a
screenshot whose pixels show the status badge in its colour.
"""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from engine.evaluate import CompiledCriteria, PatientEvaluation, evaluate_patient
from engine.record import build_record
from engine.report.explanation import explain, stale_data_warning
from engine.report.page import report_page
from engine.sources import read_bundle_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "patients"
AS_OF = dt.date(2026, 11, 1)
INELIGIBLE_RED = (0xB3, 0x26, 0x1E)


def _evaluate(trial: CompiledCriteria, name: str, as_of: dt.date = AS_OF) -> PatientEvaluation:
    record = build_record(read_bundle_file(EXAMPLES / f"{name}.json"), trial.terminology)
    return evaluate_patient(trial, record, as_of)


class _Assets(HTMLParser):
    """Every external reference a page makes (src, href, url(...)) and its script tags."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.references += [v or "" for k, v in attrs if k in ("src", "href") and v]


def test_the_page_names_status_dates_open_items_and_every_criterion(
    trial: CompiledCriteria,
) -> None:
    evaluation = _evaluate(trial, "itp-relapsed-missing-labs")
    page = report_page(evaluation)
    assert page.startswith("<!DOCTYPE html>")
    assert "potential-candidate" in page
    assert "As of</dt><dd>2026-11-01" in page
    assert f"Newest data in the record</dt><dd>{evaluation.newest_data}" in page
    assert "Data to add" in page
    assert "Open questions for the investigator" in page
    for criterion in explain(evaluation).criteria:
        assert f'id="{criterion.id}"' in page
    assert "Alanine aminotransferase (ALT) result (LOINC 1742-6) dated 2026-10-04" in page
    assets = _Assets()
    assets.feed(page)
    assert assets.references == [] and assets.scripts == 0
    assert "url(" not in page and "@import" not in page


def test_data_older_than_the_screening_window_is_warned_about(trial: CompiledCriteria) -> None:
    current = _evaluate(trial, "itp-relapsed-candidate")
    assert stale_data_warning(current) is None
    late = _evaluate(trial, "itp-relapsed-candidate", dt.date(2027, 6, 1))
    warning = stale_data_warning(late)
    assert warning is not None
    assert "screening window runs from 2027-05-04" in warning
    assert f"newest data is from {late.newest_data}" in warning
    assert warning.replace("'", "&#x27;") in report_page(late)


def test_chromium_renders_every_criterion(
    trial: CompiledCriteria, chromium: object, tmp_path: Path
) -> None:
    evaluation = _evaluate(trial, "itp-refractory-on-aspirin")
    page = tmp_path / "report.html"
    page.write_text(report_page(evaluation), encoding="utf-8")
    dom = chromium.dom(page.as_uri())  # type: ignore[attr-defined]
    assert dom.count('<tr class="criterion"') == len(trial.criteria)
    assert "Aspirin 81 mg" in dom
    assert "What excludes the patient" in dom


def test_screenshot_of_a_report_page(
    trial: CompiledCriteria, chromium: object, tmp_path: Path
) -> None:
    evaluation = _evaluate(trial, "itp-refractory-on-aspirin")
    page = tmp_path / "report.html"
    page.write_text(report_page(evaluation), encoding="utf-8")
    png = chromium.screenshot(page.as_uri(), tmp_path / "report.png", 1200, 1600)  # type: ignore[attr-defined]
    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 1600)
    top = image.crop((0, 0, 1200, 300))
    colours = top.getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 20, "the page header rendered as a blank area"
    red = sum(count for count, colour in colours if _near(colour, INELIGIBLE_RED))
    assert red > 300, "the ineligible status badge is not drawn in its colour"
    white_share = max(count for count, _colour in colours) / (1200 * 300)
    assert white_share < 0.97, "almost nothing drawn in the header"


def _near(colour: tuple[int, int, int], wanted: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(colour, wanted, strict=True))
