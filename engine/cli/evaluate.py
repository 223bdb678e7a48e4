"""`trialsieve evaluate`: screen patients from Bundle files or a FHIR server.

Patients come from Bundle files (`--bundle`) or from a FHIR R4 server (`--server URL
--patient ID ...`, pulled with `FhirServerSource`: only the resource types the criteria
need); each is screened with `engine.screening.screen_patient`, and then

- by default its transaction Bundle (ResearchStudy, ResearchSubject, DetectedIssue) goes to
  standard output (one patient) or to `--output` (a file, or a folder for several);
- with `--server --write`, it is written to the server with `FhirServerSink` (updates in
  place); with `--dry-run`, the Bundle `--write` would send is printed and nothing written.

A bearer token comes from `--token-env NAME` (an environment variable) or `--token-file PATH`,
never from the command line itself. Exit status: 0 when every patient was evaluated (and
written), whatever their status; 1 when some inputs could not be (each one is named); 2 for
bad criteria, mappings, attestations or arguments.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from engine.cli.console import (
    fail,
    load_trial_and_answers,
    parse_day,
    patient_ids_option,
    print_error,
)
from engine.cli.options import (
    AsOfOption,
    AttestationsOption,
    AuthConfigOption,
    BundleOption,
    CriteriaArgument,
    DryRunOption,
    EverythingOption,
    ExplainOption,
    MaxAnswerMibOption,
    MaxPagesOption,
    OutputOption,
    PageSizeOption,
    PatientOption,
    ReportOption,
    ServerOption,
    TokenEnvOption,
    TokenFileOption,
    WriteOption,
)
from engine.errors import InputError, Location, ServerError, TrialsieveError

if TYPE_CHECKING:
    from engine.attestations import Attestations
    from engine.evaluate import CompiledCriteria, PatientEvaluation
    from engine.screening import Screening
    from engine.sources import PatientResources

PatientReader = tuple[str | None, Callable[[], "PatientResources"]]
"""A patient to screen: how errors about it are prefixed (None: the error names the file),
and how to read their resources."""


def evaluate(
    criteria: CriteriaArgument,
    bundle: BundleOption = None,
    as_of: AsOfOption = None,
    output: OutputOption = None,
    attestations: AttestationsOption = None,
    explain: ExplainOption = False,
    server: ServerOption = None,
    patient: PatientOption = None,
    write: WriteOption = False,
    dry_run: DryRunOption = False,
    token_env: TokenEnvOption = None,
    token_file: TokenFileOption = None,
    auth_config: AuthConfigOption = None,
    everything: EverythingOption = True,
    page_size: PageSizeOption = None,
    report: ReportOption = None,
    max_pages: MaxPagesOption = None,
    max_answer_mib: MaxAnswerMibOption = None,
) -> None:
    """Evaluate patients and write a ResearchSubject + DetectedIssue transaction Bundle each.

    Patients come from Bundle files (--bundle) or from a FHIR server (--server, --patient);
    with a server, --write writes the results back (see docs/server.md).
    """
    if report is not None and report.exists() and not report.is_dir():
        raise fail(f"{report}: --report must be a folder (of one page per patient)")
    if server is not None:
        if bundle:
            raise fail("give --bundle or --server, not both")
        _evaluate_on_server(
            criteria=criteria,
            server=server,
            patient=patient,
            as_of=as_of,
            output=output,
            attestations=attestations,
            explain=explain,
            write=write,
            dry_run=dry_run,
            token_env=token_env,
            token_file=token_file,
            auth_config=auth_config,
            everything=everything,
            page_size=page_size,
            report=report,
            max_pages=max_pages,
            max_answer_mib=max_answer_mib,
        )
        return
    if not bundle:
        raise fail("give --bundle FILE_OR_FOLDER, or --server URL --patient ID")
    if patient or write or dry_run or token_env or token_file or auth_config:
        raise fail(
            "--patient, --write, --dry-run, --token-env, --token-file and --auth-config "
            "need --server"
        )
    if max_pages is not None or max_answer_mib is not None:
        raise fail("--max-pages and --max-answer-mib need --server")
    day = parse_day(as_of)
    trial, answers = load_trial_and_answers(criteria, attestations)
    from engine.sources import BundleFileSource, read_bundle_file
    from engine.sources.bundle import SharedBundleResources, shared_bundle_files

    try:
        # every path given must be a file or a folder holding *.json files: a folder
        # given by mistake (empty, or of NDJSON) is refused, not run on nobody
        files = BundleFileSource(*bundle).files()
    except InputError as error:
        raise fail(error) from None
    several = len(files) > 1 or any(path.is_dir() for path in bundle)
    if several and output is None:
        raise fail("--output FOLDER is required when evaluating several patients")
    if several and output is not None and output.exists() and not output.is_dir():
        raise fail(f"{output}: --output must be a folder when evaluating several patients")
    # Bundles of shared resources (Medication, Organization, ...: no Patient) among several
    # files, whatever their names: each patient gets those their Bundle refers to
    shared_files = set(shared_bundle_files(files)) if several else set()
    unusable: list[InputError] = []
    shared = SharedBundleResources.from_files(
        [file for file in files if file in shared_files], unusable.append
    )
    files = [file for file in files if file not in shared_files]
    if not files and not unusable:
        raise fail("no patient's Bundle found in " + ", ".join(map(str, bundle)))
    console = Console(stderr=output is None, highlight=False)
    _print_as_of(console, day, as_of is None, explain)
    quiet_bundle = explain and output is None

    def deliver(screening: Screening) -> None:
        if quiet_bundle:
            screening.transaction_bundle  # validated as when written  # noqa: B018
            return
        _emit(screening.transaction_bundle, output, screening.patient_id, several)
        if not several and output is not None:
            console.print(
                f"{screening.evaluation.patient_reference}: {screening.status.value}; "
                f"written to {output}",
                markup=False,
                soft_wrap=True,
            )

    first_file_of: dict[str, Path] = {}

    def read_once(file: Path) -> PatientResources:
        """The patient of `file`; InputError when an earlier file held the same patient (one
        result per patient: the first in file order is kept, as a cohort run keeps it)."""
        resources = read_bundle_file(file, shared)
        first = first_file_of.setdefault(resources.patient_id, file)
        if first != file:
            raise InputError(
                f"Patient/{resources.patient_id} is also in {first}, which was evaluated: "
                "this file is left out (one result per patient)",
                Location(file=str(file)),
            )
        return resources

    readers: list[PatientReader] = [(None, partial(_refuse, error)) for error in unusable]
    readers += [(None, partial(read_once, file)) for file in files]
    evaluations, failures = _screen_each(
        trial, day, answers, readers, deliver, explain, console, report
    )
    if several:
        from engine.cli.tables import print_summary_table

        print_summary_table(console, evaluations)
        count = len(evaluations)
        console.print(f"Results written to {output}/ ({count} patient{'' if count == 1 else 's'})")
    if quiet_bundle:
        console.print("(with --explain the Bundle is not printed; --output FILE writes it)")
    _warn_stale(console, evaluations)
    if failures:
        print_error(f"{failures} of {len(readers)} inputs could not be evaluated")
        raise typer.Exit(1)


def _evaluate_on_server(
    criteria: Path,
    server: str,
    patient: list[str] | None,
    as_of: str | None,
    output: Path | None,
    attestations: Path | None,
    explain: bool,
    write: bool,
    dry_run: bool,
    token_env: str | None,
    token_file: Path | None,
    auth_config: Path | None,
    everything: bool,
    page_size: int | None,
    report: Path | None,
    max_pages: int | None,
    max_answer_mib: int | None,
) -> None:
    """Evaluate patients on a FHIR server; print the results, or write them back (--write)."""
    day = parse_day(as_of)
    patient_ids = patient_ids_option(patient)
    if not patient_ids:
        raise fail("--patient ID is required with --server")
    if token_env and token_file:
        raise fail("give --token-env or --token-file, not both")
    prints_bundles = dry_run or not write
    several = len(patient_ids) > 1
    if prints_bundles and several and output is None:
        raise fail("--output FOLDER is required when printing Bundles of several patients")
    if several and output is not None and output.exists() and not output.is_dir():
        raise fail(f"{output}: --output must be a folder when evaluating several patients")
    trial, answers = load_trial_and_answers(criteria, attestations)
    from engine.fhir_http import ServerLimits, auth_from_options
    from engine.sinks import FhirServerSink
    from engine.sources import FhirServerClient, FhirServerSource
    from engine.sources.fhir_server import DEFAULT_PAGE_SIZE, resource_types_to_pull

    try:
        auth = auth_from_options(token_env, token_file, auth_config, server=server)
        limits = ServerLimits.of(max_pages, max_answer_mib)
        client = FhirServerClient(server, auth=auth, limits=limits)
    except TrialsieveError as error:
        raise fail(error) from None
    console = Console(stderr=prints_bundles and output is None, highlight=False)
    _print_as_of(console, day, as_of is None, explain)
    with client:
        try:
            client.capabilities()
        except ServerError as error:
            raise fail(error, code=1) from None
        source = FhirServerSource(
            client,
            patient_ids,
            resource_types_to_pull(trial.resource_types),
            page_size=page_size or DEFAULT_PAGE_SIZE,
            use_everything=everything,
        )
        sink = FhirServerSink(client)

        def deliver(screening: Screening) -> None:
            evaluation = screening.evaluation
            if dry_run:
                _emit(sink.transaction_for(evaluation), output, screening.patient_id, several)
            elif write:
                written = sink.write(evaluation)
                targets = ", ".join(entry.location or entry.request for entry in written)
                console.print(
                    f"Patient/{screening.patient_id}: {evaluation.status.value}; wrote {targets}",
                    markup=False,
                    soft_wrap=True,
                )
            else:
                _emit(screening.transaction_bundle, output, screening.patient_id, several)

        reported: set[tuple[str, str]] = set()

        def pull(patient_id: str) -> PatientResources:
            """The patient's resources; each type the server refused named once per run."""
            resources = source.pull(patient_id)
            for resource_type, why in resources.unavailable_types.items():
                if (resource_type, why) not in reported:
                    reported.add((resource_type, why))
                    message = f"{resource_type} {why}: criteria over it are unknown"
                    console.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)
            return resources

        readers: list[PatientReader] = [
            (f"Patient/{patient_id}", partial(pull, patient_id)) for patient_id in patient_ids
        ]
        evaluations, failures = _screen_each(
            trial, day, answers, readers, deliver, explain, console, report
        )
    if several:
        from engine.cli.tables import print_summary_table

        print_summary_table(console, evaluations)
    _warn_stale(console, evaluations)
    if failures:
        print_error(f"{failures} of {len(patient_ids)} patients could not be evaluated")
        raise typer.Exit(1)


def _screen_each(
    trial: CompiledCriteria,
    day: dt.date,
    answers: Attestations,
    patients: Iterable[PatientReader],
    deliver: Callable[[Screening], None],
    explain: bool,
    console: Console,
    report: Path | None = None,
) -> tuple[list[PatientEvaluation], int]:
    """Read, screen and deliver each patient; the evaluations done and how many failed.

    A patient that cannot be read, screened or delivered is named on standard error and
    skipped; `--explain` prints each evaluated patient's explanation, `--report FOLDER`
    writes each one's report page.
    """
    from engine.report.explanation import explain as explain_evaluation
    from engine.report.explanation import explanation_text
    from engine.report.page import report_page
    from engine.screening import screen_patient
    from engine.sinks import write_text

    evaluations: list[PatientEvaluation] = []
    failures = 0
    for label, read in patients:
        try:
            resources = read()
            screening = screen_patient(trial, resources, day, answers.get(resources.patient_id))
            deliver(screening)
            if report is not None:
                page = report / f"{screening.patient_id}.html"
                write_text(page, report_page(screening.evaluation), inside=report)
        except TrialsieveError as error:
            failures += 1
            print_error(error if label is None else f"{label}: {error}")
            continue
        evaluations.append(screening.evaluation)
        if explain:
            text = explanation_text(
                explain_evaluation(screening.evaluation), width=max(console.width, 60)
            )
            console.print(text, markup=False, highlight=False, soft_wrap=True)
    if report is not None and evaluations:
        console.print(f"Report pages written to {report}/", markup=False, soft_wrap=True)
    return evaluations, failures


def _print_as_of(console: Console, day: dt.date, defaulted: bool, explain: bool) -> None:
    """The day the criteria are evaluated on; with no --as-of, that it is today's date.

    With `--explain` each patient's explanation opens with the day, so the line is printed
    only when the day was defaulted (to say so)."""
    if explain and not defaulted:
        return
    note = " (today; give --as-of YYYY-MM-DD for a reproducible day)" if defaulted else ""
    console.print(f"As of {day.isoformat()}{note}", markup=False, soft_wrap=True)


def _warn_stale(console: Console, evaluations: list[PatientEvaluation]) -> None:
    """Warn when the newest data of most patients is older than the screening window."""
    from engine.report.explanation import stale_data_warning

    stale = [warning for e in evaluations if (warning := stale_data_warning(e)) is not None]
    if not stale or len(stale) * 2 <= len(evaluations):
        return
    if len(evaluations) == 1:
        message = stale[0]
    else:
        message = (
            f"for {len(stale)} of {len(evaluations)} patients the newest data is older than "
            f"the screening window; e.g. {stale[0]}"
        )
    console.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)


def _refuse(error: InputError) -> PatientResources:
    """A reader of a file that is no patient's Bundle: raises why (a Bundle without a Patient
    that holds a resource belonging to a patient)."""
    raise error


def _emit(bundle: dict[str, Any], output: Path | None, patient_id: str, several: bool) -> None:
    """A Bundle to standard output, or to `output` (a file, or `PATIENT_ID.json` in it)."""
    from engine.sinks import to_json, write_json

    if output is None:
        sys.stdout.buffer.write(to_json(bundle))
        sys.stdout.flush()
    else:
        write_json(
            output / f"{patient_id}.json" if several else output,
            bundle,
            inside=output if several else None,
        )
