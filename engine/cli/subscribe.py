"""`trialsieve subscribe`: register the rest-hook Subscriptions that notify the service.

Secrets come from environment variables or files, never from the command line. Exit status:
0 done; 1 the FHIR server refused or failed; 2 bad options, criteria or secrets.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from engine.cli.console import fail, secret_reference
from engine.cli.options import (
    AuthConfigOption,
    MaxAnswerMibOption,
    NotifyTokenEnvOption,
    NotifyTokenFileOption,
    SubscribePublicUrlOption,
    SubscribeServerOption,
    TokenEnvOption,
    TokenFileOption,
    TrialsOption,
)
from engine.errors import ServerError, TrialsieveError


def subscribe(
    server: SubscribeServerOption,
    public_url: SubscribePublicUrlOption,
    trials: TrialsOption = Path("criteria"),
    token_env: TokenEnvOption = None,
    token_file: TokenFileOption = None,
    auth_config: AuthConfigOption = None,
    notify_token_env: NotifyTokenEnvOption = None,
    notify_token_file: NotifyTokenFileOption = None,
    max_answer_mib: MaxAnswerMibOption = None,
) -> None:
    """Register rest-hook Subscriptions (one per resource type the trials read) that send
    changes to the service's /fhir-notify; a re-run updates them in place.
    """
    from engine.fhir_http import auth_from_options
    from engine.service.subscriptions import NOTIFY_PATH, register_subscriptions
    from engine.service.trials import load_trials
    from engine.sources import FhirServerClient, ServerLimits

    endpoint = public_url.rstrip("/") + NOTIFY_PATH
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise fail("--public-url must be an http(s) URL")
    try:
        registry = load_trials(trials)
        notify_token = secret_reference(
            notify_token_env, notify_token_file, "--notify-token-env", "--notify-token-file"
        )
        auth = auth_from_options(token_env, token_file, auth_config, server=server)
        headers = [f"Authorization: Bearer {notify_token.read(os.environ)}"] if notify_token else []
        client = FhirServerClient(
            server, auth=auth, limits=ServerLimits.of(max_answer_mib=max_answer_mib)
        )
    except TrialsieveError as error:
        raise fail(error) from None
    table = Table(title=f"Subscriptions on {client.base_url} -> {endpoint}")
    for column in ("Subscription", "criteria", "status"):
        table.add_column(column, overflow="fold")  # an id or a criteria string never cut
    with client:
        try:
            registered = register_subscriptions(client, registry.resource_types, endpoint, headers)
        except ServerError as error:
            raise fail(error, code=1) from None
    for subscription in registered:
        table.add_row(f"Subscription/{subscription.id}", subscription.criteria, subscription.status)
    Console(highlight=False).print(table)
