"""What a cohort run leaves undone when nothing needs it (costs outside the per-patient path).

Speed itself is measured by benchmarks/cohort.py; these tests check the decisions behind it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cohort_examples import AS_OF, CRITERIA

from engine.cohort.inputs import BULK_EXPORT_FILES
from engine.sources import bulk_export


def _in_a_fresh_interpreter(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return done.stdout.strip()


def test_the_files_a_bulk_export_leaves_are_the_ones_the_runner_looks_for() -> None:
    assert BULK_EXPORT_FILES == (bulk_export.STATE_FILE, bulk_export.MERGE_JOURNAL)


def test_a_run_over_a_folder_no_export_wrote_does_not_import_the_bulk_client(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import datetime\n"
        "from engine.cohort import NdjsonInput, run_cohort\n"
        f"run_cohort({str(CRITERIA)!r}, NdjsonInput(Path({str(ndjson_folder)!r})), "
        f"{str(tmp_path / 'out')!r}, datetime.date.fromisoformat({AS_OF.isoformat()!r}), "
        "workers=1)\n"
        "print('engine.sources.bulk_export' in sys.modules)\n"
    )
    assert _in_a_fresh_interpreter(code) == "False"
