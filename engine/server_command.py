"""Evaluate patients on a live FHIR R4 server: pull, evaluate, and print or write back.

`evaluate_on_server` is a typer command function: `trialsieve evaluate CRITERIA --server URL
--patient ID [--patient ID ...] [--write] [--dry-run]`. It pulls each patient with
`FhirServerSource` (only the resource types the criteria need), evaluates exactly as
`trialsieve evaluate --bundle` does, and then

- by default prints (or writes to `--output`) the same transaction Bundle `--bundle` gives;
- with `--write`, writes it to the server with `FhirServerSink` (updates in place);
- with `--dry-run`, prints the Bundle `--write` would send, and writes nothing.

A bearer token comes from `--token-env NAME` (an environment variable) or `--token-file PATH`,
never from the command line itself. Exit status as for `evaluate`: 0 every patient evaluated
(and written), 1 some could not be (each is named), 2 bad criteria, attestations or arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from engine.command_options import (
    AsOfOption,
    AttestationsOption,
    CriteriaArgument,
    ExplainOption,
    OutputOption,
    fail,
    load_trial_and_answers,
    parse_day,
    print_error,
)
from engine.errors import ServerError, TrialsieveError
from engine.evaluate import PatientEvaluation
from engine.explain import criteria_table, summary_table
from engine.screening import screen_patient
from engine.sinks import FhirServerSink, to_json, write_json
from engine.sources import FhirServerClient, FhirServerSource
from engine.sources.fhir_server import DEFAULT_PAGE_SIZE, resource_types_to_pull
from engine.sources.smart import auth_from_options

# Options shared with `trialsieve evaluate`, which passes them on when --server is given.
ServerOption = Annotated[
    str | None,
    typer.Option(help="Base URL of a FHIR R4 server to read the patients from (with --patient)."),
]
PatientOption = Annotated[
    list[str] | None,
    typer.Option("--patient", help="A patient id on the server (with --server); repeat for more."),
]
WriteOption = Annotated[
    bool,
    typer.Option(
        "--write",
        help="Write the ResearchStudy, ResearchSubject and DetectedIssue to the server "
        "(with --server); a re-run updates them in place.",
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print the transaction Bundle --write would send; write nothing."
    ),
]
TokenEnvOption = Annotated[
    str | None,
    typer.Option(help="Name of the environment variable that holds a bearer token for the server."),
]
TokenFileOption = Annotated[
    Path | None, typer.Option(help="File whose first line is a bearer token for the server.")
]
AuthConfigOption = Annotated[
    Path | None,
    typer.Option(
        help="TOML file with SMART Backend Services settings (client id, private key, ...); "
        "see docs/server.md."
    ),
]
EverythingOption = Annotated[
    bool,
    typer.Option(
        "--everything/--no-everything",
        help="Pull with Patient/$everything when the server declares it (default), "
        "or always with one search per resource type.",
    ),
]
PageSizeOption = Annotated[
    int, typer.Option(min=1, help="Resources per page asked of the server (_count).")
]


def evaluate_on_server(
    criteria: CriteriaArgument,
    server: Annotated[str, typer.Option(help="Base URL of the FHIR R4 server.")],
    patient: PatientOption = None,
    as_of: AsOfOption = None,
    output: OutputOption = None,
    attestations: AttestationsOption = None,
    explain: ExplainOption = False,
    write: WriteOption = False,
    dry_run: DryRunOption = False,
    token_env: TokenEnvOption = None,
    token_file: TokenFileOption = None,
    auth_config: AuthConfigOption = None,
    everything: EverythingOption = True,
    page_size: PageSizeOption = DEFAULT_PAGE_SIZE,
) -> None:
    """Evaluate patients on a FHIR server; print the results, or write them back (--write)."""
    day = parse_day(as_of)
    patient_ids = list(dict.fromkeys(patient or ()))
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
    try:
        auth = auth_from_options(token_env, token_file, auth_config, server=server)
        client = FhirServerClient(server, auth=auth)
    except TrialsieveError as error:
        raise fail(error) from None
    console = Console(stderr=prints_bundles and output is None, highlight=False)
    evaluations: list[PatientEvaluation] = []
    failures = 0
    with client:
        try:
            client.capabilities()
        except ServerError as error:
            raise fail(error, code=1) from None
        source = FhirServerSource(
            client,
            patient_ids,
            resource_types_to_pull(trial.resource_types),
            page_size=page_size,
            use_everything=everything,
        )
        sink = FhirServerSink(client)
        for patient_id in patient_ids:
            try:
                pulled = source.pull(patient_id)
                screening = screen_patient(trial, pulled, day, answers.get(pulled.patient_id))
                evaluation = screening.evaluation
                if dry_run:
                    _emit(sink.transaction_for(evaluation), output, patient_id, several)
                elif write:
                    written = sink.write(evaluation)
                    targets = ", ".join(entry.location or entry.request for entry in written)
                    console.print(
                        f"Patient/{patient_id}: {evaluation.status.value}; wrote {targets}",
                        markup=False,
                        soft_wrap=True,
                    )
                else:
                    _emit(screening.transaction_bundle, output, patient_id, several)
            except TrialsieveError as error:
                failures += 1
                print_error(f"Patient/{patient_id}: {error}")
                continue
            evaluations.append(evaluation)
            if explain:
                console.print(criteria_table(evaluation))
    if several:
        console.print(summary_table(evaluations))
    if failures:
        print_error(f"{failures} of {len(patient_ids)} patients could not be evaluated")
        raise typer.Exit(1)


def _emit(bundle: dict[str, Any], output: Path | None, patient_id: str, several: bool) -> None:
    if output is None:
        sys.stdout.buffer.write(to_json(bundle))
        sys.stdout.flush()
    else:
        write_json(
            output / f"{patient_id}.json" if several else output,
            bundle,
            inside=output if several else None,
        )
