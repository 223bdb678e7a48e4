"""What a cohort run leaves undone when nothing needs it (costs outside the per-patient path).

Speed itself is measured by benchmarks/cohort.py; these tests check the decisions behind it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from cohort_examples import AS_OF, CRITERIA
from fresh_interpreter import run_python

from engine.cohort.inputs import BULK_EXPORT_FILES
from engine.sources import bulk_export


def _in_a_fresh_interpreter(code: str) -> str:
    return run_python(code).stdout.strip()


def _run_then_print(ndjson_folder: Path, tmp_path: Path, printed: str) -> str:
    """Code for a fresh interpreter: a cohort run of the ITP trial over `ndjson_folder`, then
    `print(<printed>)`."""
    return (
        "import sys\n"
        "from pathlib import Path\n"
        "import datetime\n"
        "from engine.cohort import NdjsonInput, run_cohort\n"
        f"run_cohort({str(CRITERIA)!r}, NdjsonInput(Path({str(ndjson_folder)!r})), "
        f"{str(tmp_path / 'out')!r}, datetime.date.fromisoformat({AS_OF.isoformat()!r}), "
        "workers=1)\n"
        f"print({printed})\n"
    )


def test_the_files_a_bulk_export_leaves_are_the_ones_the_runner_looks_for() -> None:
    assert BULK_EXPORT_FILES == (bulk_export.STATE_FILE, bulk_export.MERGE_JOURNAL)


def test_a_run_over_a_folder_no_export_wrote_does_not_import_the_bulk_client(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    printed = "'engine.sources.bulk_export' in sys.modules"
    assert _in_a_fresh_interpreter(_run_then_print(ndjson_folder, tmp_path, printed)) == "False"


def test_a_run_of_cached_criteria_imports_neither_the_criteria_loader_nor_jsonschema(
    ndjson_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.compiled_cache import CACHE_VARIABLE
    from engine.trial import load_trial

    # a folder of its own: the session's is shared by every test, and other tests' entries
    # can push this one out of it (64 kept)
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    load_trial(CRITERIA)  # into the compiled cache (the same folder for the child process)
    printed = "sorted(m for m in ('engine.criteria.loader', 'jsonschema') if m in sys.modules)"
    assert _in_a_fresh_interpreter(_run_then_print(ndjson_folder, tmp_path, printed)) == "[]"


def test_a_run_on_the_local_engine_does_not_import_asyncio(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    """asyncio is for the Dask engine's event loops (0.02 s of every command to import)."""
    printed = "'asyncio' in sys.modules"
    assert _in_a_fresh_interpreter(_run_then_print(ndjson_folder, tmp_path, printed)) == "False"


def test_a_worker_loads_neither_the_runner_nor_the_output_writers_nor_the_criteria_loader() -> None:
    code = (
        "import sys\n"
        "import engine.cohort.engines\n"
        "print(sorted(m for m in ('engine.cohort.runner', 'engine.cohort.outputs', 'pyarrow', "
        "'engine.trial', 'engine.criteria.loader', 'jsonschema') if m in sys.modules))\n"
    )
    assert _in_a_fresh_interpreter(code) == "[]"


def test_a_dask_worker_sent_the_known_unit_conversions_builds_no_unit_registry(
    tmp_path: Path,
) -> None:
    """The warm-up of a --full run gives each worker the conversions the run's process knows;
    the unit registry (ucumvert on pint) is built only where a conversion is missing."""
    from engine.cohort.partition import CriteriaFiles
    from engine.normalise import units
    from engine.trial import load_trial

    criteria = CRITERIA.parent / "NCT03036150.yaml"  # converts units (eGFR, UACR)
    files = CriteriaFiles.collect(load_trial(criteria), with_compiled=True)
    units.convert(1.0, "mg/dL", "umol/L", 113.12)  # a conversion the worker will know
    conversions = tuple(units.known_conversions().items())
    assert conversions
    shipped = tmp_path / "warm-up.pickle"
    shipped.write_bytes(pickle.dumps((files, conversions)))
    code = (
        "import pickle, sys\n"
        "from pathlib import Path\n"
        "from engine.cohort.engines import compile_on_dask_worker\n"
        "from engine.normalise import units\n"
        f"files, conversions = pickle.loads(Path({str(shipped)!r}).read_bytes())\n"
        "compile_on_dask_worker(files, True, conversions)\n"
        "print(round(units.convert(1.0, 'mg/dL', 'umol/L', 113.12), 2), "
        "'engine.normalise.unit_registry' in sys.modules)\n"
    )
    assert _in_a_fresh_interpreter(code) == "88.4 False"


def test_the_cohort_command_over_an_ndjson_folder_does_not_import_the_bulk_client(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        "from engine.cli import app\n"
        "try:\n"
        f"    app(['cohort', {str(CRITERIA)!r}, '--ndjson', {str(ndjson_folder)!r}, "
        f"'--out', {str(tmp_path / 'out')!r}, '--as-of', {AS_OF.isoformat()!r}, "
        "'--workers', '1', '--quiet'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (None, 0, 1), stop.code  # 1: input problems reported\n"
        "print('engine.sources.bulk_export' in sys.modules)\n"
    )
    assert _in_a_fresh_interpreter(code).splitlines()[-1] == "False"  # after its summary


def test_a_run_waits_for_the_disk_once_between_the_passes_and_once_at_the_end(
    ndjson_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each fsync waits for the disk while both cores idle (this process alone runs then):
    pass 1's marker is fsynced with its problems and sizes, and the summary with the
    outputs, each set at once, as one `atomic_files` set (in that order: the marker, its
    sizes file, the summary renamed after what they vouch for)."""
    import datetime

    from engine import atomic_write
    from engine.cohort import NdjsonInput, run_cohort

    sets: list[list[str]] = []
    alone: list[str] = []
    commit = atomic_write.AtomicFiles._commit
    one = atomic_write.write_atomically

    def committed(files: atomic_write.AtomicFiles) -> None:
        sets.append([target.name for target, _temporary, _handle in files._files])
        commit(files)

    def written(path: str | Path, data: bytes, durable: bool = True) -> None:
        if durable:
            alone.append(Path(path).name)
        one(path, data, durable)

    monkeypatch.setattr(atomic_write.AtomicFiles, "_commit", committed)
    for module in ("engine.cohort.runner", "engine.cohort.ndjson_partitions"):
        monkeypatch.setattr(f"{module}.write_atomically", written)
    as_of = datetime.date.fromisoformat(AS_OF.isoformat())
    run_cohort(CRITERIA, NdjsonInput(ndjson_folder), tmp_path / "out", as_of, workers=1)
    assert sets[0] == ["source-problems.ndjson", "partitioned.json", "source.json"]
    assert sets[-1][-1] == "summary.json" and "subjects.ndjson" in sets[-1]
    assert "partitioned.json" not in alone and "summary.json" not in alone


def test_a_fresh_local_run_writes_pass_1_files_and_manifest_as_its_workers_start(
    ndjson_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two local workers, pass 1's files and the manifest are one set, fsynced while the
    workers start (both cores idled through its wait before), and no worker writes a
    partition's files before it is renamed into place: the commit below takes a second, in
    which the workers evaluate every partition of these few patients; none is written."""
    import datetime
    import time

    from engine import atomic_write
    from engine.cohort import NdjsonInput, run_cohort

    out = tmp_path / "out"
    sets: list[list[str]] = []
    written_before: list[list[str]] = []
    alone: list[str] = []
    commit = atomic_write.AtomicFiles._commit
    one = atomic_write.write_atomically

    def committed(files: atomic_write.AtomicFiles) -> None:
        names = [target.name for target, _temporary, _handle in files._files]
        sets.append(names)
        if "manifest.json" in names:
            time.sleep(1.0)
            written_before.append(sorted(p.name for p in (out / "partitions").glob("0*")))
        commit(files)

    def written(path: str | Path, data: bytes, durable: bool = True) -> None:
        if durable:
            alone.append(Path(path).name)
        one(path, data, durable)

    monkeypatch.setattr(atomic_write.AtomicFiles, "_commit", committed)
    monkeypatch.setattr("engine.cohort.runner.write_atomically", written)
    as_of = datetime.date.fromisoformat(AS_OF.isoformat())
    run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, as_of, workers=2)
    assert sets[0] == ["source-problems.ndjson", "partitioned.json", "source.json", "manifest.json"]
    assert written_before == [[]]
    assert "manifest.json" not in alone
    assert sorted(p.name for p in (out / "partitions").glob("0*"))  # written after it


def test_when_the_manifest_cannot_be_written_the_workers_write_nothing(
    ndjson_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set holding the manifest fails as the workers start: the run stops with that error
    (no hang), no partition's files are written, and the same command then runs whole."""
    import datetime

    from engine import atomic_write
    from engine.cohort import NdjsonInput, run_cohort

    out = tmp_path / "out"
    commit = atomic_write.AtomicFiles._commit

    def failing(files: atomic_write.AtomicFiles) -> None:
        if "manifest.json" in [target.name for target, _temporary, _handle in files._files]:
            raise OSError("No space left on device")
        commit(files)

    monkeypatch.setattr(atomic_write.AtomicFiles, "_commit", failing)
    as_of = datetime.date.fromisoformat(AS_OF.isoformat())
    with pytest.raises(OSError, match="No space left"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, as_of, workers=2)
    assert not (out / "manifest.json").exists()
    assert not list((out / "partitions").glob("0*"))
    assert not list((out / "partitions").rglob("*.part"))
    monkeypatch.undo()
    summary = run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, as_of, workers=2)
    assert summary.patients > 0 and summary.partitions_reused == 0
