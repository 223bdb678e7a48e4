"""ResearchSubject, DetectedIssue and the transaction Bundle built from an evaluation."""

from __future__ import annotations

import datetime as dt
import html
import uuid
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.researchsubject import ResearchSubject
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.errors import OutputValidationError
from engine.evaluate import CompiledCriteria, CriterionVerdict, PatientEvaluation, evaluate_patient
from engine.record import build_record
from engine.report import detected_issue, research_subject, transaction_bundle, validate_bundle
from engine.report.explanation import explain
from engine.report.resources import DETERMINISTIC_ID_SHAPE, deterministic_id
from engine.report.validate import output_shape, validate_resource
from engine.sources import read_bundle_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "patients"
AS_OF = dt.date(2026, 11, 1)


def _evaluate(trial: CompiledCriteria, name: str) -> PatientEvaluation:
    record = build_record(read_bundle_file(EXAMPLES / f"{name}.json"), trial.terminology)
    return evaluate_patient(trial, record, AS_OF)


@given(st.lists(st.text(), min_size=1, max_size=3))
def test_deterministic_ids_are_the_uuid5_of_the_parts(parts: list[str]) -> None:
    """`deterministic_id` formats the SHA-1 digest itself: it is uuid5 over the URL namespace
    of the parts joined by `|`, whatever they hold (non-ASCII, `|`, empty)."""
    assume(all(not ("\ud800" <= character <= "\udfff") for part in parts for character in part))
    assert deterministic_id(*parts) == str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts)))
    # the shape the ResearchSubject and DetectedIssue give their ids without working it out
    assert output_shape(deterministic_id(*parts), "id") == DETERMINISTIC_ID_SHAPE
    assert DETERMINISTIC_ID_SHAPE == ("s", "id", True)


def test_identifiers_are_deterministic_so_a_rerun_updates(trial: CompiledCriteria) -> None:
    first = transaction_bundle(_evaluate(trial, "itp-too-old"))
    second = transaction_bundle(_evaluate(trial, "itp-too-old"))
    assert first == second
    subject_entry, issue_entry = first["entry"][1], first["entry"][2]
    assert subject_entry["request"]["method"] == "PUT"
    assert subject_entry["request"]["url"].startswith("ResearchSubject?identifier=")
    assert "NCT05315778%2Fitp-too-old" in subject_entry["request"]["url"]
    assert "|" not in subject_entry["request"]["url"]
    assert issue_entry["request"]["url"].startswith("DetectedIssue?identifier=")


def test_other_patient_gets_other_ids(trial: CompiledCriteria) -> None:
    one = research_subject(_evaluate(trial, "itp-too-old"), "ResearchStudy/x")
    other = research_subject(_evaluate(trial, "itp-secondary-lupus"), "ResearchStudy/x")
    assert one["id"] != other["id"]
    assert one["identifier"][0]["value"] != other["identifier"][0]["value"]


def test_study_is_conditionally_created_and_referenced(trial: CompiledCriteria) -> None:
    bundle = transaction_bundle(_evaluate(trial, "itp-too-old"))
    study_entry = bundle["entry"][0]
    assert study_entry["request"]["method"] == "POST"
    assert study_entry["request"]["ifNoneExist"] == (
        "identifier=https://clinicaltrials.gov%7CNCT05315778"
    )
    subject = bundle["entry"][1]["resource"]
    # R4 3.1.0.4.3 / 3.1.0.8.1: conditional bodies carry no id; fullUrls are urn:uuid.
    assert all("id" not in entry["resource"] for entry in bundle["entry"])
    assert all(entry["fullUrl"].startswith("urn:uuid:") for entry in bundle["entry"])
    assert subject["study"]["reference"] == study_entry["fullUrl"]
    assert subject["individual"]["reference"] == "Patient/itp-too-old"
    assert subject["status"] == "ineligible"


def test_detected_issue_lists_every_open_criterion_with_evidence(trial: CompiledCriteria) -> None:
    evaluation = _evaluate(trial, "itp-secondary-lupus")
    issue = detected_issue(evaluation)
    DetectedIssue.model_validate(issue)
    open_ids = [r.id for r in evaluation.results if r.verdict is not CriterionVerdict.CLEAR]
    assert [e["code"][0]["coding"][0]["code"] for e in issue["evidence"]] == open_ids
    secondary = next(
        e for e in issue["evidence"] if e["code"][0]["coding"][0]["code"].startswith("exclusion-1-")
    )
    assert secondary["code"][0]["text"].startswith("E1 ")
    assert "present: excludes" in secondary["code"][0]["text"]
    assert "Systemic lupus" in secondary["code"][0]["text"]
    assert secondary["detail"][0]["reference"].startswith("Condition/")
    implicated = {ref["reference"] for ref in issue["implicated"]}
    assert secondary["detail"][0]["reference"] in implicated
    assert issue["severity"] == "high"
    assert issue["status"] == "final"
    assert issue["author"]["reference"] == "#trialsieve"
    assert issue["contained"][0]["resourceType"] == "Device"
    assert issue["identifiedDateTime"] == "2026-11-01"


def test_narrative_is_a_table_of_every_criterion(trial: CompiledCriteria) -> None:
    evaluation = _evaluate(trial, "itp-relapsed-missing-labs")
    div = detected_issue(evaluation)["text"]["div"]
    assert div.startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    for criterion in explain(evaluation).criteria:
        assert f"<td>{criterion.number}</td>" in div
        assert f"<td>{html.escape(criterion.label)}</td>" in div
    assert "unknown: data missing" in div
    assert "newest data in the record 2026-" in div
    assert "potential-candidate" in detected_issue(evaluation)["detail"]


def test_every_written_resource_validates_against_r4b(trial: CompiledCriteria) -> None:
    bundle = transaction_bundle(_evaluate(trial, "itp-relapsed-candidate"))
    validate_bundle(bundle)
    Bundle.model_validate(bundle)
    ResearchSubject.model_validate(bundle["entry"][1]["resource"])


def test_validation_names_the_resource_and_field() -> None:
    with pytest.raises(OutputValidationError) as caught:
        validate_resource({"resourceType": "ResearchSubject", "id": "x", "status": "candidate"})
    message = str(caught.value)
    assert "ResearchSubject/x" in message
    assert "study" in message
    assert "individual" in message


def _strings(value: object) -> list[tuple[str, str]]:
    """Every string of a JSON value, with its key."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, dict):
            stack += list(item.items())
        elif isinstance(item, list):
            stack += [(key, each) for each in item]
        elif isinstance(item, str):
            found.append((key, item))
    return found


def test_texts_of_the_record_are_written_as_fhir_strings_and_xhtml(trial: CompiledCriteria) -> None:
    """A coded value's text with a NUL and U+2028, a problem quoting a birth date with U+2028
    and a control character: each written text fits the FHIR string pattern whole (the models
    search it, so they let them through) and the narrative is well-formed XHTML (which holds
    no control character)."""
    import re
    from xml.etree import ElementTree

    resources = read_bundle_file(EXAMPLES / "itp-relapsed-candidate.json")
    for resource in resources.resources:
        if resource["resourceType"] == "Patient":
            resource["birthDate"] = "19\u2028\x0190-01-01"
        elif resource["resourceType"] == "Observation":
            if "valueCodeableConcept" in resource:
                resource["valueCodeableConcept"]["text"] = "Neg\x00ative\x0b \u2028 \uffff result"
            resource["code"]["text"] = "Plate\x01lets\xa0(local)"
    evaluation = evaluate_patient(trial, build_record(resources, trial.terminology), AS_OF)
    issue = detected_issue(evaluation)
    assert evaluation.data_problems  # the birth date's problem, quoting it
    fhir_string = re.compile(r"[ \r\n\t\S]+")
    for key, text in _strings(issue):
        if key != "div":
            assert fhir_string.fullmatch(text), (key, text)
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text), (key, text)
    ElementTree.fromstring(issue["text"]["div"])
    assert "\ufffd" in issue["text"]["div"]  # where the NUL and U+0001 were
