"""`trialsieve attrition OUT [--without CRITERION ...]`: a finished cohort run's funnel,
recomputed from its stored outcomes with criteria switched off (`engine.cohort.whatif`).

Exit status: 0, or 2 when OUT holds no finished run (or one that has not finished: the
message gives the command that resumes it), when one of its files is unreadable or
disagrees with the others (another run's, truncated: `engine.cohort.whatif` names it), or
for an unknown criterion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engine.cli.console import FOLDED_ID_WIDTH, fail, print_table_or_lines

CohortOutArgument = Annotated[
    Path, typer.Argument(help="The --out folder of a finished `trialsieve cohort` run.")
]
WithoutOption = Annotated[
    list[str] | None,
    typer.Option(help="A criterion id to switch off (repeatable), e.g. exclusion-4."),
]


def attrition(out: CohortOutArgument, without: WithoutOption = None) -> None:
    """The attrition funnel of a cohort run with criteria switched off, from its stored
    per-patient outcomes (nothing is evaluated again)."""
    from engine.cohort.whatif import VITAL_STATUS_KIND, what_if_funnel
    from engine.errors import CohortError

    try:
        funnel = what_if_funnel(out, without or [])
    except CohortError as error:
        raise fail(error) from None
    title = f"Attrition of {funnel.patients:,} patients"
    table = Table(title=title)
    # patients remaining before the step, lost at it, remaining after it; the criterion's
    # id folded when the terminal is narrow, never cut: it is what a reader looks for
    for column in ("#", "criterion", "kind", "before", "lost", "after"):
        if column == "criterion":
            table.add_column(column, overflow="fold", min_width=FOLDED_ID_WIDTH)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    first = 0 if funnel.steps and funnel.steps[0].kind == VITAL_STATUS_KIND else 1  # deceased
    lines = [title]
    for step_number, step in enumerate(funnel.steps, start=first):
        name = step.criterion + (" (switched off)" if step.switched_off else "")
        lost = "-" if step.switched_off else f"{step.lost:,}"
        before, after = f"{step.remaining_before:,}", f"{step.remaining:,}"
        table.add_row(str(step_number), name, step.kind, before, lost, after)
        lines.append(
            f"{step_number} {name} ({step.kind}): before {before}, lost {lost}, after {after}"
        )
    console = Console()
    print_table_or_lines(console, table, lines)
    console.print(
        f"remaining after every criterion: {funnel.remaining:,} "
        f"(the run itself: {funnel.remaining_in_the_run:,})"
    )
    if funnel.remaining_not_evaluated:
        console.print(
            f"of them, {funnel.remaining_not_evaluated:,} unknown: the run's pre-filter settled "
            "them on a criterion switched off here, and did not evaluate the others for them "
            "(counted here as passed); a run with --full evaluates every criterion for everyone"
        )
