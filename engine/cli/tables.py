"""The one-row-per-patient summary table (`--explain` prints `engine.report.explanation`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.evaluate.patient import (
    CriterionResult,
    CriterionVerdict,
    PatientEvaluation,
    SubjectStatus,
)

STATUS_STYLE = {
    SubjectStatus.INELIGIBLE: "red",
    SubjectStatus.POTENTIAL_CANDIDATE: "yellow",
    SubjectStatus.CANDIDATE: "cyan",
    SubjectStatus.ELIGIBLE: "bold green",
}


def print_summary_table(console: Console, evaluations: Sequence[PatientEvaluation]) -> None:
    """Print `summary_table`. A file or a pipe gets the table at its natural width (Rich
    takes 80 columns for them, which folded `potential-candidate` beside a 36-character
    patient id); a terminal gets it fitted to its width."""
    table = summary_table(evaluations)
    if console.is_terminal:
        console.print(table)
        return
    fitted = console.width
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    console.width = max(fitted, natural)  # `print(width=...)` never goes above the console's
    try:
        console.print(table)
    finally:
        console.width = fitted


def summary_table(evaluations: Sequence[PatientEvaluation]) -> Table:
    """One row per patient: status and the criteria that decide it."""
    table = Table(
        title="Screening summary", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    table.add_column("Patient", no_wrap=True)
    table.add_column("Status", overflow="fold", min_width=10)
    table.add_column("Fails", overflow="fold", min_width=5)
    table.add_column("Missing data", overflow="fold", min_width=7)
    table.add_column("Manual", justify="right", no_wrap=True, min_width=6)
    for evaluation in evaluations:
        status = evaluation.status
        table.add_row(
            evaluation.patient_id,
            Text(status.value, style=STATUS_STYLE[status]),
            _short_ids(evaluation.results_with(CriterionVerdict.FAILS)),
            _short_ids(evaluation.results_with(CriterionVerdict.MISSING_DATA)),
            str(len(evaluation.results_with(CriterionVerdict.MANUAL_REVIEW))),
        )
    counts: dict[str, int] = {}
    for evaluation in evaluations:
        counts[evaluation.status.value] = counts.get(evaluation.status.value, 0) + 1
    table.caption = ", ".join(f"{status}: {count}" for status, count in sorted(counts.items()))
    table.caption += (
        ". I = inclusion, E = exclusion; Manual = criteria awaiting manual review;"
        " --explain shows every reason"
    )
    return table


_NUMBERED_ID = re.compile(r"^(inclusion|exclusion)-(\d+)\b")


def _short_ids(results: Sequence[CriterionResult]) -> str:
    """`inclusion-1-relapsed-refractory-itp` -> `I1`; ids without a number stay whole."""
    shown = []
    for result in results:
        match = _NUMBERED_ID.match(result.id)
        shown.append(f"{match.group(1)[0].upper()}{match.group(2)}" if match else result.id)
    return " ".join(shown)
