"""The exceptions trialsieve raises, one root and one subclass per pipeline stage.

    TrialsieveError
     +-- CriteriaError      a criteria file is malformed (file, line, column, criterion, field)
     +-- MappingError       a mapping file is malformed (file, line, column, field)
     +-- InputError         patient data cannot be read (file, resource, field)
     +-- UnitError          a unit cannot be parsed or converted
     +-- AttestationError   an attestation file is malformed
     +-- ServerError        a FHIR server cannot be reached or refuses a request (server, request)

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


class InputError(TrialsieveError):
    """Patient data cannot be read: not JSON, not a Bundle, several patients, ..."""


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


@dataclass
class ErrorCollection(TrialsieveError):
    """Several errors found in one pass (a linter reports them all, not just the first)."""

    errors: list[TrialsieveError] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors) or self.message
