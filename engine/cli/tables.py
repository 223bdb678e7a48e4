"""Explanations for a person: a per-criterion table and a one-row-per-patient summary."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from engine.evaluate.outcome import Outcome, Truth
from engine.evaluate.patient import (
    CriterionResult,
    CriterionVerdict,
    PatientEvaluation,
    SubjectStatus,
)

VERDICT_STYLE = {
    CriterionVerdict.CLEAR: ("clear", "green"),
    CriterionVerdict.FAILS: ("FAILS", "bold red"),
    CriterionVerdict.MISSING_DATA: ("missing data", "yellow"),
    CriterionVerdict.MANUAL_REVIEW: ("manual review", "cyan"),
}
STATUS_STYLE = {
    SubjectStatus.INELIGIBLE: "red",
    SubjectStatus.POTENTIAL_CANDIDATE: "yellow",
    SubjectStatus.CANDIDATE: "cyan",
    SubjectStatus.ELIGIBLE: "bold green",
}
_MARK = {Truth.MET: "met", Truth.NOT_MET: "not met", Truth.UNKNOWN: "unknown"}


def criteria_table(evaluation: PatientEvaluation) -> Table:
    """Every criterion with its outcome, reason tree and evidence."""
    status = evaluation.status
    table = Table(
        title=f"{evaluation.criteria.trial.id} for {evaluation.patient_reference} "
        f"as of {evaluation.as_of.isoformat()}: [{STATUS_STYLE[status]}]{status.value}[/]",
        show_lines=True,
        expand=True,
    )
    table.add_column("Criterion", overflow="fold", ratio=2)
    table.add_column("Outcome", no_wrap=True)
    table.add_column("Why", overflow="fold", ratio=5)
    table.add_column("Evidence", overflow="fold", ratio=2)
    for result in evaluation.results:
        word, style = VERDICT_STYLE[result.verdict]
        table.add_row(
            f"{result.id}\n({result.kind.value})",
            Text(word, style=style),
            "\n".join(_reason_lines(result.outcome, 0)),
            "\n".join(result.outcome.evidence),
        )
    if evaluation.data_problems:
        table.caption = "Data problems: " + "; ".join(evaluation.data_problems)
    return table


def _reason_lines(outcome: Outcome, depth: int) -> list[str]:
    if not outcome.children:
        prefix = "  " * depth + (f"[{_MARK[outcome.truth]}] " if depth else "")
        return [prefix + outcome.reason]
    head = "  " * depth + f"[{_MARK[outcome.truth]}] {outcome.label or 'combination'}"
    lines = [head] if depth or outcome.label else []
    for child in outcome.children:
        lines.extend(_reason_lines(child, depth + 1))
    return lines


def summary_table(evaluations: Sequence[PatientEvaluation]) -> Table:
    """One row per patient: status and the criteria that decide it."""
    table = Table(title="Screening summary", expand=True)
    table.add_column("Patient", overflow="fold", min_width=13, ratio=3)
    table.add_column("Status", no_wrap=True)
    table.add_column("Fails", overflow="fold", min_width=9, ratio=2)
    table.add_column("Missing data", overflow="fold", min_width=12, ratio=2)
    table.add_column("Manual", justify="right", no_wrap=True)
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
