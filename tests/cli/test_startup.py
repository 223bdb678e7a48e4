"""Start-up: `trialsieve --help` imports the command line only, not the engine's heavy
libraries (each command imports what it uses inside its function). Speed itself is measured
by benchmarks/startup.py, not here.
"""

from __future__ import annotations

import pytest
from fresh_interpreter import run_trialsieve

HEAVY = ("fastapi", "pyarrow", "dask", "distributed", "httpx", "jwt", "fhir", "uvicorn", "pint")


def modules_after(*arguments: str) -> set[str]:
    """The modules imported by a fresh process running `trialsieve ARGUMENTS`."""
    _code, output, modules = run_trialsieve(*arguments)
    assert "Usage" in output, output
    return modules


@pytest.mark.parametrize("arguments", [("--help",), ("evaluate", "--help"), ("serve", "--help")])
def test_help_imports_no_heavy_library(arguments: tuple[str, ...]) -> None:
    modules = modules_after(*arguments)
    loaded = sorted({name.split(".")[0] for name in modules} & set(HEAVY))
    assert loaded == [], f"trialsieve {' '.join(arguments)} imports {loaded}"
    engine_modules = {name for name in modules if name.split(".")[0] == "engine"}
    assert engine_modules <= {"engine", "engine.errors", "engine.lazy_exports"} | {
        name for name in engine_modules if name.startswith("engine.cli")
    }
