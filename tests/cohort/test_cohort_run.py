"""Cohort runs over the shipped examples: per-patient results equal `evaluate`, resumability,
worker counts, attrition and data availability consistent with cohort.csv."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from cohort_examples import (
    AS_OF,
    CRITERIA,
    EXAMPLE_FOLDERS,
    OUTPUT_FILES,
    PARTITIONS,
    ROOT,
    evaluations_of_the_examples,
    example_patients,
    read_csv,
    read_ndjson,
)
from typer.testing import CliRunner

from engine.cli import app
from engine.cohort import (
    BundleInput,
    CohortSummary,
    NdjsonInput,
    Prefilter,
    RequiredConcept,
    outcome_store,
    outputs,
    run_cohort,
    run_folder,
    runner,
    study_reference,
)
from engine.cohort.outputs import assemble_outputs
from engine.cohort.whatif import what_if_funnel
from engine.compiled_cache import code_digest
from engine.errors import (
    AttestationError,
    CohortError,
    InputChangedError,
    OutputValidationError,
)
from engine.evaluate import CompiledCriteria
from engine.record import build_record
from engine.report import detected_issue, research_subject
from engine.trial import load_trial


def test_with_full_each_patient_gets_what_evaluate_gives(
    full_run: CohortSummary, trial: CompiledCriteria
) -> None:
    out = full_run.out_dir
    subjects = {s["individual"]["reference"]: s for s in read_ndjson(out / "subjects.ndjson")}
    issues = {i["patient"]["reference"]: i for i in read_ndjson(out / "issues.ndjson")}
    evaluations = evaluations_of_the_examples(trial)
    assert len(subjects) == len(issues) == len(evaluations) == full_run.patients == 28
    for reference, evaluation in evaluations.items():
        assert subjects[reference] == research_subject(evaluation, study_reference(trial))
        assert issues[reference] == detected_issue(evaluation)
    patient_ids = [s["individual"]["reference"] for s in read_ndjson(out / "subjects.ndjson")]
    assert patient_ids == sorted(patient_ids)
    assert full_run.settled_by_prefilter == 20 and full_run.full


def test_settled_patients_get_evaluate_s_status_from_their_preview(
    one_worker: CohortSummary, full_run: CohortSummary, trial: CompiledCriteria
) -> None:
    """Settled: the ResearchSubject of `evaluate`; the criteria a preview answers as `evaluate`
    answers them; the others `not_evaluated`; an unsettled patient's results all equal."""
    out = one_worker.out_dir
    prefilter = Prefilter.from_criteria(trial)
    subjects = {s["individual"]["reference"]: s for s in read_ndjson(out / "subjects.ndjson")}
    issues = {i["patient"]["reference"]: i for i in read_ndjson(out / "issues.ndjson")}
    rows = {row["patient"]: row for row in read_csv(out / "cohort.csv")}
    full_rows = {row["patient"]: row for row in read_csv(full_run.out_dir / "cohort.csv")}
    settled_ids = {
        patient.patient_id
        for patient in example_patients()
        if prefilter.settle(build_record(patient, trial.terminology)) is not None
    }
    settled = 0
    for reference, evaluation in evaluations_of_the_examples(trial).items():
        assert subjects[reference] == research_subject(evaluation, study_reference(trial))
        row, full_row = rows[evaluation.patient_id], full_rows[evaluation.patient_id]
        if evaluation.patient_id not in settled_ids:
            assert row == full_row
            assert issues[reference] == detected_issue(evaluation)
            continue
        settled += 1
        assert row["status"] == full_row["status"] == "ineligible"
        for criterion in trial.criteria:
            if (
                criterion.id in prefilter.evaluable
                or criterion.id == "inclusion-1-relapsed-refractory-itp"
            ):
                assert row[criterion.id] == full_row[criterion.id], criterion.id
            else:
                assert row[criterion.id] == "not_evaluated", criterion.id
        issue = issues[reference]
        assert "not evaluated (inclusion-4-ecog-0-2" in issue["detail"]
        assert issue["evidence"][0]["code"][0]["coding"][0]["code"] == (
            "inclusion-1-relapsed-refractory-itp"
        )
        required = "ITP, or thrombocytopenia not coded as ITP (D69.6, D69.49), any date: none"
        assert required in issue["evidence"][0]["code"][0]["text"]
        assert issue["text"]["div"].count("<tr>") == len(trial.criteria) + 1
    assert settled == one_worker.settled_by_prefilter == 20 and not one_worker.full
    for name in ("attrition.csv", "data_availability.csv"):
        settled_rows = read_csv(out / name)
        full = read_csv(full_run.out_dir / name)
        funnel = ("criterion", "remaining_before", "lost", "remaining")
        if name == "attrition.csv":  # the funnel is the same; only the column counts differ
            assert [[r[c] for c in funnel] for r in settled_rows] == [
                [r[c] for c in funnel] for r in full
            ]
    availability = {row["criterion"]: row for row in read_csv(out / "data_availability.csv")}
    assert availability["inclusion-4-ecog-0-2"]["patients"] == "8"
    assert availability["inclusion-4-ecog-0-2"]["not_evaluated"] == "20"
    assert availability["inclusion-2-age-18-65"]["not_evaluated"] == "0"


def test_a_settling_requirement_needs_only_preview_criteria_before_it(
    trial: CompiledCriteria,
) -> None:
    by_id = {criterion.id: criterion for criterion in trial.criteria}
    age, ecog = by_id["inclusion-2-age-18-65"], by_id["inclusion-4-ecog-0-2"]
    rest = [c for c in trial.criteria if c not in (age, ecog)]
    after_age = Prefilter.from_criteria(replace(trial, criteria=(age, *rest, ecog)))
    assert [r.criterion_id for r in after_age.settling] == ["inclusion-1-relapsed-refractory-itp"]
    after_ecog = Prefilter.from_criteria(replace(trial, criteria=(ecog, *rest, age)))
    assert after_ecog.settling == ()
    assert after_ecog.requirements == after_age.requirements
    assert "inclusion-4-ecog-0-2" not in after_age.evaluable
    assert "exclusion-5-malignancy" in after_age.evaluable


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


def test_prefilter_requires_a_thrombocytopenia_condition(trial: CompiledCriteria) -> None:
    """ITP, or thrombocytopenia not coded as ITP that the investigator confirms (haematology
    QA session 14, finding 3): still one required concept, so the pre-filter settles as many."""
    prefilter = Prefilter.from_criteria(trial)
    assert prefilter.requirements == (
        RequiredConcept(
            "inclusion-1-relapsed-refractory-itp",
            "thrombocytopenia-diagnosis",
            frozenset({"Condition"}),
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


def test_result_files_that_cannot_be_mapped_are_read_whole_to_the_same_outputs(
    one_worker: CohortSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Assembly maps each partition result file into memory; on a file system without
    `mmap` it reads the files whole, and writes the same outputs."""

    def no_mmap(*arguments: object, **options: object) -> None:
        raise OSError(19, "No such device")

    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)
    for name in OUTPUT_FILES:
        (out / name).unlink()
    monkeypatch.setattr(outputs.mmap, "mmap", no_mmap)
    assemble_outputs(out, load_trial(CRITERIA), PARTITIONS)
    for name in OUTPUT_FILES:
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def test_the_study_written_is_validated(
    one_worker: CohortSummary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """study.json, the ResearchStudy, is validated as every other resource a run writes
    (once per shape): a study the models refuse is not written (it never was validated)."""
    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)
    (out / "study.json").unlink()
    real = outputs.research_study

    def refused(trial: Any) -> dict[str, Any]:
        return {**real(trial), "title": "\u2028"}

    monkeypatch.setattr(outputs, "research_study", refused)
    with pytest.raises(OutputValidationError, match="title"):
        assemble_outputs(out, load_trial(CRITERIA), PARTITIONS)
    assert not (out / "study.json").exists()


def test_a_run_with_other_arguments_is_refused(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)
    with pytest.raises(CohortError, match="other as-of day"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, dt.date(2027, 1, 1))
    with pytest.raises(CohortError, match=r"other evaluation mode \(--full\)"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, full=True)
    with pytest.raises(CohortError, match="unknown engine 'spark'"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, engine="spark")


@pytest.mark.parametrize("code", ["0" * 64, None], ids=["other code", "no code"])
def test_a_run_of_other_trialsieve_code_is_refused_and_kept(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path, code: str | None
) -> None:
    """A folder whose run was made by other code under the same version number (a checkout's
    commits share one; other sources, or Python or a library upgraded) is neither resumed nor
    re-run into: its partitions would be reused as this code's (an edit of the eGFR formula
    was not noticed). A manifest without the code's digest is of code before it."""
    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)
    manifest_path = out / "manifest.json"
    manifest = orjson.loads(manifest_path.read_bytes())
    assert manifest["code"] == code_digest().hex()
    if code is None:
        del manifest["code"]
    else:
        manifest["code"] = code
    manifest_path.write_bytes(orjson.dumps(manifest))
    before = (out / "cohort.csv").read_bytes()
    with pytest.raises(CohortError, match=r"other trialsieve code \(its source files"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, partition_count=PARTITIONS)
    assert (out / "cohort.csv").read_bytes() == before


def test_the_stored_outcomes_are_of_the_code_that_wrote_them(
    trial: CompiledCriteria, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key of every stored outcome names the code (`code_digest`), not only the version:
    stored by other code, they are evaluated again."""
    key = outcome_store.store_key(trial, {"path": "x"}, 4, "2026-11-01", None, ["Patient"], False)
    monkeypatch.setattr(outcome_store, "code_digest", lambda: b"other code")
    assert (
        outcome_store.store_key(trial, {"path": "x"}, 4, "2026-11-01", None, ["Patient"], False)
        != key
    )


def test_a_folder_holding_another_trial_s_run_is_refused_and_kept(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """Other criteria of the same trial are an edited re-run; another trial's are not."""
    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)
    before = (out / "cohort.csv").read_bytes()
    dapa = ROOT / "criteria" / "NCT03036150.yaml"
    with pytest.raises(CohortError, match=r"another trial \(NCT05315778"):
        run_cohort(dapa, NdjsonInput(ndjson_folder), out, AS_OF)
    assert (out / "cohort.csv").read_bytes() == before


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unusable_out_is_refused_before_anything_is_written(
    ndjson_folder: Path, tmp_path: Path, workers: int
) -> None:
    a_file = tmp_path / "a-file.json"
    a_file.write_text("{}", encoding="utf-8")
    with pytest.raises(CohortError, match="--out is not a folder"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), a_file, AS_OF, workers=workers)
    inside = tmp_path / "input"
    shutil.copytree(ndjson_folder, inside)
    with pytest.raises(CohortError, match="--out is inside the input folder"):
        run_cohort(CRITERIA, NdjsonInput(inside), inside / "out", AS_OF, workers=workers)
    assert not (inside / "out").exists()
    with pytest.raises(CohortError, match="cannot create the folder"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), a_file / "out", AS_OF, workers=workers)


def test_an_out_that_cannot_be_written_is_refused(
    ndjson_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for a read-only file system (EROFS) or an immutable folder, which a test run as
    root cannot make with chmod: `os.access` says no."""
    monkeypatch.setattr("engine.cohort.runner.os.access", lambda *_arguments: False)
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(CohortError, match="cannot write in the folder"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), existing, AS_OF, workers=1)
    assert list(existing.iterdir()) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_refused_run_leaves_no_folder_behind(
    ndjson_folder: Path, tmp_path: Path, workers: int
) -> None:
    bad = tmp_path / "attestations.yaml"
    bad.write_text("attestations:\n  - {patient: p1, answers: {nope: true}}\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(AttestationError, match="is required"):
        run_cohort(
            CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=workers, attestations_path=bad
        )
    assert not out.exists()
    kept = tmp_path / "kept"
    (kept / "notes").mkdir(parents=True)
    with pytest.raises(AttestationError, match="is required"):
        run_cohort(
            CRITERIA,
            NdjsonInput(ndjson_folder),
            kept,
            AS_OF,
            workers=workers,
            attestations_path=bad,
        )
    assert [path.name for path in kept.iterdir()] == ["notes"]


def _a_late_patient(export: Path) -> bytes:
    """A Patient line of a new patient, as an export still being copied gains one."""
    first = orjson.loads((export / "Patient.000.ndjson").read_bytes().splitlines()[0])
    return orjson.dumps({**first, "id": "late-patient"}) + b"\n"


def _copy_of_the_export(ndjson_folder: Path, tmp_path: Path) -> tuple[Path, bytes]:
    export = tmp_path / "export"
    shutil.copytree(ndjson_folder, export)
    return export, _a_late_patient(export)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("during", ["pass-1", "pass-2"])
def test_an_input_that_changes_during_a_fresh_run_leaves_nothing_and_running_again_works(
    ndjson_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
    during: str,
) -> None:
    """An export still being copied when the run starts: a file that changes while pass 1
    reads it (found at the pass's end) or before pass 2 reads its lines (found when it opens
    the file) stops the run, naming the file; a fresh run keeps nothing, so that running
    the same command again evaluates the input as it is then. (Before, the manifest of a run
    on two workers recorded the file after the change, pass 1's files the file before it,
    and every later run failed with the same error.)"""
    export, late = _copy_of_the_export(ndjson_folder, tmp_path)
    out = tmp_path / "out"

    def grow() -> None:
        with open(export / "Patient.000.ndjson", "ab") as patients:
            patients.write(late)

    if during == "pass-1":
        prepare = NdjsonInput.prepare

        def prepare_while_copied(self: NdjsonInput, *arguments: Any, **options: Any) -> Any:
            partitions = prepare(self, *arguments, **options)
            grow()
            return partitions

        target, replacement = NdjsonInput, prepare_while_copied
        name = "prepare"
    else:
        run_engine = runner._run_engine

        def engine_after_a_change(*arguments: Any, **options: Any) -> Any:
            grow()
            return run_engine(*arguments, **options)

        target, replacement, name = runner, engine_after_a_change, "_run_engine"

    def run() -> CohortSummary:
        return run_cohort(
            CRITERIA, NdjsonInput(export), out, AS_OF, workers=workers, partition_count=PARTITIONS
        )

    with monkeypatch.context() as patched:
        patched.setattr(target, name, replacement)
        with pytest.raises(InputChangedError) as raised:
            run()
    message = str(raised.value)
    assert "Patient.000.ndjson" in message
    assert "nothing was kept: run the same command again once the input no longer changes" in (
        message
    )
    assert not out.exists()
    summary = run()
    assert summary.patients == 29
    assert "late-patient" in (out / "cohort.csv").read_text(encoding="utf-8")


def test_an_input_that_changes_while_a_run_resumes_is_refused_with_what_to_do(
    ndjson_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resuming a run whose input then changes: the partitions kept are of the input as it
    was, so the message says to evaluate it elsewhere; following it works, and the folder
    is kept, a later run there refused naming the file that changed."""
    export, late = _copy_of_the_export(ndjson_folder, tmp_path)
    out = tmp_path / "out"
    run_cohort(CRITERIA, NdjsonInput(export), out, AS_OF, workers=1, partition_count=PARTITIONS)
    for written in (out / "partitions").rglob("0001.*"):  # interrupted before it was written
        written.unlink()
    prepare = NdjsonInput.prepare

    def prepare_while_copied(self: NdjsonInput, *arguments: Any, **options: Any) -> Any:
        partitions = prepare(self, *arguments, **options)
        with open(export / "Patient.000.ndjson", "ab") as patients:
            patients.write(late)
        return partitions

    with monkeypatch.context() as patched:
        patched.setattr(NdjsonInput, "prepare", prepare_while_copied)
        with pytest.raises(InputChangedError, match="choose another --out") as raised:
            run_cohort(CRITERIA, NdjsonInput(export), out, AS_OF, workers=1)
    assert "changed: Patient.000.ndjson" in str(raised.value)
    assert (out / "manifest.json").is_file() and not (out / "work").exists()
    elsewhere = run_cohort(CRITERIA, NdjsonInput(export), tmp_path / "other", AS_OF, workers=1)
    assert elsewhere.patients == 29
    with pytest.raises(CohortError, match=r"other input files .*changed: Patient\.000\.ndjson"):
        run_cohort(CRITERIA, NdjsonInput(export), out, AS_OF, workers=1)


_HOLD_THE_LOCK = """
import sys
from pathlib import Path
from engine.cohort.run_folder import RunLock
RunLock.take(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_run_on_a_folder_is_refused_at_once_and_attrition_too(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """A run holds an exclusive lock on its --out (`.lock`, naming its pid) for its
    duration: another run is refused at once, touching nothing, and `attrition` is refused
    while it writes. The operating system releases the lock of a run that is killed."""
    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_LOCK, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        with pytest.raises(CohortError) as refused:
            run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1)
        assert time.monotonic() - started < 1.0  # a run holds it: no wait
        assert str(refused.value) == (
            f"{out}: another trialsieve cohort run (pid {holder.pid}) is using this folder; "
            "wait for it to end, or choose another --out"
        )
        with pytest.raises(CohortError, match=rf"run \(pid {holder.pid}\) is writing this folder"):
            what_if_funnel(out)
        refused_command = CliRunner().invoke(app, ["attrition", str(out)])
        assert refused_command.exit_code == 2, refused_command.output
        after = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
        assert after == {**before, out / ".lock": f"{holder.pid}\n".encode()}
    finally:
        holder.kill()  # killed: never released by the process itself
        holder.wait()
    again = run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1)
    assert again.partitions_reused == PARTITIONS
    assert not (out / ".lock").exists()  # a run removes it at its end
    what_if_funnel(out)
    assert not (out / ".lock").exists()  # and so does a reader


def test_a_run_waits_for_a_reader_a_moment_then_gives_up(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """A lock no run holds is a reader's (`trialsieve attrition`, less than a second): a
    run starting meanwhile waits for it, up to `READ_GRACE_SECONDS`, then is refused."""
    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)

    def read_for(seconds: float) -> threading.Thread:
        locked = threading.Event()

        def read() -> None:
            with run_folder.reading(out):
                locked.set()
                time.sleep(seconds)

        reader = threading.Thread(target=read)
        reader.start()
        locked.wait()
        return reader

    reader = read_for(0.3)
    run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1)
    reader.join()
    reader = read_for(run_folder.READ_GRACE_SECONDS + 1.0)
    try:
        with pytest.raises(CohortError, match="attrition` reading it"):
            run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1)
    finally:
        reader.join()


def test_temporary_files_a_killed_run_left_are_removed_when_it_resumes(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """A run killed while it wrote (SIGKILL, a machine crash) leaves its atomic writes'
    temporary files (`.<name>.<12 hex digits>.part`) in --out; the next run on the folder
    removes them, in --out and the folders in it, and nothing else."""
    out = tmp_path / "out"
    shutil.copytree(one_worker.out_dir, out)
    for name in (*OUTPUT_FILES, "summary.json"):  # killed while assembling the outputs
        (out / name).unlink()
    left = [
        out / ".cohort.csv.69b094ae04c7.part",
        out / ".manifest.json.8b523560f1ea.part",
        out / "partitions" / ".0003.ndjson.0123456789ab.part",
        out / "partitions" / "store" / ".0001.records.abcdefabcdef.part",
    ]
    others = [
        out / "notes.part",
        out / ".notes.part",
        out / ".cohort.csv.69b094ae04c7.part.bak",
        out / ".cohort.csv.69B094AE04C7.part",
        out / "partitions" / "cohort.csv.69b094ae04c7.part",
    ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "elsewhere").symlink_to(elsewhere)  # never followed out of --out
    others.append(elsewhere / ".cohort.csv.69b094ae04c7.part")
    for path in (*left, *others):
        path.write_bytes(b"half written")
    run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1)
    assert [path for path in left if path.exists()] == []
    assert [path for path in others if not path.exists()] == []
    for name in OUTPUT_FILES:
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


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
    first = attrition[0]  # step 0: the patients who died on or before the as-of day
    dead = sum(row["deceased"] == "yes" for row in rows)
    assert (first["step"], first["criterion"], first["kind"]) == ("0", "deceased", "vital-status")
    assert (int(first["remaining_before"]), int(first["lost"])) == (len(rows), dead)
    remaining = [row for row in rows if row["deceased"] != "yes"]
    for step, criterion in zip(attrition[1:], trial.criteria, strict=True):
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
        skipped = sum(row[criterion.id] == "not_evaluated" for row in rows)
        assert (line["criterion"], int(line["missing_data"])) == (criterion.id, missing)
        assert (int(line["patients"]), int(line["not_evaluated"])) == (len(rows) - skipped, skipped)
        assert int(line["answerable"]) == len(rows) - skipped - missing
    for step in attrition:  # unknown and manual counts are of the patients remaining before
        counted = int(step["unknown_missing_of_remaining"]) + int(step["manual_of_remaining"])
        assert counted <= int(step["remaining_before"])
    html = (out / "attrition.html").read_text()
    assert "<svg" in html and ">I1 Relapsed or refractory primary ITP</text>" in html
    statuses = Counter(row["status"] for row in rows)
    for status in ("eligible", "candidate", "potential-candidate"):
        if statuses[status]:
            assert f"<title>{statuses[status]} {status}</title>" in html
    assert "Remaining, by status" in html


def test_a_settled_patient_s_bad_lines_are_reported_as_in_a_full_run(
    ndjson_folder: Path, tmp_path: Path, trial: CompiledCriteria
) -> None:
    """The rest of a settled patient's record (beyond the preview) is validated as JSON and
    checked without being built: a broken Observation, one whose only Patient reference is in
    the wrong field and a repeated one are reported as in a full run, the repeat (found on a
    screened line) with `check: screened`; every output is otherwise the same."""
    export, patient_id, repeated = _settled_patient_export(ndjson_folder, tmp_path, trial)
    with open(export / "Observation.001.ndjson", "wb") as extra:
        extra.write(
            b'{"resourceType":"Observation","id":"broken","subject":{"reference":"Patient/%s"},'
            b"oops}\n" % patient_id.encode()
        )
        extra.write(
            b'{"resourceType":"Observation","id":"elsewhere","status":"final",'
            b'"performer":[{"reference":"Patient/%s"}]}\n' % patient_id.encode()
        )
        extra.write(repeated + b"\n")
    runs = {}
    problems = {}
    for mode in ("settled", "full"):
        runs[mode] = run_cohort(
            CRITERIA, NdjsonInput(export), tmp_path / mode, AS_OF, workers=1, full=mode == "full"
        )
        problems[mode] = read_ndjson(tmp_path / mode / "errors.ndjson")
        extra_problems = [p for p in problems[mode] if p["file"].endswith("Observation.001.ndjson")]
        assert [(p["line"], p["patient"]) for p in extra_problems] == [
            (1, patient_id),
            (2, patient_id),
            (3, patient_id),
        ]
        assert extra_problems[0]["message"].startswith("not valid JSON")
        assert "no reference to a Patient in subject" in extra_problems[1]["message"]
        assert extra_problems[2]["message"].startswith("the same resource as")
        expected = "screened" if mode == "settled" else "parsed"
        assert [p["check"] for p in extra_problems] == ["parsed", "parsed", expected]
    assert runs["settled"].settled_by_prefilter == runs["full"].settled_by_prefilter == 20
    assert runs["settled"].problems == runs["full"].problems == 4
    assert runs["settled"].lines_affected == runs["full"].lines_affected == 4
    unchecked = [{**p, "check": None} for p in problems["settled"]]
    assert unchecked == [{**p, "check": None} for p in problems["full"]]
    # settled patients' issues and criterion columns differ by design; their status does not
    subjects = [(tmp_path / mode / "subjects.ndjson").read_bytes() for mode in runs]
    assert subjects[0] == subjects[1]


def test_the_attrition_chart_as_a_person_sees_it(
    one_worker: CohortSummary, chromium: Any, tmp_path: Path
) -> None:
    """Rendered by headless chromium: the funnel's bars and the final bar's status colours
    are drawn, and no label is cut off at the left edge."""
    from PIL import Image

    page = one_worker.out_dir / "attrition.html"
    png = chromium.screenshot(page.as_uri(), tmp_path / "attrition.png", 1400, 1000)
    image = Image.open(png).convert("RGB")
    colours = dict((colour, count) for count, colour in image.getcolors(1 << 20) or [])

    def drawn(wanted: tuple[int, int, int]) -> int:
        return sum(
            n
            for c, n in colours.items()
            if all(abs(a - b) <= 10 for a, b in zip(c, wanted, strict=True))
        )

    assert drawn((0x3B, 0x6E, 0xA8)) > 2000, "no remaining-patient bars"
    assert drawn((0xD9, 0x53, 0x4F)) > 200, "no excluded-patient bars"
    rows = read_csv(one_worker.out_dir / "cohort.csv")
    if any(row["status"] == "candidate" for row in rows):
        assert drawn((0x2F, 0x5F, 0x9E)) > 50, "the final bar's candidate share is not drawn"
    left_margin = image.crop((0, 150, 20, 900))
    assert len(left_margin.getcolors(1 << 16) or []) <= 2, "something is drawn at the very edge"


def test_a_settled_patient_s_line_repeating_a_key_is_read_as_in_a_full_run(
    ndjson_folder: Path, tmp_path: Path, trial: CompiledCriteria
) -> None:
    """A JSON object may repeat a key (RFC 8259 section 4: names "SHOULD be unique"); orjson
    keeps the last value, and so does the screen of a settled patient's lines (msgspec). A
    line that repeats `subject` (the last without a reference) or `id` (the last that of
    another of their resources) gets what a full run says: no Patient reference (parsed),
    and a repeated resource (found on the screened line: `check: screened`)."""
    export, patient_id, first_observation = _settled_patient_export(ndjson_folder, tmp_path, trial)
    own = b'"subject":{"reference":"Patient/%s"}' % patient_id.encode()
    taken = orjson.loads(first_observation)["id"]
    with open(export / "Observation.001.ndjson", "wb") as extra:
        extra.write(
            b'{"resourceType":"Observation","id":"twice-subject","status":"final",%s,'
            b'"code":{"text":"x"},"subject":{"display":"someone"}}\n' % own
        )
        extra.write(
            b'{"resourceType":"Observation","id":"twice-id","status":"final",%s,'
            b'"code":{"text":"x"},"id":"%s"}\n' % (own, taken.encode())
        )
    problems = {}
    for mode in ("settled", "full"):
        run_cohort(
            CRITERIA, NdjsonInput(export), tmp_path / mode, AS_OF, workers=1, full=mode == "full"
        )
        problems[mode] = [
            p
            for p in read_ndjson(tmp_path / mode / "errors.ndjson")
            if p["file"].endswith("Observation.001.ndjson")
        ]
        assert [p["line"] for p in problems[mode]] == [1, 2], mode
        assert "no reference to a Patient in subject" in problems[mode][0]["message"]
        assert problems[mode][1]["message"].startswith("the same resource as")
    assert [p["check"] for p in problems["settled"]] == ["parsed", "screened"]
    assert [p["check"] for p in problems["full"]] == ["parsed", "parsed"]
    unchecked = [{**p, "check": None} for p in problems["settled"]]
    assert unchecked == [{**p, "check": None} for p in problems["full"]]


def _settled_patient_export(
    ndjson_folder: Path, tmp_path: Path, trial: CompiledCriteria
) -> tuple[Path, str, bytes]:
    """A copy of the examples' export, the id of a patient the pre-filter settles, and the
    first of their Observation lines."""
    export = tmp_path / "export"
    shutil.copytree(ndjson_folder, export)
    prefilter = Prefilter.from_criteria(trial)
    patient_id = next(
        patient.patient_id
        for patient in example_patients()
        if prefilter.settle(build_record(patient, trial.terminology)) is not None
    )
    own = b'"subject":{"reference":"Patient/%s"}' % patient_id.encode()
    first_observation = next(
        line
        for line in (export / "Observation.000.ndjson").read_bytes().splitlines()
        if own in line
    )
    return export, patient_id, first_observation


def _bundles_with_a_patient_twice(folder: Path) -> Path:
    """Four Bundle files; the second and the fourth hold the same patient, the fourth as
    deceased. Dealt to three partitions, the fourth file is in an earlier partition (0) than
    the second (1)."""
    patients = ROOT / "examples" / "patients"
    folder.mkdir()
    shutil.copy(patients / "itp-too-old.json", folder / "1-other.json")
    shutil.copy(patients / "itp-relapsed-candidate.json", folder / "2-first.json")
    shutil.copy(patients / "itp-secondary-lupus.json", folder / "3-other.json")
    bundle = orjson.loads((patients / "itp-relapsed-candidate.json").read_bytes())
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["deceasedBoolean"] = True
    (folder / "4-again.json").write_bytes(orjson.dumps(bundle))
    return folder


def test_a_patient_in_two_bundles_is_reported_naming_both_files_and_the_first_kept(
    tmp_path: Path,
) -> None:
    folder = _bundles_with_a_patient_twice(tmp_path / "bundles")
    out = tmp_path / "out"
    summary = run_cohort(CRITERIA, BundleInput(folder), out, AS_OF, workers=1, partition_count=3)
    assert summary.patients == 3 and summary.problems == 1
    [problem] = read_ndjson(out / "errors.ndjson")
    assert problem == {
        "file": str(folder / "4-again.json"),
        "line": None,
        "resource": "Patient/itp-relapsed-candidate",
        "patient": "itp-relapsed-candidate",
        "message": f"this patient is also in {folder / '2-first.json'}, the first in file "
        "order, whose data is evaluated; each patient's data must be in one Bundle",
        "check": None,
    }
    # the first file's data is evaluated (as `evaluate` does), not the second's (deceased)
    rows = {row["patient"]: row for row in read_csv(out / "cohort.csv")}
    assert rows["itp-relapsed-candidate"]["deceased"] == "no"


def test_an_input_folder_given_as_text_is_read_as_a_path(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """`NdjsonInput` and `BundleInput` take a str as `run_cohort`'s own paths do: a str
    folder ended in a TypeError inside the run (`str / str`), naming neither."""
    assert NdjsonInput(str(ndjson_folder)).folder == ndjson_folder  # type: ignore[arg-type]
    assert BundleInput("examples").folder == Path("examples")  # type: ignore[arg-type]
    summary = run_cohort(
        str(CRITERIA),
        NdjsonInput(str(ndjson_folder)),  # type: ignore[arg-type]
        str(tmp_path / "out"),
        AS_OF,
        workers=1,
        partition_count=PARTITIONS,
    )
    for name in OUTPUT_FILES:
        assert (summary.out_dir / name).read_bytes() == (one_worker.out_dir / name).read_bytes()


def test_files_opening_with_a_byte_order_mark_are_read_as_without(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """Some tools open a UTF-8 file with a byte order mark: read past at the start of an
    NDJSON file (plain or gzipped), as at the start of a Bundle file. Each file's first line
    was refused ("not valid JSON"), a Patient's taking the patient out of the cohort."""
    import gzip

    marked = tmp_path / "marked"
    marked.mkdir()
    for number, path in enumerate(sorted(ndjson_folder.iterdir())):
        data = b"\xef\xbb\xbf" + path.read_bytes()
        if number % 3 == 0:  # some gzipped
            (marked / f"{path.name}.gz").write_bytes(gzip.compress(data))
        else:
            (marked / path.name).write_bytes(data)
    out = tmp_path / "out"
    summary = run_cohort(
        CRITERIA, NdjsonInput(marked), out, AS_OF, workers=1, partition_count=PARTITIONS
    )
    assert summary.patients == one_worker.patients
    for name in OUTPUT_FILES:
        expected = (one_worker.out_dir / name).read_bytes()
        if name == "errors.ndjson":  # the same problems, in files named `.gz` or not
            found = [orjson.loads(line) for line in (out / name).read_bytes().splitlines()]
            wanted = [orjson.loads(line) for line in expected.splitlines()]

            def named(problem: dict[str, Any]) -> dict[str, Any]:
                return {**problem, "file": Path(problem["file"]).name.removesuffix(".gz")}

            assert list(map(named, found)) == list(map(named, wanted))
            assert wanted
            continue
        assert (out / name).read_bytes() == expected, name
