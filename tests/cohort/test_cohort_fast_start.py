"""A fresh run splits the input while the criteria compile; Dask tasks carry paths or bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cohort_examples import AS_OF, CRITERIA, OUTPUT_FILES, PARTITIONS

import engine.cohort.runner as runner
from engine.cohort import RECORD_TYPES, CohortSummary, NdjsonInput, kept_types, run_cohort
from engine.cohort.engines import EngineSettings, PartitionOnDisk
from engine.compiled_cache import (
    CACHE_VARIABLE,
    remember_resource_types,
    remembered_resource_types,
)
from engine.errors import TrialsieveError
from engine.evaluate import CompiledCriteria
from engine.sources import SourceProblem


def _same_files(out: Path, expected: CohortSummary) -> None:
    for name in (*OUTPUT_FILES, "cohort.parquet"):
        assert (out / name).read_bytes() == (expected.out_dir / name).read_bytes(), name


def test_the_criteria_file_names_the_types_a_run_keeps(
    trial: CompiledCriteria, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_VARIABLE, "off")  # read from the file's resource: keys
    assert runner.provisional_kept_types(CRITERIA) == kept_types(trial)


def test_a_fresh_run_s_loading_remembers_the_kept_types_for_the_next_unparsed(
    trial: CompiledCriteria, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    assert remembered_resource_types(CRITERIA) is None
    loading = runner._Loading(CRITERIA)
    loading.start()
    loading.result()
    assert remembered_resource_types(CRITERIA) == trial.resource_types

    def no_parse(*_arguments: object, **_options: object) -> None:
        raise AssertionError("the criteria file was parsed")

    monkeypatch.setattr(runner, "YAML", no_parse)
    assert runner.provisional_kept_types(CRITERIA) == kept_types(trial)


def test_wrongly_remembered_types_split_the_input_again_and_are_mended(
    one_worker: CohortSummary,
    trial: CompiledCriteria,
    ndjson_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hint that no longer holds (another trialsieve version, an edited mapping file)
    costs a second pass 1, never a different result; the run remembers the right types."""
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    remember_resource_types(CRITERIA, frozenset())  # without ResearchSubject, which they read
    assert runner.provisional_kept_types(CRITERIA) == RECORD_TYPES
    out = tmp_path / "out"
    run_cohort(
        CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=2, partition_count=PARTITIONS
    )
    _same_files(out, one_worker)
    assert remembered_resource_types(CRITERIA) == trial.resource_types


def test_a_file_that_is_not_yaml_names_no_types(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("criteria: [unclosed\n")
    assert runner.provisional_kept_types(broken) is None
    assert runner.provisional_kept_types(tmp_path / "absent.yaml") is None


def test_a_wrong_guess_of_the_kept_types_splits_the_input_again(
    one_worker: CohortSummary,
    ndjson_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guesses: list[frozenset[str]] = []

    def too_few(criteria_path: str | Path) -> frozenset[str]:
        guesses.append(RECORD_TYPES)
        return RECORD_TYPES  # without ResearchSubject, which the criteria query

    monkeypatch.setattr(runner, "provisional_kept_types", too_few)
    out = tmp_path / "out"
    run_cohort(
        CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=2, partition_count=PARTITIONS
    )
    assert guesses == [RECORD_TYPES]
    _same_files(out, one_worker)


def test_criteria_that_do_not_compile_leave_nothing_behind(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("trial: {}\ncriteria:\n  - id: x\n    resource: Condition\n")
    out = tmp_path / "out"
    with pytest.raises(TrialsieveError):
        run_cohort(criteria, NdjsonInput(ndjson_folder), out, AS_OF, workers=2)
    assert not out.exists()


def test_a_partition_on_disk_reads_what_its_payload_holds(
    ndjson_folder: Path, tmp_path: Path, trial: CompiledCriteria
) -> None:
    problems: list[SourceProblem] = []
    partitions = NdjsonInput(ndjson_folder).prepare(
        tmp_path / "work", PARTITIONS, problems.append, kept_types(trial), 1
    )
    for index in range(PARTITIONS):
        by_path = list(PartitionOnDisk(partitions, index).patients(problems.append))
        by_bytes = list(partitions.payload(index).patients(problems.append))
        assert [p.resources for p in by_path] == [p.resources for p in by_bytes]


def test_only_a_local_cluster_is_taken_to_share_the_filesystem() -> None:
    assert EngineSettings(2).filesystem_is_shared
    assert not EngineSettings(2, "tcp://head:8786").filesystem_is_shared
    assert EngineSettings(2, "tcp://head:8786", shared_filesystem=True).filesystem_is_shared


def test_dask_tasks_that_carry_the_partitions_write_the_same_files(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    summary = run_cohort(
        CRITERIA,
        NdjsonInput(ndjson_folder),
        out,
        AS_OF,
        engine="dask",
        workers=2,
        partition_count=PARTITIONS,
        shared_filesystem=False,
    )
    assert summary.partitions_reused == 0
    _same_files(out, one_worker)
