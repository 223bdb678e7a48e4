"""`trialsieve cohort`: evaluate a trial over a whole record set (`engine.cohort.run_cohort`).

Exit status as for `evaluate`: 0 when every input was used, 1 when some input could not be
(each problem is in errors.ndjson; the run went on without it), an input file changed while
the run read it (named, with what to do), a worker process ended abruptly (killed, out of
memory: the same command resumes) or a file could not be written (named: a full disk, an
output that is a named pipe or a device), 2 for bad criteria, mappings or arguments, or an
output folder that holds another run or that another run is writing; 130 after Ctrl-C, 143
after SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, cast, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.cli.console import (
    FOLDED_ID_WIDTH,
    fail,
    parse_day,
    print_error,
    print_table_or_lines,
)
from engine.cli.options import (
    AsOfOption,
    AttestationsOption,
    AuthConfigOption,
    BundlesFolderOption,
    CohortOutOption,
    CriteriaArgument,
    EngineName,
    EngineOption,
    ExportLevelOption,
    ExportServerOption,
    FullOption,
    GroupOption,
    MaxAnswerMibOption,
    NdjsonOption,
    NoStoreOption,
    ParseEveryLineOption,
    QuietOption,
    SchedulerOption,
    SharedFilesystemOption,
    SinceOption,
    TokenEnvOption,
    TokenFileOption,
    WatchOption,
    WorkersOption,
)
from engine.errors import InputChangedError, TrialsieveError, WorkerLostError

if TYPE_CHECKING:
    from engine.cohort import CohortSummary
    from engine.cohort.whatif import WhatIfFunnel


def _show_progress(quiet: bool) -> bool:
    in_ci = os.environ.get("CI", "").lower() in ("true", "1")
    return not quiet and not in_ci and sys.stderr.isatty()


def _errors() -> Console:
    return Console(stderr=True, highlight=False)


def cohort(
    criteria: CriteriaArgument,
    ndjson: NdjsonOption = None,
    bundles: BundlesFolderOption = None,
    as_of: AsOfOption = None,
    out: CohortOutOption = Path("out/cohort"),
    engine: EngineOption = EngineName.LOCAL,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    shared_filesystem: SharedFilesystemOption = False,
    attestations: AttestationsOption = None,
    full: FullOption = False,
    parse_every_line: ParseEveryLineOption = False,
    server: ExportServerOption = None,
    export_level: ExportLevelOption = "system",
    group: GroupOption = None,
    since: SinceOption = None,
    token_env: TokenEnvOption = None,
    token_file: TokenFileOption = None,
    auth_config: AuthConfigOption = None,
    quiet: QuietOption = False,
    watch: WatchOption = False,
    no_store: NoStoreOption = False,
    max_answer_mib: MaxAnswerMibOption = None,
) -> None:
    """Evaluate every patient of a record set: cohort table, attrition, data availability."""
    from engine.cohort import BundleInput, CohortInput, NdjsonInput, run_cohort

    if server is not None and (ndjson is None or bundles is not None):
        raise typer.BadParameter("--server needs --ndjson DIR (the folder the export goes to)")
    if server is None and max_answer_mib is not None:
        raise typer.BadParameter("--max-answer-mib needs --server")
    if watch and no_store:
        raise typer.BadParameter("--watch re-runs from the store: leave out --no-store")
    if (ndjson is None) == (bundles is None):
        raise typer.BadParameter("give exactly one of --ndjson DIR or --bundles DIR")
    if export_level != "system":  # the default is valid: no need to load the Bulk client
        from engine.sources.bulk_export import ExportLevel

        if export_level not in get_args(ExportLevel):
            raise typer.BadParameter(
                f"--export-level must be one of {', '.join(get_args(ExportLevel))}"
            )
    source: CohortInput = BundleInput(bundles) if bundles is not None else NdjsonInput(ndjson)  # type: ignore[arg-type]
    day = parse_day(as_of)
    with _terminate_as_interrupt():  # SIGTERM stops a run as Ctrl-C does
        export_issues = 0
        if server is not None:
            assert ndjson is not None
            export = ServerExport(
                server,
                export_level,
                group,
                since,
                token_env,
                token_file,
                auth_config,
                max_answer_mib,
            )
            try:
                export_issues = _export(criteria, export, ndjson, quiet)
            except KeyboardInterrupt:
                raise _interrupted(
                    f"the export into {ndjson} resumes: run the same command again"
                ) from None
        from engine.cli.progress import ProgressBar

        def run() -> CohortSummary:
            bar = ProgressBar() if _show_progress(quiet) else None
            try:
                return run_cohort(
                    criteria,
                    source,
                    out,
                    day,
                    engine.value,
                    workers,
                    bar,
                    scheduler=scheduler,
                    attestations_path=attestations,
                    shared_filesystem=True if shared_filesystem else None,
                    full=full,
                    screen_lines=not parse_every_line,
                    keep_store=not no_store,
                )
            finally:
                if bar is not None:
                    bar.stop()

        try:
            summary = run()
        except KeyboardInterrupt:
            raise _interrupted(_what_is_kept(out)) from None
        except (TrialsieveError, OSError) as error:
            raise _failed(error, out) from None
        _show(summary, out)
        if watch:
            summary = _watch(criteria, run, out, summary) or summary
        if summary.problems or export_issues:
            raise typer.Exit(1)


def _failed(error: TrialsieveError | OSError, out: Path) -> typer.Exit:
    """Print why the run failed; the exit to raise."""
    if _terminated:  # SIGTERM reached a worker (the process group's) before this process
        return _interrupted(_what_is_kept(out))
    if isinstance(error, InputChangedError | WorkerLostError):  # the same command runs again
        return fail(error, code=1)
    if isinstance(error, TrialsieveError):
        print_error(error)  # as written: a UCUM unit such as [in_i] is no markup
        return typer.Exit(2)
    # the disk filled, a target is a named pipe: the run resumes
    return fail(
        f"{_file_problem(error, out)}; what was finished is kept: run the same command again "
        "to resume",
        code=1,
    )


def _show(summary: CohortSummary, out: Path) -> None:
    Console(highlight=False).print(summary_table(summary))
    if summary.problems:
        _errors().print(
            f"[bold red]{_counted(summary.problems, 'input problem')}[/] "
            f"({_counted(summary.lines_affected, 'line')}, "
            f"{_counted(summary.patients_affected, 'patient')} affected): "
            f"see {escape(str(out / 'errors.ndjson'))}"
        )


def _counted(count: int, noun: str) -> str:
    """`1 line`, `2 lines`."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _watch(
    criteria: Path, run: Callable[[], CohortSummary], out: Path, first: CohortSummary
) -> CohortSummary | None:
    """Run again after each save of the criteria or mapping files, until Ctrl-C; the last
    summary (None when no re-run succeeded). A re-run evaluates only the criteria that
    changed (docs/cohort.md, Re-runs) and is followed by what it moved against the run
    before it (`_show_changes`); criteria that do not load are reported and the watch goes
    on, so the next save can fix them."""
    from engine.criteria.loader import load_criteria

    errors = _errors()
    last = None
    try:
        try:
            mappings = [Path(path).resolve() for path in load_criteria(criteria).mapping_paths]
        except TrialsieveError as error:  # saved again, broken, since the run read it
            print_error(error)
            mappings = []  # the criteria file alone is watched: its next save re-runs
        counts = _run_counts(first, out)
        errors.print(f"watching {criteria} and its mappings (Ctrl-C stops)", markup=False)
        for _changed in changes(Path(criteria).resolve(), mappings):
            try:
                last = run()
            except KeyboardInterrupt:  # during a re-run, not while watching
                raise _interrupted(_what_is_kept(out)) from None
            except TrialsieveError as error:
                print_error(error)
                continue
            except OSError as error:
                print_error(_file_problem(error, out))
                continue
            _show(last, out)
            counts = _show_changes(counts, last, out)
            errors.print(f"watching {criteria} and its mappings (Ctrl-C stops)", markup=False)
    except KeyboardInterrupt:  # Ctrl-C while watching: the watch ends
        if _terminated:
            raise typer.Exit(128 + int(signal.SIGTERM)) from None
    return last


def _run_counts(summary: CohortSummary, out: Path) -> tuple[dict[str, int], WhatIfFunnel] | None:
    """A finished run's patients by status and its funnel (`what_if_funnel`, without
    switches); None, said why, when the funnel cannot be read."""
    from engine.cohort.whatif import what_if_funnel

    try:
        return dict(summary.statuses), what_if_funnel(out)
    except TrialsieveError as error:
        print_error(error)
        return None


def _show_changes(
    previous: tuple[dict[str, int], WhatIfFunnel] | None, summary: CohortSummary, out: Path
) -> tuple[dict[str, int], WhatIfFunnel] | None:
    """Print what a re-run moved against the run before it (statuses, funnel steps'
    losses: `count_changes`), or that nothing moved; this run's counts, for the next."""
    from engine.cohort.whatif import count_changes

    counts = _run_counts(summary, out)
    if previous is None or counts is None:
        return counts
    changes = count_changes(*previous, *counts)
    console = Console(highlight=False)
    if not changes:
        console.print(
            "no count moved since the last run: as many patients in each status and funnel step",
            markup=False,
        )
        return counts
    title = "Moved since the last run"
    table = Table(title=title)
    # a criterion's id folded, never cut
    table.add_column("patients", overflow="fold", min_width=FOLDED_ID_WIDTH)
    for heading in ("before", "now", "change"):
        table.add_column(heading, justify="right", no_wrap=True)
    lines = [f"{title}:"]
    for change in changes:
        label = change.name if change.what == "status" else f"lost at {change.name}"
        before = "-" if change.before is None else f"{change.before:,}"
        now = "-" if change.after is None else f"{change.after:,}"
        difference = f"{(change.after or 0) - (change.before or 0):+,}"
        table.add_row(escape(label), before, now, difference)
        lines.append(f"{label}: before {before}, now {now} ({difference})")
    print_table_or_lines(console, table, lines)
    return counts


def _what_is_kept(out: Path) -> str:
    from engine.cohort.run_folder import what_is_kept

    return what_is_kept(out)


def _interrupted(what_is_kept: str) -> typer.Exit:
    """Ctrl-C: one line, `interrupted: ` and what is kept (and how to resume), and exit
    status 130 (128 + SIGINT), as a shell reports a command Ctrl-C stopped; after SIGTERM
    `terminated: ...` and 143 (128 + SIGTERM)."""
    if _terminated:
        _errors().print(f"terminated: {what_is_kept}", markup=False, soft_wrap=True)
        return typer.Exit(128 + int(signal.SIGTERM))
    _errors().print(f"interrupted: {what_is_kept}", markup=False, soft_wrap=True)
    return typer.Exit(128 + int(signal.SIGINT))


_terminated: list[int] = []
"""Not empty once SIGTERM was received (`_terminate_as_interrupt`)."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch system's stop: Slurm, systemd, `docker stop`, `timeout`) stops the
    run as Ctrl-C does: KeyboardInterrupt in this process (once; a second SIGTERM meanwhile
    is ignored, so that the run's cleanup ends), `finally` blocks remove the temporary files
    and close the workers, and the command says what is kept (`_interrupted`). Main thread
    only (a signal handler can be set there alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    command = os.getpid()

    def stop(signal_number: int, _frame: FrameType | None) -> None:
        if os.getpid() != command:
            # A process forked from the command before it set its own handling: it ends as
            # SIGTERM ends a process without a handler (raising here printed the command's
            # KeyboardInterrupt traceback, and an exception would unwind the fork's copy of
            # the command's stack).
            signal.signal(signal_number, signal.SIG_DFL)
            os.kill(os.getpid(), signal_number)
            return
        if not _terminated:
            _terminated.append(signal_number)
            raise KeyboardInterrupt

    def interrupt(_signal_number: int, _frame: FrameType | None) -> None:
        if os.getpid() == command:
            raise KeyboardInterrupt
        # A worker just forked, before it ignores SIGINT as every worker does (the command
        # stops them): ignored here too, where the default handler printed a traceback.

    _terminated.clear()
    previous = signal.signal(signal.SIGTERM, stop)
    previous_interrupt = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        signal.signal(
            signal.SIGINT,
            signal.default_int_handler if previous_interrupt is None else previous_interrupt,
        )


def changes(criteria: Path, mappings: list[Path]) -> Iterator[object]:
    """Yield once per save (debounced) of the criteria file or a file under `mappings`."""
    from watchfiles import watch

    def wanted(_change: object, path: str) -> bool:
        changed = Path(path)
        return changed == criteria or any(
            changed == mapping or mapping in changed.parents for mapping in mappings
        )

    folders = {criteria.parent, *(m if m.is_dir() else m.parent for m in mappings)}
    yield from watch(*sorted(folders), watch_filter=wanted, raise_interrupt=True)


@dataclass(frozen=True)
class ServerExport:
    """The `--server` options: which Bulk Data export to run, with which credentials."""

    server: str
    level: str
    group: str | None
    since: str | None
    token_env: str | None
    token_file: Path | None
    auth_config: Path | None
    max_answer_mib: int | None


def _export(criteria: Path, export: ServerExport, folder: Path, quiet: bool) -> int:
    """Run (or resume, or reuse) the server's export into `folder`; the error issues it had.

    The export asks for the types a cohort run keeps (`_type`: the search pushdown). Exits
    with status 2 when the criteria, the options or the server fail.
    """
    from engine.cohort import kept_types
    from engine.fhir_http import ServerLimits, auth_from_options
    from engine.sources.bulk_export import (
        ERRORS_FOLDER,
        ExportLevel,
        ExportProgress,
        ExportRequest,
        check_since_base,
        export_to_folder,
    )
    from engine.sources.bulk_since import apply_since_export
    from engine.trial import load_trial

    errors = _errors()

    def show(progress: ExportProgress) -> None:
        if not quiet:
            done = (
                f" ({progress.files_done}/{progress.files_total})" if progress.files_total else ""
            )
            errors.print(
                f"export: {progress.stage}{done} {progress.message}".rstrip(), markup=False
            )

    try:
        level = cast(ExportLevel, export.level)
        # the arguments first (a --since that is no instant, a group export without --group),
        # then what the folder must hold
        ExportRequest.build(export.server, level=level, group_id=export.group, since=export.since)
        if export.since is not None:
            check_since_base(folder, export.since)
        types = kept_types(load_trial(criteria))
        auth = auth_from_options(
            export.token_env, export.token_file, export.auth_config, server=export.server
        )
        limits = ServerLimits.of(max_answer_mib=export.max_answer_mib)
        if export.since is None:
            result = export_to_folder(
                export.server,
                folder,
                types=types,
                level=level,
                group_id=export.group,
                auth=auth,
                limits=limits,
                progress=show,
            )
        else:  # the changes, merged into the complete export in the folder
            result = apply_since_export(
                export.server,
                folder,
                export.since,
                types=types,
                level=level,
                group_id=export.group,
                auth=auth,
                limits=limits,
                progress=show,
            )
    except TrialsieveError as error:
        print_error(error)
        raise typer.Exit(2) from None
    except OSError as error:
        raise fail(_file_problem(error, folder), code=1) from None
    if export.since is not None and not quiet:
        errors.print(
            f"export: the changes since {export.since} (transaction time "
            f"{result.transaction_time}) applied onto the complete export in {folder}",
            soft_wrap=True,
            markup=False,
        )
    if result.types_left_out:
        errors.print(
            f"export: the server does not export {', '.join(result.types_left_out)} (not "
            "declared in its CapabilityStatement, or refused at kick-off); criteria over them "
            "are unknown (not exported by the server)",
            soft_wrap=True,
            markup=False,
        )
    failures = [issue for issue in result.issues if issue.severity in ("error", "fatal")]
    for issue in result.issues[:_EXPORT_ISSUES_SHOWN]:
        errors.print(f"export: {issue}", soft_wrap=True, markup=False)
    if result.issues:
        errors.print(
            f"[bold red]the export reported {len(result.issues)} issues[/] "
            f"({len(failures)} errors): see {escape(str(folder / ERRORS_FOLDER))}"
        )
    return len(failures)


_EXPORT_ISSUES_SHOWN = 20


def _file_problem(error: OSError, folder: Path) -> str:
    """What an OSError of a run says, first the file it names (for a rename, the target),
    else the folder written into."""
    where = error.filename2 or error.filename or folder
    return f"{where}: {error.strerror or type(error).__name__}"


def summary_table(summary: CohortSummary) -> Table:
    """The end-of-run summary: patients by status, speed, pre-filter, problems."""
    table = Table(title=f"Cohort written to {summary.out_dir}/", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("patients", f"{summary.patients:,}")
    for status, count in summary.statuses.items():
        table.add_row(f"  {status}", f"{count:,}")
    if summary.deceased:
        table.add_row("  deceased (ineligible, attrition step 0)", f"{summary.deceased:,}")
    how = "evaluated in full" if summary.full else "evaluated from their preview"
    table.add_row(
        f"settled by the pre-filter ({how})",
        f"{summary.settled_by_prefilter:,}",
    )
    table.add_row("input problems", f"{summary.problems:,}")
    table.add_row("  lines affected", f"{summary.lines_affected:,}")
    table.add_row("  patients affected", f"{summary.patients_affected:,}")
    reused = f" ({summary.partitions_reused} reused)" if summary.partitions_reused else ""
    table.add_row("partitions", f"{summary.partitions}{reused}")
    if summary.partitions_from_store:
        table.add_row("  re-run from stored outcomes", f"{summary.partitions_from_store}")
        table.add_row("  criterion outcomes evaluated", f"{summary.criteria_evaluated or 0:,}")
    table.add_row("time", f"{summary.seconds:.1f} s")
    table.add_row("patients/s", f"{summary.patients_per_second:,.0f}")
    table.add_row("MB/s", f"{summary.megabytes_per_second:,.1f}")
    return table
