"""Output validation once per shape (`engine.report.validate.OutputShapes`): what a cohort
run uses instead of validating every patient's ResearchSubject and DetectedIssue in full."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from engine.cohort import NdjsonInput, run_cohort
from engine.errors import OutputValidationError
from engine.evaluate import CompiledCriteria
from engine.report.validate import OutputShapes, output_shape
from engine.screening import screen_patient
from engine.sources import read_bundle_file

ROOT = Path(__file__).resolve().parents[2]
AS_OF_TEXT = "2026-11-01"


@pytest.fixture(scope="module")
def outputs(trial: CompiledCriteria) -> list[dict[str, Any]]:
    """Every shipped Synthea example's ResearchSubject and DetectedIssue."""
    import datetime as dt

    resources: list[dict[str, Any]] = []
    for file in sorted((ROOT / "examples" / "synthea").glob("*.json")):
        screening = screen_patient(trial, read_bundle_file(file), dt.date.fromisoformat(AS_OF_TEXT))
        resources += [screening.research_subject("ResearchStudy/x"), screening.detected_issue()]
    return resources


def test_valid_outputs_pass_and_most_share_a_shape(outputs: list[dict[str, Any]]) -> None:
    checker = OutputShapes()
    for resource in outputs:
        checker.validate(resource)
    assert 2 <= checker.validated < len(outputs)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("status",), " final"),  # not a FHIR code (leading space)
        (("id",), "not an id!"),  # the id pattern
        (("identifiedDateTime",), "yesterday"),  # the dateTime pattern
        (("detail",), ""),  # an empty string
        (("detail",), 42),  # a number where a string belongs
        (("evidence", 0, "code", 0, "text"), ""),  # an empty string in a repeated entry
        (("evidence", 0, "code", 0, "coding", 0, "system"), 7),
    ],
)
def test_a_broken_output_is_caught_after_its_valid_twins(
    outputs: list[dict[str, Any]], path: tuple[str | int, ...], value: Any
) -> None:
    issue = next(r for r in outputs if r["resourceType"] == "DetectedIssue" and path[0] in r)
    checker = OutputShapes()
    checker.validate(issue)
    broken = copy.deepcopy(issue)
    holder: Any = broken
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    assert output_shape(broken) != output_shape(issue)
    with pytest.raises(OutputValidationError, match="not valid FHIR R4B"):
        checker.validate(broken)


def test_a_shape_object_vouches_for_a_text_only_once_it_is_known_valid(
    outputs: list[dict[str, Any]],
) -> None:
    """`validate_json` takes a shape object it found valid before as valid without hashing
    it; a shape object that is not its text's shape (a bug in making it) is never taken so:
    the next text given with it is validated again, and a broken one is caught."""
    import orjson

    issue = next(r for r in outputs if r["resourceType"] == "DetectedIssue")
    text = orjson.dumps(issue)
    checker = OutputShapes()
    shape = output_shape(issue)
    checker.validate_json(text, shape)
    checker.validate_json(text, shape)
    assert checker.validated == 1
    wrong = ("a shape", "of nothing")
    checker.validate_json(text, wrong)  # the text's own shape is valid
    broken = copy.deepcopy(issue)
    broken["status"] = " final"
    with pytest.raises(OutputValidationError, match="not valid FHIR R4B"):
        checker.validate_json(orjson.dumps(broken), wrong)


def test_a_cohort_run_reports_a_broken_output_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "cohort"))
    from cohort_examples import AS_OF, CRITERIA, EXAMPLE_FOLDERS, bundles_to_ndjson

    folder = tmp_path / "ndjson"
    bundles_to_ndjson(EXAMPLE_FOLDERS, folder)
    from engine.report import resources

    built = resources._research_subject_members

    def research_subject_members(trial: Any, patient_id: str, *rest: Any) -> list[Any]:
        members = built(trial, patient_id, *rest)
        if patient_id.startswith("0b7496cb"):
            members[3] = ("status", "not a  code", ("s", "not a  code"))
        return members

    # the cohort's ResearchSubjects (JSON text and shape) are made of these members
    monkeypatch.setattr(resources, "_research_subject_members", research_subject_members)
    summary = run_cohort(CRITERIA, NdjsonInput(folder), tmp_path / "out", AS_OF, workers=1)
    errors = (tmp_path / "out" / "errors.ndjson").read_text()
    assert summary.problems == 1
    assert "ResearchSubject" in errors and "not valid FHIR R4B" in errors
    assert "0b7496cb" in errors
    assert summary.patients == 27


@pytest.mark.parametrize("broken", ["detail of one patient", "an evidence entry of every patient"])
def test_a_cohort_run_reports_a_broken_detected_issue_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broken: str
) -> None:
    """The DetectedIssue is written from pieces (evidence entries made once per part shared
    by many patients) with a shape made from the same pieces: a piece made wrong, for one
    patient or in a shared entry, is still caught."""
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "cohort"))
    from cohort_examples import AS_OF, CRITERIA, EXAMPLE_FOLDERS, bundles_to_ndjson

    from engine.report import resources

    folder = tmp_path / "ndjson"
    bundles_to_ndjson(EXAMPLE_FOLDERS, folder)
    if broken == "detail of one patient":
        summary_line = resources._summary_line

        def one_summary_line(trial: str, status: Any, headings: Any, parts: Any) -> str:
            text = summary_line(trial, status, headings, parts)
            cited = [reference for part in parts for reference in part.evidence]
            return "" if "Patient/0b7496cb-ffc9-0874-03f4-f4841c4dfa63" in cited else text

        monkeypatch.setattr(resources, "_summary_line", one_summary_line)
    else:
        evidence_text = resources._evidence_text
        monkeypatch.setattr(resources, "_part_pieces", {})  # none made before the break
        monkeypatch.setattr(resources, "_recent_pieces", {})
        monkeypatch.setattr(resources, "_part_texts", {})

        def broken_evidence_text(heading: Any, part: Any) -> str:
            return "" if heading.number == "I1" else evidence_text(heading, part)

        monkeypatch.setattr(resources, "_evidence_text", broken_evidence_text)
    summary = run_cohort(CRITERIA, NdjsonInput(folder), tmp_path / "out", AS_OF, workers=1)
    errors = (tmp_path / "out" / "errors.ndjson").read_text()
    assert "DetectedIssue" in errors and "not valid FHIR R4B" in errors
    if broken == "detail of one patient":
        assert summary.problems == 1 and summary.patients == 27
        assert "0b7496cb" in errors
    else:
        assert summary.problems == 28 and summary.patients == 0


@pytest.mark.parametrize("criteria_file", ["NCT05315778.yaml", "NCT03036150.yaml"])
def test_a_detected_issue_is_written_with_the_shape_of_its_text(criteria_file: str) -> None:
    """`detected_issue_json`'s shape, made from its pieces (kept for parts shared by many
    patients), is `output_shape` of its text: the shape validated is that of what is
    written, for every shipped example, evaluated in full and from a preview, twice; so is
    `research_subject_json`'s, whose text is that of `research_subject_of`. The narrative,
    joined from its rows' JSON texts, is the narrative made as a string."""
    import dataclasses
    import datetime as dt

    import orjson

    from engine.cohort.prefilter import Prefilter, preview_of
    from engine.record import build_record
    from engine.report import resources as built
    from engine.report.resources import (
        detected_issue_json,
        report_of,
        research_subject_json,
        research_subject_of,
    )
    from engine.trial import load_trial

    trial = load_trial(ROOT / "criteria" / criteria_file)
    as_of = dt.date.fromisoformat(AS_OF_TEXT)
    prefilter = Prefilter.from_criteria(trial)
    reports = []
    for file in sorted((ROOT / "examples").glob("*/*.json")):
        resources = read_bundle_file(file)
        reports.append(report_of(screen_patient(trial, resources, as_of).evaluation))
        preview = build_record(preview_of(resources), trial.terminology)
        requirement = prefilter.settle(preview)
        if requirement is not None:
            settled = prefilter.evaluate_settled(trial, preview, as_of, requirement, None)
            reports.append(report_of(settled.evaluation))
    # texts with characters the FHIR string pattern refuses, in the narrative's pieces
    refused = dataclasses.replace(
        reports[0],
        data_problems=("a problem\u2028on two lines",),
        parts=tuple(
            dataclasses.replace(part, summary=part.summary + "\x0b") for part in reports[0].parts
        ),
    )
    shapes = set()
    for report in [*reports, refused, *reports]:
        issue = detected_issue_json(report)
        assert issue.shape == output_shape(orjson.loads(issue.text))
        shapes.add(issue.shape)
        # the narrative, written from its rows' JSON texts, is the one made as a string
        headings = built.criterion_headings(report.criteria)
        summary = built._summary_line(trial.trial.id, report.status, headings, report.parts)
        narrative = built._narrative(report, summary, headings)
        assert orjson.loads(issue.text)["text"]["div"] == narrative
        subject = research_subject_json(report, "ResearchStudy/x")
        assert subject.text == orjson.dumps(research_subject_of(report, "ResearchStudy/x"))
        assert subject.shape == output_shape(orjson.loads(subject.text))
    assert len(shapes) >= 2


def test_shapes_validated_by_a_run_are_not_validated_again_but_new_ones_are(
    outputs: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.compiled_cache import CACHE_VARIABLE, save_validated_shapes, validated_shapes

    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    first = OutputShapes(validated_shapes())
    for resource in outputs:
        first.validate(resource)
    assert first.validated >= 2
    save_validated_shapes(first.valid_shapes)
    later = OutputShapes(validated_shapes())  # a later run, or another worker
    for resource in outputs:
        later.validate(resource)
    assert later.validated == 0
    issue = next(r for r in outputs if r["resourceType"] == "DetectedIssue")
    broken = copy.deepcopy(issue)
    broken["status"] = " final"
    with pytest.raises(OutputValidationError, match="not valid FHIR R4B"):
        later.validate(broken)
    monkeypatch.setenv(CACHE_VARIABLE, "off")
    assert validated_shapes() == set()


def test_array_items_take_the_shape_of_an_item_with_the_same_text(
    outputs: list[dict[str, Any]],
) -> None:
    """Objects inside arrays (evidence entries, codings) are shaped once per JSON text: the
    shapes are those of a walk with nothing kept, whatever came before."""
    from engine.report import validate

    kept = [output_shape(resource) for resource in outputs]
    for resource, shape in zip(outputs, kept, strict=True):
        validate._item_shapes.clear()
        assert output_shape(resource) == shape
    assert validate._item_shapes


def test_the_fhir_string_check_is_the_fhir_string_pattern() -> None:
    """`fits_fhir_string` (a search per refused character) says what the FHIR pattern
    `[ \\r\\n\\t\\S]+` says, for every code point, the empty text and longer texts."""
    import re
    import sys

    from engine.report.validate import _FHIR_STRING, _OTHER_WHITESPACE, fits_fhir_string

    every_character = "".join(map(chr, range(sys.maxunicode + 1)))
    assert _FHIR_STRING.pattern == r"[ \r\n\t\S]+"
    refused = re.findall(r"[^ \r\n\t\S]", every_character)
    assert refused == list(_OTHER_WHITESPACE)
    for character in [*refused, " ", "\r", "\n", "\t", "a", "µ", "\x00", "\U0001f600"]:
        for text in (character, f"a{character}", f"µ {character}\t", f"{character}b c"):
            fits = fits_fhir_string(text)
            assert (fits is True) is (_FHIR_STRING.fullmatch(text) is not None), text
            # not fitting: whether the models, which search the pattern, accept it
            assert fits is not None or _FHIR_STRING.search(text) is None, text
            assert fits is not False or _FHIR_STRING.search(text) is not None, text
    assert fits_fhir_string("") is None
    assert fits_fhir_string("\u2028") is None and fits_fhir_string("x\u2028") is False


@pytest.mark.parametrize(
    "path", [("evidence", "E", "detail", 0, "reference"), ("patient", "reference"), ("detail",)]
)
def test_a_text_the_models_refuse_is_caught_after_one_they_accept(
    outputs: list[dict[str, Any]], path: tuple[str | int, ...]
) -> None:
    """A text holding whitespace FHIR strings refuse (U+2028) and something else the models
    accept (they search their pattern); nothing else, they refuse. The two had one shape, so
    a reference of U+2028 alone (an id-less resource's fullUrl) was written unchecked once
    one with a character more had been validated."""
    issue = next(
        resource
        for resource in outputs
        if resource["resourceType"] == "DetectedIssue"
        and any("detail" in entry for entry in resource.get("evidence", []))
    )
    with_detail = next(n for n, entry in enumerate(issue["evidence"]) if "detail" in entry)
    path = tuple(with_detail if step == "E" else step for step in path)
    checker = OutputShapes()

    def edited(value: str) -> dict[str, Any]:
        changed = copy.deepcopy(issue)
        holder: Any = changed
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = value
        return changed

    checker.validate(edited("x\u2028"))
    assert output_shape(edited("\u2028")) != output_shape(edited("x\u2028"))
    with pytest.raises(OutputValidationError, match="not valid FHIR R4B"):
        checker.validate(edited("\u2028"))


def test_labels_no_reference_may_hold_are_written_as_displays(trial: CompiledCriteria) -> None:
    """A resource without an id is labelled by its position (`Observation#6`), an NDJSON
    line's id may be no FHIR id, a Bundle entry's fullUrl no URI: such a label is written
    as the reference's display, not its `reference` (which the models took, but FHIR does
    not); the written DetectedIssue has the shape made from its pieces, and is valid."""
    import dataclasses
    import datetime as dt
    import re

    import orjson

    from engine.report.resources import detected_issue_json, report_of

    file = ROOT / "examples" / "patients" / "itp-relapsed-candidate.json"
    report = report_of(
        screen_patient(trial, read_bundle_file(file), dt.date.fromisoformat(AS_OF_TEXT)).evaluation
    )
    labels = (
        "Observation#6",
        "Observation/obs id",
        "https://ex ample.org/Patient/p",
        "x\u2028",
        "Observation/abc/_history/2",  # an id `abc/_history/2`: no version of Observation/abc
        "Observation/x/Observation/abc",  # nor Observation/abc
    )
    cited = next(n for n, part in enumerate(report.parts) if part.verdict is not None)
    parts = list(report.parts)
    parts[cited] = dataclasses.replace(
        parts[cited],
        evidence=(*labels, "Observation/o-1", "urn:uuid:" + "0" * 8 + "-0000" * 3 + "-" + "0" * 12),
    )
    edited = dataclasses.replace(report, parts=tuple(parts), patient_reference="Patient#0")
    issue = detected_issue_json(edited)
    written = orjson.loads(issue.text)
    assert issue.shape == output_shape(written)
    OutputShapes().validate(written)
    references = (
        [member for entry in written["evidence"] for member in entry.get("detail", [])]
        + written["implicated"]
        + [written["patient"]]
    )
    for member in references:
        assert ("reference" in member) != ("display" in member), member
        if "reference" in member:
            assert re.fullmatch(r"\S+", member["reference"]), member
    displays = {member["display"] for member in references if "display" in member}
    assert "Observation#6 (no FHIR reference to it)" in displays
    assert "x (no FHIR reference to it)" in displays  # U+2028 a space, stripped
    assert {"reference": "Observation/o-1"} in references
    assert "Observation/abc/_history/2 (no FHIR reference to it)" in displays
    assert "Observation/x/Observation/abc (no FHIR reference to it)" in displays
    # what stays a reference: a fullUrl, versioned or not
    from engine.report.resources import _is_reference

    assert _is_reference("https://example.org/fhir/Observation/o-1/_history/2")
    assert _is_reference("http://example.org/Observation/o.1")
    assert not _is_reference("Observation/" + "x" * 65)
