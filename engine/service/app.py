"""The HTTP API: `create_app(settings)` builds a FastAPI app; nothing is global.

Routes (see docs/service.md):

    GET  /health                          liveness
    GET  /ready                           trials loaded, FHIR server reachable (503 if not)
    POST /evaluate                        evaluate a patient (by id, or an inline Bundle)
    POST /trials/{trial_id}/evaluate      the same for one trial
    GET  /cds-services                    CDS Hooks discovery (no authentication)
    POST /cds-services/{service_id}       CDS Hooks patient-view call -> cards
    POST /cds-services/{service_id}/feedback  CDS Hooks feedback: card outcomes, logged
    GET  /trials/{trial_id}/patients/{patient_id}/report   the patient's report page (HTML)
    PUT|POST /fhir-notify/{type}/{id}     R4 rest-hook notification (the changed resource)
    POST /fhir-notify                     rest-hook POST, or a topic-based notification Bundle

Every route but health, readiness and discovery needs an accepted bearer token
(engine/service/auth.py) whose scopes allow what the route does: `evaluate` for the evaluate
and CDS Hooks routes, `write` as well for `write: true`, `notify` for the notification routes
(403 otherwise). Every GET route answers HEAD as GET without the body (engine/service/head.py,
RFC 9110 9.3.2). Request bodies larger
than `max_body_bytes` are refused with 413 before they are read whole, bodies slower than
`body_timeout` with 408 (engine/service/limits.py), bodies that are not JSON with 415
(engine/service/media_types.py); `cors_origins` turns CORS on for those browser origins.
Every error answer is a FHIR OperationOutcome; the OpenAPI description
(engine/service/openapi.py) documents every status of every route. `app.state.notifications`
is the background queue; tests await its `drain()`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from engine import __version__
from engine.errors import ServiceConfigError, TrialsieveError
from engine.normalise.units import build_unit_registry
from engine.service.auth import ApiAuthenticator, describe, forbidden
from engine.service.cds_hooks import discovery
from engine.service.core import Service
from engine.service.head import HeadAsGetMiddleware
from engine.service.limits import SCOPES_KEY, BodyLimitMiddleware, RequestLimitMiddleware
from engine.service.logs import RequestLogMiddleware, log_event
from engine.service.media_types import JsonRoute, json_body, load_json
from engine.service.models import CdsFeedback, CdsHookRequest, EvaluateRequest
from engine.service.notifications import (
    NotificationQueue,
    missed_target,
    notification_events,
    notification_targets,
    subscription_key,
)
from engine.service.openapi import describe_routes
from engine.service.problems import (
    FHIR_JSON_ANSWER,
    JSON_ANSWER,
    ApiError,
    Issue,
    error_for,
    information,
    operation_outcome,
)
from engine.service.report_links import refused
from engine.service.settings import SCOPE_EVALUATE, SCOPE_NOTIFY, SCOPE_WRITE, ServiceSettings
from engine.service.trials import load_trials
from engine.sources.bundle import json_kind
from engine.sources.references import is_fhir_id

_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_STATUS_CODES = {
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    415: "not-supported",
}


class JsonAnswer(Response):
    """JSON rendered with orjson, `application/json; charset=utf-8`."""

    media_type = JSON_ANSWER

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class FhirAnswer(JsonAnswer):
    """A FHIR resource (an OperationOutcome), `application/fhir+json; charset=utf-8`."""

    media_type = FHIR_JSON_ANSWER


_EXPIRES_TEXT = "With `signature`: when the CDS card's link to this page ends (Unix time)."
_SIGNATURE_TEXT = (
    "With `expires`: the CDS card's signature of this page's link, which opens it without "
    "the bearer token until `expires`."
)
_REPORT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
"""A report page is a patient's data, opened by a browser: kept in no cache, and its address
(a signed link) sent on by no link followed from it."""


def create_app(settings: ServiceSettings) -> FastAPI:
    """Load and compile the trials, read the secrets, build the unit registry, and build the
    app.

    The unit registry (ucumvert on pint) is built now, at start, because a request that
    meets a unit conversion no earlier run cached would otherwise build it: 0.55 s of the
    first such request (0.68 s against 0.008 for the next ones, with an empty cache).

    Raises TrialsieveError (ServiceConfigError, CriteriaError, ...) when it cannot serve.
    """
    trials = load_trials(settings.trials_folder, settings.attestations)
    build_unit_registry()
    service = Service(settings, trials, ApiAuthenticator(settings))
    notifications = NotificationQueue(
        service.re_evaluate,
        service.find_patient,
        settings.notification_workers,
        service.find_changed,
        service.find_missed,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await notifications.start()
        log_event(
            logging.INFO,
            "service started",
            trials=list(trials),
            fhir_server=settings.fhir_server is not None,
            auth=describe(settings.api_auth),
        )
        try:
            yield
        finally:
            await notifications.stop()
            service.close()
            log_event(logging.INFO, "service stopped")

    app = FastAPI(
        title="trialsieve",
        version=__version__,
        summary="Clinical-trial eligibility screening over FHIR R4: evaluate, CDS Hooks, "
        "Subscription notifications.",
        lifespan=lifespan,
        default_response_class=JsonAnswer,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by _add_docs, as JSON in UTF-8 like every answer
    )
    app.router.route_class = JsonRoute  # JSON bodies read by orjson, errors said precisely
    _add_docs(app)
    app.state.service = service
    app.state.notifications = notifications
    app.add_middleware(HeadAsGetMiddleware)  # innermost: the log names the method sent
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_body_bytes,
        timeout=settings.body_timeout,
        authenticate=None if service.authenticator.anonymous else _authenticator(service),
    )
    # around the body limit: a request whose body is still arriving is in progress too
    app.add_middleware(RequestLimitMiddleware, limit=settings.max_requests_in_progress)
    app.add_middleware(RequestLogMiddleware)
    if settings.cors_origins:
        # Outermost: a preflight is answered before anything else looks at it.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    _add_error_handlers(app)

    def requiring(scope: str) -> Callable[[Request], Coroutine[Any, Any, frozenset[str]]]:
        async def authenticated(request: Request) -> frozenset[str]:
            scopes = request.scope.get(SCOPES_KEY)  # checked before the body was read
            if scopes is None:
                scopes = _authenticator(service)(request.scope)
            if scope not in scopes:
                raise forbidden(scope)
            return scopes

        return authenticated

    evaluating = Depends(requiring(SCOPE_EVALUATE))
    json_checked = Depends(json_body)  # after the credentials: 401/403 come first
    reading_json = [evaluating, json_checked]
    notifying = [Depends(requiring(SCOPE_NOTIFY)), json_checked]

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    def ready() -> dict[str, Any]:
        """Readiness: trials loaded and the FHIR server (if configured) reachable; else 503."""
        return service.readiness()

    @app.post("/evaluate", tags=["evaluate"])
    def evaluate(
        body: EvaluateRequest, scopes: frozenset[str] = evaluating, _: None = json_checked
    ) -> dict[str, Any]:
        """Evaluate one patient: per-criterion outcomes, status, ResearchSubject and
        DetectedIssue (as `trialsieve evaluate` writes them); `write` writes them back.
        """
        if body.write and SCOPE_WRITE not in scopes:
            raise forbidden(SCOPE_WRITE)
        return service.evaluate(body, None)

    @app.post("/trials/{trial_id}/evaluate", tags=["evaluate"])
    def evaluate_for_trial(
        trial_id: str,
        body: EvaluateRequest,
        scopes: frozenset[str] = evaluating,
        _: None = json_checked,
    ) -> dict[str, Any]:
        """`POST /evaluate` for the trial of the path."""
        if body.write and SCOPE_WRITE not in scopes:
            raise forbidden(SCOPE_WRITE)
        return service.evaluate(body, trial_id)

    @app.get("/cds-services", tags=["cds-hooks"])
    async def cds_services() -> dict[str, Any]:
        """CDS Hooks discovery: one patient-view service per trial, with prefetch templates."""
        return discovery(trials)

    @app.post("/cds-services/{service_id}", dependencies=reading_json, tags=["cds-hooks"])
    def cds_service(service_id: str, body: CdsHookRequest, request: Request) -> dict[str, Any]:
        """A patient-view call: one card with the patient's eligibility for the trial."""
        return service.cds_call(service_id, body, str(request.base_url))

    async def report_reader(
        request: Request,
        trial_id: str,
        patient_id: str,
        expires: Annotated[str | None, Query(description=_EXPIRES_TEXT)] = None,
        signature: Annotated[str | None, Query(description=_SIGNATURE_TEXT)] = None,
    ) -> None:
        """The report page's credentials: the bearer token as for `/evaluate` when the request
        sends one (or gives no link), else a link a CDS card gave (`expires` and `signature`,
        `engine.service.report_links`)."""
        if (
            service.authenticator.anonymous
            or "authorization" in request.headers
            or (expires is None and signature is None)
        ):
            await requiring(SCOPE_EVALUATE)(request)
            return
        query = request.query_params
        if len(query.getlist("expires")) != 1 or len(query.getlist("signature")) != 1:
            raise refused("it must give expires and signature once each")
        service.report_links.check(trial_id, patient_id, query["expires"], query["signature"])

    @app.get(
        "/trials/{trial_id}/patients/{patient_id}/report",
        dependencies=[Depends(report_reader)],
        tags=["evaluate"],
        response_class=HTMLResponse,
    )
    def report_page(trial_id: str, patient_id: str) -> HTMLResponse:
        """The patient's eligibility report page for the trial (self-contained, printable
        HTML), evaluated from the configured FHIR server as of the service's day. Opened
        with the bearer token, or by the signed link of a CDS card (`expires`, `signature`);
        never cached, and no link followed from it sends its address on."""
        return HTMLResponse(service.report(trial_id, patient_id), headers=_REPORT_HEADERS)

    @app.post(
        "/cds-services/{service_id}/feedback",
        dependencies=reading_json,
        tags=["cds-hooks"],
        response_class=FhirAnswer,
    )
    def cds_feedback(service_id: str, body: CdsFeedback) -> Response:
        """CDS Hooks feedback: the outcome of cards (accepted / overridden), logged per card."""
        count = service.cds_feedback(service_id, body)
        return FhirAnswer(information(f"received; {count} card outcome(s) logged"))

    notify_path = "/fhir-notify/{resource_type}/{resource_id}"

    @app.api_route(
        notify_path,
        methods=["PUT", "POST"],  # one route, so a 405 lists both in Allow
        dependencies=notifying,
        tags=["subscriptions"],
        response_class=FhirAnswer,
    )
    async def notify_resource(resource_type: str, resource_id: str, request: Request) -> Response:
        """R4 rest-hook: the server sends the changed resource to `{endpoint}/{type}/{id}`."""
        if not _RESOURCE_TYPE.fullmatch(resource_type) or not is_fhir_id(resource_id):
            raise ApiError.of(400, "invalid", "the path must be /fhir-notify/{Type}/{id}")
        return await _notified(request, f"{resource_type}/{resource_id}")

    @app.post(
        "/fhir-notify",
        dependencies=notifying,
        tags=["subscriptions"],
        response_class=FhirAnswer,
    )
    async def notify(request: Request, subscription: str | None = None) -> Response:
        """A rest-hook POST (the resource, or nothing) or a topic-based notification Bundle.
        `subscription`: the Subscription whose criteria say what changed when the POST has no
        body (an R4 rest-hook without payload), as the Subscription's `channel.endpoint`
        names it (`/fhir-notify?subscription=abc`)."""
        return await _notified(request, None, subscription)

    async def _notified(
        request: Request, path_reference: str | None, subscription: str | None = None
    ) -> Response:
        client = service.require_server("re-evaluating notified patients")
        named = subscription_key(subscription, client.base_url)
        if subscription is not None and named is None:
            raise ApiError.of(
                400,
                "invalid",
                "subscription must name a Subscription of the configured server "
                "(its id, or Subscription/{id})",
                "subscription",
            )
        raw = await request.body()
        try:
            body = load_json(raw) if raw.strip() else None
        except json.JSONDecodeError as error:
            raise ApiError.of(
                400, "invalid", f"the notification is not JSON: {error.msg}"
            ) from None
        relevant = trials.resource_types | {"Patient"}
        targets = notification_targets(body, path_reference, relevant, client.base_url, named)
        counts = notification_events(body, client.base_url)
        # (in a thread: with a state file, the numbers are written to it)
        missed = await asyncio.to_thread(service.events_seen, counts) if counts else None
        said = ""
        if missed is not None:
            # Subscriptions Backport, "Handling Errors": a gap in the event numbers is events
            # this service never received; their recovery is queued with the notification.
            targets.append(missed_target(missed))
            said = (
                f"; events {missed.first} to {missed.last} of the Subscription were not "
                "received: their recovery is queued"
            )
        queued = await notifications.submit(targets)
        log_event(logging.INFO, "notification received", targets=len(targets), queued=queued)
        if not targets:
            return FhirAnswer(information("received; nothing to re-evaluate"), status_code=200)
        return FhirAnswer(
            information(f"received; {len(targets)} re-evaluation(s) queued{said}"),
            status_code=202,
        )

    describe_routes(app)
    return app


def _authenticator(service: Service) -> Callable[[Scope], frozenset[str]]:
    """The scopes of a request's credentials, from its headers (ApiError 401 when refused):
    the URL called (no query) is the JWT audience, with the service's base URL."""

    def authenticate(scope: Scope) -> frozenset[str]:
        request = Request(scope)
        endpoint = str(request.url.replace(query=None))
        authorization = request.headers.get("authorization")
        return service.authenticator.check(authorization, endpoint, str(request.base_url))

    return authenticate


def cors_origins(origins: tuple[str, ...]) -> list[str]:
    """The CORS origins, each `http(s)://host[:port]` (RFC 6454: scheme, host, port; no path,
    no `*`: only the origins the operator names); ServiceConfigError otherwise."""
    checked = []
    for origin in origins:
        try:
            parts = urlsplit(origin)
            parts.port  # noqa: B018  (a port out of range raises ValueError)
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ServiceConfigError(
                f"--cors-origin {origin[:80]!r} must be an origin: http(s)://host[:port]"
            )
        checked.append(origin)
    return checked


DOCS_ASSETS = "/docs-assets"
OPENAPI_PATH = "/openapi.json"


def _add_docs(app: FastAPI) -> None:
    """`/openapi.json`, the OpenAPI description (`application/json; charset=utf-8`, as every
    JSON answer; FastAPI's own route answers without the charset), and `/docs`: Swagger UI
    from the swagger-ui-bundle-v2 package, its script and styles served by the service
    itself, so the page works offline (no CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi() -> Response:
        return JsonAnswer(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_PATH,
            title="trialsieve API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return FhirAnswer(error.body(), status_code=error.status, headers=dict(error.headers))

    @app.exception_handler(TrialsieveError)
    async def engine_error(request: Request, error: TrialsieveError) -> Response:
        problem = error_for(error)
        return FhirAnswer(problem.body(), status_code=problem.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        body = getattr(error, "body", None)
        if (
            request.url.path.endswith("/evaluate")
            and isinstance(body, dict)
            and body.get("resourceType") == "Bundle"
        ):
            hint = (
                "the body is a bare FHIR Bundle; send it as the `bundle` field: "
                '{"bundle": <the Bundle>} (optionally with "trial", "asOf", "attestations")'
            )
            return FhirAnswer(operation_outcome([Issue("invalid", hint, ("bundle",))]), 400)
        issues = [_validation_issue(item) for item in error.errors()]
        return FhirAnswer(operation_outcome(issues), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(error.status_code, "processing")
        body = operation_outcome([Issue(code, str(error.detail))])
        return FhirAnswer(body, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log_event(logging.ERROR, "unexpected error", error=type(error).__name__)
        body = operation_outcome([Issue("exception", "internal error; see the service log")])
        # Starlette re-raises the error once this answer is sent, and the server then closes
        # the connection: the answer says so (RFC 9112 9.6), so a client does not reuse it.
        return FhirAnswer(body, status_code=500, headers={"Connection": "close"})


def _validation_issue(error: Any) -> Issue:
    """A pydantic error as an issue naming the request field (`prefetch.patient`)."""
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    field = ".".join(location)
    kind = error.get("type", "")
    if kind == "missing" and not location:
        return Issue("required", "a JSON request body is required")
    if kind in ("model_attributes_type", "dict_type") and not location:
        found = json_kind(error.get("input"))
        return Issue("invalid", f"the request body must be a JSON object, found {found}")
    code = "required" if kind == "missing" else "invalid"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")  # our validators'
    return Issue(code, f"{field}: {message}" if field else message, (field,) if field else ())
