"""Where the Synthea test data is: `shared/data/synthea-exafluence` beside the checkout.

The checkout may be the repository itself (`/work/main`, the data at `/work/shared/...`) or a
git worktree further down (`/work/wt/NAME`): the nearest folder above the checkout holding
`shared/data/synthea-exafluence` is taken. `require` stops a benchmark with a message naming
`--data` when the data is not there (a clone without the shared data). `compile_bytecode`
compiles the engine's bytecode as installing trialsieve does.
"""

from __future__ import annotations

import compileall
import os
import resource
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
_RELATIVE = Path("shared") / "data" / "synthea-exafluence"


def synthea(kind: str) -> Path:
    """The Synthea `kind` folder ("ndjson", "bundles") of the nearest `shared/data` above the
    checkout; where it would be beside the checkout when none exists."""
    for folder in CHECKOUT.parents:
        if (folder / _RELATIVE / kind).is_dir():
            return folder / _RELATIVE / kind
    return CHECKOUT.parent / _RELATIVE / kind


def require(data: Path) -> None:
    """Exit with a message when `data` is not a folder."""
    if not data.is_dir():
        sys.exit(
            f"no data at {data}: the Synthea export is looked for in shared/data/ above "
            f"{CHECKOUT}; give --data DIR"
        )


def compile_bytecode() -> str:
    """Compile the engine package's bytecode into its __pycache__ folders (unchanged modules
    are skipped), as pip does when it installs trialsieve; what was done, to print.

    With PYTHONDONTWRITEBYTECODE set (as in some shells and containers) Python never writes
    it, and a process started from an editable checkout compiles every engine module it
    imports again: about 0.1 CPU s per process (a Dask forkserver, a `--cli` run), which no
    installed trialsieve pays.
    """
    compileall.compile_dir(CHECKOUT / "engine", quiet=1)
    setting = os.environ.get("PYTHONDONTWRITEBYTECODE")
    told = " (PYTHONDONTWRITEBYTECODE is set here)" if setting else ""
    return f"bytecode       engine compiled beforehand, as an install does{told}"


def cpu_seconds_of_this_process_tree() -> float:
    """CPU seconds of this process, of its ended children and of its living ones (with their
    own ended children: Dask's forkserver reaps the workers it forked)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:  # comes with dask[distributed]; without it, ended children only
        return total
    for child in psutil.Process().children():
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total
