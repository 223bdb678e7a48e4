"""`trialsieve demo`: evaluate patients through a FHIR server and write the results back.

Without `--server` the command starts a local sekmet-fhir (`EmbeddedServer`: a free loopback
port, a temporary folder), loads the example Bundles into it (`--examples`, default
`examples/patients` and `examples/synthea`, ids kept), evaluates every Patient on it, pulling
each with `FhirServerSource` and writing the ResearchStudy, ResearchSubject and DetectedIssue
back with `FhirServerSink`, prints the summary table, where the written ResearchSubjects are
and how many the server gives back, and stops the server (also on Ctrl-C, SIGTERM or an
error). With `--server URL` the same runs against any FHIR R4 server: nothing is loaded
unless `--load-examples`, and the patients are the `--patient` ids, or every Patient a paged
`Patient?_count=N` search finds.

Progress goes to standard error, the summary to standard output. Exit status: 0 when every
patient was evaluated and written, 1 when some were not (each is named) or the server could
not be started or reached, 2 for bad arguments, criteria or attestations, or sekmet-fhir not
installed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from engine.cli.console import (
    error_console,
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
    CriteriaArgument,
    DemoServerOption,
    ExamplesOption,
    LoadExamplesOption,
    MaxAnswerMibOption,
    MaxPagesOption,
    PageSizeOption,
    PatientOption,
    TokenEnvOption,
    TokenFileOption,
)
from engine.errors import EmbeddedServerError, ServerError, TrialsieveError

if TYPE_CHECKING:
    from engine.attestations import Attestations
    from engine.evaluate import CompiledCriteria, PatientEvaluation
    from engine.sources import FhirServerClient

DEFAULT_EXAMPLES = (Path("examples/patients"), Path("examples/synthea"))
"""The shipped example Bundles, relative to the working directory (a trialsieve checkout)."""

_SIGTERM_EXIT = 128 + int(signal.SIGTERM)


@dataclass
class DemoRun:
    """What one run did: the evaluations written, the ResearchSubject locations, failures."""

    evaluations: list[PatientEvaluation] = field(default_factory=list)
    subject_locations: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def demo(
    criteria: CriteriaArgument,
    server: DemoServerOption = None,
    patient: PatientOption = None,
    load_examples: LoadExamplesOption = False,
    examples: ExamplesOption = None,
    as_of: AsOfOption = None,
    attestations: AttestationsOption = None,
    token_env: TokenEnvOption = None,
    token_file: TokenFileOption = None,
    auth_config: AuthConfigOption = None,
    page_size: PageSizeOption = None,
    max_pages: MaxPagesOption = None,
    max_answer_mib: MaxAnswerMibOption = None,
) -> None:
    """Evaluate patients through a FHIR server (a local one by default), write the results."""
    from engine.fhir_http import ServerLimits, auth_from_options
    from engine.sources import FhirServerClient, FhirServerSource
    from engine.sources.fhir_server import DEFAULT_PAGE_SIZE

    page_size = page_size or DEFAULT_PAGE_SIZE
    day = parse_day(as_of)
    limited = max_pages is not None or max_answer_mib is not None
    if server is None and (
        patient or load_examples or token_env or token_file or auth_config or limited
    ):
        raise fail(
            "--patient, --load-examples, --token-env, --token-file, --auth-config, --max-pages "
            "and --max-answer-mib need --server"
        )
    if server is not None and examples and not load_examples:
        raise fail("--examples needs --load-examples with --server")
    loading = server is None or load_examples
    files = _example_files(examples or list(DEFAULT_EXAMPLES)) if loading else []
    trial, answers = load_trial_and_answers(criteria, attestations)
    patient_ids = patient_ids_option(patient)
    with _sigterm_as_exit(), _each_warning_once(logging.getLogger(FhirServerSource.__module__)):
        if server is None:
            run = _on_embedded_server(trial, answers, day, files, page_size)
        else:
            try:
                auth = auth_from_options(token_env, token_file, auth_config, server=server)
                limits = ServerLimits.of(max_pages, max_answer_mib)
                client = FhirServerClient(server, auth=auth, limits=limits)
            except TrialsieveError as error:
                raise fail(error) from None
            with client:
                run = _evaluate_and_write(
                    client, trial, answers, day, files, patient_ids, page_size
                )
                _show_results(client, trial, run, page_size)
    if run.failures:
        print_error("not loaded, evaluated, written or read back: " + ", ".join(run.failures))
        raise typer.Exit(1)


def _on_embedded_server(
    trial: CompiledCriteria,
    answers: Attestations,
    day: dt.date,
    files: Sequence[Path],
    page_size: int,
) -> DemoRun:
    """Start sekmet, load, evaluate, write, show; stop it whatever happens."""
    from engine.embedded_server import EmbeddedServer, sekmet_version

    try:
        version = sekmet_version()
    except EmbeddedServerError as error:
        raise fail(error) from None
    started = time.monotonic()
    embedded = EmbeddedServer()
    try:
        embedded.start()
        _progress(
            f"started sekmet-fhir {version} at {embedded.base_url} (pid {embedded.pid}, "
            f"folder {embedded.folder}) in {time.monotonic() - started:.1f} s"
        )
        with embedded.client() as client:
            run = _evaluate_and_write(client, trial, answers, day, files, [], page_size)
            _show_results(client, trial, run, page_size)
    except EmbeddedServerError as error:
        raise fail(error, code=1) from None
    finally:
        embedded.stop()
    _progress(
        f"stopped the server and deleted its folder; {time.monotonic() - started:.1f} s in all "
        "(give --server URL to keep results on a server of yours)"
    )
    return run


def _evaluate_and_write(
    client: FhirServerClient,
    trial: CompiledCriteria,
    answers: Attestations,
    day: dt.date,
    files: Sequence[Path],
    patient_ids: Sequence[str],
    page_size: int,
) -> DemoRun:
    """Load the files, then pull, evaluate and write back each patient."""
    from engine.screening import screen_patient
    from engine.sinks import FhirServerSink
    from engine.sources import FhirServerSource
    from engine.sources.fhir_server import patient_ids_on_server, resource_types_to_pull

    run = DemoRun()
    try:
        client.capabilities()
    except ServerError as error:
        raise fail(error, code=1) from None
    if files:
        _load(client, files, run)
    ids = list(patient_ids)
    if not ids:
        try:
            ids = patient_ids_on_server(client, page_size)
        except ServerError as error:
            raise fail(error, code=1) from None
        if not ids:
            raise fail(f"{client.base_url} holds no Patient to evaluate", code=1)
    _progress(f"evaluating {len(ids)} patients for {trial.trial.id} as of {day.isoformat()}")
    source = FhirServerSource(
        client, ids, resource_types_to_pull(trial.resource_types), page_size=page_size
    )
    sink = FhirServerSink(client)
    for position, patient_id in enumerate(ids, start=1):
        try:
            pulled = source.pull(patient_id)
            screening = screen_patient(trial, pulled, day, answers.get(pulled.patient_id))
            evaluation = screening.evaluation
            written = sink.write(evaluation)
        except TrialsieveError as error:
            run.failures.append(f"Patient/{patient_id}")
            print_error(f"Patient/{patient_id}: {error}")
            continue
        run.evaluations.append(evaluation)
        for entry in written:
            if entry.request.startswith(("PUT ResearchSubject", "POST ResearchSubject")):
                run.subject_locations[patient_id] = entry.location or entry.request.split()[-1]
        _progress(f"[{position}/{len(ids)}] Patient/{patient_id}: {evaluation.status.value}")
    return run


def _load(client: FhirServerClient, files: Sequence[Path], run: DemoRun) -> None:
    from engine.embedded_server import TransactionLoader

    started = time.monotonic()
    _progress(f"loading {len(files)} Bundles into {client.base_url}")
    loader = TransactionLoader(client, keep_ids=True)
    resources = 0
    for path in files:
        try:
            resources += len(loader.load(path).written)
        except TrialsieveError as error:
            run.failures.append(str(path))
            print_error(error)
    _progress(f"loaded {resources} resources in {time.monotonic() - started:.1f} s")


def _show_results(
    client: FhirServerClient, trial: CompiledCriteria, run: DemoRun, page_size: int
) -> None:
    """The summary table, then where the ResearchSubjects are and how many were read back."""
    from engine.cli.tables import print_summary_table
    from engine.sinks.fhir_server import research_subjects_on_server, subject_patient_id

    console = Console(highlight=False)
    if run.evaluations:
        print_summary_table(console, run.evaluations)
    patient_ids = [evaluation.patient_id for evaluation in run.evaluations]
    try:
        subjects = research_subjects_on_server(client, trial.trial, patient_ids, page_size)
    except ServerError as error:
        run.failures.append("reading back the ResearchSubjects")
        print_error(error)
        return
    console.print(
        f"{len(subjects)} ResearchSubjects for {trial.trial.id} read back from "
        f"{client.base_url}/ResearchSubject ({len(run.evaluations)} patients written)",
        markup=False,
        soft_wrap=True,
    )
    showcase = _showcase(run)
    if showcase is not None:
        evaluation, location = showcase
        console.print(
            f"e.g. Patient/{evaluation.patient_id} ({evaluation.status.value}): "
            f"{_without_history(location, client.base_url)}",
            markup=False,
            soft_wrap=True,
        )
    missing = sorted(set(patient_ids) - {subject_patient_id(s) for s in subjects})
    if missing:
        run.failures.extend(f"Patient/{patient_id} (not read back)" for patient_id in missing)


def _showcase(run: DemoRun) -> tuple[PatientEvaluation, str] | None:
    """The written ResearchSubject of the patient with the most interesting status."""
    written = [e for e in run.evaluations if e.patient_id in run.subject_locations]
    if not written:
        return None
    from engine.evaluate import SubjectStatus

    # The status whose ResearchSubject is shown first: the most interesting for a reader.
    order = (
        SubjectStatus.ELIGIBLE,
        SubjectStatus.CANDIDATE,
        SubjectStatus.POTENTIAL_CANDIDATE,
        SubjectStatus.INELIGIBLE,
    )
    best = min(written, key=lambda evaluation: order.index(evaluation.status))
    return best, run.subject_locations[best.patient_id]


def _without_history(location: str, base_url: str) -> str:
    """`[base/]ResearchSubject/ID[/_history/N]` as the absolute URL of the resource."""
    path = location.split("/_history/", 1)[0]
    return path if path.startswith(("http://", "https://")) else f"{base_url}/{path}"


def _example_files(paths: Sequence[Path]) -> list[Path]:
    from engine.embedded_server import bundle_files

    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise fail(
            f"{', '.join(missing)}: no such file or folder (run in a trialsieve checkout, or "
            "give --examples)"
        )
    files = bundle_files(paths)
    if not files:
        raise fail("no Bundle files (*.json) in " + ", ".join(map(str, paths)))
    return files


class _FirstOfEachKind(logging.Filter):
    """Lets through the first record of each message template (the demo pulls 28 patients
    from the same server, whose warnings would otherwise repeat per patient).
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.levelno, str(record.msg))
        if kind in self.seen:
            return False
        self.seen.add(kind)
        return True


@contextlib.contextmanager
def _each_warning_once(logger: logging.Logger) -> Iterator[None]:
    only_first = _FirstOfEachKind()
    logger.addFilter(only_first)
    try:
        yield
    finally:
        logger.removeFilter(only_first)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit, so that `finally` blocks stop the server (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signal_number: int, frame: FrameType | None) -> None:
        raise SystemExit(_SIGTERM_EXIT)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _progress(message: str) -> None:
    error_console().print(message, markup=False, soft_wrap=True)
