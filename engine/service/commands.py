"""`trialsieve serve` (run the service with uvicorn) and `trialsieve subscribe` (register the
rest-hook Subscriptions that notify it).

Register them in engine/cli.py with `app.command()(serve)` and `app.command()(subscribe)`.
Secrets come from environment variables or files, never from the command line. Exit status:
0 done; 1 the FHIR server refused or failed; 2 bad options, criteria or secrets.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from engine.command_options import fail, parse_day
from engine.errors import ServerError, ServiceConfigError, TrialsieveError
from engine.service.app import create_app
from engine.service.logs import configure_logging
from engine.service.settings import ApiAuthSettings, SecretReference, ServiceSettings
from engine.service.trials import load_trials
from engine.sources import BearerToken, FhirServerClient

NOTIFY_PATH = "/fhir-notify"
NOT_SUBSCRIBED = frozenset({"Medication", "ResearchSubject"})
"""Medications are not patient data; ResearchSubjects are what the service itself writes."""

TrialsOption = Annotated[
    Path, typer.Option(help="Folder of criteria files; every *.yaml is loaded.")
]
ServerUrlOption = Annotated[
    str | None, typer.Option(help="Base URL of the FHIR R4 server patients are pulled from.")
]
TokenEnvOption = Annotated[
    str | None,
    typer.Option(help="Environment variable holding the bearer token for the FHIR server."),
]
TokenFileOption = Annotated[
    Path | None, typer.Option(help="File whose first line is the FHIR server's bearer token.")
]


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    trials: TrialsOption = Path("criteria"),
    server: ServerUrlOption = None,
    token_env: TokenEnvOption = None,
    token_file: TokenFileOption = None,
    api_token_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the API bearer token callers send."),
    ] = None,
    api_token_file: Annotated[
        Path | None, typer.Option(help="File of API bearer tokens, one a line.")
    ] = None,
    jwt_secret_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the HS256 secret of CDS Hooks JWTs."),
    ] = None,
    jwt_secret_file: Annotated[
        Path | None, typer.Option(help="File whose first line is the HS256 JWT secret.")
    ] = None,
    jwks_file: Annotated[
        Path | None,
        typer.Option(help="JSON Web Key Set of the CDS clients' public keys (RS/ES JWTs)."),
    ] = None,
    jwt_issuer: Annotated[
        list[str] | None,
        typer.Option(help="An accepted JWT issuer (iss); repeat for more. Default: any."),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="The service's base URL as callers reach it (JWT audience)."),
    ] = None,
    report_url: Annotated[
        str | None,
        typer.Option(help="Link for CDS cards, with {trial_id} and {patient_id}."),
    ] = None,
    trusted_fhir_server: Annotated[
        list[str] | None,
        typer.Option(help="A fhirServer CDS Hooks calls may name; repeat. Default: any."),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="Evaluate as of this day (YYYY-MM-DD); default today.")
    ] = None,
    attestations: Annotated[
        Path | None,
        typer.Option(
            help="Answers to manual review items (YAML, as for evaluate), used for every "
            "evaluation of the patients it names, notifications included."
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Serve without API authentication (local testing only)."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the eligibility service: evaluate API, CDS Hooks, Subscription notifications."""
    import uvicorn

    day = parse_day(as_of) if as_of else None
    try:
        settings = ServiceSettings(
            trials_folder=trials,
            attestations=attestations,
            fhir_server=server,
            fhir_token=_secret(token_env, token_file, "--token-env", "--token-file"),
            api_auth=ApiAuthSettings(
                tokens=_secret(
                    api_token_env, api_token_file, "--api-token-env", "--api-token-file"
                ),
                jwt_secret=_secret(
                    jwt_secret_env, jwt_secret_file, "--jwt-secret-env", "--jwt-secret-file"
                ),
                jwks_file=jwks_file,
                jwt_issuers=frozenset(jwt_issuer or ()),
                allow_anonymous=no_auth,
            ),
            public_url=public_url,
            report_url_template=report_url,
            trusted_fhir_servers=tuple(trusted_fhir_server or ()),
            as_of=day,
        )
        app = create_app(settings)
    except TrialsieveError as error:
        raise fail(error) from None
    configure_logging(log_level)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


def subscribe(
    server: Annotated[str, typer.Option(help="Base URL of the FHIR R4 server to subscribe on.")],
    public_url: Annotated[
        str, typer.Option(help="The service's base URL as the FHIR server reaches it.")
    ],
    trials: TrialsOption = Path("criteria"),
    token_env: TokenEnvOption = None,
    token_file: TokenFileOption = None,
    notify_token_env: Annotated[
        str | None,
        typer.Option(
            help="Environment variable holding the API token the server is to send with each "
            "notification (stored in the Subscription's channel.header)."
        ),
    ] = None,
    notify_token_file: Annotated[
        Path | None, typer.Option(help="File whose first line is that API token.")
    ] = None,
) -> None:
    """Register rest-hook Subscriptions (one per resource type the trials read) that send
    changes to the service's /fhir-notify; a re-run updates them in place.
    """
    endpoint = public_url.rstrip("/") + NOTIFY_PATH
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise fail("--public-url must be an http(s) URL")
    try:
        registry = load_trials(trials)
        server_token = _secret(token_env, token_file, "--token-env", "--token-file")
        notify_token = _secret(
            notify_token_env, notify_token_file, "--notify-token-env", "--notify-token-file"
        )
        auth = BearerToken(server_token.read(os.environ)) if server_token else None
        headers = [f"Authorization: Bearer {notify_token.read(os.environ)}"] if notify_token else []
        client = FhirServerClient(server, auth=auth)
    except TrialsieveError as error:
        raise fail(error) from None
    table = Table(title=f"Subscriptions on {client.base_url} -> {endpoint}")
    for column in ("Subscription", "criteria", "status"):
        table.add_column(column)
    with client:
        for resource_type in sorted(registry.resource_types - NOT_SUBSCRIBED):
            subscription = rest_hook_subscription(resource_type, endpoint, headers)
            try:
                client.json("PUT", f"Subscription/{subscription['id']}", body=subscription)
                stored = client.read("Subscription", subscription["id"]) or {}
            except ServerError as error:
                raise fail(error, code=1) from None
            status = str(stored.get("status", "unknown"))
            if stored.get("error"):
                status += f": {stored['error']}"
            table.add_row(f"Subscription/{subscription['id']}", subscription["criteria"], status)
    Console(highlight=False).print(table)


def rest_hook_subscription(resource_type: str, endpoint: str, headers: list[str]) -> dict[str, Any]:
    """An R4 rest-hook Subscription for every change of a type, with the full resource as
    payload; its id is derived from endpoint and type, so registering again updates it.
    """
    derived = uuid.uuid5(uuid.NAMESPACE_URL, f"{endpoint}|{resource_type}")
    subscription_id = f"trialsieve-{derived}"
    subscription: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": subscription_id,
        "status": "requested",
        "reason": f"trialsieve: re-evaluate trial eligibility when a patient's {resource_type} "
        "changes",
        "criteria": f"{resource_type}?",
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
        },
    }
    if headers:
        subscription["channel"]["header"] = headers
    return subscription


def _secret(
    variable: str | None, file: Path | None, variable_option: str, file_option: str
) -> SecretReference | None:
    if variable and file:
        raise ServiceConfigError(f"give {variable_option} or {file_option}, not both")
    if variable:
        return SecretReference(environment_variable=variable)
    if file:
        return SecretReference(file=file)
    return None
