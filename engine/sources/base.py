"""What every source yields: one patient's resources, as parsed, with where they came from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class PatientResources:
    """One patient's data, exactly as read: plain dicts, in document order.

    `resources` holds every resource of the patient's data, the Patient among them, each with
    a string `resourceType` (a source checks that); `full_urls` runs parallel to it (the
    Bundle entry's fullUrl, None when there is none).
    `origin` names the file or URL the data came from, for messages.
    `unavailable_types` maps each resource type the source could not provide for this patient
    (a FHIR server refused the search, an EHR could not fetch a CDS Hooks prefetch) to why, as
    a phrase after the type's name ("not available from the server (HTTP 403 Forbidden)"):
    criteria over such a type are unknown, never "none on record".
    `source_problems` are what the source noted about the data it did provide, each one line
    for the report's data problems (a server's warning in a searchset, a Medication it refused
    to read).
    `file`: the file that holds this patient's data and no other patient's (a Bundle file),
    when the data came from one (None for NDJSON, a server, a Bundle posted inline): a cohort
    run names it in the patient's result, so that a patient found in two files is reported
    naming both.
    `texts`, when the source has them: the JSON text each resource was parsed from, by the
    resource's `id()` (an NDJSON line, its line end kept: JSON white space), for a reader
    that writes the resources out again (a cohort run's re-run store) without serialising
    them anew. A resource missing from it (or None) is serialised.
    """

    patient_id: str
    resources: list[dict[str, Any]]
    full_urls: list[str | None]
    origin: str
    unavailable_types: Mapping[str, str] = field(default_factory=dict)
    source_problems: tuple[str, ...] = ()
    file: str | None = None
    texts: Mapping[int, bytes] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.resources) != len(self.full_urls):
            raise ValueError(
                f"{len(self.resources)} resources but {len(self.full_urls)} fullUrls: "
                "full_urls must run parallel to resources"
            )


class PatientSource(Protocol):
    """Anything that yields patients one at a time (Bundle files, NDJSON, a FHIR server).

    A source raises `engine.errors.InputError` for data it cannot read, naming the file,
    resource and field.
    """

    def __iter__(self) -> Iterator[PatientResources]: ...
