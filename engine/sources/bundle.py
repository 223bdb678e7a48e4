"""Patients from FHIR R4 Bundle JSON files, one Bundle per patient.

Accepted Bundle types: `searchset` (e.g. the answer to `Patient/$everything`; `include` entries
are kept, `outcome` entries are skipped), `collection`, `transaction`, `batch` and `document`
(e.g. an International Patient Summary). Response and history Bundles are refused with the
reason: they describe what a server did, not a patient's record.

A folder of patient Bundles may also hold Bundles of **shared resources**: no Patient, only
resources of `SHARED_TYPES` (Medication, Organization, Practitioner, Location, ...) that
belong to no patient, such as Synthea's `hospitalInformation*`/`practitionerInformation*`
Bundles or the `_shared.json` a conversion from NDJSON writes. They are found by their
content, whatever their names (`shared_bundle_files`, `SharedBundleResources`), and each
patient's Bundle gets the shared resources it refers to (by `Type/id`, an absolute URL
ending so, or the shared entry's fullUrl), as a cohort run over NDJSON gives each patient
the export's shared resources it refers to. A Bundle without a Patient that holds a
resource belonging to a patient stays an error naming the file and the resource.

Every problem raises `InputError` naming the file and, where it applies, the line and column,
the entry, the resource and the field. Nothing here prints or exits.
"""

from __future__ import annotations

import dataclasses
import mmap
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from engine.errors import InputError, Location
from engine.sources.base import PatientResources
from engine.sources.ndjson import SHARED_TYPES, patient_reference
from engine.sources.references import id_from_full_url, is_fhir_id, reference_key

ACCEPTED_BUNDLE_TYPES = ("searchset", "collection", "transaction", "batch", "document")

_REFUSED_BUNDLE_TYPES = {
    "transaction-response": "it reports what a server did with a transaction",
    "batch-response": "it reports what a server did with a batch",
    "history": "it lists versions of resources",
    "message": "it is a message",
    "subscription-notification": "it is a subscription notification",
}

# Fields that tie a resource to its patient (Observation.subject, AllergyIntolerance.patient, ...).
_PATIENT_FIELDS = ("subject", "patient")

_PATIENT_RESOURCE = re.compile(rb'"resourceType"\s*:\s*"Patient"')
"""How a Patient resource starts in a Bundle's JSON text (a file without it holds none)."""
_REFERENCE = re.compile(rb'"reference"\s*:\s*"([^"\\]{1,2048})"')
"""A reference in JSON text (one with an escape in it is not looked for)."""

_BYTE_ORDER_MARK = b"\xef\xbb\xbf"
_SNIPPET_HALF_WIDTH = 40


def read_bundle_file(
    path: str | Path, shared: SharedBundleResources | None = None
) -> PatientResources:
    """Read one patient's Bundle from a JSON file, with the `shared` resources it refers to.

    Raises InputError when the file cannot be read, is not JSON, is not a Bundle of an
    accepted type, or does not hold exactly one patient's data.
    """
    origin = str(path)
    data = _read_file(Path(path))
    resources, full_urls = _bundle_contents(_parse_json(data, origin), origin)
    patient = _patient_resources(resources, full_urls, origin, file=origin)
    return patient if shared is None else shared.attach(patient, data)


def parse_bundle(data: bytes | str, origin: str) -> PatientResources:
    """Read one patient's Bundle from JSON text (an upload, a response body).

    `origin` names where the text came from in error messages. Raises InputError like
    `read_bundle_file`.
    """
    encoded = data.encode() if isinstance(data, str) else data
    resources, full_urls = _bundle_contents(_parse_json(encoded, origin), origin)
    return _patient_resources(resources, full_urls, origin)


@dataclass
class SharedBundleResources:
    """The resources of a record set's shared Bundles (see the module's docstring), by what
    a patient's Bundle may write to refer to one: `Type/id` and the entry's fullUrl. The
    first of a `Type/id` (in file order) is kept."""

    entries: list[tuple[bytes, str | None, str]] = dataclasses.field(default_factory=list)
    """Each resource's JSON text, its entry's fullUrl and its `Type/id`."""
    by_reference: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_files(
        cls, files: Iterable[Path], on_error: Callable[[InputError], None] | None = None
    ) -> SharedBundleResources:
        """The shared resources of these Bundle files (`shared_bundle_files`); a file that
        is not a Bundle of shared resources raises InputError naming it, or is passed to
        `on_error` and left out."""
        shared = cls()
        for file in files:
            try:
                shared.add(file)
            except InputError as error:
                if on_error is None:
                    raise
                on_error(error)
        return shared

    def add(self, file: Path) -> None:
        """Add the resources of a Bundle of shared resources; InputError naming the file
        when it is not one (a resource belonging to a patient, one without an id)."""
        origin = str(file)
        resources, full_urls = _bundle_contents(_parse_json(_read_file(file), origin), origin)
        found: list[tuple[bytes, str | None, str]] = []
        for position, (resource, full_url) in enumerate(zip(resources, full_urls, strict=True)):
            resource_type = resource["resourceType"]
            label = _label(resource, full_url, position)
            if resource_type == "Patient" or resource_type not in SHARED_TYPES:
                raise InputError(
                    f"the Bundle holds no Patient resource, and {label} belongs to a patient; "
                    "each Bundle must hold one patient's data, or only resources patients "
                    f"share ({', '.join(sorted(SHARED_TYPES))})",
                    Location(file=origin, resource=label),
                )
            if patient_reference(resource) is not None:
                raise InputError(
                    "the Bundle holds no Patient resource, and this resource refers to a "
                    "patient; put it in that patient's Bundle",
                    Location(file=origin, resource=label),
                )
            resource_id = resource.get("id")
            if not is_fhir_id(resource_id):
                raise InputError(
                    "a shared resource needs an id to be referred to",
                    Location(file=origin, resource=label, field=f"entry[{position}].resource.id"),
                )
            found.append((orjson.dumps(resource), full_url, f"{resource_type}/{resource_id}"))
        for text, full_url, key in found:
            if key in self.by_reference:
                continue  # another shared Bundle's, read first
            self.by_reference[key] = len(self.entries)
            if full_url is not None:
                self.by_reference.setdefault(full_url, len(self.entries))
            self.entries.append((text, full_url, key))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def attach(self, patient: PatientResources, text: bytes) -> PatientResources:
        """`patient` (read from the JSON `text`) with the shared resources its Bundle refers
        to, in the order of their first reference, after its own resources (those it holds
        itself are not added again)."""
        if not self.entries:
            return patient
        own = {
            key
            for resource, full_url in zip(patient.resources, patient.full_urls, strict=True)
            for key in (full_url, _key_of(resource))
            if key is not None
        }
        chosen: dict[int, None] = {}
        for match in _REFERENCE.finditer(text):
            reference = match.group(1).decode("utf-8", errors="replace")
            position = self.by_reference.get(reference)
            if position is None:
                key = reference_key(reference)
                position = None if key is None else self.by_reference.get(key)
            if position is not None and reference not in own:
                chosen.setdefault(position, None)
        attached = [
            self.entries[position] for position in chosen if self.entries[position][2] not in own
        ]
        if not attached:
            return patient
        return replace(
            patient,
            resources=[*patient.resources, *(orjson.loads(text) for text, _, _ in attached)],
            full_urls=[*patient.full_urls, *(full_url for _, full_url, _ in attached)],
        )


def shared_bundle_files(files: Iterable[Path]) -> list[Path]:
    """The files that hold no Patient resource (their JSON text has no `"resourceType":
    "Patient"`): Bundles of shared resources, or files `SharedBundleResources.add` refuses,
    naming them. A patient's Bundle is told by its first Patient (most Bundles put it
    first: a page or two read); a file that cannot be read is left to the patients'
    reading, which names the problem."""
    return [file for file in files if not _holds_a_patient(file)]


def _holds_a_patient(file: Path) -> bool:
    try:
        with (
            open(file, "rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as text,
        ):
            return _PATIENT_RESOURCE.search(text) is not None
    except (OSError, ValueError):  # unreadable, or empty (no mapping): read as a patient's
        return True


def _key_of(resource: dict[str, Any]) -> str | None:
    resource_id = resource.get("id")
    return f"{resource['resourceType']}/{resource_id}" if isinstance(resource_id, str) else None


class BundleFileSource:
    """Patients from Bundle files and folders, one patient per Bundle, in a stable order.

    Each path is a file or a folder; a folder contributes its `*.json` files, searched
    recursively and sorted. A file reached twice is read once. Bundles of shared resources
    (no Patient; Medication, Organization, Practitioner, Location, ...: Synthea's
    `hospitalInformation*`/`practitionerInformation*`, a conversion's `_shared.json`) are
    found among the files by their content and read first; each patient gets the shared
    resources their Bundle refers to (`SharedBundleResources`). `shared`: those resources,
    found already (a cohort run's partitions: then every file is a patient's).

    A problem raises InputError from the iteration, unless `on_error` is given: then each error
    is passed to it and reading goes on with the next file.
    """

    def __init__(
        self,
        *paths: str | Path,
        on_error: Callable[[InputError], None] | None = None,
        shared: SharedBundleResources | None = None,
    ) -> None:
        if not paths:
            raise ValueError("BundleFileSource needs at least one file or folder")
        self.paths = tuple(Path(path) for path in paths)
        self.on_error = on_error
        self.shared = shared

    def files(self) -> list[Path]:
        """The files that will be read, in reading order; InputError for a missing path."""
        seen: set[Path] = set()
        return [file for path in self.paths for file in _new_files(_files_under(path), seen)]

    def __iter__(self) -> Iterator[PatientResources]:
        seen: set[Path] = set()
        files: list[Path] = []
        for path in self.paths:
            try:
                files += _new_files(_files_under(path), seen)
            except InputError as error:
                self._report(error)
        shared = self.shared
        if shared is None:
            found = set(shared_bundle_files(files))
            shared = SharedBundleResources.from_files(
                [file for file in files if file in found], self._report
            )
            files = [file for file in files if file not in found]
        origin_of_patient: dict[str, str] = {}
        for file in files:
            try:
                patient = read_bundle_file(file, shared)
                _check_patient_not_seen(patient, origin_of_patient)
            except InputError as error:
                self._report(error)
                continue
            yield patient

    def _report(self, error: InputError) -> None:
        if self.on_error is None:
            raise error
        self.on_error(error)


def _files_under(path: Path) -> list[Path]:
    if path.is_dir():
        candidates = sorted(path.rglob("*.json"))
        for odd in (file for file in candidates if file.exists() and not file.is_file()):
            raise _not_a_file(odd)
        files = [file for file in candidates if file.is_file()]
        if not files:
            raise InputError("the folder holds no *.json files", Location(file=str(path)))
        return files
    if not path.exists():
        raise InputError("no such file or folder", Location(file=str(path)))
    if not path.is_file():
        raise _not_a_file(path)
    return [path]


def _not_a_file(path: Path) -> InputError:
    """A folder, FIFO, socket or device where a Bundle file is expected (reading could block)."""
    kind = "a folder" if path.is_dir() else "not a regular file"
    return InputError(
        f"{kind}, named like a Bundle file; rename or remove it", Location(file=str(path))
    )


def _new_files(candidates: list[Path], seen: set[Path]) -> list[Path]:
    """The candidates not seen before (compared by resolved path); adds them to `seen`."""
    files: list[Path] = []
    for file in candidates:
        identity = file.resolve()
        if identity not in seen:
            seen.add(identity)
            files.append(file)
    return files


def _check_patient_not_seen(patient: PatientResources, origin_of_patient: dict[str, str]) -> None:
    earlier = origin_of_patient.setdefault(patient.patient_id, patient.origin)
    if earlier != patient.origin:
        raise InputError(
            f"this patient is also in {earlier}; each patient's data must be in one Bundle",
            Location(file=patient.origin, resource=f"Patient/{patient.patient_id}"),
        )


# --------------------------------------------------------------------------- JSON


def _read_file(path: Path) -> bytes:
    origin = str(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", Location(file=origin)) from None
    except IsADirectoryError:
        raise InputError("this is a folder, not a Bundle file", Location(file=origin)) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(f"cannot read the file: {reason}", Location(file=origin)) from None


def _parse_json(data: bytes, origin: str) -> Any:
    if data.startswith(_BYTE_ORDER_MARK):
        data = data[len(_BYTE_ORDER_MARK) :]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise _json_error(data, error, origin) from None


def _json_error(data: bytes, error: orjson.JSONDecodeError, origin: str) -> InputError:
    """An InputError at the line and column where the JSON text goes wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as decode_error:
        before = data[: decode_error.start]
        line_start = before.rfind(b"\n") + 1
        line = before.count(b"\n") + 1
        column = len(before[line_start:].decode("utf-8", errors="replace")) + 1
        bad_byte = data[decode_error.start]
        return InputError(
            f"not valid JSON: the text is not UTF-8 (byte 0x{bad_byte:02x})",
            Location(file=origin, line=line, column=column),
        )
    position = min(error.pos, len(text))
    line_start = text.rfind("\n", 0, position) + 1
    line = text.count("\n", 0, position) + 1
    column = position - line_start + 1
    line_end = text.find("\n", position)
    line_text = text[line_start : len(text) if line_end < 0 else line_end]
    message = f"not valid JSON: {error.msg}"
    if error.msg == "unexpected content after document" and line_text[:1] == "{" and column == 1:
        # a second JSON object on its own line: one resource a line is a Bulk Data export
        message += (
            "; one JSON object a line is NDJSON (a Bulk Data export file), which "
            "`trialsieve cohort --ndjson FOLDER` reads, not a Bundle"
        )
    return InputError(
        message,
        Location(file=origin, line=line, column=column),
        snippet=_snippet_with_caret(line_text, column - 1),
    )


def _snippet_with_caret(line_text: str, offset: int) -> str | None:
    start = max(0, offset - _SNIPPET_HALF_WIDTH)
    excerpt = line_text[start : offset + _SNIPPET_HALF_WIDTH].replace("\t", " ").rstrip("\r")
    if not excerpt.strip():
        return None
    # TrialsieveError indents the snippet by four spaces; the caret line must match.
    return f"{excerpt}\n    {' ' * (offset - start)}^"


def json_kind(value: Any) -> str:
    """What a JSON value is, for messages: `an object`, `an array`, `a number`, `null`."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


# --------------------------------------------------------------------------- Bundle structure


def _bundle_contents(document: Any, origin: str) -> tuple[list[dict[str, Any]], list[str | None]]:
    """The Bundle's resources and their fullUrls, checked for shape; searchset outcomes left out."""
    if not isinstance(document, dict):
        raise InputError(
            f"expected a JSON object (a FHIR Bundle), found {json_kind(document)}",
            Location(file=origin),
        )
    resource_type = document.get("resourceType")
    if resource_type is None:
        raise InputError(
            "the JSON object has no resourceType; expected a FHIR Bundle",
            Location(file=origin, field="resourceType"),
        )
    if resource_type != "Bundle":
        raise InputError(
            f"resourceType is {_quoted(resource_type)}, expected 'Bundle'; "
            "put the patient's resources in a Bundle (type collection)",
            Location(file=origin, field="resourceType"),
        )
    bundle_type = checked_bundle_type(document.get("type"), origin)
    entries = document.get("entry")
    if entries is None or entries == []:
        raise InputError("the Bundle has no entries", Location(file=origin, field="entry"))
    if not isinstance(entries, list):
        raise InputError(
            f"entry must be an array, found {json_kind(entries)}",
            Location(file=origin, field="entry"),
        )
    resources: list[dict[str, Any]] = []
    full_urls: list[str | None] = []
    for index, entry in enumerate(entries):
        resource, full_url = entry_contents(entry, index, origin)
        if bundle_type == "searchset" and _is_search_outcome(entry, resource):
            continue
        resources.append(resource)
        full_urls.append(full_url)
    return resources, full_urls


def checked_bundle_type(bundle_type: Any, origin: str) -> str:
    """`Bundle.type` when it is one of `ACCEPTED_BUNDLE_TYPES`; else InputError saying why
    (missing, not a string, a response or history Bundle, not an R4 type)."""
    where = Location(file=origin, field="type")
    accepted = ", ".join(ACCEPTED_BUNDLE_TYPES)
    if bundle_type is None:
        raise InputError(f"the Bundle has no type; expected one of {accepted}", where)
    if not isinstance(bundle_type, str):
        raise InputError(f"type must be a string, found {json_kind(bundle_type)}", where)
    if bundle_type in _REFUSED_BUNDLE_TYPES:
        raise InputError(
            f"a {bundle_type} Bundle is not patient data: {_REFUSED_BUNDLE_TYPES[bundle_type]}; "
            f"give a Bundle of type {accepted}",
            where,
        )
    if bundle_type not in ACCEPTED_BUNDLE_TYPES:
        raise InputError(
            f"Bundle type {_quoted(bundle_type)} is not a FHIR R4 Bundle type; "
            f"expected one of {accepted}",
            where,
        )
    return bundle_type


def entry_contents(entry: Any, index: int, origin: str) -> tuple[dict[str, Any], str | None]:
    """`entry[index]`'s resource and fullUrl, checked for shape (an object; fullUrl a string;
    a resource that is an object with a resourceType; an id that is a FHIR id); else
    InputError naming the field (`entry[0].resource.resourceType`)."""
    field = f"entry[{index}]"
    if not isinstance(entry, dict):
        raise InputError(
            f"the entry must be a JSON object, found {json_kind(entry)}",
            Location(file=origin, field=field),
        )
    full_url = entry.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise InputError(
            f"fullUrl must be a string, found {json_kind(full_url)}",
            Location(file=origin, field=f"{field}.fullUrl"),
        )
    resource = entry.get("resource")
    if resource is None:
        raise InputError(
            "the entry has no resource; every entry must carry one of the patient's resources",
            Location(file=origin, resource=full_url, field=f"{field}.resource"),
        )
    if not isinstance(resource, dict):
        raise InputError(
            f"the resource must be a JSON object, found {json_kind(resource)}",
            Location(file=origin, resource=full_url, field=f"{field}.resource"),
        )
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        found = "none" if resource_type is None else _quoted(resource_type)
        raise InputError(
            f"the resource has no resourceType (found {found})",
            Location(file=origin, resource=full_url, field=f"{field}.resource.resourceType"),
        )
    resource_id = resource.get("id")
    if isinstance(resource_id, str) and not is_fhir_id(resource_id):
        raise InputError(
            f"id {_quoted(resource_id)} is not a FHIR id (letters, digits, '-' and '.', "
            "1 to 64 of them, not only dots)",
            Location(file=origin, resource=full_url or resource_type, field=f"{field}.resource.id"),
        )
    return resource, full_url


def _is_search_outcome(entry: dict[str, Any], resource: dict[str, Any]) -> bool:
    search = entry.get("search")
    mode = search.get("mode") if isinstance(search, dict) else None
    return mode == "outcome" or resource["resourceType"] == "OperationOutcome"


# --------------------------------------------------------------------------- the patient


def _patient_resources(
    resources: list[dict[str, Any]],
    full_urls: list[str | None],
    origin: str,
    file: str | None = None,
) -> PatientResources:
    patient_positions = [
        position
        for position, resource in enumerate(resources)
        if resource["resourceType"] == "Patient"
    ]
    if not patient_positions:
        raise InputError(
            "the Bundle holds no Patient resource; each Bundle must hold one patient's data",
            Location(file=origin),
        )
    identities = {
        _patient_id(resources[position], full_urls[position], position, origin): None
        for position in patient_positions
    }
    if len(identities) > 1:
        names = ", ".join(f"Patient/{patient_id}" for patient_id in identities)
        raise InputError(
            f"the Bundle holds {len(identities)} patients: {names}; "
            "evaluate one patient per Bundle",
            Location(file=origin),
        )
    patient_id = next(iter(identities))
    patient_full_urls = {full_urls[position] for position in patient_positions} - {None}
    _check_references_to_patient(resources, full_urls, patient_id, patient_full_urls, origin)
    return PatientResources(
        patient_id=patient_id, resources=resources, full_urls=full_urls, origin=origin, file=file
    )


def _patient_id(patient: dict[str, Any], full_url: str | None, position: int, origin: str) -> str:
    """Patient.id, else the id its fullUrl carries (a transaction may leave the id out)."""
    patient_id = patient.get("id")
    if isinstance(patient_id, str) and patient_id:
        return patient_id
    if patient_id is not None:
        raise InputError(
            f"Patient.id must be a non-empty string, found {_quoted(patient_id)}",
            Location(file=origin, resource=full_url or f"Patient#{position}", field="id"),
        )
    from_full_url = id_from_full_url(full_url) if full_url else None
    if from_full_url is not None and not is_fhir_id(from_full_url):
        raise InputError(
            f"the Patient has no id and the id its fullUrl carries, {_quoted(from_full_url)}, "
            "is not a FHIR id",
            Location(file=origin, resource=full_url, field="fullUrl"),
        )
    if from_full_url is None:
        raise InputError(
            "the Patient has neither an id nor a fullUrl that carries one; "
            "results need the patient's id",
            Location(file=origin, resource=full_url or f"Patient#{position}", field="id"),
        )
    return from_full_url


def _check_references_to_patient(
    resources: list[dict[str, Any]],
    full_urls: list[str | None],
    patient_id: str,
    patient_full_urls: set[str | None],
    origin: str,
) -> None:
    """Every subject/patient reference must point at this Bundle's patient (or a non-Patient)."""
    patient_key = f"Patient/{patient_id}"
    type_of_full_url = {
        full_url: resource["resourceType"]
        for resource, full_url in zip(resources, full_urls, strict=True)
        if full_url is not None
    }
    for position, resource in enumerate(resources):
        if resource["resourceType"] == "Patient":
            continue
        for field in _PATIENT_FIELDS:
            value = resource.get(field)
            if not isinstance(value, dict):
                continue
            reference = value.get("reference")
            if not isinstance(reference, str) or reference in patient_full_urls:
                continue
            problem = _reference_problem(reference, patient_key, type_of_full_url)
            if problem is not None:
                label = _label(resource, full_urls[position], position)
                raise InputError(
                    f"{problem}; the Bundle's patient is {patient_key}",
                    Location(file=origin, resource=label, field=field),
                )


def _reference_problem(
    reference: str, patient_key: str, type_of_full_url: dict[str, str]
) -> str | None:
    if reference in type_of_full_url or reference.startswith("#"):
        return None  # the Bundle's only Patient, or a resource that is not a patient
    key = reference_key(reference)
    if key is not None:
        if key.startswith("Patient/") and key != patient_key:
            return f"refers to a different patient, {key}"
        return None
    if reference.startswith("urn:"):
        return f"refers to {reference}, which is not in this Bundle"
    return None


def _label(resource: dict[str, Any], full_url: str | None, position: int) -> str:
    resource_id = resource.get("id")
    if isinstance(resource_id, str) and resource_id:
        return f"{resource['resourceType']}/{resource_id}"
    return full_url or f"{resource['resourceType']}#{position}"


def _quoted(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else json_kind(value)
