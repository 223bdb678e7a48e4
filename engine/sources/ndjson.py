"""Bulk Data style NDJSON, as read: which files, which patient a resource belongs to, problems.

A Bulk `$export` writes one resource per line, by type (`Observation.000.ndjson`, optionally
gzipped), not by patient. This module holds what reading such a folder needs:
`ndjson_files` lists the files in export order, `patient_reference` names the Patient a
resource belongs to (the field per type in `PATIENT_FIELDS`; a Patient is its own; resources
of `SHARED_TYPES` may belong to none), and `SourceProblem` is one piece of input that could
not be used, passed to a `ProblemHandler` so that bad input never stops a run.

Grouping an export by patient with bounded memory (the partition files of a cohort run, and
`NdjsonFolderSource`) is the cohort's: see `engine.cohort.ndjson_partitions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InputError, Location
from engine.sources.references import FHIR_ID, reference_key

SHARED_TYPES = frozenset(
    {
        "Device",
        "Endpoint",
        "Group",
        "HealthcareService",
        "Location",
        "Medication",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "ResearchStudy",
        "Substance",
    }
)
"""Types that may belong to no patient; without a patient reference they are shared."""

DEFAULT_PATIENT_FIELDS = ("subject", "patient", "beneficiary", "individual")

PATIENT_FIELDS: dict[str, tuple[str, ...]] = {
    "AllergyIntolerance": ("patient",),
    "Claim": ("patient",),
    "Coverage": ("beneficiary", "subscriber"),
    "Device": ("patient",),
    "ExplanationOfBenefit": ("patient",),
    "Immunization": ("patient",),
    "Provenance": ("target",),
    "RelatedPerson": ("patient",),
    "ResearchSubject": ("individual",),
    "SupplyDelivery": ("patient",),
}
"""The fields that name a resource's patient, per type; other types use DEFAULT_PATIENT_FIELDS."""

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")


PARSED = "parsed"
"""`SourceProblem.check` of a line that was parsed and checked as a resource."""
SCREENED = "screened"
"""`SourceProblem.check` of a line checked without parsing (a whole JSON object line)."""


@dataclass(frozen=True)
class SourceProblem:
    """One piece of input that could not be used; the run goes on without it.

    `check`: how the line was checked when the problem is about one line's content: `parsed`
    (parsed as JSON and checked as a resource) or `screened` (a cohort run left it unparsed
    and checked only that it is a whole JSON object line naming its resource and patient;
    `engine.cohort.ndjson_partitions`); None otherwise (a file, a patient, an evaluation).
    """

    file: str
    line: int | None
    resource: str | None
    patient: str | None
    message: str
    check: str | None = None

    def __str__(self) -> str:
        return str(InputError(self.message, self.location))

    @property
    def location(self) -> Location:
        return Location(file=self.file, line=self.line, resource=self.resource)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "resource": self.resource,
            "patient": self.patient,
            "message": self.message,
            "check": self.check,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceProblem:
        return cls(
            data["file"],
            data["line"],
            data["resource"],
            data["patient"],
            data["message"],
            data.get("check"),
        )

    @classmethod
    def from_error(cls, error: InputError, patient: str | None = None) -> SourceProblem:
        location = error.location
        field = f" (field {location.field})" if location.field else ""
        return cls(
            location.file or "",
            location.line,
            location.resource,
            patient,
            error.message + field,
        )


ProblemHandler = Callable[[SourceProblem], None]


def raise_problem(problem: SourceProblem) -> None:
    """The default problem handler: raise the problem as an InputError."""
    raise InputError(problem.message, problem.location)


def ndjson_files(folder: str | Path) -> list[Path]:
    """The `*.ndjson` and `*.ndjson.gz` files under `folder`, sorted by relative path.

    Raises InputError when the folder does not exist or holds no such file.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError("no such folder", Location(file=str(root)))
    files = sorted(
        (path for path in root.rglob("*") if path.name.endswith(NDJSON_SUFFIXES)),
        key=lambda path: path.relative_to(root).as_posix(),
    )
    for path in files:
        if path.exists() and not path.is_file():  # a folder, FIFO, socket or device
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise InputError(
                f"{kind}, named like an NDJSON file: reading it would skip data or block; "
                "rename or remove it",
                Location(file=str(path)),
            )
    if not files:
        raise InputError(
            "the folder holds no *.ndjson or *.ndjson.gz files", Location(file=str(root))
        )
    return files


def patient_reference(resource: dict[str, Any]) -> str | None:
    """The id of the Patient a resource belongs to (a Patient's own id), or None.

    >>> patient_reference({"resourceType": "Observation", "subject": {"reference": "Patient/a"}})
    'a'
    """
    resource_type = resource.get("resourceType")
    if resource_type == "Patient":
        patient_id = resource.get("id")
        return patient_id if isinstance(patient_id, str) and FHIR_ID.fullmatch(patient_id) else None
    fields = PATIENT_FIELDS.get(resource_type, DEFAULT_PATIENT_FIELDS)  # type: ignore[arg-type]
    for field_name in fields:
        value = resource.get(field_name)
        for holder in value if isinstance(value, list) else (value,):
            if not isinstance(holder, dict):
                continue
            reference = holder.get("reference")
            key = reference_key(reference) if isinstance(reference, str) else None
            if key is not None and key.startswith("Patient/"):
                return key[len("Patient/") :]
    return None
