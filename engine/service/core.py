"""What the service does, without HTTP: evaluate a request, answer a CDS Hooks call,
re-evaluate a patient after a notification, check readiness.

Every method is synchronous (FHIR servers are called with the engine's blocking client) and
runs in a worker thread. Errors leave as `ApiError` with the HTTP status and an
OperationOutcome naming the request field, the server or the request at fault.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import orjson

from engine.errors import InputError, ServerError, ServiceConfigError, TrialsieveError
from engine.evaluate import PatientEvaluation
from engine.fhir_http import ContextBearerToken, load_smart_auth
from engine.report.page import report_page
from engine.screening import screen_patient
from engine.service.auth import ApiAuthenticator
from engine.service.cds_hooks import (
    REPORT_PATH,
    Prefetched,
    assemble,
    card,
    check_fhir_server,
    feedback_problems,
    patient_id_of,
    prefetch_templates,
    read_prefetch,
    unresolved_medications,
)
from engine.service.evaluation import (
    evaluation_json,
    pick_trial,
    pull_patient,
    read_attestations,
)
from engine.service.fhir_json import check_fhir_resource
from engine.service.logs import elapsed_ms, log_event
from engine.service.models import CdsFeedback, CdsHookRequest, EvaluateRequest
from engine.service.notifications import (
    is_own,
    notification_events,
    notification_targets,
    patient_of,
)
from engine.service.problems import ApiError, check_fhir_id, error_for, server_failure_summary
from engine.service.report_links import report_links_of
from engine.service.settings import ServiceSettings
from engine.service.subscription_changes import (
    SERVICE_WIDE,
    ChangeQuery,
    ChangeTimes,
    EventCounts,
    MissedEvents,
    change_queries,
    timestamp,
)
from engine.service.trials import LoadedTrial, TrialRegistry
from engine.sinks import FhirServerSink
from engine.sources import (
    BearerToken,
    FhirServerClient,
    FhirServerSource,
    PatientResources,
    RetryPolicy,
    parse_bundle,
)
from engine.sources.fhir_server import is_refusal, outcome_words, search_outcome

READY_PROBE = RetryPolicy(attempts=1, timeout=3.0, give_up_after=3.0)
MAX_REQUEST_SERVERS = 16
"""fhirServers whose clients (and CapabilityStatements) are kept; the least recent goes first."""
REQUEST_TOKEN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trialsieve_fhir_authorization", default=None
)
"""The fhirAuthorization access token of the CDS Hooks call being served."""
Result = TypeVar("Result")


class Service:
    """The loaded trials, the configured FHIR server (if any) and what the API does with them."""

    def __init__(
        self,
        settings: ServiceSettings,
        trials: TrialRegistry,
        authenticator: ApiAuthenticator,
    ) -> None:
        self.settings = settings
        self.trials = trials
        self.authenticator = authenticator
        self.report_links = report_links_of(settings)
        self._server_auth = _server_auth(settings)
        self.fhir: FhirServerClient | None = (
            FhirServerClient(
                settings.fhir_server,
                auth=self._server_auth,
                retry=settings.fhir_retry,
                limits=settings.fhir_limits,
            )
            if settings.fhir_server
            else None
        )
        self._request_clients: OrderedDict[str, FhirServerClient] = OrderedDict()
        self._clients_lock = threading.Lock()
        self._change_times = ChangeTimes(dt.datetime.now(dt.UTC), settings.notification_state)
        self._ready_lock = threading.Lock()
        self._last_probe: tuple[float, str | None] | None = None

    def close(self) -> None:
        if self.fhir is not None:
            self.fhir.close()
        with self._clients_lock:
            for client in self._request_clients.values():
                client.close()
            self._request_clients.clear()

    def require_server(self, purpose: str) -> FhirServerClient:
        """The configured FHIR server; 409 when there is none."""
        if self.fhir is None:
            raise ApiError.of(
                409,
                "not-supported",
                f"{purpose} needs a FHIR server, and this service is configured without one "
                "(trialsieve serve --server URL)",
            )
        return self.fhir

    # ----------------------------------------------------------------------- POST /evaluate

    def evaluate(self, request: EvaluateRequest, path_trial: str | None) -> dict[str, Any]:
        """Evaluate the request's patient (pulled, or the inline Bundle); write back if asked."""
        started = time.perf_counter()
        if path_trial is not None and request.trial not in (None, path_trial):
            raise ApiError.of(
                400,
                "invalid",
                f"trial is {request.trial} in the body but {path_trial} in the path",
                "trial",
            )
        trial = pick_trial(self.trials, path_trial or request.trial)
        if (request.patient is None) == (request.bundle is None):
            raise ApiError.of(
                400,
                "required",
                "give patient (an id on the configured FHIR server) or bundle (the patient's "
                "data), not both",
                "patient",
                "bundle",
            )
        client: FhirServerClient | None = None
        if request.bundle is not None:
            if request.write:
                raise ApiError.of(
                    400,
                    "not-supported",
                    "write needs patient (pulled from the server); results for an inline "
                    "bundle are returned, not written",
                    "write",
                )
            resources = _parse_inline_bundle(request.bundle)
        else:
            assert request.patient is not None
            check_fhir_id(request.patient, "patient")
            client = self.require_server("evaluating a patient by id")
            resources = _serving(
                lambda: pull_patient(
                    client, request.patient or "", trial.resource_types, self.settings.page_size
                )
            )
        answers = {
            **trial.attestations.get(resources.patient_id, {}),
            **read_attestations(trial, request.attestations, resources.patient_id),
        }
        day = request.as_of or self.settings.day()
        screening = _serving(lambda: screen_patient(trial.criteria, resources, day, answers))
        evaluation = screening.evaluation
        written = None
        if request.write:
            assert client is not None
            sink = FhirServerSink(client)
            written = _serving(lambda: sink.write(evaluation))
        log_event(
            logging.INFO,
            "patient evaluated",
            trial=trial.id,
            source="bundle" if request.bundle is not None else "server",
            status=evaluation.status.value,
            written=written is not None,
            duration_ms=elapsed_ms(started),
        )
        return evaluation_json(screening, written)

    # ----------------------------------------------------------------------- CDS Hooks

    def cds_call(
        self, service_id: str, request: CdsHookRequest, base_url: str | None = None
    ) -> dict[str, Any]:
        """The cards for a patient-view call of the service `service_id` (a trial id).

        The card links to `report_url_template`, else (given the service's `base_url`) to
        the service's own report page of the patient, by a link signed for a short time
        (`engine.service.report_links`: a browser opens it without the API token).
        """
        started = time.perf_counter()
        trial = self.trials.get(service_id)
        if trial is None:
            raise ApiError.of(404, "not-found", f"no CDS service {service_id}; see /cds-services")
        patient_id = patient_id_of(request)
        if request.fhir_authorization is not None and request.fhir_server is None:
            # CDS Hooks 2.0, "Calling a CDS Service": "If fhirAuthorization is provided, this
            # field [fhirServer] is REQUIRED."
            raise ApiError.of(
                400,
                "required",
                "fhirServer is required when fhirAuthorization is given",
                "fhirServer",
            )
        called_server: str | None = None
        if request.fhir_server is not None:
            # Checked on every call, not only when something must be fetched: a full prefetch
            # with a fhirServer that is not allowed (or not a FHIR base URL) is refused too.
            called_server, _ = check_fhir_server(
                request.fhir_server,
                self.settings.fhir_server_allow_list(),
                self.settings.allow_any_fhir_server,
            )
        prefetched = read_prefetch(trial, request.prefetch, patient_id)
        fetched = bool(prefetched.missing_types)
        resources: PatientResources | None = None
        if prefetched.missing_types or unresolved_medications(prefetched.entries):
            if request.fhir_server is None:
                if prefetched.missing_types:
                    raise _missing_prefetch(trial, prefetched)
            else:
                with self._request_server(request) as client:
                    resources = _fetching(
                        lambda: self._complete(client, trial, patient_id, prefetched)
                    )
        if resources is None:
            resources = _serving(
                lambda: assemble(
                    prefetched.entries,
                    f"CDS Hooks call {request.hook_instance}",
                    prefetched.unavailable,
                    prefetched.problems,
                ),
                "prefetch",
            )
        answers = trial.attestations.get(resources.patient_id)
        evaluation = _serving(
            lambda: screen_patient(trial.criteria, resources, self.settings.day(), answers)
        ).evaluation
        template = self.settings.report_url_template
        configured = self.settings.fhir_server
        if (
            template is None
            and base_url is not None
            and configured is not None
            and called_server in (None, configured.rstrip("/"))
        ):
            # The service's own report page pulls from the configured server: linked only when
            # the call's record is that server's (else the card and the page could disagree).
            # The clinician's browser opens it without the API token: the link is signed.
            template = base_url.rstrip("/") + "/" + REPORT_PATH
            if not self.authenticator.anonymous:
                template += "?" + self.report_links.query(trial.id, evaluation.patient_id)
        answer = card(evaluation, template)
        # The hook instance and the card uuid let feedback on the card ("cds card feedback")
        # be matched to the call that answered it; neither identifies the patient.
        log_event(
            logging.INFO,
            "cds hook answered",
            trial=trial.id,
            hook_instance=request.hook_instance,
            card=answer["uuid"],
            status=evaluation.status.value,
            fetched=fetched,
            duration_ms=elapsed_ms(started),
        )
        return {"cards": [answer]}

    def cds_feedback(self, service_id: str, feedback: CdsFeedback) -> int:
        """Log each card's outcome (CDS Hooks 2.0, "Feedback"); the number logged.

        The log holds the card uuid, the outcome, its time and the override reason's code,
        never the clinician's comment or patient data.
        """
        if service_id not in self.trials:
            raise ApiError.of(404, "not-found", f"no CDS service {service_id}; see /cds-services")
        problems = feedback_problems(feedback)
        if problems:
            raise ApiError(400, problems)
        for item in feedback.feedback:
            reason = item.override_reason.reason if item.override_reason else None
            log_event(
                logging.INFO,
                "cds card feedback",
                trial=service_id,
                card=item.card,
                outcome=item.outcome,
                outcome_timestamp=item.outcome_timestamp,
                override_reason=reason.code if reason is not None else None,
                accepted_suggestions=len(item.accepted_suggestions or ()),
            )
        return len(feedback.feedback)

    @contextmanager
    def _request_server(self, request: CdsHookRequest) -> Iterator[FhirServerClient]:
        """The client of the request's fhirServer, sending its fhirAuthorization token.

        One client per server serves every call (its CapabilityStatement is read once); the
        token is the calling request's, through a context variable.
        """
        assert request.fhir_server is not None
        base, trusted = check_fhir_server(
            request.fhir_server,
            self.settings.fhir_server_allow_list(),
            self.settings.allow_any_fhir_server,
        )
        authorization = request.fhir_authorization
        token: str | None = None
        if authorization is not None and trusted:  # a token goes to allow-listed servers only
            token = authorization.access_token
            if any(character.isspace() for character in token):
                raise ApiError.of(
                    400,
                    "invalid",
                    "fhirAuthorization.access_token must be one word with no spaces",
                    "fhirAuthorization.access_token",
                )
        with self._clients_lock:
            client = self._request_clients.pop(base, None)
            if client is None:
                client = FhirServerClient(
                    base,
                    auth=ContextBearerToken(REQUEST_TOKEN),
                    retry=self.settings.fhir_retry,
                    limits=self.settings.fhir_limits,
                )
            self._request_clients[base] = client  # the most recently used last
            while len(self._request_clients) > MAX_REQUEST_SERVERS:
                _, oldest = self._request_clients.popitem(last=False)
                oldest.close()
        reset = REQUEST_TOKEN.set(token)
        try:
            yield client
        finally:
            REQUEST_TOKEN.reset(reset)

    def _complete(
        self,
        client: FhirServerClient,
        trial: LoadedTrial,
        patient_id: str,
        prefetched: Prefetched,
    ) -> PatientResources | None:
        """Fetch what the prefetch lacks: the whole pull when it gave nothing (returned as is),
        else the missing types by search, then Medications that medicationReferences name
        (added to `prefetched`; None returned).
        """
        missing = prefetched.missing_types
        if missing >= trial.resource_types - {"Medication"}:
            return pull_patient(client, patient_id, trial.resource_types, self.settings.page_size)
        if missing:
            wanted = missing | ({"Medication"} & trial.resource_types)
            source = FhirServerSource(
                client,
                [patient_id],
                wanted,
                page_size=self.settings.page_size,
                use_everything=False,
            )
            pulled = source.pull(patient_id)
        else:
            pulled = None
        if pulled is not None:
            prefetched.unavailable.update(pulled.unavailable_types)
            prefetched.problems.extend(pulled.source_problems)
            for resource, full_url in zip(pulled.resources, pulled.full_urls, strict=True):
                key = f"{resource['resourceType']}/{resource.get('id')}"
                prefetched.entries.setdefault(key, {"fullUrl": full_url, "resource": resource})
        for medication_id in unresolved_medications(prefetched.entries):
            try:
                medication = client.read("Medication", medication_id)
            except ServerError as error:
                if not is_refusal(error):  # refused, or 200 with an outcome
                    raise
                # The reference stays unresolved, with why (as `FhirServerSource` does).
                prefetched.problems.append(
                    f"Medication/{medication_id} not read from the server ({error.message})"
                )
                continue
            if medication is not None:
                prefetched.entries[f"Medication/{medication_id}"] = {
                    "fullUrl": f"{client.base_url}/Medication/{medication_id}",
                    "resource": medication,
                }
        return None

    # ----------------------------------------------------------------------- report page

    def report(self, trial_id: str, patient_id: str) -> str:
        """The report page (HTML) of a patient of the configured FHIR server for one trial,
        as of the service's day."""
        started = time.perf_counter()
        trial = pick_trial(self.trials, trial_id)
        check_fhir_id(patient_id, "patient")
        client = self.require_server("showing a patient's report page")
        resources = _serving(
            lambda: pull_patient(client, patient_id, trial.resource_types, self.settings.page_size)
        )
        answers = trial.attestations.get(resources.patient_id)
        day = self.settings.day()
        evaluation = _serving(
            lambda: screen_patient(trial.criteria, resources, day, answers)
        ).evaluation
        log_event(
            logging.INFO,
            "report page served",
            trial=trial.id,
            status=evaluation.status.value,
            duration_ms=elapsed_ms(started),
        )
        return report_page(evaluation)

    # ----------------------------------------------------------------------- notifications

    def re_evaluate(self, patient_id: str) -> list[str]:
        """Pull a patient once, evaluate for every trial, write each result; the statuses."""
        client = self.require_server("re-evaluating a patient")
        resources = pull_patient(
            client, patient_id, self.trials.resource_types, self.settings.page_size
        )
        sink = FhirServerSink(client)
        statuses: list[str] = []
        for trial in self.trials.values():
            evaluation: PatientEvaluation = screen_patient(
                trial.criteria, resources, self.settings.day(), trial.attestations.get(patient_id)
            ).evaluation
            sink.write(evaluation)
            statuses.append(evaluation.status.value)
        return statuses

    def find_changed(self, subscription: str = SERVICE_WIDE) -> list[str]:
        """The patients whose data changed on the configured server since the last query for
        `subscription` (at first, since the service started): the Subscription's criteria
        (read from the server), else every type some trial reads (and Patient), searched with
        `_lastUpdated=gt<time>` (R4 3.1.1.5.2); each resource's patient. The time moves on
        only when every search succeeded (a failed query is asked again next time). A search
        the server refuses on its first page (400, 403, 404, 405, 501, or 200 with an
        OperationOutcome) does not stop the others: their patients are re-evaluated, the
        refusal is logged ("changes query refused", the type and status), and the time stays,
        so the changes that search would have found are asked for again next time. A
        searchset saying its results are not complete (an error outcome entry) keeps its
        patients and the time too."""
        client = self.require_server("asking the server what changed")
        started = dt.datetime.now(dt.UTC)
        # `gt` with a time to the second means after that whole second (R4 3.1.1.5.2,
        # implicit ranges): a second earlier, so nothing changed within it is missed.
        since = timestamp(self._change_times.since(subscription) - dt.timedelta(seconds=1))
        relevant = (self.trials.resource_types | {"Patient"}) - {"Medication"}
        queries: list[ChangeQuery] | None = None
        if subscription != SERVICE_WIDE:
            stored = client.read("Subscription", subscription.split("/", 1)[1])
            queries = change_queries(stored, relevant) if stored is not None else None
        if queries is None:
            queries = [ChangeQuery(resource_type) for resource_type in sorted(relevant)]
        patients: set[str] = set()
        complete = True
        for query in queries:
            found, answered_whole = self._changed_by(client, query, since)
            patients |= found
            complete = complete and answered_whole
        if complete:
            self._change_times.queried(subscription, started)
        return sorted(patients)

    def _changed_by(
        self, client: FhirServerClient, query: ChangeQuery, since: str
    ) -> tuple[set[str], bool]:
        """The patients of the resources one change query finds, and whether the server gave
        the whole answer: not when it refuses the query on its first page (no patients; a
        failure after it, or any other, raises) or says in the searchset that the results are
        not complete (an OperationOutcome entry, `search.mode` outcome, with an error or
        fatal issue: the patients found are kept)."""
        patients: set[str] = set()
        first = True
        whole = True
        try:
            for page in client.pages(query.url(since, self.settings.page_size)):
                first = False
                for entry in page.get("entry") or ():
                    outcome = search_outcome(entry)
                    if outcome is not None:
                        errors, _notes = outcome_words(outcome)
                        if errors is not None and whole:
                            whole = False
                            log_event(
                                logging.WARNING,
                                "changes query not complete",
                                resource_type=query.resource_type,
                            )
                        continue
                    resource = entry.get("resource") if isinstance(entry, dict) else None
                    if isinstance(resource, dict) and not is_own(resource):
                        patient = patient_of(resource, client.base_url)
                        if patient:
                            patients.add(patient)
        except ServerError as error:
            if not first or not is_refusal(error):
                raise
            log_event(
                logging.WARNING,
                "changes query refused",
                resource_type=query.resource_type,
                http_status=error.status,
            )
            return set(), False
        return patients, whole

    def events_seen(self, counts: EventCounts) -> MissedEvents | None:
        """Record a notification's event numbers; the events it shows were missed, if any
        (`ChangeTimes.events_seen`), logged as `notification events missed`."""
        missed = self._change_times.events_seen(counts)
        if missed is not None:
            log_event(
                logging.WARNING,
                "notification events missed",
                first=missed.first,
                last=missed.last,
                events=missed.last - missed.first + 1,
            )
        return missed

    def find_missed(self, missed: MissedEvents) -> list[str]:
        """What the events a Subscription's notifications skipped were about (references to
        re-evaluate), recovered as the Subscriptions Backport's "Handling Errors" page
        describes: first the Subscription's `$events` operation for exactly those numbers
        (`eventsSinceNumber`, `eventsUntilNumber`; "clients MAY try to retrieve missing events
        via the $events operation"), read as a notification; when the server does not support
        it (refuses or fails it, answers something that is not a notification) or does not
        return every missed event (servers "MAY use implementation-specific criteria to restrict
        availability of events"), what changed for the Subscription since its last query
        (`find_changed`: its criteria with `_lastUpdated`; "an application may need to query
        all relevant resources ... to ensure nothing has been missed"). Logged as `missed
        events recovered` with the way and the count. When neither works (the server fails),
        the events are marked unseen again, so the next notification of the Subscription
        finds the gap and tries again, and the error is raised (the queue counts it)."""
        client = self.require_server("recovering missed notification events")
        try:
            recovered = self._missed_from_events(client, missed)
            way = "$events"
            if recovered is None:
                recovered = [
                    f"Patient/{patient}" for patient in self.find_changed(missed.subscription)
                ]
                way = "changes query"
        except Exception:
            self._change_times.rewind_events(missed)
            raise
        log_event(
            logging.INFO,
            "missed events recovered",
            way=way,
            events=missed.last - missed.first + 1,
            targets=len(recovered),
        )
        return recovered

    def _missed_from_events(
        self, client: FhirServerClient, missed: MissedEvents
    ) -> list[str] | None:
        """The references the `$events` answer for the missed events names; None when the
        server does not answer it with a notification holding every missed event."""
        identifier = missed.subscription.split("/", 1)[1]
        parameters = {
            "eventsSinceNumber": str(missed.first),
            "eventsUntilNumber": str(missed.last),
        }
        try:
            answer = client.json("GET", f"Subscription/{identifier}/$events", params=parameters)
            relevant = self.trials.resource_types | {"Patient"}
            targets = notification_targets(answer, None, relevant, client.base_url)
            counts = notification_events(answer, client.base_url)
        except ServerError as error:
            # Refused (400, 404, 405, 501), or failing: servers answer an operation they do not
            # implement in many ways (a 500 too). The what-changed query is asked instead; if
            # the server is down, that fails as well and the gap is kept for the next try.
            reason = f"HTTP {error.status}" if error.status else "no usable answer"
            log_event(logging.INFO, "$events not available", reason=reason)
            return None
        except ApiError:
            log_event(logging.INFO, "$events not available", reason="not a notification")
            return None
        returned = set(counts.numbers) if counts is not None else set()
        wanted = missed.last - missed.first + 1
        in_range = {number for number in returned if missed.first <= number <= missed.last}
        if len(in_range) < wanted:
            log_event(
                logging.INFO,
                "$events not available",
                reason="not every missed event returned",
                returned=len(returned),
            )
            return None
        return [target.reference for target in targets]

    def find_patient(self, reference: str) -> str | None:
        """The patient a resource on the configured server is about (None when it is gone or
        about no patient).
        """
        client = self.require_server("reading a notified resource")
        resource_type, _, resource_id = reference.partition("/")
        resource = client.read(resource_type, resource_id)
        return patient_of(resource, client.base_url) if resource is not None else None

    # ----------------------------------------------------------------------- readiness

    def readiness(self) -> dict[str, Any]:
        """Trials loaded, and the FHIR server's metadata answering; 503 otherwise.

        `/ready` needs no credentials, so the server is asked at most once per
        `settings.ready_cache_seconds` (one probe at a time; the others wait for its answer
        and share it): an anonymous client polling `/ready` cannot make the service send the
        FHIR server one request per call with the service's own credentials."""
        answer: dict[str, Any] = {"status": "ready", "trials": list(self.trials)}
        if self.settings.fhir_server is None:
            answer["fhirServer"] = "not configured"
            return answer
        with self._ready_lock:
            now = time.monotonic()
            last = self._last_probe
            if last is None or now - last[0] >= self.settings.ready_cache_seconds:
                last = self._last_probe = (now, self._probe_server())
        problem = last[1]
        if problem is not None:
            raise ApiError.of(503, "transient", f"not ready: {problem}")
        answer["fhirServer"] = "reachable"
        return answer

    def _probe_server(self) -> str | None:
        """Why the FHIR server's metadata does not answer (a summary), None when it does."""
        assert self.settings.fhir_server is not None
        probe = FhirServerClient(
            self.settings.fhir_server, auth=self._server_auth, retry=READY_PROBE
        )
        try:
            with probe:
                probe.json("GET", "metadata")
        except ServerError as error:
            return server_failure_summary(error)
        return None


def _server_auth(settings: ServiceSettings) -> httpx.Auth | None:
    """How the service authenticates to the configured FHIR server: SMART Backend Services
    from `fhir_auth_config`, a static bearer token from `fhir_token`, or nothing;
    ServiceConfigError (AuthConfigError) when both are given or the config is unusable."""
    if settings.fhir_auth_config is None:
        if settings.fhir_token is None:
            return None
        return BearerToken(settings.fhir_token.read(settings.environment))
    if settings.fhir_token is not None:
        raise ServiceConfigError(
            "give the FHIR server's token (--token-env/--token-file) or its SMART auth config "
            "(--auth-config), not both"
        )
    if settings.fhir_server is None:
        raise ServiceConfigError("--auth-config is for the FHIR server: give --server too")
    return load_smart_auth(settings.fhir_auth_config, settings.fhir_server, settings.environment)


def _parse_inline_bundle(bundle: dict[str, Any]) -> PatientResources:
    try:
        text = orjson.dumps(bundle)
    except orjson.JSONEncodeError:
        raise ApiError.of(
            400, "invalid", "bundle holds a number beyond the 64-bit integer range", "bundle"
        ) from None
    try:
        resources = parse_bundle(text, "request field bundle")
    except InputError as error:
        raise error_for(error, "bundle") from None
    # An element the engine reads of the wrong shape (`"coding": [5]`), which the record
    # would skip as unreadable, is refused, as in a prefetch (engine.service.fhir_json).
    check_fhir_resource(bundle, "bundle", text)
    return resources


def _missing_prefetch(trial: LoadedTrial, prefetched: Prefetched) -> ApiError:
    keys = [
        f"prefetch.{template.key}"
        for template in prefetch_templates(trial)
        if template.resource_type in prefetched.missing_types
    ]
    failures = "".join(
        f"; {key}: the client could not prefetch it ({words})"
        for key, words in prefetched.failed.items()
    )
    # CDS Hooks 2.0, "Prefetch": a service that needs data the prefetch lacks and has no
    # fhirServer to read it from answers 412 Precondition Failed.
    return ApiError.of(
        412,
        "required",
        f"{', '.join(keys)} missing or incomplete, and the request names no fhirServer "
        f"to read them from{failures}",
        *keys,
    )


def _fetching(work: Callable[[], Result]) -> Result:
    """Read what a CDS Hooks call's prefetch lacks from its fhirServer: a server that cannot
    be reached, refuses, fails or lacks the patient answers 412 (CDS Hooks 2.0, "Prefetch":
    "If the CDS Service is unable to obtain required data because it cannot access the FHIR
    server and the request did not contain the necessary prefetch keys, the service SHALL
    respond with an HTTP 412 Precondition Failed status code"), with what was asked and what
    came back (no address).
    """
    try:
        return work()
    except ServerError as error:
        words = error_for(error).issues[0].diagnostics
        raise ApiError.of(
            412, "incomplete", f"the patient's data cannot be obtained: {words}"
        ) from None
    except TrialsieveError as error:
        raise error_for(error) from None


def _serving(work: Callable[[], Result], field_name: str | None = None) -> Result:
    """Run a step; an engine error becomes the HTTP error for it."""
    try:
        return work()
    except TrialsieveError as error:
        raise error_for(error, field_name) from None
