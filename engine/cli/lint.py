"""`trialsieve lint`: check criteria and mapping files (the checks are `engine.lint`'s).

Exit status: 0 when no file has an error (warnings are printed), 2 when some file has one (bad
criteria or mappings, as for `evaluate` and `cohort`) or a path does not exist.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from engine.cli.console import error_console
from engine.cli.options import LintPathsArgument


def lint(paths: LintPathsArgument = None) -> None:
    """Validate criteria and mapping files and cross-check the concepts criteria use."""
    from engine.lint import format_problems, has_errors, lint_paths

    targets = paths or [Path("criteria"), Path("mappings")]
    problems = lint_paths(targets)
    if problems:
        error_console().print(format_problems(problems), soft_wrap=True, markup=False)
    if has_errors(problems):
        raise typer.Exit(2)
    Console(highlight=False).print(f"ok: {', '.join(map(str, targets))}")
