"""Cohort runs over the shipped examples: per-patient results equal `evaluate`, resumability,
worker counts, attrition and data availability consistent with cohort.csv."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path

import pytest
from cohort_examples import (
    AS_OF,
    CRITERIA,
    EXAMPLE_FOLDERS,
    OUTPUT_FILES,
    PARTITIONS,
    read_csv,
    read_ndjson,
)

from engine.cohort import (
    BundleInput,
    CohortError,
    CohortSummary,
    NdjsonInput,
    Prefilter,
    RequiredConcept,
    run_cohort,
    study_reference,
)
from engine.evaluate import CompiledCriteria, evaluate_patient
from engine.record import build_record
from engine.report import detected_issue, research_subject
from engine.sources import read_bundle_file


def test_each_patient_gets_what_evaluate_gives(
    one_worker: CohortSummary, trial: CompiledCriteria
) -> None:
    out = one_worker.out_dir
    subjects = {s["individual"]["reference"]: s for s in read_ndjson(out / "subjects.ndjson")}
    issues = {i["patient"]["reference"]: i for i in read_ndjson(out / "issues.ndjson")}
    files = [file for folder in EXAMPLE_FOLDERS for file in sorted(folder.glob("*.json"))]
    assert len(subjects) == len(issues) == len(files) == one_worker.patients == 28
    for file in files:
        evaluation = evaluate_patient(
            trial, build_record(read_bundle_file(file), trial.terminology), AS_OF
        )
        reference = evaluation.patient_reference
        assert subjects[reference] == research_subject(evaluation, study_reference(trial))
        assert issues[reference] == detected_issue(evaluation)
    patient_ids = [s["individual"]["reference"] for s in read_ndjson(out / "subjects.ndjson")]
    assert patient_ids == sorted(patient_ids)


def test_summary_counts_statuses_prefilter_and_problems(one_worker: CohortSummary) -> None:
    assert one_worker.statuses == {
        "ineligible": 24,
        "potential-candidate": 1,
        "candidate": 3,
        "eligible": 0,
    }
    assert one_worker.settled_by_prefilter == 20  # the Synthea patients: none has ITP
    assert (one_worker.problems, one_worker.lines_affected) == (1, 1)
    [problem] = read_ndjson(one_worker.out_dir / "errors.ndjson")
    assert problem["file"].endswith("Observation.000.ndjson")
    assert problem["message"].startswith("not valid JSON")
    assert not (one_worker.out_dir / "work").exists()


def test_prefilter_requires_the_primary_itp_condition(trial: CompiledCriteria) -> None:
    prefilter = Prefilter.from_criteria(trial)
    assert prefilter.requirements == (
        RequiredConcept(
            "inclusion-1-relapsed-refractory-itp", "primary-itp", frozenset({"Condition"})
        ),
    )


def test_two_workers_write_the_same_files(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    summary = run_cohort(
        CRITERIA, NdjsonInput(ndjson_folder), tmp_path, AS_OF, workers=2, partition_count=PARTITIONS
    )
    assert summary.partitions_reused == 0
    for name in OUTPUT_FILES:
        assert (tmp_path / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def test_an_interrupted_run_resumes_to_the_same_files(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)
    for name in OUTPUT_FILES:
        (out / name).unlink()
    (out / "partitions" / "0001.ndjson").unlink()
    (out / "partitions" / "0004.ndjson").unlink()
    cut = out / "partitions" / "0002.ndjson"  # killed while writing: no `complete` line
    cut.write_bytes(cut.read_bytes().rsplit(b"\n", 2)[0] + b"\n")
    summary = run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1)
    assert (summary.partitions, summary.partitions_reused) == (PARTITIONS, PARTITIONS - 3)
    for name in OUTPUT_FILES:
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def test_a_run_with_other_arguments_is_refused(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)
    with pytest.raises(CohortError, match="other as-of day"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, dt.date(2027, 1, 1))
    with pytest.raises(CohortError, match="unknown engine 'spark'"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, engine="spark")


def test_bundles_give_the_same_subjects_and_issues(
    one_worker: CohortSummary, tmp_path: Path
) -> None:
    folder = tmp_path / "bundles"
    for source in EXAMPLE_FOLDERS:
        shutil.copytree(source, folder / source.name)
    summary = run_cohort(CRITERIA, BundleInput(folder), tmp_path / "out", AS_OF, workers=2)
    assert summary.patients == 28 and summary.problems == 0
    for name in ("subjects.ndjson", "issues.ndjson", "cohort.csv", "attrition.csv"):
        expected = (one_worker.out_dir / name).read_bytes()
        assert (tmp_path / "out" / name).read_bytes() == expected, name


def test_attrition_and_data_availability_agree_with_the_cohort_table(
    one_worker: CohortSummary, trial: CompiledCriteria
) -> None:
    out = one_worker.out_dir
    rows = read_csv(out / "cohort.csv")
    attrition = read_csv(out / "attrition.csv")
    availability = read_csv(out / "data_availability.csv")
    failing = {"inclusion": "not_met", "exclusion": "met"}
    remaining = list(rows)
    for step, criterion in zip(attrition, trial.criteria, strict=True):
        assert step["criterion"] == criterion.id
        assert int(step["remaining_before"]) == len(remaining)
        kept = [row for row in remaining if row[criterion.id] != failing[criterion.kind.value]]
        assert int(step["lost"]) == len(remaining) - len(kept)
        assert int(step["remaining"]) == len(kept)
        values = Counter(row[criterion.id] for row in rows)
        assert int(step["fails_overall"]) == values[failing[criterion.kind.value]]
        remaining = kept
    assert len(remaining) == sum(row["status"] != "ineligible" for row in rows)
    for line, criterion in zip(availability, trial.criteria, strict=True):
        missing = sum(row[criterion.id] == "unknown_missing" for row in rows)
        assert (line["criterion"], int(line["missing_data"])) == (criterion.id, missing)
        assert int(line["answerable"]) == len(rows) - missing
    html = (out / "attrition.html").read_text()
    assert "<svg" in html and "inclusion-1-relapsed-refractory-itp" in html
