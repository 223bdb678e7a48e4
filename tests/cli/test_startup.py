"""Start-up: `trialsieve --help` imports the command line only, not the engine's heavy
libraries (each command imports what it uses inside its function). Speed itself is measured
by benchmarks/startup.py, not here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("fastapi", "pyarrow", "dask", "distributed", "httpx", "jwt", "fhir", "uvicorn", "pint")

_RUN_AND_LIST_MODULES = """
import sys
sys.argv = ["trialsieve", *sys.argv[1:]]
from engine.cli import app
try:
    app()
except SystemExit:
    pass
print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""


def modules_after(*arguments: str) -> set[str]:
    """The modules imported by a fresh process running `trialsieve ARGUMENTS`."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_MODULES, *arguments],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Usage" in done.stdout, done.stdout + done.stderr
    return set(done.stderr.split())


@pytest.mark.parametrize("arguments", [("--help",), ("evaluate", "--help"), ("serve", "--help")])
def test_help_imports_no_heavy_library(arguments: tuple[str, ...]) -> None:
    modules = modules_after(*arguments)
    loaded = sorted({name.split(".")[0] for name in modules} & set(HEAVY))
    assert loaded == [], f"trialsieve {' '.join(arguments)} imports {loaded}"
    engine_modules = {name for name in modules if name.split(".")[0] == "engine"}
    assert engine_modules <= {"engine", "engine.errors", "engine.lazy_exports"} | {
        name for name in engine_modules if name.startswith("engine.cli")
    }
