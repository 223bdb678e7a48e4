"""The `trialsieve` command line: evaluate patients, lint criteria and mappings.

Only this module turns errors into exit codes: 0 when every patient was evaluated (whatever
their status), 1 when some inputs could not be evaluated (each one is named), 2 for bad
criteria, mappings, attestations or arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from engine import __version__
from engine.cohort.command import cohort
from engine.command_options import (
    AsOfOption,
    AttestationsOption,
    CriteriaArgument,
    ExplainOption,
    OutputOption,
    error_console,
    fail,
    load_trial_and_answers,
    parse_day,
    print_error,
)
from engine.demo import demo
from engine.errors import TrialsieveError
from engine.evaluate import PatientEvaluation
from engine.explain import criteria_table, summary_table
from engine.screening import screen_patient
from engine.server_command import (
    AuthConfigOption,
    DryRunOption,
    EverythingOption,
    PageSizeOption,
    PatientOption,
    ServerOption,
    TokenEnvOption,
    TokenFileOption,
    WriteOption,
    evaluate_on_server,
)
from engine.service.commands import serve, subscribe
from engine.sinks import to_json, write_json
from engine.sources import read_bundle_file
from engine.sources.fhir_server import DEFAULT_PAGE_SIZE

app = typer.Typer(
    name="trialsieve",
    help="FHIR-based clinical-trial eligibility engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_SKIPPED_PREFIXES = ("hospitalInformation", "practitionerInformation")


def _bundle_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*.json")):
                if not file.name.startswith(_SKIPPED_PREFIXES):
                    yield file
        else:
            yield path


@app.command()
def evaluate(
    criteria: CriteriaArgument,
    bundle: Annotated[
        list[Path] | None,
        typer.Option(help="A patient Bundle (JSON) or a folder of them; repeat for more."),
    ] = None,
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
    page_size: PageSizeOption = DEFAULT_PAGE_SIZE,
) -> None:
    """Evaluate patients and write a ResearchSubject + DetectedIssue transaction Bundle each.

    Patients come from Bundle files (--bundle) or from a FHIR server (--server, --patient);
    with a server, --write writes the results back (see docs/server.md).
    """
    if server is not None:
        if bundle:
            raise fail("give --bundle or --server, not both")
        evaluate_on_server(
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
        )
        return
    if not bundle:
        raise fail("give --bundle FILE_OR_FOLDER, or --server URL --patient ID")
    if patient or write or dry_run or token_env or token_file or auth_config:
        raise fail(
            "--patient, --write, --dry-run, --token-env, --token-file and --auth-config "
            "need --server"
        )
    day = parse_day(as_of)
    trial, answers = load_trial_and_answers(criteria, attestations)
    files = list(_bundle_files(bundle))
    if not files:
        raise fail("no Bundle files found in " + ", ".join(map(str, bundle)))
    several = len(files) > 1 or any(path.is_dir() for path in bundle)
    if several and output is None:
        raise fail("--output FOLDER is required when evaluating several patients")
    if several and output is not None and output.exists() and not output.is_dir():
        raise fail(f"{output}: --output must be a folder when evaluating several patients")
    console = Console(stderr=output is None, highlight=False)
    evaluations: list[PatientEvaluation] = []
    failures = 0
    for file in files:
        try:
            resources = read_bundle_file(file)
            screening = screen_patient(trial, resources, day, answers.get(resources.patient_id))
            evaluation = screening.evaluation
            result = screening.transaction_bundle
            if output is None:
                sys.stdout.buffer.write(to_json(result))
            else:
                target = output / f"{evaluation.patient_id}.json" if several else output
                write_json(target, result, inside=output if several else None)
        except TrialsieveError as error:
            failures += 1
            print_error(error)
            continue
        evaluations.append(evaluation)
        if explain:
            console.print(criteria_table(evaluation))
    if several:
        console.print(summary_table(evaluations))
        console.print(f"Results written to {output}/ ({len(evaluations)} patients)")
    if failures:
        print_error(f"{failures} of {len(files)} inputs could not be evaluated")
        raise typer.Exit(1)


@app.command()
def lint(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Criteria and mapping files or folders (default: criteria mappings)."),
    ] = None,
) -> None:
    """Validate criteria and mapping files and cross-check the concepts criteria use."""
    from engine.lint import format_problems, has_errors, lint_paths

    targets = paths or [Path("criteria"), Path("mappings")]
    problems = lint_paths(targets)
    if problems:
        error_console().print(format_problems(problems), soft_wrap=True, markup=False)
    if has_errors(problems):
        raise typer.Exit(1)
    Console(highlight=False).print(f"ok: {', '.join(map(str, targets))}")


app.command()(cohort)
app.command()(demo)
app.command()(serve)
app.command()(subscribe)


@app.command()
def version() -> None:
    """Print the version."""
    print(f"trialsieve {__version__}")
