"""`trialsieve serve`: run the service (evaluate API, CDS Hooks, Subscription notifications)
with uvicorn.

Secrets come from environment variables or files, never from the command line. Exit status:
0 stopped; 2 bad options, criteria or secrets.
"""

from __future__ import annotations

from pathlib import Path

from engine.cli.console import fail, parse_day, secret_reference
from engine.cli.options import (
    AllowAnyFhirServerOption,
    ApiTokenEnvOption,
    ApiTokenFileOption,
    AsOfOption,
    AttestationsOption,
    AuthConfigOption,
    BodyTimeoutOption,
    CorsOriginOption,
    HostOption,
    JwksFileOption,
    JwtHs256TestModeOption,
    JwtIssuerOption,
    JwtSecretEnvOption,
    JwtSecretFileOption,
    LimitConcurrencyOption,
    LogLevelOption,
    MaxAnswerMibOption,
    MaxBodyBytesOption,
    MaxPagesOption,
    NoAuthOption,
    NotificationStateOption,
    NotifyTokenEnvOption,
    NotifyTokenFileOption,
    PortOption,
    ReportLinkKeyEnvOption,
    ReportLinkKeyFileOption,
    ReportLinkMinutesOption,
    ReportUrlOption,
    ServicePublicUrlOption,
    ServiceServerOption,
    TimeoutKeepAliveOption,
    TokenEnvOption,
    TokenFileOption,
    TrialsOption,
    TrustedFhirServerOption,
)
from engine.errors import TrialsieveError


def serve(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8080,
    trials: TrialsOption = Path("criteria"),
    server: ServiceServerOption = None,
    token_env: TokenEnvOption = None,
    token_file: TokenFileOption = None,
    auth_config: AuthConfigOption = None,
    api_token_env: ApiTokenEnvOption = None,
    api_token_file: ApiTokenFileOption = None,
    jwt_secret_env: JwtSecretEnvOption = None,
    jwt_secret_file: JwtSecretFileOption = None,
    jwks_file: JwksFileOption = None,
    jwt_hs256_test_mode: JwtHs256TestModeOption = False,
    jwt_issuer: JwtIssuerOption = None,
    public_url: ServicePublicUrlOption = None,
    report_url: ReportUrlOption = None,
    report_link_key_env: ReportLinkKeyEnvOption = None,
    report_link_key_file: ReportLinkKeyFileOption = None,
    report_link_minutes: ReportLinkMinutesOption = 15,  # service.settings.REPORT_LINK_MINUTES
    trusted_fhir_server: TrustedFhirServerOption = None,
    allow_any_fhir_server: AllowAnyFhirServerOption = False,
    notify_token_env: NotifyTokenEnvOption = None,
    notify_token_file: NotifyTokenFileOption = None,
    notification_state: NotificationStateOption = None,
    max_body_bytes: MaxBodyBytesOption = 10 * 1024 * 1024,  # service.settings.MAX_BODY_BYTES
    body_timeout: BodyTimeoutOption = 30.0,  # service.settings.BODY_TIMEOUT
    max_pages: MaxPagesOption = None,
    max_answer_mib: MaxAnswerMibOption = None,
    limit_concurrency: LimitConcurrencyOption = 1000,  # settings.MAX_REQUESTS_IN_PROGRESS
    timeout_keep_alive: TimeoutKeepAliveOption = 5,
    cors_origin: CorsOriginOption = None,
    as_of: AsOfOption = None,
    attestations: AttestationsOption = None,
    no_auth: NoAuthOption = False,
    log_level: LogLevelOption = "info",
) -> None:
    """Run the eligibility service: evaluate API, CDS Hooks, Subscription notifications.

    --attestations are used for every evaluation of the patients they name, notifications
    included. --body-timeout, --limit-concurrency and --timeout-keep-alive bound slow and
    idle clients; a request whose headers never end is the TLS proxy's to time out
    (docs/service.md, "Slow clients").
    """
    import uvicorn

    from engine.service.app import create_app
    from engine.service.logs import configure_logging
    from engine.service.settings import ApiAuthSettings, ServiceSettings
    from engine.sources import ServerLimits

    day = parse_day(as_of) if as_of else None
    try:
        settings = ServiceSettings(
            trials_folder=trials,
            attestations=attestations,
            fhir_server=server,
            fhir_token=secret_reference(token_env, token_file, "--token-env", "--token-file"),
            fhir_auth_config=auth_config,
            api_auth=ApiAuthSettings(
                tokens=secret_reference(
                    api_token_env, api_token_file, "--api-token-env", "--api-token-file"
                ),
                jwt_secret=secret_reference(
                    jwt_secret_env, jwt_secret_file, "--jwt-secret-env", "--jwt-secret-file"
                ),
                notify_tokens=secret_reference(
                    notify_token_env,
                    notify_token_file,
                    "--notify-token-env",
                    "--notify-token-file",
                ),
                jwks_file=jwks_file,
                jwt_hs256_test_mode=jwt_hs256_test_mode,
                jwt_issuers=frozenset(jwt_issuer or ()),
                allow_anonymous=no_auth,
            ),
            public_url=public_url,
            report_url_template=report_url,
            report_link_key=secret_reference(
                report_link_key_env,
                report_link_key_file,
                "--report-link-key-env",
                "--report-link-key-file",
            ),
            report_link_minutes=report_link_minutes,
            trusted_fhir_servers=tuple(trusted_fhir_server or ()),
            allow_any_fhir_server=allow_any_fhir_server,
            max_body_bytes=max_body_bytes,
            body_timeout=body_timeout,
            fhir_limits=ServerLimits.of(max_pages, max_answer_mib),
            cors_origins=tuple(cors_origin or ()),
            max_requests_in_progress=limit_concurrency,
            as_of=day,
            notification_state=notification_state,
        )
        app = create_app(settings)
    except TrialsieveError as error:
        raise fail(error) from None
    configure_logging(log_level)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        # connections, idle keep-alive ones included: uvicorn's backstop, above the requests
        # the app serves at once (beyond those, the app's own 503, an OperationOutcome)
        limit_concurrency=2 * limit_concurrency,
        timeout_keep_alive=timeout_keep_alive,
    )
