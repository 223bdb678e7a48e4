"""What the commands share besides options: the day given, error printing, exits, loading.

Only `engine.cli` prints for a person and exits; the engine raises `engine.errors` errors,
which the commands print here (`error: ...` on standard error) and turn into exit codes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.errors import ServiceConfigError, TrialsieveError

if TYPE_CHECKING:
    from engine.attestations import Attestations
    from engine.evaluate import CompiledCriteria
    from engine.service.settings import SecretReference


def parse_day(text: str | None) -> dt.date:
    """The --as-of day; today when not given."""
    if text is None:
        return dt.date.today()
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"'{text}' is not a date (YYYY-MM-DD)", param_hint="'--as-of'"
        ) from None
    from engine.evaluate.patient import as_of_problem

    problem = as_of_problem(day)
    if problem is not None:
        raise typer.BadParameter(problem, param_hint="'--as-of'")
    return day


def error_console() -> Console:
    return Console(stderr=True, highlight=False)


FOLDED_ID_WIDTH = 16
"""The narrowest a table's column of criterion ids gets (`overflow="fold"`): a terminal too
narrow for it, and the table's other cells whole, gets `print_table_or_lines`' lines."""


def print_table_or_lines(console: Console, table: Table, lines: Sequence[str]) -> None:
    """Print `table` when the terminal is wide enough for it to show every cell whole
    (`narrowest_width`), else `lines`, the same content as plain text (one row a line,
    wrapped as text is, never cut)."""
    if narrowest_width(table) <= console.width:
        console.print(table)
        return
    for line in lines:
        console.print(line, markup=False, highlight=False, overflow="fold")


def narrowest_width(table: Table) -> int:
    """The fewest terminal columns `table` needs to show every cell whole: a folding column
    with a `min_width` at that width, any other as wide as its widest cell (rich narrows
    wrapping columns evenly, whatever their longest words); with the padding and the box's
    rules. (rich's own measure takes a cell's longest word, so that an id it would fold
    counts whole, and a cell it would cut short counts as fitting.)"""
    widths = []
    for column in table.columns:
        if column.overflow == "fold" and column.min_width:
            widths.append(column.min_width)
        else:
            texts = [str(column.header), *map(str, column.cells)]
            widths.append(max(map(cell_len, texts)))
    _top, right, _bottom, left = table.padding
    rules = 0 if table.box is None else len(widths) - 1 + (2 if table.show_edge else 0)
    return sum(widths) + len(widths) * (left + right) + rules


def print_error(error: TrialsieveError | str) -> None:
    """`error: ...` on standard error (the message is shown as written, never as markup)."""
    error_console().print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)


def fail(error: TrialsieveError | str, code: int = 2) -> typer.Exit:
    """Print the error and return the Exit to raise (2: bad criteria, input or arguments)."""
    print_error(error)
    return typer.Exit(code)


def patient_ids_option(patients: list[str] | None) -> list[str]:
    """The `--patient` ids, each once, in order; the Exit to raise for one that is no FHIR id
    (it would go into the server's URL: `Patient/a b`, `Patient/../Group`)."""
    from engine.sources.references import is_fhir_id

    ids = list(dict.fromkeys(patients or ()))
    for patient_id in ids:
        if not is_fhir_id(patient_id):
            raise fail(
                f"--patient {patient_id!r} is not a FHIR id (letters, digits, '-' and '.', "
                "1 to 64 of them)"
            )
    return ids


def load_trial_and_answers(
    criteria: Path, attestations: Path | None
) -> tuple[CompiledCriteria, Attestations]:
    """The compiled trial and the attestation file's answers; raises the Exit for bad files."""
    from engine.attestations import load_attestations
    from engine.trial import load_trial

    try:
        trial = load_trial(criteria)
        answers = (
            load_attestations(attestations, trial.manual_ids, trial.trial.id)
            if attestations
            else {}
        )
    except TrialsieveError as error:
        raise fail(error) from None
    return trial, answers


def secret_reference(
    variable: str | None, file: Path | None, variable_option: str, file_option: str
) -> SecretReference | None:
    """Where a secret comes from: an environment variable or a file (ServiceConfigError for
    both); None for neither."""
    from engine.service.settings import SecretReference

    if variable and file:
        raise ServiceConfigError(f"give {variable_option} or {file_option}, not both")
    if variable:
        return SecretReference(environment_variable=variable)
    if file:
        return SecretReference(file=file)
    return None
