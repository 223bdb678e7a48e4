"""Every option and argument of the `trialsieve` commands, declared once.

A command module declares its parameters with these types (`criteria: CriteriaArgument`,
`as_of: AsOfOption = None`, ...), so that an option means and says the same everywhere. Only
typer is imported here: `trialsieve --help` stays fast.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from engine.cli.version import print_version

# ----------------------------------------------------------------------------- every command

VersionOption = Annotated[
    bool,
    typer.Option(
        "--version",
        callback=print_version,
        is_eager=True,
        metavar="",
        help="Print the version and exit.",
    ),
]

CriteriaArgument = Annotated[Path, typer.Argument(help="The trial's criteria file (YAML).")]
AsOfOption = Annotated[
    str | None, typer.Option(help="Evaluate as of this day (YYYY-MM-DD); default today.")
]
AttestationsOption = Annotated[
    Path | None, typer.Option(help="Answers to manual review items (YAML), per patient.")
]

# ----------------------------------------------------------------------------- evaluate

BundleOption = Annotated[
    list[Path] | None,
    typer.Option(help="A patient Bundle (JSON) or a folder of them; repeat for more."),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        help="Where to write the transaction Bundle (a file for one patient, a folder "
        "for several); default: standard output for one patient."
    ),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Also write each patient's eligibility report page to FOLDER/<patient-id>.html "
        "(self-contained, printable HTML).",
        metavar="FOLDER",
    ),
]
ExplainOption = Annotated[
    bool,
    typer.Option(
        "--explain",
        metavar="",
        help="Print every criterion in clinical language: outcome, evidence, what was looked "
        "for, what would settle it (the Bundle then goes only to --output).",
    ),
]

# ----------------------------------------------------------------------------- FHIR servers

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
        metavar="",
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the transaction Bundle --write would send; write nothing.",
        metavar="",
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
        metavar="",
    ),
]
PageSizeOption = Annotated[
    int | None,
    typer.Option(
        min=1, help="Resources per page asked of the server (_count); default: the source's."
    ),
]

MaxPagesOption = Annotated[
    int | None,
    typer.Option(
        "--max-pages",
        min=1,
        metavar="N",
        help="Most pages one search may bring from the FHIR server (a server whose next links "
        "never end is stopped there, an error naming the search); default 1000.",
    ),
]
MaxAnswerMibOption = Annotated[
    int | None,
    typer.Option(
        "--max-answer-mib",
        min=1,
        metavar="N",
        help="Largest answer the FHIR server may send, in MiB (decoded; Bulk Data files are "
        "streamed to disk, not bounded so); default 128.",
    ),
]

# ----------------------------------------------------------------------------- lint

LintPathsArgument = Annotated[
    list[Path] | None,
    typer.Argument(help="Criteria and mapping files or folders (default: criteria mappings)."),
]

# ----------------------------------------------------------------------------- demo

DemoServerOption = Annotated[
    str | None,
    typer.Option(
        help="Base URL of a FHIR R4 server to use; default: start a local sekmet-fhir, "
        "load the examples into it, and stop it at the end."
    ),
]
LoadExamplesOption = Annotated[
    bool,
    typer.Option(
        "--load-examples",
        help="With --server: load the example Bundles into the server first (their ids "
        "kept; a re-run updates them).",
        metavar="",
    ),
]
ExamplesOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--examples",
        help="A folder or file of transaction Bundles to load; repeat for more. Default: "
        "examples/patients and examples/synthea.",
    ),
]

# ----------------------------------------------------------------------------- cohort

NdjsonOption = Annotated[
    Path | None,
    typer.Option(
        help="A folder of Bulk Data NDJSON (<Type>[.n].ndjson, optionally .gz); with "
        "--server, where the export goes."
    ),
]
BundlesFolderOption = Annotated[
    Path | None, typer.Option(help="A folder of per-patient Bundle files (*.json).")
]
CohortOutOption = Annotated[
    Path, typer.Option(help="The output folder; a re-run with the same folder resumes.")
]


class EngineName(StrEnum):
    """The engines of `engine.cohort.engines.ENGINES`, written out so that `--help` need not
    import the cohort package (a test keeps the two equal)."""

    LOCAL = "local"
    DASK = "dask"


EngineOption = Annotated[
    EngineName,
    typer.Option(help="How to run: local (processes of this machine) or dask (a Dask cluster)."),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        min=1, help="Worker processes (default: every core); the size of a Dask LocalCluster."
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(help="With --engine dask: a running Dask scheduler (tcp://HOST:8786)."),
]
SharedFilesystemOption = Annotated[
    bool,
    typer.Option(
        "--shared-filesystem",
        help="With --scheduler: the workers see the input and --out at the same paths, so "
        "tasks carry paths and workers write the results (a LocalCluster always does).",
        metavar="",
    ),
]
FullOption = Annotated[
    bool,
    typer.Option(
        "--full",
        help="Evaluate every patient in full. By default a patient who lacks a concept an "
        "inclusion criterion requires (the pre-filter) is settled from their diagnoses, "
        "procedures and demographics; the criteria that read other data are then "
        "not_evaluated for them.",
        metavar="",
    ),
]
ParseEveryLineOption = Annotated[
    bool,
    typer.Option(
        "--parse-every-line",
        help="Parse every NDJSON line. By default a line no criterion can read (its type and "
        "codes belong to no concept) is only checked, not parsed; the outputs are the same.",
        metavar="",
    ),
]
ExportServerOption = Annotated[
    str | None,
    typer.Option(
        help="A FHIR R4 server: first run its Bulk Data $export of the types the criteria "
        "read into the --ndjson folder (a re-run resumes or reuses the export)."
    ),
]
ExportLevelOption = Annotated[
    str,
    typer.Option(
        help="With --server: system ($export), patient (Patient/$export) or group "
        "(Group/ID/$export, with --group)."
    ),
]
GroupOption = Annotated[
    str | None, typer.Option(help="With --server --export-level group: the Group id.")
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        help="With --server: export what changed since this FHIR instant and apply it onto "
        "the complete export in the --ndjson folder (refused without one: docs/cohort.md)."
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bar.", metavar="")]
NoStoreOption = Annotated[
    bool,
    typer.Option(
        "--no-store",
        help="Keep nothing for re-runs (partitions/store/): a one-off run saves the store's "
        "cost (a few percent of its CPU, about 13% of the export's size on disk); a later "
        "run with edited criteria then evaluates everything from the input.",
        metavar="",
    ),
]
WatchOption = Annotated[
    bool,
    typer.Option(
        "--watch",
        help="After the run, run again whenever the criteria file or a mapping file is "
        "saved: a re-run evaluates only the criteria that changed, and shows the statuses "
        "and funnel steps whose counts moved. Ctrl-C stops.",
        metavar="",
    ),
]

# ----------------------------------------------------------------------------- coverage

CoverageOutOption = Annotated[
    Path | None,
    typer.Option(
        help="A folder to write coverage.csv, coverage.txt and suggested-mappings.yaml to "
        "(no suggested-mappings.yaml when there is nothing to suggest)."
    ),
]
MinimumScoreOption = Annotated[
    float,
    typer.Option(
        min=0,
        max=100,
        help="Lowest name similarity (rapidfuzz score, 0-100) for a code to be listed.",
    ),
]

# ----------------------------------------------------------------------------- serve, subscribe

TrialsOption = Annotated[
    Path, typer.Option(help="Folder of criteria files; every *.yaml is loaded.")
]
ServiceServerOption = Annotated[
    str | None, typer.Option(help="Base URL of the FHIR R4 server patients are pulled from.")
]
HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
ApiTokenEnvOption = Annotated[
    str | None,
    typer.Option(help="Environment variable holding the API bearer token callers send."),
]
ApiTokenFileOption = Annotated[
    Path | None, typer.Option(help="File of API bearer tokens, one a line.")
]
JwtSecretEnvOption = Annotated[
    str | None,
    typer.Option(help="Environment variable holding the HS256 secret of CDS Hooks JWTs."),
]
JwtSecretFileOption = Annotated[
    Path | None, typer.Option(help="File whose first line is the HS256 JWT secret.")
]
JwtHs256TestModeOption = Annotated[
    bool,
    typer.Option(
        help="Accept HS256 JWTs signed with the --jwt-secret (tests only: CDS Hooks 2.0 "
        "requires asymmetric signatures)."
    ),
]
JwksFileOption = Annotated[
    Path | None,
    typer.Option(help="JSON Web Key Set of the CDS clients' public keys (RS/ES JWTs)."),
]
JwtIssuerOption = Annotated[
    list[str] | None,
    typer.Option(help="An accepted JWT issuer (iss); repeat for more. Default: any."),
]
ServicePublicUrlOption = Annotated[
    str | None,
    typer.Option(help="The service's base URL as callers reach it (JWT audience)."),
]
ReportUrlOption = Annotated[
    str | None,
    typer.Option(help="Link for CDS cards, with {trial_id} and {patient_id}."),
]
ReportLinkKeyEnvOption = Annotated[
    str | None,
    typer.Option(
        help="Environment variable holding the key (32 characters or more) that signs the CDS "
        "cards' links to the report page; give the same to every replica. Default: a key of "
        "the process (links end when it does)."
    ),
]
ReportLinkKeyFileOption = Annotated[
    Path | None, typer.Option(help="File whose first line is that key.")
]
ReportLinkMinutesOption = Annotated[
    int,
    typer.Option(
        min=1,
        metavar="N",
        help="Minutes a CDS card's link opens the report page without the API token.",
    ),
]
TrustedFhirServerOption = Annotated[
    list[str] | None,
    typer.Option(
        help="A fhirServer CDS Hooks calls may name besides --server; repeat. Default: none."
    ),
]
CorsOriginOption = Annotated[
    list[str] | None,
    typer.Option(
        help="A browser origin (https://host[:port]) allowed to call the service (CORS); "
        "repeat. Default: none."
    ),
]
AllowAnyFhirServerOption = Annotated[
    bool,
    typer.Option(
        "--allow-any-fhir-server",
        help="Let CDS Hooks calls name any fhirServer (never sent the caller's token unless "
        "trusted). Default: only --server and --trusted-fhir-server.",
        metavar="",
    ),
]
MaxBodyBytesOption = Annotated[
    int, typer.Option(min=1024, help="Largest request body accepted, in bytes (413 beyond).")
]
BodyTimeoutOption = Annotated[
    float,
    typer.Option(
        min=1.0,
        help="Seconds a client may take to send a request body after its headers (408 beyond).",
    ),
]
LimitConcurrencyOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Most requests served at once (503 with Retry-After beyond, an "
        "OperationOutcome); connections are capped at twice as many.",
    ),
]
TimeoutKeepAliveOption = Annotated[
    int,
    typer.Option(min=1, help="Seconds an idle keep-alive connection is kept open."),
]
NoAuthOption = Annotated[
    bool,
    typer.Option(
        "--no-auth", help="Serve without API authentication (local testing only).", metavar=""
    ),
]
LogLevelOption = Annotated[str, typer.Option(help="debug, info, warning or error.")]
SubscribeServerOption = Annotated[
    str, typer.Option(help="Base URL of the FHIR R4 server to subscribe on.")
]
SubscribePublicUrlOption = Annotated[
    str, typer.Option(help="The service's base URL as the FHIR server reaches it.")
]
NotifyTokenEnvOption = Annotated[
    str | None,
    typer.Option(
        help="Environment variable holding the API token the server is to send with each "
        "notification (stored in the Subscription's channel.header)."
    ),
]
NotifyTokenFileOption = Annotated[
    Path | None, typer.Option(help="File whose first line is that API token.")
]
NotificationStateOption = Annotated[
    Path | None,
    typer.Option(
        help="JSON file keeping, per Subscription, when the server was last asked what "
        "changed (kept across restarts; created when missing)."
    ),
]
