"""`trialsieve test`: run the criteria test cases (`engine.criteria_cases`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from engine.cli.console import print_error
from engine.errors import TrialsieveError

CasePathsArgument = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Case files, or folders searched for tests/*.yaml (default: criteria).",
        show_default=False,
    ),
]


def test(paths: CasePathsArgument = None) -> None:
    """Run criteria test cases: per patient, the expected outcome of each criterion and the
    expected status; a failure prints the difference and the criterion's explanation."""
    from engine.criteria_cases import case_files, check_criterion_ids, load_case_file, run_case
    from engine.trial import load_trial

    console = Console(highlight=False)
    files = list(case_files(paths or [Path("criteria")]))
    if not files:
        print_error("no case files found (tests/*.yaml beside the criteria)")
        raise typer.Exit(2)
    passed = failed = 0
    for file in files:
        try:
            cases = load_case_file(file)
            trial = load_trial(cases.criteria)
            check_criterion_ids(trial, cases)
            results = [run_case(trial, case) for case in cases.cases]
        except TrialsieveError as error:
            print_error(error)
            raise typer.Exit(2) from None
        for result in results:
            if result.passed:
                passed += 1
                continue
            failed += 1
            console.print(
                f"FAILED {file}:{result.case.line} {result.case.name}", markup=False, style="red"
            )
            for difference in result.differences:
                console.print(difference, markup=False, soft_wrap=True)
    console.print(f"{passed} passed, {failed} failed", markup=False)
    if failed:
        raise typer.Exit(1)
