"""The exceptions trialsieve raises, one root and one subclass per pipeline stage or front end.

Every class in the first tree is defined here: import it from `engine.errors` (a stage's
package also lists its own in `__all__`, e.g. `engine.sinks.SinkError`). The tree is complete:
`tests/test_error_tree.py` fails when an exception class is defined elsewhere in `engine`
without being named below with its module, or is missing from the tree.

    TrialsieveError
     +-- CriteriaError          a criteria file is malformed (file, line, column, criterion, field)
     +-- MappingError           a mapping file is malformed (file, line, column, field)
     +-- LintWarning            `trialsieve lint`: worth fixing, does not stop evaluation
     +-- InputError             patient data cannot be read (file, resource, field)
     |    +-- InputChangedError a cohort's input file changed while the run read it (an
     |                          export still being written or copied)
     +-- DateProblem            a resource's date field is unusable (also a ValueError);
     |                          evaluation turns it into an "unknown" outcome naming the field
     +-- UnitError              a unit cannot be parsed or converted
     +-- AttestationError       an attestation file is malformed
     +-- ServerError            a FHIR server cannot be reached or refuses a request
          +-- ServerRefusal     it answered 200 with an OperationOutcome in place of the
                                searchset or resource asked for (its own words of refusal)
     +-- AuthConfigError        an auth configuration (token or SMART key file) is unusable
     +-- BulkExportError        a Bulk Data export cannot be asked for, or kept in that folder
     +-- OutputValidationError  a resource trialsieve built is not valid FHIR (a bug, never input)
     +-- SinkError              a result cannot be written
     +-- CohortError            a cohort run cannot start (folder holds another run, engine)
     |    +-- WorkerLostError   a cohort run's worker process (or Dask cluster) ended abruptly;
     |                          the partitions written are kept, the same command resumes
     +-- ServiceConfigError     the REST service cannot start: a setting is missing or unreadable
     +-- EmbeddedServerError    the embedded FHIR server (sekmet-fhir) cannot be started
     +-- ErrorCollection        several of the above found in one pass (the linter)

    Exception
     +-- ApiError               (engine/service/problems.py) an HTTP error answer of the REST
                                service: status, OperationOutcome issues, headers

`ApiError` is deliberately not a `TrialsieveError`: it is not a problem of the pipeline but the
answer the service builds from one (`problems.error_for`), and the service turns every
`TrialsieveError` that reaches it into an `ApiError`; were it a `TrialsieveError`, that
conversion would catch the service's own 401s and 404s and answer them as 500s. It stays
beside the OperationOutcome code it needs.

A library's kind of error, raised by trialsieve's own code so that the library's callers
handle it as they handle the library's errors, and converted into the tree above there:

    YamlLimitError    (engine/normalise/yaml_reading.py) a YAML text beyond the alias
                      expansion or nesting limits: a ruamel `MarkedYAMLError` (line, column),
                      reported by each YAML reader as it reports a syntax error
                      (CriteriaError, MappingError, AttestationError, ...)
    DuplicateAnchorError (engine/normalise/yaml_reading.py) an anchor defined twice in one
                      document: a ruamel `ComposerError` (line, column), reported the same way
    ImpossibleDateError (engine/normalise/yaml_reading.py) a date-shaped plain scalar that
                      is no date (`2026-02-30`): a ruamel `ConstructorError` (line,
                      column), reported the same way
    NotRegularFileError (engine/atomic_write.py) a write's target that exists and is not a
                      regular file (a named pipe, a device, a socket), never replaced: an
                      OSError, reported by each writer as it reports a full disk (SinkError,
                      the commands' `cannot write` messages)
    AnswerTooSlow     (engine/fhir_http.py) a FHIR server's answer still arriving when its
                      attempt's time ran out: an httpx `ReadTimeout`, retried by the retry
                      loop like any timeout and reported as a ServerError (`timed_out`)
    StandardOutputError (engine/cli/standard_output.py) standard output cannot be written
                      (a full disk, a closed pipe): an OSError, which the `trialsieve` entry
                      turns into `error: standard output: cannot write: ...` and exit 1

Signals, not errors: private exceptions that carry control inside one module and are always
caught there, never reaching a caller:

    RetryableAnswer   (engine/fhir_http.py) an answer worth asking again for
    _Gone             (engine/sources/bulk_export.py) an export file the server no longer has
    _NeedsMolarMass   (engine/normalise/units.py) a conversion needs the analyte's molar mass
    _Incommensurable  (engine/normalise/units.py) two units measure different dimensions
    NotStored         (engine/cohort/outcome_store.py) a cohort re-run's store cannot answer
                      what a criterion asks; caught by engine/cohort/rerun.py, which then
                      evaluates that partition from the input
    UntrustedCacheFile (engine/compiled_cache.py) a cache file another user could have
                      written: never unpickled; caught there (a warning, then the trial
                      compiles as without a cache)
    _HostClosing      (engine/cohort/engines.py) the command closed the Dask cluster's host
                      process, or went away, in the middle of a run: the host stops the run
                      and closes the cluster

Every error carries a `location` that names where the problem is; `str(error)` puts it first,
so a person reading the message knows which file, line, resource and field to open.
Missing or unusable clinical data inside an otherwise readable record is *not* an exception:
it becomes an "unknown" outcome with the reason (see `engine.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Location:
    """Where a problem is: any combination of file, line, column, resource, criterion, field."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    resource: str | None = None
    criterion: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            position = self.file
            if self.line is not None:
                position += f":{self.line}"
                if self.column is not None:
                    position += f":{self.column}"
            parts.append(position)
        if self.resource:
            parts.append(self.resource)
        if self.criterion:
            parts.append(f"criterion {self.criterion}")
        if self.field:
            parts.append(f"field {self.field}")
        return ", ".join(parts)


@dataclass
class TrialsieveError(Exception):
    """Root of every error trialsieve raises on purpose."""

    message: str
    location: Location = field(default_factory=Location)
    snippet: str | None = None

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.location)
        text = f"{where}: {self.message}" if where else self.message
        if self.snippet:
            text += f"\n    {self.snippet}"
        return text


class CriteriaError(TrialsieveError):
    """A criteria file is malformed or refers to something that does not exist."""


class MappingError(TrialsieveError):
    """A terminology or unit mapping file is malformed."""


@dataclass
class LintWarning(TrialsieveError):
    """A problem worth fixing that does not stop evaluation (some answers may be unknown)."""


class InputError(TrialsieveError):
    """Patient data cannot be read: not JSON, not a Bundle, several patients, ..."""


class InputChangedError(InputError):
    """An input file of a cohort run changed while the run read it (its size, modification
    time, or lines differ from what the first pass found; a file added or removed)."""


class DateProblem(TrialsieveError, ValueError):
    """A date field cannot be used: names the field and says why (`field: why`).

    Raised while a resource is dated; evaluation catches it and answers "unknown" with this
    text as the reason. Also a ValueError, so date parsing may catch both in one place.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, Location(field=field))

    @property
    def field(self) -> str:
        """The date field at fault (`effectiveDateTime`, `birthDate`, ...)."""
        return self.location.field or ""

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class UnitError(TrialsieveError):
    """A unit is not valid UCUM, or cannot be converted to the unit asked for."""


class AttestationError(TrialsieveError):
    """An attestation file is malformed or attests something the criteria do not ask."""


@dataclass
class ServerError(TrialsieveError):
    """A FHIR server cannot be reached, refuses a request, or answers something unusable.

    `server` is the base URL and `request` the request that failed ("GET Patient/p1/$everything");
    `status` is the last HTTP status, None when no answer came; `timed_out` says the last try
    ran out of time. Never carries credentials.
    """

    server: str | None = None
    request: str | None = None
    status: int | None = None
    timed_out: bool = False
    """True when the last try got no answer in time (a gateway would say 504)."""

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.server, self.request) if part)
        return f"{where}: {self.message}" if where else self.message


class ServerRefusal(ServerError):
    """A server answered 200 with an OperationOutcome in place of the searchset or the resource
    asked for: it refuses the request in its own words (`status` is 200). Callers that take a
    refusal as "this type is not available" (`engine.sources.fhir_server.is_refusal`) catch
    this class, never a bare status 200: an answer that is not FHIR JSON at all (a proxy's
    login page) is a plain ServerError.
    """


class AuthConfigError(TrialsieveError):
    """An auth configuration is unusable: unreadable file, missing field, bad key."""


class BulkExportError(TrialsieveError):
    """An export cannot be asked for or kept here: bad arguments, or a folder that holds
    another export, NDJSON no export wrote, or an unreadable state file.
    """


class OutputValidationError(TrialsieveError):
    """A resource trialsieve built is not valid FHIR R4 (a bug in trialsieve, never bad input)."""


class SinkError(TrialsieveError):
    """A result could not be written."""


class CohortError(TrialsieveError):
    """A cohort run cannot start (the output folder holds another run, an unknown engine) or
    cannot go on (a worker process ended abruptly: what was written is kept for a resume)."""


class WorkerLostError(CohortError):
    """A worker process of a cohort run (local, or of the Dask cluster, or the cluster's
    process) ended abruptly (killed, out of memory) before every partition was evaluated and
    written: the partitions written are kept and the same command resumes (exit status 1,
    not a bad argument's 2)."""


class ServiceConfigError(TrialsieveError):
    """The service cannot start: a setting is missing, contradictory or unreadable."""


class EmbeddedServerError(TrialsieveError):
    """The embedded server cannot be started: sekmet-fhir missing, exits, or never answers."""


@dataclass
class ErrorCollection(TrialsieveError):
    """Several errors found in one pass (a linter reports them all, not just the first)."""

    errors: list[TrialsieveError] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors) or self.message
