"""Code run in a fresh interpreter, as a `trialsieve` command starts: for what only a new
process shows (the modules a command imports, what it leaves in the cache, how it exits)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

_RUN_TRIALSIEVE = """
import sys
sys.argv = ["trialsieve", *sys.argv[1:]]
from engine.cli import app
code = 0
try:
    app()
except SystemExit as exit:
    code = exit.code
print(code, " ".join(sorted(sys.modules)), file=sys.stderr)
"""

_RUN_AS_THE_CONSOLE_SCRIPT = """
import sys
sys.argv = ["trialsieve", *sys.argv[1:]]
from engine.cli import app
sys.exit(app())
"""


def run_python(
    code: str,
    *arguments: str,
    environment: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (`python -c CODE ARGUMENTS`, with `environment`
    instead of this one's when given): it must exit 0 within `timeout` seconds; its output
    as text."""
    return subprocess.run(
        [sys.executable, "-c", code, *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
        env=environment,
        cwd=cwd,
    )


def run_trialsieve(
    *arguments: str, environment: Mapping[str, str] | None = None
) -> tuple[int, str, set[str]]:
    """`trialsieve ARGUMENTS` in a fresh interpreter: its exit code, its standard output and
    the modules it imported by its end."""
    done = run_python(_RUN_TRIALSIEVE, *arguments, environment=environment)
    code, _, modules = done.stderr.strip().splitlines()[-1].partition(" ")
    return int(code), done.stdout, set(modules.split())


def run_trialsieve_into(stdout: int, *arguments: str, timeout: float = 300) -> tuple[int, str]:
    """`trialsieve ARGUMENTS` in a fresh interpreter as its console script runs it, with
    standard output going to the descriptor `stdout`: its exit code and standard error."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AS_THE_CONSOLE_SCRIPT, *arguments],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stderr
