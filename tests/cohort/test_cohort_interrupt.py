"""Ctrl-C during a cohort run: the command's process stops the run, its workers (pass 1's and
the local engine's pools, a Dask cluster's) leave the signal to it, and the command prints one
line, what is kept and how to resume, and exits 130; the same command then resumes to the
files an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cohort_examples import AS_OF, CRITERIA, OUTPUT_FILES, PARTITIONS, skip_unless_dask_workers_fork

from engine.cohort import CohortSummary, NdjsonInput, engines, ndjson_partitions, run_cohort

_INTERRUPTED_COMMAND = """
import importlib, os, signal, sys
from pathlib import Path

command = importlib.import_module("engine.cli.cohort")  # (engine.cli.cohort: the function)
progress = importlib.import_module("engine.cli.progress")
pass_one = importlib.import_module("engine.cohort.ndjson_partitions")

when = sys.argv[1]
sent = Path(sys.argv[2])
stop = getattr(signal, sys.argv[3])


def control_c():
    # once, to the whole process group, as a terminal sends it
    try:
        os.close(os.open(sent, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os.killpg(0, stop)


class Interrupting:
    def start(self, total):
        pass

    def advance(self, patients):
        if when == "partitions":
            control_c()

    def stop(self):
        pass


split_range = pass_one._split_range


def split_and_interrupt(task):
    if when == "pass-1":
        control_c()
    return split_range(task)


command._show_progress = lambda quiet: True
progress.ProgressBar = Interrupting
pass_one._split_range = split_and_interrupt
sys.argv = ["trialsieve", *sys.argv[4:]]
from engine.cli import app

app()
"""


def _interrupted_command(
    when: str, stop: str, tmp_path: Path, *arguments: str
) -> subprocess.CompletedProcess[str]:
    """`trialsieve ARGUMENTS` in a session of its own, sent `stop` (SIGINT: Ctrl-C; SIGTERM)
    to its process group by pass 1's first range (`pass-1`) or as its first partition is
    done."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _INTERRUPTED_COMMAND,
            when,
            str(tmp_path / "sent"),
            stop,
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
        cwd=Path(__file__).parent,
    )


@pytest.mark.parametrize(
    ("engine", "when", "stop"),
    [
        ("local", "pass-1", "SIGINT"),
        ("local", "partitions", "SIGINT"),
        ("dask", "partitions", "SIGINT"),
        ("local", "pass-1", "SIGTERM"),
        ("local", "partitions", "SIGTERM"),
        ("dask", "partitions", "SIGTERM"),
    ],
)
def test_control_c_prints_one_line_and_the_same_command_resumes(
    one_worker: CohortSummary,
    ndjson_folder: Path,
    tmp_path: Path,
    engine: str,
    when: str,
    stop: str,
) -> None:
    """SIGTERM (a batch system's stop, sent to the whole group) as Ctrl-C: `terminated:`
    and exit status 143. A worker that SIGTERM ended is no lost worker."""
    if engine == "dask":
        skip_unless_dask_workers_fork()
    out = tmp_path / "out"
    arguments = [
        "cohort",
        str(CRITERIA),
        "--ndjson",
        str(ndjson_folder),
        "--as-of",
        AS_OF.isoformat(),
        "--out",
        str(out),
        "--engine",
        engine,
        "--workers",
        "2",
    ]
    done = _interrupted_command(when, stop, tmp_path, *arguments)
    assert done.returncode == 128 + getattr(signal, stop), done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # no traceback, no log record of a worker
    said = "interrupted: " if stop == "SIGINT" else "terminated: "
    if when == "pass-1":  # a fresh run stopped before its manifest: nothing to resume
        assert lines == [f"{said}nothing was kept; run the same command again to start afresh"]
        assert not out.exists()
    else:
        kept, _, rest = lines[0].removeprefix(said).partition(" of ")
        assert int(kept) >= 1
        assert rest == f"16 partitions kept in {out}; run the same command again to resume"
    resumed = run_cohort(CRITERIA, NdjsonInput(ndjson_folder), out, AS_OF, workers=1)
    assert resumed.patients == one_worker.patients
    for name in OUTPUT_FILES:
        assert (out / name).read_bytes() == (one_worker.out_dir / name).read_bytes(), name


def _note_the_handler(folder: Path) -> None:
    """Note in `folder` (a file per process) how this process handles SIGINT."""
    handler = signal.getsignal(signal.SIGINT)
    (folder / str(os.getpid())).write_text(
        "ignored" if handler is signal.SIG_IGN else repr(handler), encoding="utf-8"
    )


_SPLIT_RANGE = ndjson_partitions._split_range
_NOTES: list[Path] = []
"""Where `_noting_split_range` notes (set before the pool's workers fork)."""


def _noting_split_range(task: Any) -> Any:
    """Pass 1's task, noting the worker's SIGINT handler first (a function of this module:
    the pool pickles its tasks' function by name)."""
    _note_the_handler(_NOTES[0])
    return _SPLIT_RANGE(task)


def test_pool_workers_leave_control_c_to_the_command(
    ndjson_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass 1's workers and the local engine's ignore SIGINT: a worker waiting for its next
    task would end with a KeyboardInterrupt traceback."""
    pass_one, partitions = tmp_path / "pass-1", tmp_path / "partitions"
    pass_one.mkdir()
    partitions.mkdir()
    _NOTES[:] = [pass_one]
    monkeypatch.setattr(ndjson_partitions, "_split_range", _noting_split_range)
    evaluate_in_worker = engines.evaluate_in_worker

    def noting_evaluate_in_worker(*arguments: Any, **options: Any) -> Any:
        _note_the_handler(partitions)
        return evaluate_in_worker(*arguments, **options)

    monkeypatch.setattr(engines, "evaluate_in_worker", noting_evaluate_in_worker)
    try:
        run_cohort(
            CRITERIA,
            NdjsonInput(ndjson_folder),
            tmp_path / "out",
            AS_OF,
            workers=2,
            partition_count=PARTITIONS,
        )
    finally:
        _NOTES.clear()
    for folder in (pass_one, partitions):
        noted = {path.name: path.read_text(encoding="utf-8") for path in folder.iterdir()}
        assert noted and str(os.getpid()) not in noted, folder.name  # in worker processes
        assert set(noted.values()) == {"ignored"}, (folder.name, noted)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this system")
@pytest.mark.parametrize(("signal_number", "status"), [(signal.SIGTERM, -15), (signal.SIGINT, 0)])
def test_a_worker_signalled_before_it_sets_its_own_handling_prints_no_traceback(
    signal_number: int, status: int
) -> None:
    """A pool worker inherits the command's handlers until it sets its own: a SIGTERM (a
    batch system's stop, to the process group) in that window raised the command's
    KeyboardInterrupt there, a 'Process ForkProcess-2: Traceback' on the terminal (found in
    CI). In a forked process SIGTERM now ends it as it ends a process without a handler, and
    SIGINT is ignored, as every worker ignores it."""
    script = (
        "import os, signal, sys\n"
        "from engine.cli.cohort import _terminate_as_interrupt\n"
        "with _terminate_as_interrupt():\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        try:\n"
        f"            os.kill(os.getpid(), {int(signal_number)})\n"
        "        except SystemExit as stop:\n"
        "            os._exit(stop.code)\n"
        "        except BaseException as error:\n"
        "            sys.stderr.write(f'child: {type(error).__name__}')\n"
        "            os._exit(99)\n"
        "        os._exit(0)\n"
        "    _, waited = os.waitpid(child, 0)\n"
        "    print(os.waitstatus_to_exitcode(waited))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(status), (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "child:" not in done.stderr, done.stderr


def test_sigterm_s_handler_waits_for_the_write_without_joining_its_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A local worker's SIGTERM handler waits for the result file being written before the
    worker ends. It may run in the main thread while that thread joins the writer thread,
    between `join` taking the thread's lock and releasing it (bpo-45274); joining again there
    waited for ever, and the command with it, in `ProcessPoolExecutor.shutdown` (one CI run
    in about ten under load: `test_control_c_prints_one_line_and_the_same_command_resumes
    [local-partitions-SIGTERM]` timed out). Here the interrupted join is played by holding
    the finished writer thread's lock (CPython's `Thread._tstate_lock`) as it would."""
    monkeypatch.setattr(engines, "write_result", lambda folder, result: None)
    writer = engines._BackgroundWriter()
    writer.write(str(tmp_path), Any)  # type: ignore[arg-type]  # written by nothing
    thread = writer._thread
    assert thread is not None
    lock = thread._tstate_lock  # type: ignore[attr-defined]  # (is_alive would drop it)
    deadline = time.monotonic() + 5
    while lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)  # the thread is ending: its lock is free until it is joined
    assert lock.acquire(timeout=5)  # as the interrupted join holds it
    try:
        joining = threading.Thread(target=writer.wait, daemon=True)
        joining.start()
        joining.join(0.3)
        assert joining.is_alive()  # a join now waits for the lock: the old handler's hang
        ending = threading.Thread(target=writer.finish_before_ending, daemon=True)
        ending.start()
        ending.join(5)
        assert not ending.is_alive()  # the handler's wait returns
    finally:
        lock.release()
    joining.join(5)
    assert not joining.is_alive()
