"""The Dask engine writes what the local one writes; cohort.parquet; attestations; kept types."""

from __future__ import annotations

import csv
import multiprocessing
import os
import socket
import threading
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from cohort_examples import (
    AS_OF,
    CRITERIA,
    OUTPUT_FILES,
    PARTITIONS,
    evaluations_of_the_examples,
    read_ndjson,
    run_python,
    skip_unless_dask_workers_fork,
)
from typer.testing import CliRunner

import engine.record
from engine.attestations import load_attestations
from engine.cli import app
from engine.cohort import (
    CRITERION_VALUES,
    RECORD_TYPES,
    CohortSummary,
    NdjsonInput,
    engines,
    kept_types,
    run_cohort,
    study_reference,
)
from engine.cohort.partition import PartitionResult, is_complete, write_result
from engine.errors import CohortError, WorkerLostError
from engine.evaluate import CompiledCriteria, SubjectStatus
from engine.report import detected_issue, research_subject

ATTESTATIONS = Path(__file__).resolve().parents[2] / "examples" / "attestations.yaml"


def test_the_dask_engine_writes_the_same_files_and_resumes(
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
    )
    assert summary.partitions_reused == 0 and summary.worker_peak_memory
    for name in (*OUTPUT_FILES, "cohort.parquet"):
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name
    for index in (1, 4):  # a run interrupted after the other partitions: resumed locally
        (out / "partitions" / f"{index:04d}.ndjson").unlink()
    resumed = run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1)
    assert resumed.partitions_reused == PARTITIONS - 2
    for name in (*OUTPUT_FILES, "cohort.parquet"):
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


@pytest.mark.parametrize("partitions", [PARTITIONS, 16])
def test_partitions_no_dask_worker_says_it_wrote_are_evaluated_again(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path, partitions: int
) -> None:
    """The workers write their partitions' files in the background and say at the end which
    they wrote: a partition none wrote (its worker ended before its write was done; here no
    worker writes any) is evaluated again and written before the run ends; also when a task
    held several partitions (16 on two workers: tasks of two)."""
    skip_unless_dask_workers_fork()
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from engine.cohort import NdjsonInput, engines, run_cohort\n"
        "from cohort_examples import AS_OF, CRITERIA\n"
        "engines._DaskWrites.write = lambda self, folder, result: None  # every write lost\n"
        "run_cohort(CRITERIA, NdjsonInput(Path(sys.argv[1])), Path(sys.argv[2]), AS_OF,"
        " engine='dask', workers=2, partition_count=int(sys.argv[3]))\n"
    )
    run_python(code, str(ndjson_folder), str(out), str(partitions))
    for name in (*OUTPUT_FILES, "cohort.parquet"):
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def test_a_dask_run_makes_tasks_of_a_few_partitions_and_writes_the_same_files(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """16 partitions on two single-threaded workers: eight tasks of two partitions each
    (`task_groups`), each partition in one task; the files are those of one worker."""
    skip_unless_dask_workers_fork()
    out = tmp_path / "out"
    tasks = tmp_path / "tasks.txt"
    code = (
        "import functools, sys\n"
        "from pathlib import Path\n"
        "from engine.cohort import NdjsonInput, engines, run_cohort\n"
        "from cohort_examples import AS_OF, CRITERIA\n"
        "task = engines.evaluate_and_write_on_dask_worker\n"
        "@functools.wraps(task)  # pickled by name: the workers, forks, run this one\n"
        "def noted(job, payloads, folder, in_background=True):\n"
        "    with open(sys.argv[3], 'a') as tasks:\n"
        "        tasks.write(' '.join(str(payload.index) for payload in payloads) + '\\n')\n"
        "    task(job, payloads, folder, in_background)\n"
        "engines.evaluate_and_write_on_dask_worker = noted\n"
        "summary = run_cohort(CRITERIA, NdjsonInput(Path(sys.argv[1])), Path(sys.argv[2]),"
        " AS_OF, engine='dask', workers=2, partition_count=16)\n"
    )
    run_python(code, str(ndjson_folder), str(out), str(tasks))
    groups = [[int(index) for index in line.split()] for line in tasks.read_text().splitlines()]
    assert sorted(len(group) for group in groups) == [2] * 8, groups
    assert sorted(index for group in groups for index in group) == list(range(16))
    for name in (*OUTPUT_FILES, "cohort.parquet"):
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def test_a_dask_run_on_a_cluster_of_this_process_writes_the_same_files(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """With another thread running (no fork of the command's process), the run's cluster is a
    LocalCluster of this process, whose client runs the same evaluation through its own
    event loop's thread (`client.sync`), as with a `--scheduler`."""
    pytest.importorskip("distributed")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        summary = run_cohort(
            CRITERIA,
            NdjsonInput(ndjson_folder),
            tmp_path,
            AS_OF,
            engine="dask",
            workers=2,
            partition_count=PARTITIONS,
        )
    finally:
        stop.set()
        other.join()
    assert summary.partitions_reused == 0 and summary.worker_peak_memory
    for name in (*OUTPUT_FILES, "cohort.parquet"):
        assert (tmp_path / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def test_a_local_run_waits_for_its_workers_to_end_after_assembling_and_knows_their_peak(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """The workers are told to end once every partition is written and the outputs are
    assembled while they end; the run returns only once they have (no process or thread of
    its own left behind), and reports their peak memory."""
    children = set(multiprocessing.active_children())
    threads = threading.active_count()
    out = tmp_path / "out"
    summary = run_cohort(
        CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=2, partition_count=PARTITIONS
    )
    assert engines._ending == []  # each pool told to end was waited for
    assert set(multiprocessing.active_children()) <= children
    assert threading.active_count() == threads
    assert summary.worker_peak_memory is not None and summary.worker_peak_memory > 10**6
    for name in (*OUTPUT_FILES, "cohort.parquet"):
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def test_a_scheduler_needs_the_dask_engine(ndjson_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="--scheduler needs --engine dask"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), tmp_path, AS_OF, scheduler="tcp://x:1")


@pytest.mark.parametrize("scheduler", ["nonsense", "tcp://head-node", "tcp://head:99999", "h :1"])
def test_a_scheduler_that_is_no_address_is_refused_before_anything_is_written(
    ndjson_folder: Path, tmp_path: Path, scheduler: str
) -> None:
    """It raised distributed's ValueError ('missing port number in address'), a traceback,
    after pass 1 had written the run's folder."""
    out = tmp_path / "out"
    arguments = ["cohort", str(CRITERIA), "--ndjson", str(ndjson_folder), "--out", str(out)]
    result = CliRunner().invoke(app, [*arguments, "--engine", "dask", "--scheduler", scheduler])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"error: --scheduler '{scheduler}' is not a Dask scheduler address: write [tcp://]HOST:PORT"
    ), result.output
    assert not out.exists()
    for good in ("tcp://head-node:8786", "10.0.0.5:8786", "tls://[::1]:8786"):
        assert engines.engine_kind("dask", good).takes_scheduler


def test_a_scheduler_that_cannot_be_reached_is_named(ndjson_folder: Path, tmp_path: Path) -> None:
    """'error: OUT: OSError' after distributed's 30 s connect timeout, naming neither the
    scheduler nor the problem; now the scheduler and why (exit 2: an address to correct or a
    scheduler to start), and the same command resumes."""
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    out = tmp_path / "out"
    arguments = ["cohort", str(CRITERIA), "--ndjson", str(ndjson_folder), "--out", str(out)]
    arguments += ["--engine", "dask", "--scheduler", f"tcp://127.0.0.1:{port}", "--workers", "1"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"error: --scheduler tcp://127.0.0.1:{port}: cannot reach the Dask scheduler ("
    ), result.output
    assert "run the same command again to resume" in result.output


def test_the_parquet_table_has_the_csv_rows_typed(one_worker: CohortSummary) -> None:
    out = one_worker.out_dir
    with open(out / "cohort.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    table = pq.read_table(out / "cohort.parquet")
    assert table.column_names == rows[0]
    assert [[str(value) for value in row.values()] for row in table.to_pylist()] == rows[1:]
    assert table.schema.field("patient").type == pa.string()
    for name in rows[0][1:]:
        column = table.column(name)
        assert column.type == pa.dictionary(pa.int8(), pa.string()), name
    status_dictionary = table.column("status").chunk(0).dictionary.to_pylist()
    assert status_dictionary == [status.value for status in SubjectStatus]
    deceased = table.column("deceased").chunk(0).dictionary.to_pylist()
    assert rows[0][2] == "deceased" and deceased == ["no", "yes", "unknown"]
    values = table.column(rows[0][3]).chunk(0).dictionary.to_pylist()
    assert values == list(CRITERION_VALUES)


def test_attestations_apply_per_patient_as_in_evaluate(
    ndjson_folder: Path, tmp_path: Path, trial: CompiledCriteria
) -> None:
    out = tmp_path / "out"
    summary = run_cohort(
        CRITERIA,
        NdjsonInput(ndjson_folder),
        out,
        AS_OF,
        workers=1,
        partition_count=PARTITIONS,
        attestations_path=ATTESTATIONS,
        full=True,
    )
    assert summary.statuses["eligible"] == 1
    answers = load_attestations(ATTESTATIONS, trial.manual_ids)
    subjects = {s["individual"]["reference"]: s for s in read_ndjson(out / "subjects.ndjson")}
    issues = {i["patient"]["reference"]: i for i in read_ndjson(out / "issues.ndjson")}
    for reference, evaluation in evaluations_of_the_examples(trial, answers).items():
        assert subjects[reference] == research_subject(evaluation, study_reference(trial))
        assert issues[reference] == detected_issue(evaluation)
    with pytest.raises(CohortError, match="other attestations"):
        run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1, full=True)
    settled = tmp_path / "settled"
    run_cohort(
        CRITERIA,
        NdjsonInput(ndjson_folder),
        settled,
        AS_OF,
        workers=1,
        partition_count=PARTITIONS,
        attestations_path=ATTESTATIONS,
    )
    assert (settled / "subjects.ndjson").read_bytes() == (out / "subjects.ndjson").read_bytes()


def test_a_run_keeps_what_the_record_and_the_criteria_read(trial: CompiledCriteria) -> None:
    coded_types = set(engine.record._CODED_FIELDS)
    assert coded_types | {"Patient", "Medication"} == RECORD_TYPES
    assert kept_types(trial) == RECORD_TYPES | {"ResearchSubject"}


def _end_abruptly(index: int, *rest: object) -> None:
    os._exit(9)  # as a worker the kernel's out-of-memory killer ends


def test_a_local_worker_that_ends_abruptly_is_a_clear_error_and_the_run_resumes(
    one_worker: CohortSummary,
    ndjson_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("the workers see the patched function only when forked")
    out = tmp_path / "out"
    monkeypatch.setattr(engines, "evaluate_in_worker", _end_abruptly)
    with pytest.raises(WorkerLostError, match=r"a local worker process ended abruptly .* resume"):
        run_cohort(
            CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=2, partition_count=PARTITIONS
        )
    # the command: exit status 1 (the same command resumes), not 2 (a bad argument)
    arguments = ["cohort", str(CRITERIA), "--ndjson", str(ndjson_folder), "--out", str(out)]
    result = CliRunner().invoke(app, [*arguments, "--as-of", AS_OF.isoformat(), "--workers", "2"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: a local worker process ended abruptly"), result.output
    assert "run the same command again to resume" in result.output
    monkeypatch.undo()
    run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=2)
    for name in OUTPUT_FILES:
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def test_dask_workers_that_end_abruptly_are_a_clear_error(ndjson_folder: Path) -> None:
    """Every worker dies on its first partition (taking the run's scattered job with it; the
    cluster's own worker takes its process, the host, with it): the run stops with a
    CohortError, no traceback, no hang."""
    skip_unless_dask_workers_fork()
    code = (
        "import os, sys, tempfile\n"
        "from pathlib import Path\n"
        "from engine.cohort import NdjsonInput, engines, run_cohort\n"
        "from engine.errors import CohortError\n"
        "from cohort_examples import AS_OF, CRITERIA\n"
        "def end_abruptly(*arguments):\n"
        "    os._exit(9)\n"
        "engines.evaluate_and_write_on_dask_worker = end_abruptly\n"
        "out = Path(tempfile.mkdtemp())\n"
        "try:\n"
        "    run_cohort(CRITERIA, NdjsonInput(Path(sys.argv[1])), out, AS_OF, engine='dask',"
        " workers=2)\n"
        "except CohortError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    done = run_python(code, str(ndjson_folder))
    ended = ("a Dask worker process ended abruptly", "the Dask cluster's process ended abruptly")
    assert done.stdout.startswith(tuple(f"WorkerLostError {each}" for each in ended)), done.stdout
    assert "run the same command again to resume" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_dask_worker_lost_when_the_results_are_joined_is_a_clear_error_and_the_run_resumes(
    one_worker: CohortSummary, ndjson_folder: Path, tmp_path: Path
) -> None:
    """Every partition is evaluated, then a forked worker is killed while the run asks the
    workers which partitions they wrote (`client.run`): the command ends with one line,
    exit status 1, without the scheduler's 'broadcast to ... failed' or 'Removing worker'
    log records or a traceback, every result file it leaves is whole, and the same command
    resumes to the files of an uninterrupted run."""
    skip_unless_dask_workers_fork()
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "from engine.cohort import engines\n"
        "engines.finish_writing = engines._finish_writing_on_dask_worker\n"
        "def killed_in_a_forked_worker(*arguments):\n"
        "    import multiprocessing, os\n"
        "    if multiprocessing.current_process().name.startswith('trialsieve-dask-worker-'):\n"
        "        os._exit(9)\n"
        "    from engine.cohort import engines\n"
        "    return engines.finish_writing(*arguments)\n"
        "engines._finish_writing_on_dask_worker = killed_in_a_forked_worker\n"
        "sys.argv = ['trialsieve', 'cohort', *sys.argv[1:]]\n"
        "from engine.cli import app\n"
        "try:\n"
        "    app()\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code)\n"
    )
    arguments = [str(CRITERIA), "--ndjson", str(ndjson_folder), "--out", str(out)]
    arguments += ["--as-of", AS_OF.isoformat(), "--quiet", "--engine", "dask", "--workers", "2"]
    lost = run_python(code, *arguments)
    assert lost.stdout.strip().endswith("exit 1"), lost.stdout + lost.stderr
    assert lost.stderr.startswith(
        "error: a Dask worker process ended abruptly (killed, or out of memory?) before every "
        "partition was evaluated and written"
    ), lost.stderr
    assert "run the same command again to resume" in lost.stderr
    assert lost.stderr.count("\n") == 1, lost.stderr  # one line: no log record, no traceback
    assert not (out / "summary.json").exists()
    # every result file there is whole (a write the kill cut short left only its temporary
    # file, which the next run removes: docs/cohort.md, "Temporary files")
    results = sorted((out / "partitions").glob("[0-9][0-9][0-9][0-9].ndjson"))
    assert results and all(is_complete(path) for path in results)
    resumed = CliRunner().invoke(app, ["cohort", *arguments])
    # 1: the export's cut-off Observation line (ndjson_folder), an input problem
    assert resumed.exit_code == 1 and "1 input problem" in resumed.output, resumed.output
    assert "reused" in resumed.output
    assert not [file.name for file in out.rglob(".*.part")]
    for name in (*OUTPUT_FILES, "cohort.parquet"):
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def test_a_partition_write_that_fails_in_the_background_stops_the_run_and_it_resumes(
    one_worker: CohortSummary,
    ndjson_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Evaluating alone, this process writes each partition's files in a thread while it
    evaluates the next: a write that fails stops the run with its error (raised by the next
    write or at the end), the partitions written before stay, and the same command resumes
    to the files of an uninterrupted run."""
    out = tmp_path / "out"
    written: list[int] = []

    def fails_on_the_third(results_folder: str | Path, result: PartitionResult) -> None:
        if len(written) == 2:
            raise OSError("No space left on device")
        write_result(results_folder, result)
        written.append(result.outcome.index)

    monkeypatch.setattr("engine.cohort.engines.write_result", fails_on_the_third)
    with pytest.raises(OSError, match="No space left"):
        run_cohort(
            CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1, partition_count=PARTITIONS
        )
    assert sorted(p.name for p in (out / "partitions").glob("0*")) == [
        f"{index:04d}.ndjson" for index in sorted(written)
    ]
    monkeypatch.undo()
    summary = run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1)
    assert summary.partitions_reused == 2
    for name in OUTPUT_FILES:
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name
