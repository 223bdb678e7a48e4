"""Patients from a Bulk Data style NDJSON folder, grouped by patient with bounded memory.

A Bulk `$export` writes one resource per line, by type (`Observation.000.ndjson`, optionally
gzipped), not by patient. Grouping happens in two passes so that an export larger than memory
works:

1. `partition_ndjson` reads every file once and appends each line, unchanged, to one of N
   partition files in a work folder, chosen by a stable hash of the line's patient id.
   Resources of a shared type that name no patient (Medication, Organization, ...) go to a
   separate file; a patient's resources may refer to them.
2. `read_partition` groups one partition in memory and yields a `PatientResources` per
   patient: the patient's resources in export order (files sorted by name, lines in order),
   followed by the shared resources they refer to.

The patient of a resource is the Patient its patient field names (`subject`, `patient`,
`beneficiary`, `individual`, per type; `PATIENT_FIELDS`); a Patient is its own. The first pass
reads that reference straight from the line text when the line mentions exactly one
`"reference":"Patient/<id>"` and parses the JSON otherwise; the second pass parses every line
and checks the reference exactly.

Bad input never stops a run: a malformed line, a resource that names no patient, a truncated
gzip stream, an unreadable file each become one `SourceProblem` (file, line, resource,
message) passed to `on_problem`.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from engine.errors import InputError, Location
from engine.sources.base import PatientResources
from engine.sources.references import reference_key

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

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_LINE_TYPE = re.compile(rb'^\{"resourceType":"([A-Za-z]+)"')
_PATIENT_REFERENCE_TEXT = re.compile(
    rb'"reference":"Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"'
)
_REFERENCE_TEXT = re.compile(rb'"reference":"([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})"')
_WRITE_BUFFER = 1 << 20
_MARKER = "partitioned.json"
_SHARED_FILE = "shared.ndjson"


@dataclass(frozen=True)
class SourceProblem:
    """One piece of input that could not be used; the run goes on without it."""

    file: str
    line: int | None
    resource: str | None
    patient: str | None
    message: str

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
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceProblem:
        return cls(data["file"], data["line"], data["resource"], data["patient"], data["message"])

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
    files = [path for path in files if not path.is_dir()]
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
        return (
            patient_id if isinstance(patient_id, str) and _FHIR_ID.fullmatch(patient_id) else None
        )
    fields = PATIENT_FIELDS.get(resource_type, DEFAULT_PATIENT_FIELDS)  # type: ignore[arg-type]
    for field in fields:
        value = resource.get(field)
        for holder in value if isinstance(value, list) else (value,):
            if not isinstance(holder, dict):
                continue
            reference = holder.get("reference")
            key = reference_key(reference) if isinstance(reference, str) else None
            if key is not None and key.startswith("Patient/"):
                return key[len("Patient/") :]
    return None


def partition_number(patient_id: str, partition_count: int) -> int:
    """The partition a patient's lines go to: a stable hash (CRC-32) of the id, modulo N."""
    return zlib.crc32(patient_id.encode()) % partition_count


# --------------------------------------------------------------------------- pass 1


@dataclass(frozen=True)
class PartitionedExport:
    """An NDJSON export split into partition files by patient (the result of pass 1)."""

    folder: str
    work_folder: str
    files: tuple[str, ...]
    partition_count: int
    patients_per_partition: tuple[int, ...]
    lines: int
    bytes_read: int
    problems: int

    def partition_path(self, index: int) -> Path:
        return Path(self.work_folder) / f"input-{index:04d}.ndjson"

    @property
    def shared_path(self) -> Path:
        return Path(self.work_folder) / _SHARED_FILE

    @property
    def patients(self) -> int:
        return sum(self.patients_per_partition)

    def is_complete(self) -> bool:
        """Whether every file pass 1 wrote is still there."""
        paths = [self.shared_path, *map(self.partition_path, range(self.partition_count))]
        return all(path.is_file() for path in paths)

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "work_folder": self.work_folder,
            "files": list(self.files),
            "partition_count": self.partition_count,
            "patients_per_partition": list(self.patients_per_partition),
            "lines": self.lines,
            "bytes_read": self.bytes_read,
            "problems": self.problems,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionedExport:
        return cls(
            folder=data["folder"],
            work_folder=data["work_folder"],
            files=tuple(data["files"]),
            partition_count=data["partition_count"],
            patients_per_partition=tuple(data["patients_per_partition"]),
            lines=data["lines"],
            bytes_read=data["bytes_read"],
            problems=data["problems"],
        )

    @classmethod
    def load(cls, work_folder: str | Path) -> PartitionedExport | None:
        """The export pass 1 left in `work_folder`, or None when it is absent or incomplete."""
        marker = Path(work_folder) / _MARKER
        if not marker.is_file():
            return None
        export = cls.from_json(orjson.loads(marker.read_bytes()))
        return export if export.is_complete() else None


def partition_ndjson(
    folder: str | Path,
    work_folder: str | Path,
    partition_count: int,
    on_problem: ProblemHandler = raise_problem,
) -> PartitionedExport:
    """Pass 1: split every line of the export into `partition_count` files by patient.

    Writes `input-NNNN.ndjson` (one `patient TAB file TAB line TAB json` line per resource)
    and `shared.ndjson` into `work_folder`, then the marker `partitioned.json` last, so an
    interrupted pass leaves no marker. Raises InputError only when the folder holds no NDJSON.
    """
    if partition_count < 1:
        raise ValueError("partition_count must be at least 1")
    files = ndjson_files(folder)
    work = Path(work_folder)
    work.mkdir(parents=True, exist_ok=True)
    (work / _MARKER).unlink(missing_ok=True)
    splitter = _Splitter(work, partition_count, on_problem)
    try:
        for file_number, path in enumerate(files):
            splitter.split_file(file_number, path)
    finally:
        splitter.close()
    export = PartitionedExport(
        folder=str(folder),
        work_folder=str(work),
        files=tuple(str(path) for path in files),
        partition_count=partition_count,
        patients_per_partition=tuple(splitter.patients),
        lines=splitter.lines,
        bytes_read=splitter.bytes_read,
        problems=splitter.problems,
    )
    _write_atomically(work / _MARKER, orjson.dumps(export.to_json()))
    return export


class _Splitter:
    """Routes lines to partition files; counts lines, bytes, patients and problems."""

    def __init__(self, work: Path, partition_count: int, on_problem: ProblemHandler) -> None:
        self.partition_count = partition_count
        self.on_problem = on_problem
        self.outputs: list[IO[bytes]] = []
        for index in range(partition_count):
            path = work / f"input-{index:04d}.ndjson"
            self.outputs.append(open(path, "wb", buffering=_WRITE_BUFFER))  # noqa: SIM115
        self.shared = open(work / _SHARED_FILE, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
        self.shared_keys: dict[str, tuple[int, int]] = {}
        self.patients = [0] * partition_count
        self.lines = 0
        self.bytes_read = 0
        self.problems = 0
        self.files: list[str] = []

    def close(self) -> None:
        for output in [*self.outputs, self.shared]:
            output.close()

    def problem(
        self, file: str, line: int | None, message: str, resource: str | None = None
    ) -> None:
        self.problems += 1
        self.on_problem(SourceProblem(file, line, resource, None, message))

    def split_file(self, file_number: int, path: Path) -> None:
        name = str(path)
        self.files.append(name)
        line_number = 0
        try:
            with _open_lines(path) as lines:
                for line_number, line in enumerate(lines, start=1):
                    self.bytes_read += len(line)
                    text = line.strip()
                    if text:
                        self.lines += 1
                        self.split_line(file_number, line_number, text, name)
        except (OSError, EOFError, zlib.error) as error:
            reason = _reason(error)
            if line_number == 0:
                self.problem(name, None, f"cannot read the file: {reason}")
            else:
                self.problem(
                    name, line_number + 1, f"cannot read past line {line_number}: {reason}"
                )

    def split_line(self, file_number: int, line_number: int, text: bytes, file: str) -> None:
        patient_id = _patient_from_text(text)
        if patient_id is None:
            patient_id = self.patient_from_json(file_number, line_number, text, file)
            if patient_id is None:
                return
        index = partition_number(patient_id, self.partition_count)
        self.outputs[index].write(
            b"%s\t%d\t%d\t%s\n" % (patient_id.encode(), file_number, line_number, text)
        )

    def patient_from_json(
        self, file_number: int, line_number: int, text: bytes, file: str
    ) -> str | None:
        """The line's patient after parsing it; shared resources are written aside (None)."""
        try:
            resource = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            self.problem(file, line_number, f"not valid JSON: {error.msg}")
            return None
        checked = _checked_resource(resource)
        if isinstance(checked, str):
            self.problem(file, line_number, checked)
            return None
        resource_type = resource["resourceType"]
        resource_id = resource.get("id")
        label = f"{resource_type}/{resource_id}" if isinstance(resource_id, str) else None
        patient_id = patient_reference(resource)
        if patient_id is not None:
            if resource_type == "Patient":
                self.patients[partition_number(patient_id, self.partition_count)] += 1
            return patient_id
        if resource_type == "Patient":
            self.problem(file, line_number, "Patient.id is missing or not a FHIR id", label)
        elif resource_type in SHARED_TYPES:
            self.add_shared(file_number, line_number, text, file, label)
        else:
            fields = ", ".join(PATIENT_FIELDS.get(resource_type, DEFAULT_PATIENT_FIELDS))
            self.problem(
                file,
                line_number,
                f"no reference to a Patient in {fields}; "
                "the resource belongs to no patient and is left out",
                label,
            )
        return None

    def add_shared(
        self, file_number: int, line_number: int, text: bytes, file: str, label: str | None
    ) -> None:
        if label is None or not _FHIR_ID.fullmatch(label.split("/", 1)[1]):
            self.problem(
                file, line_number, "a shared resource needs a FHIR id to be referred to", label
            )
            return
        earlier = self.shared_keys.get(label)
        if earlier is not None:
            self.problem(
                file,
                line_number,
                f"the same resource as {self.files[earlier[0]]}:{earlier[1]}; the first is kept",
                label,
            )
            return
        self.shared_keys[label] = (file_number, line_number)
        self.shared.write(b"%s\t%d\t%d\t%s\n" % (label.encode(), file_number, line_number, text))


def _patient_from_text(text: bytes) -> str | None:
    """The patient id of a line that names exactly one Patient, read without parsing.

    Only for lines whose resourceType comes first and is neither Patient nor a shared type;
    pass 2 checks the answer against the parsed resource.
    """
    match = _LINE_TYPE.match(text)
    if match is None:
        return None
    resource_type = match.group(1).decode()
    if resource_type == "Patient" or resource_type in SHARED_TYPES:
        return None
    if text.count(b"Patient/") != 1:
        return None
    reference = _PATIENT_REFERENCE_TEXT.search(text)
    return reference.group(1).decode() if reference is not None else None


def _checked_resource(resource: Any) -> dict[str, Any] | str:
    """The resource when it is a JSON object with a resourceType, else what is wrong."""
    if not isinstance(resource, dict):
        return f"expected a JSON object (a FHIR resource), found {type(resource).__name__}"
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return "the resource has no resourceType"
    return resource


def _open_lines(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _reason(error: BaseException) -> str:
    if isinstance(error, EOFError):
        return "the compressed stream ends early (truncated file)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- pass 2


SharedResources = dict[str, bytes]
"""Shared resources by `Type/id`, as their JSON text."""


def load_shared_resources(export: PartitionedExport) -> SharedResources:
    """The export's shared resources (Medication, Organization, ...), by `Type/id`."""
    shared: SharedResources = {}
    with open(export.shared_path, "rb") as lines:
        for line in lines:
            key, _file, _line, text = line.rstrip(b"\n").split(b"\t", 3)
            shared[key.decode()] = text
    return shared


def read_partition(
    export: PartitionedExport,
    index: int,
    shared: SharedResources,
    on_problem: ProblemHandler = raise_problem,
) -> Iterator[PatientResources]:
    """Pass 2: the patients of one partition, sorted by patient id.

    Each patient's resources are in export order, followed by the shared resources they
    refer to. A patient whose data holds no Patient is reported and left out.
    """
    groups: dict[str, list[tuple[int, int, bytes]]] = {}
    with open(export.partition_path(index), "rb") as lines:
        for line in lines:
            patient, file_number, line_number, text = line.rstrip(b"\n").split(b"\t", 3)
            groups.setdefault(patient.decode(), []).append(
                (int(file_number), int(line_number), text)
            )
    for patient_id in sorted(groups):
        grouped = _patient_resources(export, patient_id, groups.pop(patient_id), shared, on_problem)
        if grouped is not None:
            yield grouped


def _patient_resources(
    export: PartitionedExport,
    patient_id: str,
    lines: list[tuple[int, int, bytes]],
    shared: SharedResources,
    on_problem: ProblemHandler,
) -> PatientResources | None:
    files = export.files
    resources: list[dict[str, Any]] = []
    seen: dict[str, tuple[int, int]] = {}
    origin: str | None = None
    referred: dict[str, None] = {}

    def problem(file_number: int, line_number: int, message: str, label: str | None) -> None:
        on_problem(SourceProblem(files[file_number], line_number, label, patient_id, message))

    for file_number, line_number, text in lines:
        try:
            resource = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            problem(file_number, line_number, f"not valid JSON: {error.msg}", None)
            continue
        checked = _checked_resource(resource)
        if isinstance(checked, str):
            problem(file_number, line_number, checked, None)
            continue
        resource_type = resource["resourceType"]
        resource_id = resource.get("id")
        label = f"{resource_type}/{resource_id}" if isinstance(resource_id, str) else None
        if patient_reference(resource) != patient_id:
            fields = ", ".join(PATIENT_FIELDS.get(resource_type, DEFAULT_PATIENT_FIELDS))
            problem(
                file_number,
                line_number,
                f"no reference to a Patient in {fields}; "
                "the resource belongs to no patient and is left out",
                label,
            )
            continue
        if label is not None:
            earlier = seen.setdefault(label, (file_number, line_number))
            if earlier != (file_number, line_number):
                where = f"{files[earlier[0]]}:{earlier[1]}"
                problem(
                    file_number,
                    line_number,
                    f"the same resource as {where}; the first is kept",
                    label,
                )
                continue
        if resource_type == "Patient" and origin is None:
            origin = f"{files[file_number]}:{line_number}"
        resources.append(resource)
        for key in _REFERENCE_TEXT.findall(text):
            referred[key.decode()] = None
    if origin is None:
        file_number, line_number, _text = lines[0]
        on_problem(
            SourceProblem(
                files[file_number],
                None,
                f"Patient/{patient_id}",
                patient_id,
                f"{len(lines)} lines refer to Patient/{patient_id}, which is not in the export; "
                "they are not evaluated",
            )
        )
        return None
    for key in referred:
        shared_text = shared.get(key)
        if shared_text is not None and key not in seen:
            resources.append(orjson.loads(shared_text))
    return PatientResources(patient_id, resources, [None] * len(resources), origin)


# --------------------------------------------------------------------------- the source


class NdjsonFolderSource:
    """Patients from an NDJSON folder (a `PatientSource`), grouped through partition files.

    `work_folder` holds the partition files (a temporary folder, removed afterwards, when
    None). A problem raises InputError from the iteration, unless `on_problem` is given: then
    each problem is passed to it and reading goes on.
    """

    def __init__(
        self,
        folder: str | Path,
        work_folder: str | Path | None = None,
        partition_count: int = 16,
        on_problem: ProblemHandler | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.work_folder = Path(work_folder) if work_folder is not None else None
        self.partition_count = partition_count
        self.on_problem = on_problem or raise_problem

    def __iter__(self) -> Iterator[PatientResources]:
        if self.work_folder is not None:
            yield from self._patients(self.work_folder)
            return
        with tempfile.TemporaryDirectory(prefix="trialsieve-ndjson-") as work:
            yield from self._patients(Path(work))

    def _patients(self, work: Path) -> Iterator[PatientResources]:
        export = partition_ndjson(self.folder, work, self.partition_count, self.on_problem)
        shared = load_shared_resources(export)
        for index in range(export.partition_count):
            yield from read_partition(export, index, shared, self.on_problem)
