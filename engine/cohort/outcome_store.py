"""What a cohort run keeps for the next one: per-criterion outcomes and compact records.

A re-run after editing one criterion evaluates only that criterion (`engine.cohort.rerun`):
every other criterion's report part is read back, keyed by the content hash of its compiled
form (`criterion_digests`), and the edited one is evaluated on a record rebuilt from the
stored concept index. Both are stored per partition in `partitions/store/`:

- `NNNN.outcomes` (JSON): the partition's key (`store_key`: input files, partition count and
  index, mappings, as-of day, attestations, kept types, mode, trialsieve version), the
  pre-filter's requirements, the partition's input problems, and per patient (by id) the
  patient reference, data problems, newest data day, the requirement that settled them from
  their preview (or none), the criterion that settles them, per criterion digest the
  report part (`CriterionReport`: verdict, summary, evidence, missing items), and what each
  computed value's formula found before its value test (`engine.evaluate.computed`: the
  value, or why there is none, and the results it read), by the computation's key: editing
  a computed value's threshold re-tests the stored value instead of computing it again.
- `NNNN.records`: each patient's record as the evaluator reads it, by concept (the
  resources the record indexes under each concept the criteria read, in document order, as
  JSON segments, one per concept, read only when a criterion asks for that concept; the
  header names those concepts, `covered`: another is `NotStored`), the Patient, the
  resources their medicationReferences resolve to, and the resources of the types the record
  does not index by concept (ResearchSubject, Medication). A settled patient's record is
  their preview (Patient, Conditions, Procedures), as the pre-filter evaluated it.

`StoredRecord` is a `PatientRecord` over that store; asked for anything the store does not
hold (a type read without a concept, a resource without an id), it raises `NotStored`, and
the re-run evaluates that partition from the input instead, as a fresh run would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Collection, Iterator, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import msgspec
import orjson

from engine import __version__
from engine.atomic_write import write_atomically
from engine.cohort.prefilter import PREVIEW_TYPES
from engine.compiled_cache import code_digest
from engine.criteria.model import ResourceAtom, iter_atoms
from engine.evaluate import CompiledCriteria
from engine.evaluate.patient import CriterionVerdict
from engine.record import PatientRecord, of_types
from engine.report.resources import (
    CriterionReport,
    PatientReport,
    criterion_headings,
    is_shared,
    keep_shared,
    shared_json,
)
from engine.resource_types import CODED_TYPES, RESOURCE_TYPES

STORE_FOLDER = "store"
"""The store's folder, inside the run's `partitions/` folder."""
_HEADER = struct.Struct("<Q")
_MEDICATION_TYPES = tuple(
    sorted(name for name, known in RESOURCE_TYPES.items() if known.medication)
)
"""In name order: the resolved references of a record are kept in the same order by every
process (a set's order varies with the process's string hashing)."""


def _patient_id(patient: dict[str, Any]) -> str:
    return str(patient["id"])


class NotStored(Exception):
    """The store cannot answer what a re-run asks: evaluate the partition from the input."""


# --------------------------------------------------------------------------- keys


def _plain(value: Any) -> Any:
    """A criteria model value as plain JSON data, source positions left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain = {"@": type(value).__name__}
        for each in dataclasses.fields(value):
            if each.name != "position":
                plain[each.name] = _plain(getattr(value, each.name))
        return plain
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in sorted(value.items())}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot hash a {type(value).__name__} of the criteria model")


def criterion_digests(criteria: CompiledCriteria) -> dict[str, str]:
    """Each criterion's content hash: its definition (without source positions) and the
    definitions of the atoms it is anchored on (`before:`/`after:`, transitively), so that
    editing an anchor changes every criterion that uses it. The terminology, the as-of day
    and the rest are in the partition's `store_key`."""
    atoms = {
        atom.id: atom
        for compiled in criteria.criteria
        for atom in iter_atoms(compiled.criterion.expression)
        if isinstance(atom, ResourceAtom) and atom.id is not None
    }
    digests = {}
    for compiled in criteria.criteria:
        anchors: dict[str, Any] = {}
        stack = [
            atom
            for atom in iter_atoms(compiled.criterion.expression)
            if isinstance(atom, ResourceAtom)
        ]
        while stack:
            atom = stack.pop()
            for relation in atom.relations:
                anchor = atoms.get(relation.anchor)
                if anchor is not None and relation.anchor not in anchors:
                    anchors[relation.anchor] = _plain(anchor)
                    stack.append(anchor)
        text = orjson.dumps(
            {"criterion": _plain(compiled.criterion), "anchors": anchors},
            option=orjson.OPT_SORT_KEYS,
        )
        digests[compiled.id] = hashlib.sha256(text).hexdigest()
    return digests


def mapping_files_read(criteria: CompiledCriteria) -> list[Path]:
    """Every file the criteria's terminology was read from, resolved, each once: the mapping
    files (every file of a mapping folder), then the ValueSet files and cached expansions
    their concepts read (`Terminology.files_read`: a ValueSet outside the mapping folders,
    `value_set: ../valuesets/sle.json`, counts as much as the mapping file naming it)."""
    paths: dict[Path, None] = {}
    for mapping in criteria.source.mapping_paths:
        root = Path(mapping).resolve()
        found = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        paths.update(dict.fromkeys(found))
    for read in criteria.terminology.files_read:
        path = read.resolve()
        if path.is_file():  # (a cached expansion looked for but absent counts as nothing)
            paths.setdefault(path)
    return list(paths)


def mappings_digest(criteria: CompiledCriteria) -> str:
    """SHA-256 over the names and contents of every file the criteria's terminology was read
    from (`mapping_files_read`)."""
    digest = hashlib.sha256()
    for path in mapping_files_read(criteria):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


_STORED_PATIENT_FIELDS = ("vital", "file")
"""Patient fields added to the store since its first format (a store written without them
has another key: it is evaluated again rather than read as if the patient were alive)."""


def store_key(
    criteria: CompiledCriteria,
    input_description: Mapping[str, Any],
    partition_count: int,
    as_of: str,
    attestations_digest: str | None,
    kept_types: Collection[str],
    full: bool,
) -> str:
    """What every stored outcome and record of a run depends on besides the criteria
    themselves; a partition's key adds its index."""
    text = orjson.dumps(
        {
            "trialsieve": __version__,
            "code": code_digest().hex(),
            "input": input_description,
            "partition_count": partition_count,
            "mappings": mappings_digest(criteria),
            "as_of": as_of,
            "attestations": attestations_digest,
            "unavailable_types": sorted(criteria.unavailable_types),
            "kept_types": sorted(kept_types),
            "full": full,
            "patient_fields": _STORED_PATIENT_FIELDS,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(text).hexdigest()


def headings_digest(criteria: CompiledCriteria) -> str:
    """What a patient's result line says of the trial and its criteria besides their
    outcomes (trial, study reference, ids, kinds, numbers, labels, protocol texts): when it
    is unchanged, a patient whose outcomes are unchanged keeps their line."""
    trial = criteria.trial
    text = orjson.dumps(
        [
            [trial.id, trial.title, trial.identifier_system],
            [dataclasses.astuple(heading) for heading in criterion_headings(criteria)],
        ]
    )
    return hashlib.sha256(text).hexdigest()


def outcomes_path(results_folder: str | Path, index: int) -> Path:
    return Path(results_folder) / STORE_FOLDER / f"{index:04d}.outcomes"


def previous_result_path(results_folder: str | Path, index: int) -> Path:
    """Where a re-run with other criteria sets the earlier result file aside."""
    return Path(results_folder) / STORE_FOLDER / f"{index:04d}.previous"


def records_path(results_folder: str | Path, index: int) -> Path:
    return Path(results_folder) / STORE_FOLDER / f"{index:04d}.records"


def complete_digest(result: bytes) -> str | None:
    """The SHA-256 a partition result file's `complete` line gives for the lines before it
    (`partition.result_data`): what a store's `result_sha256` names the file by. None when
    the data ends with no such line."""
    end = len(result) - 1 if result.endswith(b"\n") else len(result)
    last = result[result.rfind(b"\n", 0, end) + 1 : end]
    if not last.startswith(b'{"complete":'):
        return None
    try:
        complete = orjson.loads(last)["complete"]
        digest = complete["sha256"] if type(complete) is dict else None
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return digest if type(digest) is str else None


def verified_digest(result: bytes) -> str | None:
    """`complete_digest` of a partition result file's data when the lines before its
    `complete` line have that SHA-256; None when there is no such line or they do not (a
    block a machine crash left unwritten)."""
    digest = complete_digest(result)
    if digest is None:
        return None
    end = len(result) - 1 if result.endswith(b"\n") else len(result)
    body = memoryview(result)[: result.rfind(b"\n", 0, end) + 1]  # before the complete line
    return digest if hashlib.sha256(body).hexdigest() == digest else None


def encode_part(part: CriterionReport) -> list[Any]:
    verdict = part.verdict
    return [
        None if verdict is None else _VERDICT_VALUES[verdict],
        part.summary,
        list(part.evidence),
        list(part.missing),
    ]


_VERDICT_VALUES = {verdict: verdict.value for verdict in CriterionVerdict}
"""Each verdict's value, read from a dict (an enum member's `value` is a property)."""
_decoded: dict[tuple[Any, ...], CriterionReport] = {}
"""Decoded parts citing nothing, by their encoding: one part (`keep_shared`) for every
patient with that encoding."""
_PARTS_LIMIT = 4096
_NO_PART = object()


def encoded_part(part: CriterionReport) -> list[Any] | orjson.Fragment:
    """`encode_part`, as JSON text made once for a part shared by many patients
    (`shared_json`)."""
    if not is_shared(part):  # the patient's own part: encoded as a value, once
        return encode_part(part)
    return shared_json(part, "store", encode_part, part)


def decode_part(encoded: list[Any]) -> CriterionReport:
    verdict, summary, evidence, missing = encoded
    if evidence:
        return _decoded_part(verdict, summary, evidence, missing)
    key = (verdict, summary, *missing)
    part = _decoded.get(key)
    if part is None:
        part = _decoded_part(verdict, summary, evidence, missing)
        if len(_decoded) >= _PARTS_LIMIT:
            _decoded.clear()
        _decoded[key] = part
    keep_shared(part)
    return part


def _decoded_part(
    verdict: str | None, summary: str, evidence: list[str], missing: list[str]
) -> CriterionReport:
    return CriterionReport(
        None if verdict is None else CriterionVerdict(verdict),
        summary,
        tuple(evidence),
        tuple(missing),
    )


# --------------------------------------------------------------------------- writing


@dataclasses.dataclass(frozen=True)
class StoredPartition:
    """A partition's store files' contents (written beside its result file)."""

    index: int
    outcomes: bytes
    records: bytes | None
    """None: the records file stays as it is (a re-run changes only outcomes)."""

    def write(self, results_folder: str | Path) -> None:
        path = outcomes_path(results_folder, self.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.records is not None:
            path.unlink(missing_ok=True)  # never new records under old outcomes
            write_atomically(records_path(results_folder, self.index), self.records)
        write_atomically(path, self.outcomes, durable=False)  # cut short: not JSON, not read


class StoreBuilder:
    """Collects one partition's patients as they are evaluated (`PartitionEvaluator`)."""

    def __init__(
        self,
        criteria: CompiledCriteria,
        key: str,
        requirements: Sequence[str],
        settling: Sequence[str],
    ) -> None:
        self.criteria = criteria
        self.key = key
        self.requirements = list(requirements)
        self.settling = list(settling)
        self.digests = _digests_of(criteria)
        self.ids = [compiled.id for compiled in criteria.criteria]
        self.ordered_digests = [self.digests[criterion_id] for criterion_id in self.ids]
        self._recent_parts: list[tuple[object, orjson.Fragment]] = [
            (_NO_PART, orjson.Fragment(b"null"))
        ] * len(self.ids)
        """The shared part last met at each criterion's place, with its encoding."""
        self.plain_types = sorted(type_wide_types(criteria))
        # the concepts the records keep: those the criteria read (the line screen leaves the
        # others' lines unparsed), named in the header so that a re-run reading another one
        # evaluates the partition from the input
        self.covered = criteria.concepts_read
        self.patients: list[dict[str, Any]] = []
        # each patient's part of every records segment, as JSON text: serialised as the
        # patient is added, so that their record is freed with them (holding every record
        # of the partition until `finish` cost a fifth of a run's CPU in page faults)
        self.records: dict[str, bytes] = {}
        self.concepts: dict[str, dict[str, bytes]] = {}
        self.types: dict[str, dict[str, bytes]] = {}
        self.usable = True

    def spoil(self) -> None:
        """A patient could not be evaluated: keep nothing of this partition."""
        self.usable = False

    def add(
        self,
        record: PatientRecord,
        report: PatientReport,
        settled_by: str | None,
        preview: str | None,
        texts: Mapping[int, bytes] | None = None,
        file: str | None = None,
        computed: Mapping[str, Any] | None = None,
    ) -> None:
        """One patient: their record (the preview when `preview` names the settling
        criterion) and report parts. `texts`: the JSON text of the record's resources, by
        their `id()` (`PatientResources.texts`), kept as they are instead of serialising the
        resources again (read back, they are the same resources). `file`: the Bundle file
        they were read from (`PatientResources.file`), which their result line names.
        `computed`: what computed values' formulas found before their value tests
        (`PatientEvaluation.computed_values`), which a re-run reads back."""
        if not self.usable:
            return
        patient_id = report.patient_id
        # each criterion's encoded part by its digest (none: not evaluated); consecutive
        # patients mostly have the same shared part at a criterion's place, whose encoding
        # (JSON text made once) is found by identity
        parts: dict[str, list[Any] | orjson.Fragment] = {}
        recent = self._recent_parts
        for place, (digest, part) in enumerate(
            zip(self.ordered_digests, report.parts, strict=True)
        ):
            last = recent[place]
            if last[0] is part:
                parts[digest] = last[1]
            elif part.verdict is not None:
                encoded = encoded_part(part)
                if type(encoded) is orjson.Fragment:  # a shared part's
                    recent[place] = (part, encoded)
                parts[digest] = encoded
        self.patients.append(
            {
                "id": patient_id,
                "reference": report.patient_reference,
                "problems": list(report.data_problems),
                "newest": None if report.newest_data is None else report.newest_data.isoformat(),
                "preview": preview,
                "settled_by": settled_by,
                "parts": parts,
                "vital": None
                if report.vital is None
                else [report.vital.reason, report.vital.certain],
                "file": file,
            }
        )
        if computed:
            self.patients[-1]["computed"] = computed
        resolved: dict[str, Any] = {}
        covered = self.covered
        # the references of the stored resources only (those of the concepts covered, or of
        # a type kept whole): a re-run resolves no other, and a line the screen left unparsed
        # (of no concept covered) is in the record of a run that parsed it
        stored: set[int] | None = None
        for resource_type in _MEDICATION_TYPES:
            whole = resource_type in self.plain_types
            for resource in record.resources_of_type(resource_type):
                reference = resource.get("medicationReference")
                if reference is None:  # most: a medicationCodeableConcept
                    continue
                if not whole:
                    if stored is None:
                        stored = {
                            id(each)
                            for concept, found in record.concept_index().items()
                            if concept in covered
                            for each in found
                        }
                    if id(resource) not in stored:
                        continue
                target = reference.get("reference") if isinstance(reference, dict) else None
                if isinstance(target, str) and target and not target.startswith("#"):
                    resolved[target] = record.resolve(target, resource)
        array = _json_array if texts else _dumped_array
        if texts is None:
            texts = {}
        patient = record.patient
        patient_text = texts.get(id(patient))
        self.records[patient_id] = orjson.dumps(
            {
                "patient": patient if patient_text is None else orjson.Fragment(patient_text),
                "resolved": _with_texts(resolved, texts),
            }
        )
        concepts = self.concepts
        # concepts with the same codes (creatinine, and its sex-specific limits) index the
        # same resources: their text is made once
        made: dict[tuple[int, ...], bytes] = {}
        for concept, resources in record.concept_index().items():
            if concept not in covered:
                continue
            by_patient = concepts.get(concept)
            if by_patient is None:
                by_patient = concepts[concept] = {}
            same = tuple(map(id, resources))
            text = made.get(same)
            if text is None:
                text = made[same] = array(resources, texts)
            by_patient[patient_id] = text
        for resource_type in self.plain_types:
            found = record.resources_of_type(resource_type)
            if found:
                self.types.setdefault(resource_type, {})[patient_id] = array(found, texts)

    def finish(
        self, index: int, problem_lines: Sequence[bytes], result: bytes
    ) -> StoredPartition | None:
        """The store files of the partition whose result file holds `result`, or None when
        it cannot be stored."""
        if not self.usable:
            return None
        self.patients.sort(key=_patient_id)
        # the segments' texts in pieces, joined once (each patient's text is copied once)
        pieces: list[bytes] = []
        header: dict[str, Any] = {"concepts": {}, "types": {}}
        offset = 0
        # Concepts with the same codes (creatinine and its sex-specific limits) hold the
        # same text for every patient: their segment is written once, each names its place.
        places: dict[tuple[int, ...], list[int]] = {}
        keys = {patient_id: orjson.dumps(patient_id) + b":" for patient_id in self.records}

        def add_blob(by_patient: dict[str, bytes]) -> list[int]:
            nonlocal offset
            same = (*map(id, by_patient), *map(id, by_patient.values()))
            place = places.get(same)
            if place is not None:
                return place
            blob = _json_object_pieces(by_patient, keys)
            pieces.extend(blob)
            size = sum(map(len, blob))
            place = places[same] = [offset, size]
            offset += size
            return place

        header["patients"] = add_blob(self.records)
        # Segments in name order: the record's concepts come in the order its classification
        # met them (sets of concepts), which varies with the process's string hashing; sorted,
        # two runs over the same input write the same bytes.
        for concept in sorted(self.concepts):
            header["concepts"][concept] = add_blob(self.concepts[concept])
        for resource_type in sorted(self.types):
            header["types"][resource_type] = add_blob(self.types[resource_type])
        header["plain_types"] = self.plain_types
        header["covered"] = sorted(self.covered)
        head = orjson.dumps(header)
        records = b"".join([_HEADER.pack(len(head)), head, *pieces])
        outcomes = orjson.dumps(
            {
                "key": self.key,
                "index": index,
                "result_sha256": complete_digest(result),
                "records_sha256": hashlib.sha256(head).hexdigest(),
                "digests": self.digests,
                "headings": _headings_of(self.criteria),
                "requirements": self.requirements,
                "settling": self.settling,
                "patients": self.patients,
                "problems": [line.decode() for line in problem_lines],
            }
        )
        return StoredPartition(index, outcomes, records)


def _json_array(resources: Sequence[dict[str, Any]], texts: Mapping[int, bytes]) -> bytes:
    """A JSON array of the resources, each as its text in `texts` (by `id()`) where it has
    one (a text keeps its line end: JSON white space), else serialised."""
    try:
        return b"[%b]" % b",".join(map(texts.__getitem__, map(id, resources)))
    except KeyError:
        get = texts.get
        dumps = orjson.dumps
        return b"[%b]" % b",".join(
            [
                dumps(resource) if text is None else text
                for resource in resources
                for text in (get(id(resource)),)
            ]
        )


def _dumped_array(resources: Sequence[dict[str, Any]], _texts: Mapping[int, bytes]) -> bytes:
    """`_json_array` without texts: the resources serialised."""
    return orjson.dumps(list(resources))


def _with_texts(resolved: dict[str, Any], texts: Mapping[int, bytes]) -> dict[str, Any]:
    """The resolved references' resources, each as its text in `texts` where it has one."""
    if not texts or not resolved:
        return resolved
    return {
        reference: resource if text is None else orjson.Fragment(text)
        for reference, resource in resolved.items()
        for text in (texts.get(id(resource)),)
    }


def _json_object(texts: dict[str, bytes]) -> bytes:
    """The JSON text `orjson.dumps` gives for a dict whose values' JSON texts are given."""
    return b"".join(_json_object_pieces(texts, {}))


def _json_object_pieces(texts: dict[str, bytes], keys: Mapping[str, bytes]) -> list[bytes]:
    """`_json_object` in pieces (to be joined); `keys`: the JSON text of keys, each with its
    colon, made before (a key not in it is serialised)."""
    if not texts:
        return [b"{}"]
    pieces: list[bytes] = []
    for key, text in texts.items():
        pieces += (b",", keys.get(key) or orjson.dumps(key) + b":", text)
    pieces[0] = b"{"
    pieces.append(b"}")
    return pieces


_cached: dict[int, tuple[CompiledCriteria, dict[str, str], str]] = {}


def _cache(criteria: CompiledCriteria) -> tuple[CompiledCriteria, dict[str, str], str]:
    """The criteria's digests and headings digest, computed once per compiled criteria."""
    known = _cached.get(id(criteria))
    if known is None or known[0] is not criteria:
        if len(_cached) >= 16:
            _cached.clear()
        known = (criteria, criterion_digests(criteria), headings_digest(criteria))
        _cached[id(criteria)] = known
    return known


def _digests_of(criteria: CompiledCriteria) -> dict[str, str]:
    return _cache(criteria)[1]


def _headings_of(criteria: CompiledCriteria) -> str:
    return _cache(criteria)[2]


RECORD_UNINDEXED_TYPES = frozenset({"Medication"})
"""Types kept for every run that the record does not index by concept."""


def type_wide_types(criteria: CompiledCriteria) -> frozenset[str]:
    """The types whose every resource the store keeps by type: those the record does not
    index by concept, and those an atom of the criteria reads without a concept."""
    without_concept = criteria.types_read_without_concept
    kept = RECORD_UNINDEXED_TYPES | (criteria.resource_types - CODED_TYPES) | without_concept
    return frozenset(kept - {"Patient"})


# --------------------------------------------------------------------------- reading


class RecordStore:
    """A partition's stored records, read segment by segment as criteria ask.

    `header_sha256`: the SHA-256 of the records file's header (each segment's place) that
    the partition's outcomes file names (`records_sha256`). A records file that is not the
    one the outcomes were written with (the earlier run's, another partition's), or whose
    header or a segment read is cut short or not JSON (spoiled after it was written), raises
    `NotStored`: the partition is evaluated from the input, as a fresh run would.
    """

    def __init__(self, path: Path, header_sha256: object) -> None:
        if type(header_sha256) is not str:
            raise NotStored("the outcomes name no records file")
        try:
            self._file = open(path, "rb")  # noqa: SIM115  (closed by close())
        except OSError as error:
            raise NotStored(f"no stored records: {error}") from None
        try:
            self._read_header(header_sha256)
        except BaseException:
            self._file.close()
            raise

    def _read_header(self, header_sha256: str) -> None:
        size = self._file.read(_HEADER.size)
        if len(size) != _HEADER.size:
            raise NotStored("the records file is cut short")
        (length,) = _HEADER.unpack(size)
        head = self._file.read(length)
        if hashlib.sha256(head).hexdigest() != header_sha256:
            raise NotStored("the records file is not the one the outcomes were written with")
        header = orjson.loads(head)  # whole, as written: its digest matched
        self._start = _HEADER.size + length
        self._places: dict[tuple[str, str], tuple[int, int]] = {
            ("concept", name): tuple(place) for name, place in header["concepts"].items()
        }
        self._places |= {("type", name): tuple(place) for name, place in header["types"].items()}
        self._places["patients", ""] = tuple(header["patients"])
        self.plain_types = frozenset(header["plain_types"])
        covered = header.get("covered")
        # None: written before the store named its concepts, when it kept every concept
        self.covered: frozenset[str] | None = None if covered is None else frozenset(covered)
        self._texts: dict[tuple[int, int], dict[str, msgspec.Raw]] = {}

    def close(self) -> None:
        self._file.close()

    def segment(self, kind: str, name: str) -> dict[str, Any]:
        """Every patient's value in a segment, each parsed as `patient_value` parses it: the
        whole segment at once, to inspect it (a re-run reads one patient at a time)."""
        texts = self._patient_texts(kind, name)
        return {patient_id: self._parsed(kind, name, text) for patient_id, text in texts.items()}

    def patient_value(self, kind: str, name: str, patient_id: str) -> Any:
        """One patient's value in a segment (None when the segment holds none for them),
        parsed alone: the segment itself is only split into its patients' JSON texts
        (msgspec.Raw, checked as JSON), so a re-run parses and frees each patient's
        resources while they are in the cache, not the whole segment at once (the patients
        segment of a DAPA-CKD partition at 10x: 380 kB, about 15,000 objects)."""
        text = self._patient_texts(kind, name).get(patient_id)
        return None if text is None else self._parsed(kind, name, text)

    def _patient_texts(self, kind: str, name: str) -> dict[str, msgspec.Raw]:
        """A segment's JSON text of each patient (empty when the file has no such segment),
        read once per place (concepts holding the same resources share a place)."""
        place = self._places.get((kind, name))
        if place is None:
            return {}
        texts = self._texts.get(place)
        if texts is None:
            data = self._segment_data(kind, name, place)
            try:
                texts = _SEGMENT_TEXTS.decode(data)
            except (msgspec.DecodeError, RecursionError):  # cut short, not JSON or an object, deep
                raise _damaged_segment(kind, name) from None
            self._texts[place] = texts
        return texts

    @staticmethod
    def _parsed(kind: str, name: str, text: msgspec.Raw) -> Any:
        try:
            return orjson.loads(memoryview(text))
        except orjson.JSONDecodeError:  # JSON for msgspec, not for orjson (a huge number)
            raise _damaged_segment(kind, name) from None

    def _segment_data(self, kind: str, name: str, place: tuple[int, int]) -> bytes:
        """The bytes of a segment at `place` (offset, size); NotStored when cut short."""
        offset, size = place
        self._file.seek(self._start + offset)
        data = self._file.read(size)
        if len(data) != size:
            raise _damaged_segment(kind, name)
        return data

    def record(
        self, patient_id: str, origin: str, preview: bool, reference: str | None = None
    ) -> StoredRecord:
        """The patient's stored record; their Patient resource and resolved references (the
        `patients` segment) are read when first asked for (many criteria read neither).
        `reference`: the Patient's label the run that stored it gave (the outcomes'
        `reference`), which a citation of the Patient names without reading it."""
        return StoredRecord(self, patient_id, origin, preview, reference)


class PatientWhenRead(Mapping[str, Any]):
    """A stored record's Patient, read from the store at the first look into it (raising
    `NotStored` then, as `StoredRecord.patient` does, for a damaged one)."""

    __slots__ = ("_record",)

    def __init__(self, record: StoredRecord) -> None:
        self._record = record

    def __getitem__(self, key: str) -> Any:
        return self._record.patient[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._record.patient)

    def __len__(self) -> int:
        return len(self._record.patient)


def _damaged_segment(kind: str, name: str) -> NotStored:
    return NotStored(f"the records file's {kind} segment {name!r} is damaged")


_NO_RESOURCES: tuple[dict[str, Any], ...] = ()
_SEGMENT_TEXTS = msgspec.json.Decoder(dict[str, msgspec.Raw])
"""A segment as its patients' JSON texts (`RecordStore.patient_value`)."""


class StoredRecord(PatientRecord):
    """A patient's record read back from the store: answers what the evaluator asks exactly
    as the record it was stored from, or raises `NotStored`."""

    def __init__(
        self,
        store: RecordStore,
        patient_id: str,
        origin: str,
        preview: bool,
        reference: str | None = None,
    ) -> None:
        self.patient_id = patient_id
        self.origin = origin
        self.data_problems = []
        self._store = store
        self._stored: dict[str, Any] | None = None
        self._preview = preview
        self._reference = reference
        self._lists: dict[tuple[str, str], list[dict[str, Any]]] = {}
        """The patient's resources read so far, by segment (the same list each time)."""

    def _patient_entry(self) -> dict[str, Any]:
        stored = self._stored
        if stored is None:
            stored = self._store.patient_value("patients", "", self.patient_id)
            if stored is None:
                raise NotStored(f"Patient/{self.patient_id} has no stored record")
            if (
                type(stored) is not dict
                or type(stored.get("patient")) is not dict
                or type(stored.get("resolved")) is not dict
            ):
                raise NotStored(f"the stored record of Patient/{self.patient_id} is damaged")
            self._stored = stored
        return stored

    def _segment_resources(self, kind: str, name: str) -> list[dict[str, Any]]:
        """The patient's resources in a segment (an empty list when it holds none)."""
        key = (kind, name)
        found = self._lists.get(key)
        if found is None:
            found = self._store.patient_value(kind, name, self.patient_id)
            if found is None:
                found = []
            elif type(found) is not list:
                raise NotStored(
                    f"the stored {kind} {name!r} of Patient/{self.patient_id} is damaged"
                )
            self._lists[key] = found
        return found

    @property
    def patient(self) -> dict[str, Any]:
        found: dict[str, Any] = self._patient_entry()["patient"]
        return found

    @patient.setter
    def patient(self, value: dict[str, Any]) -> None:
        raise AttributeError("a stored record's Patient is the stored one")

    def cited_patient(self) -> tuple[str, Mapping[str, Any]]:
        """The Patient's label, as the run that stored it gave it, and the Patient, read only
        when the citation's reader looks into it (`PatientWhenRead`): a computed value reading
        age and sex cites the Patient, and a re-run testing its stored value reads nothing
        else of it (a Synthea Patient is about 3.5 kB of JSON)."""
        if self._stored is not None or self._reference is None:
            return super().cited_patient()
        return self._reference, PatientWhenRead(self)

    @property
    def resources(self) -> Sequence[dict[str, Any]]:
        raise NotStored("the stored record keeps resources by concept, not every resource")

    def resources_of_type(self, resource_type: str) -> Sequence[dict[str, Any]]:
        if resource_type == "Patient":
            return [self.patient]
        if resource_type not in self._store.plain_types or (
            self._preview and resource_type not in PREVIEW_TYPES
        ):
            raise NotStored(f"{resource_type} resources of any code are not stored")
        return self._segment_resources("type", resource_type)

    def resources_of_concept(
        self, concept_id: str, resource_types: Collection[str] | None = None
    ) -> Sequence[dict[str, Any]]:
        covered = self._store.covered
        if covered is not None and concept_id not in covered:
            raise NotStored(f"the stored records keep no resources of concept {concept_id}")
        found = self._segment_resources("concept", concept_id)
        if resource_types is None or not found:
            return found if found else _NO_RESOURCES
        return of_types(found, resource_types)

    def concept_index(self) -> Mapping[str, Sequence[dict[str, Any]]]:
        raise NotStored("the stored record is read concept by concept")

    def resolve(
        self, reference: str | None, container: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        if not reference or reference[0] == "#":
            return super().resolve(reference, container)
        resolved: dict[str, Any] = self._patient_entry()["resolved"]
        if reference not in resolved:
            raise NotStored(f"reference {reference} was not stored")
        found: dict[str, Any] | None = resolved[reference]
        return found

    def label(self, resource: dict[str, Any]) -> str:
        resource_id = resource.get("id")
        if isinstance(resource_id, str) and resource_id:
            return f"{resource.get('resourceType', 'Resource')}/{resource_id}"
        raise NotStored("a resource without an id is labelled by its position in the record")
