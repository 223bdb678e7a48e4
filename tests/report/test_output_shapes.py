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
from engine.report.resources import PatientReport
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


def test_a_cohort_run_reports_a_broken_output_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "cohort"))
    from cohort_examples import AS_OF, CRITERIA, EXAMPLE_FOLDERS, bundles_to_ndjson

    folder = tmp_path / "ndjson"
    bundles_to_ndjson(EXAMPLE_FOLDERS, folder)
    from engine.report.resources import research_subject_of as built

    def research_subject(report: PatientReport, study_reference: str) -> dict[str, Any]:
        subject = built(report, study_reference)
        if report.patient_id.startswith("0b7496cb"):
            subject["status"] = "not a  code"
        return subject

    # the cohort's partition evaluator builds each ResearchSubject with this function
    monkeypatch.setattr("engine.cohort.partition.research_subject_of", research_subject)
    summary = run_cohort(CRITERIA, NdjsonInput(folder), tmp_path / "out", AS_OF, workers=1)
    errors = (tmp_path / "out" / "errors.ndjson").read_text()
    assert summary.problems == 1
    assert "ResearchSubject" in errors and "not valid FHIR R4B" in errors
    assert "0b7496cb" in errors
    assert summary.patients == 27


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
