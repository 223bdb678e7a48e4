"""What the command-line commands share: option declarations, day parsing, error printing.

Only command functions (engine/cli.py, engine/server_command.py, engine/cohort/command.py, ...)
use this module; the engine itself never prints or exits.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from engine.attestations import Attestations, load_attestations
from engine.errors import TrialsieveError
from engine.evaluate import CompiledCriteria
from engine.evaluate.patient import as_of_problem
from engine.trial import load_trial

CriteriaArgument = Annotated[Path, typer.Argument(help="The trial's criteria file (YAML).")]
AsOfOption = Annotated[
    str | None, typer.Option(help="Evaluate as of this day (YYYY-MM-DD); default today.")
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        help="Where to write the transaction Bundle (a file for one patient, a folder "
        "for several); default: standard output for one patient."
    ),
]
AttestationsOption = Annotated[
    Path | None, typer.Option(help="Answers to manual review items (YAML).")
]
ExplainOption = Annotated[
    bool, typer.Option("--explain", help="Print a per-criterion table for each patient.")
]


def parse_day(text: str | None) -> dt.date:
    """The --as-of day; today when not given."""
    if text is None:
        return dt.date.today()
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a date (YYYY-MM-DD)") from None
    problem = as_of_problem(day)
    if problem is not None:
        raise typer.BadParameter(problem)
    return day


def error_console() -> Console:
    return Console(stderr=True, highlight=False)


def print_error(error: TrialsieveError | str) -> None:
    """`error: ...` on standard error (the message is shown as written, never as markup)."""
    error_console().print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)


def fail(error: TrialsieveError | str, code: int = 2) -> typer.Exit:
    """Print the error and return the Exit to raise (2: bad criteria, input or arguments)."""
    print_error(error)
    return typer.Exit(code)


def load_trial_and_answers(
    criteria: Path, attestations: Path | None
) -> tuple[CompiledCriteria, Attestations]:
    """The compiled trial and the attestation file's answers; raises the Exit for bad files."""
    try:
        trial = load_trial(criteria)
        answers = load_attestations(attestations, trial.manual_ids) if attestations else {}
    except TrialsieveError as error:
        raise fail(error) from None
    return trial, answers
