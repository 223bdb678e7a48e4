"""The tests' install lock (tests/one_at_a_time.py): test processes started at once install
one after the other, and the later one sees what the first installed."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

from one_at_a_time import install_lock

HERE = Path(__file__).resolve().parent

_INSTALLER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from one_at_a_time import install_lock
marker, log = Path(sys.argv[2]), Path(sys.argv[3])
with install_lock(sys.argv[4]):
    started = time.monotonic()
    found = marker.exists()
    if not found:
        time.sleep(0.5)  # the install
        marker.write_text("installed")
    with log.open("a") as out:
        out.write(f"{started} {time.monotonic()} {found}\\n")
"""


def test_installs_started_at_once_run_one_after_the_other(tmp_path: Path) -> None:
    marker, log = tmp_path / "installed", tmp_path / "log"
    what = f"test-install-{tmp_path}"  # a lock of this test's own
    processes = [
        subprocess.Popen([sys.executable, "-c", _INSTALLER, str(HERE), str(marker), str(log), what])
        for _ in range(3)
    ]
    deadline = time.monotonic() + 60
    for process in processes:
        assert process.wait(max(1.0, deadline - time.monotonic())) == 0
    spans = sorted(
        (float(start), float(end), found == "True")
        for start, end, found in (line.split() for line in log.read_text().splitlines())
    )
    assert len(spans) == 3
    for (_, earlier_end, _), (later_start, _, _) in itertools.pairwise(spans):
        assert later_start >= earlier_end  # never two at once
    assert [found for _, _, found in spans] == [False, True, True]  # installed once
    Path(install_lock(what).lock_file).unlink()  # the lock of this run's own, left behind


def test_the_lock_of_an_install_is_one_file_for_every_process() -> None:
    first, second = install_lock("npm ci /a/folder"), install_lock("npm ci /a/folder")
    assert first.lock_file == second.lock_file
    assert install_lock("npm ci /another/folder").lock_file != first.lock_file
