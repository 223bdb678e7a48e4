"""The `trialsieve cohort` command: evaluate a trial over a whole record set.

Registered on the `trialsieve` app with `app.command()(cohort)`. Exit status as for
`evaluate`: 0 when every input was used, 1 when some input could not be (each problem is in
errors.ndjson; the run went on without it), 2 for bad criteria, mappings or arguments, or an
output folder that holds another run.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from engine.cohort.inputs import BundleInput, CohortInput, NdjsonInput
from engine.cohort.runner import ENGINES, CohortSummary, run_cohort
from engine.errors import TrialsieveError


class _RateColumn(ProgressColumn):
    """Patients per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} patients/s")


class _ProgressBar:
    """A rich progress bar on standard error: patients done, rate, time left."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("evaluating"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("patients", total=None)

    def start(self, total_patients: int) -> None:
        self.progress.update(self.task, total=total_patients)
        self.progress.start()

    def advance(self, patients: int) -> None:
        self.progress.advance(self.task, patients)

    def stop(self) -> None:
        self.progress.stop()


def _show_progress(quiet: bool) -> bool:
    in_ci = os.environ.get("CI", "").lower() in ("true", "1")
    return not quiet and not in_ci and sys.stderr.isatty()


def _errors() -> Console:
    return Console(stderr=True, highlight=False)


def cohort(
    criteria: Annotated[Path, typer.Argument(help="The trial's criteria file (YAML).")],
    ndjson: Annotated[
        Path | None,
        typer.Option(help="A folder of Bulk Data NDJSON (<Type>[.n].ndjson, optionally .gz)."),
    ] = None,
    bundles: Annotated[
        Path | None, typer.Option(help="A folder of per-patient Bundle files (*.json).")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="Evaluate as of this day (YYYY-MM-DD); default today.")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="The output folder; a re-run with the same folder resumes.")
    ] = Path("out/cohort"),
    engine: Annotated[
        str, typer.Option(help=f"How to run: {', '.join(sorted(ENGINES))}.")
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Worker processes (default: every core); the size of a Dask LocalCluster."
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="With --engine dask: a running Dask scheduler (tcp://HOST:8786)."),
    ] = None,
    shared_filesystem: Annotated[
        bool,
        typer.Option(
            "--shared-filesystem",
            help="With --scheduler: the workers see the input and --out at the same paths, so "
            "tasks carry paths and workers write the results (a LocalCluster always does).",
        ),
    ] = False,
    attestations: Annotated[
        Path | None, typer.Option(help="Answers to manual review items (YAML), per patient.")
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Evaluate every patient in full. By default a patient who lacks a concept an "
            "inclusion criterion requires (the pre-filter) is settled from their diagnoses, "
            "procedures and demographics; the criteria that read other data are then "
            "not_evaluated for them.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Evaluate every patient of a record set: cohort table, attrition, data availability."""
    if (ndjson is None) == (bundles is None):
        raise typer.BadParameter("give exactly one of --ndjson DIR or --bundles DIR")
    source: CohortInput = BundleInput(bundles) if bundles is not None else NdjsonInput(ndjson)  # type: ignore[arg-type]
    try:
        day = dt.date.fromisoformat(as_of) if as_of is not None else dt.date.today()
    except ValueError:
        raise typer.BadParameter(f"'{as_of}' is not a date (YYYY-MM-DD)") from None
    bar = _ProgressBar() if _show_progress(quiet) else None
    try:
        summary = run_cohort(
            criteria,
            source,
            out,
            day,
            engine,
            workers,
            bar,
            scheduler=scheduler,
            attestations_path=attestations,
            shared_filesystem=True if shared_filesystem else None,
            full=full,
        )
    except TrialsieveError as error:
        _errors().print(f"[bold red]error:[/] {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        if bar is not None:
            bar.stop()
    Console(highlight=False).print(summary_table(summary))
    if summary.problems:
        _errors().print(
            f"[bold red]{summary.problems} input problems[/] ({summary.lines_affected} lines, "
            f"{summary.patients_affected} patients affected): see {out / 'errors.ndjson'}"
        )
        raise typer.Exit(1)


def summary_table(summary: CohortSummary) -> Table:
    """The end-of-run summary: patients by status, speed, pre-filter, problems."""
    table = Table(title=f"Cohort written to {summary.out_dir}/", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("patients", f"{summary.patients:,}")
    for status, count in summary.statuses.items():
        table.add_row(f"  {status}", f"{count:,}")
    how = "evaluated in full" if summary.full else "not read in full"
    table.add_row(
        f"settled by the pre-filter ({how})",
        f"{summary.settled_by_prefilter:,}",
    )
    table.add_row("input problems", f"{summary.problems:,}")
    table.add_row("  lines affected", f"{summary.lines_affected:,}")
    table.add_row("  patients affected", f"{summary.patients_affected:,}")
    reused = f" ({summary.partitions_reused} reused)" if summary.partitions_reused else ""
    table.add_row("partitions", f"{summary.partitions}{reused}")
    table.add_row("time", f"{summary.seconds:.1f} s")
    table.add_row("patients/s", f"{summary.patients_per_second:,.0f}")
    table.add_row("MB/s", f"{summary.megabytes_per_second:,.1f}")
    return table
