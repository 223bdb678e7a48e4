"""Issue 11, item 8: cohort inputs that block or vanish, and workers that outlive their run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.sources.ndjson import ndjson_files


def export_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Patient.000.ndjson").write_text(
        '{"resourceType": "Patient", "id": "p1"}\n', encoding="utf-8"
    )
    return folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_an_export_file_is_an_error_not_a_hang(tmp_path: Path) -> None:
    folder = export_folder(tmp_path)
    os.mkfifo(folder / "Observation.003.ndjson")
    with pytest.raises(InputError, match="not a regular file") as caught:
        ndjson_files(folder)
    assert "Observation.003.ndjson" in str(caught.value)


def test_a_folder_named_like_an_export_file_is_an_error_not_skipped(tmp_path: Path) -> None:
    folder = export_folder(tmp_path)
    (folder / "Observation.003.ndjson").mkdir()
    with pytest.raises(InputError, match="a folder") as caught:
        ndjson_files(folder)
    assert "Observation.003.ndjson" in str(caught.value)


def test_the_cohort_command_reports_a_fifo_and_stops(tmp_path: Path) -> None:
    folder = export_folder(tmp_path)
    os.mkfifo(folder / "Observation.003.ndjson")
    root = Path(__file__).resolve().parents[2]
    finished = subprocess.run(
        [
            sys.executable,
            "-c",
            "from engine.cli import app; app()",
            "cohort",
            str(root / "criteria" / "NCT05315778.yaml"),
            "--ndjson",
            str(folder),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode != 0
    assert "not a regular file" in finished.stderr
    assert "Traceback" not in finished.stderr


PARENT = textwrap.dedent(
    """
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing
    from engine.cohort.orphans import exit_when_orphaned

    def pid() -> int:
        time.sleep(0.2)
        return os.getpid()

    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=2, mp_context=context, initializer=exit_when_orphaned)
    pids = {pool.submit(pid).result() for _ in range(4)}
    print(" ".join(map(str, sorted(pids))), flush=True)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="fork and /proc")
def test_pool_workers_exit_when_the_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert workers and all(alive(pid) for pid in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers), "workers outlived their parent"
    finally:
        parent.kill()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_among_bundle_files_is_an_error_not_a_hang(tmp_path: Path) -> None:
    from engine.sources import BundleFileSource

    folder = tmp_path / "bundles"
    folder.mkdir()
    os.mkfifo(folder / "patient.json")
    with pytest.raises(InputError, match="not a regular file"):
        list(BundleFileSource(folder))
    with pytest.raises(InputError, match="not a regular file"):
        list(BundleFileSource(folder / "patient.json"))
