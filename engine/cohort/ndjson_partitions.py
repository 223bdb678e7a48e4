"""A Bulk Data style NDJSON folder grouped by patient with bounded memory: the cohort's partitions.

A Bulk `$export` writes one resource per line, by type (`Observation.000.ndjson`, optionally
gzipped), not by patient. Grouping happens in two passes so that an export larger than memory
works:

1. `partition_ndjson` reads every file once, as byte ranges in parallel processes, and
   assigns each line, unchanged, to one of N partitions, chosen by a stable hash of the
   line's patient id: a runs file per range in a work folder names, partition by partition,
   each run of consecutive lines of one patient and where its bytes are (in the input file,
   or copied beside it), so the second pass reads and groups runs, not lines. Resources of a
   shared type that name no patient (Medication, Organization, ...) go to a separate file; a
   patient's resources may refer to them. Lines of types nobody reads can be skipped unparsed.
2. `PartitionLines` holds one partition's lines (picklable: it can travel to another
   machine) and yields a `PatientResources` per patient: the patient's resources in export
   order (files sorted by name, lines in order), followed by the shared resources they refer
   to. `read_partition` reads one from the work folder.

The patient of a resource is the Patient its patient field names (`subject`, `patient`,
`beneficiary`, `individual`, per type; `PATIENT_FIELDS`); a Patient is its own. The first pass
reads that reference straight from the line text when the line mentions exactly one
`"reference":"Patient/<id>"` and parses the JSON otherwise; the second pass checks the
reference exactly, on the parsed resource or, for a line it leaves unparsed
(`engine.cohort.line_screen`), through msgspec.

Bad input never stops a run: a malformed line, a resource that names no patient, a truncated
gzip stream, an unreadable file each become one `SourceProblem` (file, line, resource,
message) passed to `on_problem`.

`NdjsonFolderSource` is the whole of it as a `PatientSource`. Reading the NDJSON itself
(which files, which patient a line belongs to) is the source stage's, in
`engine.sources.ndjson`; the partition files are the cohort's own work, so they live here.
"""

from __future__ import annotations

import bisect
import functools
import gzip
import io
import itertools
import math
import multiprocessing
import operator
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import orjson
import stringzilla

from engine.atomic_write import AtomicFiles, write_atomically
from engine.cohort.line_screen import (
    UNDECODABLE,
    CheckedReference,
    LineScreen,
    Validator,
    decode_checked_line,
    json_checker,
    line_validator,
)
from engine.cohort.orphans import start_pool_worker
from engine.cohort.prefilter import PREVIEW_TYPES
from engine.errors import InputChangedError, Location
from engine.sources.base import PatientResources
from engine.sources.ndjson import (
    DEFAULT_PATIENT_FIELDS,
    PARSED,
    PATIENT_FIELDS,
    SCREENED,
    SHARED_TYPES,
    ProblemHandler,
    SourceProblem,
    ndjson_files,
    patient_reference,
    raise_problem,
)
from engine.sources.references import FHIR_ID, reference_key

_LINE_TYPE = re.compile(rb'^\{"resourceType":"([A-Za-z]+)"')
_PATIENT_REFERENCE_TEXT = re.compile(
    rb'"reference":"Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"'
)
_WRITE_BUFFER = 1 << 18
_FLUSH_BYTES = 1 << 20
"""Pass 1 writes the routed lines to the partition files every this many bytes."""
_MARKER = "partitioned.json"
_FORMAT = 4
"""The partition files' format (`partitioned.json`'s `format`): 4 = one runs file per range
naming where each run's lines are (the input file or the partition's copies), a section per
partition (`PartitionedExport.run_sections`), copies files only where lines were copied, and
the input files' states."""
_SHARED_FILE = "shared.ndjson"
MAX_LINE_BYTES = 256 * 1024 * 1024
"""A line longer than this (its line end not counted) is not read: pass 1 counts it, reports
it (`long_line_problem`) and reads past it in blocks, never holding it whole. Parsing a line
costs several times its size in memory (orjson's objects; a 400 MB line once took 1.75 GB),
and no resource a criterion reads comes near this size: what does is a Binary or an
attachment's inline data, which a cohort run does not read."""


def partition_number(patient_id: str, partition_count: int) -> int:
    """The partition a patient's lines go to: a stable hash (CRC-32) of the id, modulo N."""
    return zlib.crc32(patient_id.encode()) % partition_count


# --------------------------------------------------------------------------- pass 1

_RANGES_PER_WORKER = 4
"""Pass 1 cuts the export into about this many byte ranges per worker (balances the load)."""
_MINIMUM_RANGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class PartitionedExport:
    """An NDJSON export split into partition files by patient (the result of pass 1).

    Pass 1 reads the export as byte ranges (`ranges`: file number and the line number the
    range starts at, in export order); each range writes one runs file (`_RUN_LINE`s), a
    section per partition it has lines for (`partition_ranges[index]`, the sections at
    `run_sections[index]`), so a partition's lines in range order are in export order, and
    a file of the copies some runs need per partition that has them.
    """

    folder: str
    work_folder: str
    files: tuple[str, ...]
    partition_count: int
    patients_per_partition: tuple[int, ...]
    lines: int
    bytes_read: int
    problems: int
    ranges: tuple[tuple[int, int], ...]
    partition_ranges: tuple[tuple[int, ...], ...]
    run_sections: tuple[tuple[tuple[int, int, int], ...], ...] = ()
    """Per partition, per range of `partition_ranges`: where its runs are in the range's runs
    file (byte offset, bytes) and how many bytes of lines were copied for it (0: no file)."""
    kept_types: tuple[str, ...] | None = None
    file_states: tuple[tuple[int, int] | None, ...] = ()
    """Per file, its size and modification time (ns) when pass 1 read it (None: no stat):
    pass 2 reads lines where they are in the files and checks that they did not change."""
    shared_bytes: int | None = None
    """The size of shared.ndjson as pass 1 wrote it (None: a marker written before it was
    recorded)."""

    def partition_paths(self, index: int) -> list[Path | None]:
        """The files holding partition `index`'s copied lines, in export order (None: the
        range copied none)."""
        return [
            _range_path(self.work_folder, index, r) if section[2] else None
            for r, section in zip(
                self.partition_ranges[index], self.run_sections[index], strict=True
            )
        ]

    def run_paths(self, index: int) -> list[Path]:
        """The runs files of the ranges with lines of partition `index`, in the same order
        (its runs are at `run_sections[index]` in them)."""
        return [_runs_path(self.work_folder, r) for r in self.partition_ranges[index]]

    @property
    def shared_path(self) -> Path:
        return Path(self.work_folder) / _SHARED_FILE

    @property
    def patients(self) -> int:
        return sum(self.patients_per_partition)

    def is_complete(self) -> bool:
        """Whether every file pass 1 wrote is still there, of the size it was written.

        Pass 1 writes its files without fsync and the marker last, with one: after a crash of
        the machine the marker may be on disk while a file it vouches for is empty or cut
        short, so each file's size is checked against what the marker records (a runs file
        ends with the last partition's section of it; a copies file holds `copied` bytes)."""
        sizes: dict[Path, int | None] = {self.shared_path: self.shared_bytes}
        for index in range(self.partition_count):
            for runs, copies, (offset, length, copied) in zip(
                self.run_paths(index),
                self.partition_paths(index),
                self.run_sections[index],
                strict=True,
            ):
                sizes[runs] = max(sizes.get(runs) or 0, offset + length)
                if copies is not None:
                    sizes[copies] = copied
        for path, size in sizes.items():
            try:
                found = path.stat().st_size
            except OSError:
                return False
            if size is not None and found != size:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "folder": self.folder,
            "work_folder": self.work_folder,
            "files": list(self.files),
            "partition_count": self.partition_count,
            "patients_per_partition": list(self.patients_per_partition),
            "lines": self.lines,
            "bytes_read": self.bytes_read,
            "problems": self.problems,
            "ranges": [list(each) for each in self.ranges],
            "partition_ranges": [list(each) for each in self.partition_ranges],
            "run_sections": [[list(section) for section in each] for each in self.run_sections],
            "kept_types": None if self.kept_types is None else list(self.kept_types),
            "file_states": [None if each is None else list(each) for each in self.file_states],
            "shared_bytes": self.shared_bytes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionedExport:
        kept = data.get("kept_types")
        return cls(
            folder=data["folder"],
            work_folder=data["work_folder"],
            files=tuple(data["files"]),
            partition_count=data["partition_count"],
            patients_per_partition=tuple(data["patients_per_partition"]),
            lines=data["lines"],
            bytes_read=data["bytes_read"],
            problems=data["problems"],
            ranges=tuple((first, second) for first, second in data["ranges"]),
            partition_ranges=tuple(tuple(each) for each in data["partition_ranges"]),
            run_sections=tuple(
                tuple((offset, length, copied) for offset, length, copied in each)
                for each in data["run_sections"]
            ),
            kept_types=None if kept is None else tuple(kept),
            file_states=tuple(
                None if each is None else (each[0], each[1]) for each in data["file_states"]
            ),
            shared_bytes=data.get("shared_bytes"),
        )

    @classmethod
    def load(cls, work_folder: str | Path) -> PartitionedExport | None:
        """The export pass 1 left in `work_folder`, or None when it is absent or incomplete."""
        marker = Path(work_folder) / _MARKER
        if not marker.is_file():
            return None
        data = orjson.loads(marker.read_bytes())
        if data.get("format") != _FORMAT:
            return None  # written by an earlier version
        export = cls.from_json(data)
        return export if export.is_complete() else None


def partition_ndjson(
    folder: str | Path,
    work_folder: str | Path,
    partition_count: int,
    on_problem: ProblemHandler = raise_problem,
    kept_types: frozenset[str] | None = None,
    workers: int = 1,
    on_started: Callable[[], None] | None = None,
    marker_files: AtomicFiles | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> PartitionedExport:
    """Pass 1: split every line of the export into `partition_count` partitions by patient.

    The export is read as byte ranges by `workers` processes (gzipped files whole). Each range
    with lines to route writes `input-RRRRR.runs`: for each partition it has lines for, one
    `_RUN_LINE` per run of consecutive lines of one patient (line numbers count from 1 within
    the range), partition after partition (`PartitionedExport.run_sections`); and, for a
    partition with runs whose lines are not the input's bytes as they stand (lines of a
    gzipped file, stripped of white space, or without a line end), `input-PPPP.RRRRR.ndjson`;
    `shared.ndjson` and the marker `partitioned.json` are written last, so an interrupted pass
    leaves no marker.

    `kept_types`: when given, lines of other resource types are skipped without being parsed
    (a skipped line is only checked to end with `}`, else parsed to report why it is not
    JSON). A file named for a resource type is read in blocks and its lines checked in place
    (`_RangeSplitter.split_blocks`), with what the line-by-line path gives. `on_started` is
    called once the pass's worker processes exist (before any range is split when it runs in
    this process): a caller may start threads then, after every fork. `marker_files`: the
    caller's set of files written as one (`engine.atomic_write.atomic_files`), to which the
    marker is added: it is fsynced with them, at once, and renamed into place when their
    block ends (else on its own, here). `max_line_bytes`: a longer line is counted and
    reported but not read (`MAX_LINE_BYTES`); at least `_BLOCK_BYTES`, so that every line
    longer is one that spans blocks.
    Raises InputError only when the folder holds no NDJSON.
    """
    if partition_count < 1:
        raise ValueError("partition_count must be at least 1")
    if max_line_bytes < _BLOCK_BYTES:
        raise ValueError(f"max_line_bytes must be at least {_BLOCK_BYTES}")
    files = ndjson_files(folder)
    work = Path(work_folder)
    work.mkdir(parents=True, exist_ok=True)
    (work / _MARKER).unlink(missing_ok=True)
    for stale in work.glob("input-*"):
        stale.unlink()
    kept = None if kept_types is None else frozenset(t.encode() for t in kept_types)
    states = tuple(_file_state(path) for path in files)
    tasks = [
        _RangeTask(
            number,
            file_number,
            str(path),
            start,
            end,
            str(work),
            partition_count,
            kept,
            max_line_bytes,
        )
        for number, (file_number, path, start, end) in enumerate(_plan_ranges(files, workers))
    ]
    results = _split_ranges(tasks, workers, on_started or _nothing)
    export = _combine_ranges(folder, work, files, partition_count, tasks, results, on_problem)
    export = replace(export, file_states=states)
    if kept_types is not None:
        export = replace(export, kept_types=tuple(sorted(kept_types)))
    marker = orjson.dumps(export.to_json())
    if marker_files is None:
        write_atomically(work / _MARKER, marker)
    else:
        marker_files.open(work / _MARKER).write(marker)
    return export


def _file_state(path: Path) -> tuple[int, int] | None:
    """A file's size and modification time (ns), or None when it cannot be read."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _range_path(work_folder: str | Path, index: int, range_number: int) -> Path:
    return Path(work_folder) / f"input-{index:04d}.{range_number:05d}.ndjson"


def _runs_path(work_folder: str | Path, range_number: int) -> Path:
    return Path(work_folder) / f"input-{range_number:05d}.runs"


def _plan_ranges(files: list[Path], workers: int) -> list[tuple[int, Path, int, int | None]]:
    """(file number, path, first byte, end byte or None for the whole file) per range."""
    sizes: list[int | None] = []
    for path in files:
        try:
            sizes.append(None if path.name.endswith(".gz") else path.stat().st_size)
        except OSError:
            sizes.append(None)  # reported when the range is read
    total = sum(size or 0 for size in sizes)
    if workers <= 1:
        chunk = max(total, 1)
    else:
        chunk = max(_MINIMUM_RANGE_BYTES, math.ceil(total / (workers * _RANGES_PER_WORKER)))
    ranges: list[tuple[int, Path, int, int | None]] = []
    for file_number, (path, size) in enumerate(zip(files, sizes, strict=True)):
        if size is None or size <= chunk:
            ranges.append((file_number, path, 0, None))
            continue
        for start in range(0, size, chunk):
            end = start + chunk
            ranges.append((file_number, path, start, None if end >= size else end))
    return ranges


def _nothing() -> None:
    return None


def _split_ranges(
    tasks: list[_RangeTask], workers: int, on_started: Callable[[], None]
) -> list[_RangeResult]:
    if workers <= 1 or len(tasks) <= 1:
        on_started()
        return [_split_range(task) for task in tasks]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=context,
        initializer=start_pool_worker,
    )
    try:
        # With fork, the first submit starts every worker process: on_started comes after.
        # The largest ranges first, so that the pass does not end with one worker splitting a
        # large range while the others idle; the results keep the ranges' order.
        futures = {
            task.number: pool.submit(_split_range, task)
            for task in sorted(tasks, key=_range_bytes, reverse=True)
        }
        on_started()
        results = [futures[task.number].result() for task in tasks]
    except BaseException:  # Ctrl-C, an error: the ranges not begun are not split
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _range_bytes(task: _RangeTask) -> int:
    """About how many bytes a range holds (a file that cannot be read counts as empty)."""
    if task.end is not None:
        return task.end - task.start
    try:
        return Path(task.path).stat().st_size - task.start
    except OSError:
        return 0


def _combine_ranges(
    folder: str | Path,
    work: Path,
    files: list[Path],
    partition_count: int,
    tasks: list[_RangeTask],
    results: list[_RangeResult],
    on_problem: ProblemHandler,
) -> PartitionedExport:
    """Number the ranges' lines, report their problems in export order, write shared.ndjson."""
    names = [str(path) for path in files]
    ranges: list[tuple[int, int]] = []
    patients = [0] * partition_count
    partition_ranges: list[list[int]] = [[] for _ in range(partition_count)]
    run_sections: list[list[tuple[int, int, int]]] = [[] for _ in range(partition_count)]
    shared_keys: dict[str, tuple[str, int]] = {}
    problems = 0
    first_line = 1
    with open(work / _SHARED_FILE, "wb", buffering=_WRITE_BUFFER) as shared:
        for task, result in zip(tasks, results, strict=True):
            if task.start == 0:
                first_line = 1
            ranges.append((task.file_number, first_line))
            name = names[task.file_number]
            found: list[tuple[int, SourceProblem]] = [
                (line, SourceProblem(name, first_line + line - 1, label, None, message, PARSED))
                for line, message, label in result.problems
            ]
            found += [
                (line, long_line_problem(name, first_line + line - 1, size, task.max_line_bytes))
                for line, size in result.long_lines
            ]
            for label, line, text in result.shared:
                absolute = first_line + line - 1
                earlier = shared_keys.get(label)
                if earlier is None:
                    shared_keys[label] = (name, absolute)
                    shared.write(b"%s\t%s\t%d\t%s\n" % (label.encode(), b"0", absolute, text))
                    continue
                message = f"the same resource as {earlier[0]}:{earlier[1]}; the first is kept"
                found.append((line, SourceProblem(name, absolute, label, None, message, PARSED)))
            found.sort(key=lambda item: item[0])
            if result.read_error is not None:
                last = first_line + result.line_count - 1
                found.append((result.line_count + 1, _read_problem(name, last, result.read_error)))
            for _line, problem in found:
                problems += 1
                on_problem(problem)
            for index, count in result.patients.items():
                patients[index] += count
            for index, section in result.sections:
                partition_ranges[index].append(task.number)
                run_sections[index].append(section)
            first_line += result.line_count
        shared_bytes = shared.tell()
    return PartitionedExport(
        folder=str(folder),
        work_folder=str(work),
        files=tuple(names),
        partition_count=partition_count,
        patients_per_partition=tuple(patients),
        lines=sum(result.resource_lines for result in results),
        bytes_read=sum(result.bytes_read for result in results),
        problems=problems,
        ranges=tuple(ranges),
        partition_ranges=tuple(tuple(each) for each in partition_ranges),
        run_sections=tuple(tuple(each) for each in run_sections),
        shared_bytes=shared_bytes,
    )


def long_line_problem(file: str, line: int, size: int, max_line_bytes: int) -> SourceProblem:
    """The problem of a line longer than `max_line_bytes` (`size`: its bytes, line end not
    counted): left unread, so its content was not checked (`check` None)."""
    message = (
        f"the line is {size:,} bytes long, more than the {max_line_bytes:,} a line may be; "
        "it is not read, and the resource on it is left out"
    )
    return SourceProblem(file, line, None, None, message, None)


def _read_problem(file: str, last_line: int, reason: str) -> SourceProblem:
    if last_line < 1:
        return SourceProblem(file, None, None, None, f"cannot read the file: {reason}")
    return SourceProblem(
        file, last_line + 1, None, None, f"cannot read past line {last_line}: {reason}"
    )


@dataclass(frozen=True)
class _RangeTask:
    """One byte range of one file for pass 1 (`end` None: to the end of the file)."""

    number: int
    file_number: int
    path: str
    start: int
    end: int | None
    work_folder: str
    partition_count: int
    kept_types: frozenset[bytes] | None
    max_line_bytes: int = MAX_LINE_BYTES


@dataclass
class _RangeResult:
    """What splitting one range found; line numbers count from 1 within the range."""

    line_count: int = 0
    resource_lines: int = 0
    bytes_read: int = 0
    problems: list[tuple[int, str, str | None]] = field(default_factory=list)
    shared: list[tuple[str, int, bytes]] = field(default_factory=list)
    patients: dict[int, int] = field(default_factory=dict)
    sections: list[tuple[int, tuple[int, int, int]]] = field(default_factory=list)
    """Per partition it has lines for, in order: where its runs are in the range's runs file
    (byte offset, bytes) and how many bytes of lines were copied for it."""
    read_error: str | None = None
    long_lines: list[tuple[int, int]] = field(default_factory=list)
    """(line number, bytes without the line end) of each line longer than the task's
    `max_line_bytes`: counted, not read (`MAX_LINE_BYTES`)."""


def _split_range(task: _RangeTask) -> _RangeResult:
    """Pass 1 for one byte range: route its lines to this range's partition files."""
    splitter = _RangeSplitter(task)
    try:
        splitter.split()
    finally:
        splitter.close()
    return splitter.result


class _RangeSplitter:
    """Routes the lines of one range to partition files; notes problems and shared resources."""

    def __init__(self, task: _RangeTask) -> None:
        self.task = task
        self.named = _type_named_by(task.path)
        """The type the file's name names (None: none): a line of that type routed where it
        is goes in a run of `_OF_NAMED_TYPE`."""
        self.result = _RangeResult()
        self.outputs: dict[int, IO[bytes]] = {}
        """Per partition with copies, its file of them (opened when they are first written)."""
        self.pending: dict[int, list[bytes | memoryview]] = {}
        """Per partition, the copies routed since the last `flush` (a run of lines of a
        gzipped file is a view of the block it was read in, copied once, into the file's
        buffer)."""
        self.copied: dict[int, int] = {}
        """Per partition, how many bytes of copies were routed to it."""
        self.runs: dict[int, list[list[Any]]] = {}
        """Per partition, `[patient, first line, count, kind, at, length]` of each run."""
        self.unflushed = 0

    def close(self) -> None:
        """Write what is pending, and the range's runs file: each partition's runs
        (`_RUN_LINE`), partition after partition."""
        self.flush()
        for output in self.outputs.values():
            output.close()
        sections = self.result.sections = []
        texts: list[bytes] = []
        offset = 0
        for index in sorted(self.runs):
            text = b"".join([_RUN_LINE % tuple(run) for run in self.runs[index]])
            texts.append(text)
            sections.append((index, (offset, len(text), self.copied[index])))
            offset += len(text)
        if texts:
            _runs_path(self.task.work_folder, self.task.number).write_bytes(b"".join(texts))

    def split(self) -> None:
        """Route the range's lines; a file named for a resource type is read in blocks."""
        named = _type_named_by(self.task.path)
        if named is not None:
            try:
                self.split_blocks(named)
                return
            except (OSError, EOFError, zlib.error):
                self.restart()  # read again line by line, which reports the error as it always has
        self.split_lines()

    def split_lines(self) -> None:
        task = self.task
        result = self.result
        end = task.end
        line_number = 0
        try:
            with _open_range(Path(task.path), task.start) as (handle, position):
                plain = not task.path.endswith(".gz")
                for line in _bounded_lines(handle, task.max_line_bytes):
                    if end is not None and position >= end:
                        break
                    line_number += 1
                    if isinstance(line, _LongLine):
                        self.long_line(line_number, line)
                        position += line.read
                        continue
                    result.bytes_read += len(line)
                    ended = line.endswith(b"\n")
                    self.split_line(line_number, line, position if plain and ended else None)
                    position += len(line)
        except (OSError, EOFError, zlib.error) as error:
            result.read_error = _reason(error)
        result.line_count = line_number

    def split_line(self, line_number: int, line: bytes, source: int | None) -> None:
        """Route one line (with or without its line end). `source`: where the line starts
        in a plain file when a line end follows it there (None: a gzipped file, or the
        file's last line without a line end)."""
        text = line.strip()
        if line_number == 1 and self.task.start == 0 and text.startswith(_BYTE_ORDER_MARK):
            # a UTF-8 byte order mark opening the file, read past as in a Bundle file (no
            # JSON text holds one): the line goes as a copy, without it
            text = text[len(_BYTE_ORDER_MARK) :].strip()
            source = None
        if not text:
            return
        if source is not None and len(text) != len(line) - line.endswith(b"\n"):
            source = None  # white space stripped: routed as a copy
        self.result.resource_lines += 1
        match = _LINE_TYPE.match(text)
        if match is None:
            self.split_parsed(line_number, text, source)
            return
        resource_type = match.group(1)
        kept = self.task.kept_types
        if kept is not None and resource_type not in kept:
            if not text.endswith(b"}"):
                self.check_skipped(line_number, text)
            return
        patient = _patient_from_text(resource_type, text)
        if patient is None:
            self.split_parsed(line_number, text, source)
        else:
            kind = _OF_NAMED_TYPE if resource_type == self.named else _IN_SOURCE
            self.write(patient, line_number, text, source, kind)

    def split_blocks(self, resource_type: bytes) -> None:
        """Route a range of a file named for `resource_type` without reading it line by line.

        The lines are found with `bytes.find` in blocks (memchr). A line that starts
        `{"resourceType":"<type>"` and ends with `}` is what `split_line` sees with nothing
        to strip and that type, so its checks are made in place: a type nothing reads is
        only counted (`count_block`), a patient named once in the text is routed as
        `split_line` routes it (`route_block`). Any other line goes through `split_line`,
        after the run before it is routed, so each partition keeps export order. Read errors
        propagate: `split` then reads the range again line by line.
        """
        task = self.task
        result = self.result
        start = b'{"resourceType":"' + resource_type + b'"'
        kept = task.kept_types
        skipped = kept is not None and resource_type not in kept
        by_text = resource_type != b"Patient" and resource_type not in _SHARED_TYPE_NAMES
        plain = not task.path.endswith(".gz")
        line_number = 0
        with _open_range(Path(task.path), task.start) as (handle, offset):
            for block in _range_blocks(handle, offset, task.end, task.max_line_bytes):
                if isinstance(block, _LongLine):
                    line_number += 1
                    self.long_line(line_number, block)
                    offset += block.read
                    continue
                buffer, first, stop = block
                result.bytes_read += stop - first
                # Where buffer[0] would be in the file (None: gzipped), blocks being contiguous.
                base = offset - first if plain else None
                offset += stop - first
                if skipped:
                    line_number = self.count_block(buffer, first, stop, base, line_number, start)
                elif by_text:
                    line_number = self.route_block(buffer, first, stop, base, line_number, start)
                else:
                    line_number = self.split_block(buffer, first, stop, base, line_number)
        result.line_count = line_number

    def count_block(
        self, buffer: bytes, first: int, stop: int, base: int | None, line_number: int, start: bytes
    ) -> int:
        """Count the lines of `buffer[first:stop]` (of a type nothing reads) that start with
        `start` and end with `}`; any other goes through `split_line`. The line number of
        the block's last line is returned.

        A block of such lines is vouched for whole (`_whole_lines_of`: two SIMD counts);
        else its lines are checked one by one, `}\\n` followed by `start` at a line's end
        vouching for both that line's end and the next line's start in one comparison
        (`start` holds no line end, so it never runs past the next line).
        """
        whole = _whole_lines_of(buffer, first, stop, start)
        if whole:
            self.result.resource_lines += whole
            return line_number + whole
        starts_with = buffer.startswith
        junction = b"}\n" + start
        counted = 0
        starts = starts_with(start, first)
        for line_start, line_end in _line_spans(buffer, first, stop):
            line_number += 1
            if starts:
                if starts_with(junction, line_end - 1):
                    counted += 1
                    continue
                if buffer[line_end - 1] == _CLOSING_BRACE:
                    counted += 1
                    starts = starts_with(start, line_end + 1)
                    continue
            source = None if base is None or line_end == stop else base + line_start
            self.split_line(line_number, buffer[line_start:line_end], source)
            starts = starts_with(start, line_end + 1)
        self.result.resource_lines += counted
        return line_number

    def split_block(
        self, buffer: bytes, first: int, stop: int, base: int | None, line_number: int
    ) -> int:
        """`split_line` for each line of `buffer[first:stop]` (of a type whose patient is not
        read from the text: Patient, the shared types)."""
        for line_start, line_end in _line_spans(buffer, first, stop):
            line_number += 1
            source = None if base is None or line_end == stop else base + line_start
            self.split_line(line_number, buffer[line_start:line_end], source)
        return line_number

    def route_block(
        self, buffer: bytes, first: int, stop: int, base: int | None, line_number: int, start: bytes
    ) -> int:
        """Route the lines of `buffer[first:stop]` (of a kept type whose patient is read from
        the text) as `split_line` routes them; the line number of the block's last line is
        returned.

        Lines and `Patient/` are found with StringZilla's SIMD `find` (`Patient/` holds no
        line end and cannot overlap itself, so a line names it exactly once when a second
        search from past the first finds none before the line's end). When the block is
        vouched for whole (`_whole_lines_of`), every line starts with `start` and ends with
        `}`; else each line is checked. A line that starts with `start`, ends with `}` and
        names `Patient/` once, in a reference (`_PATIENT_REFERENCE_TEXT`, from
        `"reference":"` to its closing `"`), begins a run: the lines after it that do the
        same in the same reference text are routed with it as one run (`send`), found by
        `_run_end`. Matching reads nothing past that `"`, so each line matches as the first
        did. Any other line goes its own way.
        """
        starts_with = buffer.startswith
        view = memoryview(buffer)
        whole = _whole_lines_of(buffer, first, stop, start) > 0
        counted = 0
        line_end = first - 1
        while line_end + 1 < stop:
            line_start = line_end + 1
            line_end = _find(buffer, b"\n", line_start, stop)
            if line_end < 0:
                line_end = stop
            line_number += 1
            source = None if base is None or line_end == stop else base + line_start
            if not starts_with(start, line_start, line_end) or (
                buffer[line_end - 1] != _CLOSING_BRACE
            ):
                self.split_line(line_number, buffer[line_start:line_end], source)
                continue
            counted += 1
            # as _patient_from_text: "Patient/" exactly once, a reference
            at = _find(buffer, b"Patient/", line_start, line_end)
            if at >= line_start + 13 and _find(buffer, b"Patient/", at + 8, line_end) < 0:
                reference = _PATIENT_REFERENCE_TEXT.match(buffer, at - 13, line_end)
                if reference is not None:
                    if line_end == stop:  # the file's last line, without a line end
                        line = buffer[line_start:line_end] + b"\n"
                        self.route(reference.group(1), line_number, 1, line)
                        continue
                    run_line = line_number
                    line_end, following = _run_end(
                        buffer, stop, line_end, reference.group(0), start, whole
                    )
                    line_number += following
                    counted += following
                    self.send(
                        reference.group(1),
                        run_line,
                        line_number + 1,
                        view,
                        base,
                        line_start,
                        line_end + 1,
                    )
                    continue
            self.split_parsed(line_number, buffer[line_start:line_end], source)
        self.result.resource_lines += counted
        return line_number

    def send(
        self,
        patient: bytes,
        line_number: int,
        before: int,
        view: memoryview,
        base: int | None,
        first: int,
        stop: int,
    ) -> None:
        """Route the run of `patient`'s lines from `line_number` to line `before` (not
        included), `view[first:stop]`: by where they are in the file when `base` (the file
        offset of `view[0]`) is known, else as a copy. Each line starts as a line of the
        file's type does (`route_block`)."""
        if base is None:
            self.route(patient, line_number, before - line_number, view[first:stop])
        else:
            count = before - line_number
            self.refer(patient, line_number, count, base + first, stop - first, _OF_NAMED_TYPE)

    def restart(self) -> None:
        """Forget what the range wrote and found, to split it again."""
        for index, output in self.outputs.items():
            output.close()
            _range_path(self.task.work_folder, index, self.task.number).unlink(missing_ok=True)
        self.outputs = {}
        self.pending = {}
        self.copied = {}
        self.runs = {}
        self.unflushed = 0
        self.result = _RangeResult()

    def write(
        self,
        patient: bytes,
        line_number: int,
        text: bytes,
        source: int | None,
        kind: bytes,
    ) -> None:
        """Route one line: by where it is in the file (`source`, its text being the file's
        bytes up to the line end; `kind`: `_OF_NAMED_TYPE` when it starts as a line of the
        type the file's name names does), else as a copy."""
        if source is None:
            self.route(patient, line_number, 1, text + b"\n")
        else:
            self.refer(patient, line_number, 1, source, len(text) + 1, kind)

    def route(
        self, patient: bytes, line_number: int, count: int, lines: bytes | memoryview
    ) -> None:
        """Append a copy of `count` lines of `patient` from `line_number` on (`lines` ends
        with a line end) to the patient's partition's file."""
        index = zlib.crc32(patient) % self.task.partition_count
        runs = self.partition(index)
        self.pending[index].append(lines)
        self.add_run(runs, patient, line_number, count, _COPY, self.copied[index], len(lines))
        self.copied[index] += len(lines)
        self.unflushed += len(lines)
        if self.unflushed >= _FLUSH_BYTES:
            self.flush()

    def refer(
        self, patient: bytes, line_number: int, count: int, at: int, length: int, kind: bytes
    ) -> None:
        """Note `count` lines of `patient` from `line_number` on, `length` bytes from byte
        `at` of the file, in the patient's partition: pass 2 reads them there (`kind`:
        `_IN_SOURCE`, or `_OF_NAMED_TYPE` when each starts as a line of the file's type)."""
        runs = self.partition(zlib.crc32(patient) % self.task.partition_count)
        self.add_run(runs, patient, line_number, count, kind, at, length)

    def partition(self, index: int) -> list[list[Any]]:
        """Partition `index`'s runs."""
        runs = self.runs.get(index)
        if runs is None:
            runs = self.runs[index] = []
            self.pending[index] = []
            self.copied[index] = 0
        return runs

    @staticmethod
    def add_run(
        runs: list[list[Any]],
        patient: bytes,
        line_number: int,
        count: int,
        kind: bytes,
        at: int,
        length: int,
    ) -> None:
        """Append a run, or lengthen the last one when this one continues it (where it is:
        both copied, or both in the file, `_IN_SOURCE` unless both are `_OF_NAMED_TYPE`)."""
        if runs:
            last = runs[-1]
            if (
                last[0] == patient
                and last[1] + last[2] == line_number
                and (last[3] == kind or (last[3] != _COPY and kind != _COPY))
                and last[4] + last[5] == at
            ):
                last[2] += count
                last[5] += length
                if last[3] != kind:
                    last[3] = _IN_SOURCE
                return
        runs.append([patient, line_number, count, kind, at, length])

    def flush(self) -> None:
        """Write the pending copies, partition by partition."""
        for index, pieces in self.pending.items():
            if pieces:
                output = self.outputs.get(index)
                if output is None:
                    task = self.task
                    path = _range_path(task.work_folder, index, task.number)
                    output = self.outputs[index] = open(path, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115
                output.writelines(pieces)
                pieces.clear()
        self.unflushed = 0

    def problem(self, line_number: int, message: str, label: str | None = None) -> None:
        self.result.problems.append((line_number, message, label))

    def long_line(self, line_number: int, line: _LongLine) -> None:
        """Count a line too long to read (`MAX_LINE_BYTES`) and note it for its problem."""
        self.result.bytes_read += line.read
        self.result.resource_lines += 1
        self.result.long_lines.append((line_number, line.size))

    def check_skipped(self, line_number: int, text: bytes) -> None:
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as error:
            self.problem(line_number, f"not valid JSON: {error.msg}")

    def split_parsed(self, line_number: int, text: bytes, source: int | None) -> None:
        """Route a line after parsing it (`source`: as for `split_line`); shared resources
        are kept aside for the main process. A Patient in a file named for Patients is read
        without being built (`_patient_id_of`), routed as parsing routes it."""
        kept = self.task.kept_types
        if self.named == b"Patient" and (kept is None or b"Patient" in kept):
            patient_id = _patient_id_of(text)
            if patient_id is not None:
                index = partition_number(patient_id, self.task.partition_count)
                self.result.patients[index] = self.result.patients.get(index, 0) + 1
                self.write(patient_id.encode(), line_number, text, source, _IN_SOURCE)
                return
        try:
            resource = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            self.problem(line_number, f"not valid JSON: {error.msg}")
            return
        wrong = _not_a_resource(resource)
        if wrong is not None:
            self.problem(line_number, wrong)
            return
        resource_type = resource["resourceType"]
        if kept is not None and resource_type.encode() not in kept:
            return
        resource_id = resource.get("id")
        label = f"{resource_type}/{resource_id}" if _labels(resource_id) else None
        patient_id = patient_reference(resource)
        if patient_id is not None:
            if resource_type == "Patient":
                index = partition_number(patient_id, self.task.partition_count)
                self.result.patients[index] = self.result.patients.get(index, 0) + 1
            self.write(patient_id.encode(), line_number, text, source, _IN_SOURCE)
        elif resource_type == "Patient":
            self.problem(line_number, "Patient.id is missing or not a FHIR id", label)
        elif resource_type in SHARED_TYPES:
            if label is None or not FHIR_ID.fullmatch(label.split("/", 1)[1]):
                self.problem(
                    line_number, "a shared resource needs a FHIR id to be referred to", label
                )
            else:
                self.result.shared.append((label, line_number, text))
        else:
            fields = ", ".join(PATIENT_FIELDS.get(resource_type, DEFAULT_PATIENT_FIELDS))
            self.problem(
                line_number,
                f"no reference to a Patient in {fields}; "
                "the resource belongs to no patient and is left out",
                label,
            )


_BYTE_ORDER_MARK = b"\xef\xbb\xbf"
"""UTF-8's byte order mark, which some tools write at the start of a file."""
_SHARED_TYPE_NAMES = frozenset(t.encode() for t in SHARED_TYPES)
_IN_SOURCE = b"s"
"""A run's lines are where they are in the file the range is of (`at`: a byte offset)."""
_OF_NAMED_TYPE = b"t"
"""As `_IN_SOURCE`, and each line starts `{"resourceType":"<T>"` for the type T the file's
name names (`_type_named_by`): pass 2 knows a line's type without looking at it."""
_COPY = b"c"
"""A run's lines are copied into the partition's file of the range (`at`: a byte offset)."""
_RUN_LINE = b"%s\t%d\t%d\t%s\t%d\t%d\n"
"""A runs file's line: patient, first line (from 1 within the range), number of lines, where
they are (`_IN_SOURCE`, `_OF_NAMED_TYPE` or `_COPY`), byte offset there, number of bytes."""


def _labels(resource_id: object) -> bool:
    """Whether a resource's `id` names it, `Type/id` (a string, not empty): one without, or
    with an empty id, is labelled by its position in the patient's record (`PatientRecord.label`),
    never taken for a duplicate, and has a patient read without the screen (`unlabelled`)."""
    return type(resource_id) is str and resource_id != ""


def _patient_from_text(resource_type: bytes, text: bytes) -> bytes | None:
    """The patient id of a line that names exactly one Patient, read without parsing.

    Only for types other than Patient and the shared types; pass 2 checks the answer against
    the parsed resource.
    """
    if resource_type == b"Patient" or resource_type in _SHARED_TYPE_NAMES:
        return None
    if text.count(b"Patient/") != 1:
        return None
    reference = _PATIENT_REFERENCE_TEXT.search(text)
    return reference.group(1) if reference is not None else None


def _patient_id_of(text: bytes) -> str | None:
    """The id of a line that parsing would find to be a Patient with a FHIR id
    (`split_parsed`), read without building it; None for any other line (parsing decides).

    msgspec reads the two fields (`decode_checked_line`; Patient lines are about 3.5 KB of
    which they are two: 2 us a line against orjson's 8 us for building all of it); simdjson
    then validates the whole line (the UTF-8 and numbers msgspec skips unchecked; it accepts
    no line orjson rejects), as `_screened_label` does. A line either rejects goes to orjson.
    """
    try:
        line = decode_checked_line(text)
    except UNDECODABLE:
        return None
    patient_id = line.id
    if line.resourceType != "Patient" or type(patient_id) is not str:
        return None
    if not FHIR_ID.fullmatch(patient_id):
        return None
    try:
        json_checker().parse(text)
    except (ValueError, RuntimeError):  # UnicodeDecodeError is a ValueError
        return None
    return patient_id


def _not_a_resource(resource: Any) -> str | None:
    """What is wrong when the parsed line is not a JSON object with a resourceType, else None."""
    if type(resource) is not dict:
        return f"expected a JSON object (a FHIR resource), found {type(resource).__name__}"
    resource_type = resource.get("resourceType")
    if type(resource_type) is not str or not resource_type:
        return "the resource has no resourceType"
    return None


@contextmanager
def _open_range(path: Path, start: int) -> Iterator[tuple[io.BufferedIOBase, int]]:
    """The file positioned at the first line that starts at or after `start`, and that offset.

    A line belongs to the range its first byte is in: a range that starts inside a line leaves
    that line to the range before.
    """
    if path.name.endswith(".gz"):
        with gzip.GzipFile(path, "rb") as compressed:
            yield compressed, 0
        return
    with open(path, "rb") as handle:
        if start > 0:
            handle.seek(start - 1)
            while True:  # to the end of the line `start - 1` is in, a block at a time
                piece = handle.readline(_BLOCK_BYTES)
                if not piece or piece.endswith(b"\n"):
                    break
        yield handle, handle.tell()


@dataclass(frozen=True)
class _LongLine:
    """A line longer than a range's `max_line_bytes`, read past: `size` bytes without its
    line end, `read` with it."""

    size: int
    read: int


def _bounded_lines(handle: io.BufferedIOBase, max_line_bytes: int) -> Iterator[bytes | _LongLine]:
    """The lines of `handle` from where it is, each with its line end (the last one may have
    none); a line longer than `max_line_bytes` (at least `_BLOCK_BYTES`) comes as a
    `_LongLine`. Read a block at a time, so that a line is held once (`readline(n)` holds
    its result and the pieces it joins) and a long one is dropped as it is read."""
    readline = handle.readline
    while True:
        line = readline(_BLOCK_BYTES)
        if not line:
            return
        if line.endswith(b"\n") or len(line) < _BLOCK_BYTES:  # shorter: the file's end
            yield line
            continue
        pieces = [line]
        read = len(line)
        ended = False
        while not ended:
            piece = readline(_BLOCK_BYTES)
            if not piece:
                break
            read += len(piece)
            ended = piece.endswith(b"\n")
            if pieces and read - ended > max_line_bytes:
                pieces = []  # a long line: the rest is only counted
            elif pieces:
                pieces.append(piece)
        yield b"".join(pieces) if pieces else _LongLine(read - ended, read)


_BLOCK_BYTES = 1 << 20
"""Files named for a resource type are read in blocks of about this size (`split_blocks`)."""
_CLOSING_BRACE = ord("}")
_LINE_END = ord("\n")
_find: Callable[[bytes, bytes, int, int], int] = stringzilla.find
"""`bytes.find` with start and end, in SIMD: StringZilla finds `Patient/` at memchr speed
(6 ms for the 151 MB of the 10x export's Observations against 85 ms for `bytes.find`,
whose multi-byte search goes about a byte at a time) and a line end in less Python time."""
_count: Callable[[bytes, bytes, int, int], int] = stringzilla.count
"""`bytes.count` with start and end (non-overlapping occurrences), in SIMD."""


def _line_spans(buffer: bytes, first: int, stop: int) -> Iterator[tuple[int, int]]:
    """`(start, end)` of each line of `buffer[first:stop]`: `end` is where its line end is,
    or `stop` for a last line without one."""
    find = buffer.find
    line_end = first - 1
    while line_end + 1 < stop:
        line_start = line_end + 1
        line_end = find(b"\n", line_start, stop)
        if line_end < 0:
            line_end = stop
        yield line_start, line_end


def _whole_lines_of(buffer: bytes, first: int, stop: int, start: bytes) -> int:
    """How many lines `buffer[first:stop]` holds when each of them starts with `start`, ends
    with `}` and has its line end; else 0.

    Exact with two counts: `}\\n` + `start` holds exactly one line end, and two of them
    cannot overlap (the second would have to start at the first's last byte, `"`, not `}`),
    so there are as many as the block's lines less one exactly when every line end but the
    last is preceded by `}` and followed by `start` (the last one's would reach past
    `stop`); with the first line starting with `start` and the last ending with `}\\n`,
    every line is vouched for.
    """
    if stop - first < 2 or buffer[stop - 1] != _LINE_END or buffer[stop - 2] != _CLOSING_BRACE:
        return 0
    if not buffer.startswith(start, first):
        return 0
    lines: int = _count(buffer, b"\n", first, stop)
    return lines if _count(buffer, b"}\n" + start, first, stop) == lines - 1 else 0


def _run_end(
    buffer: bytes, stop: int, line_end: int, reference: bytes, start: bytes, whole: bool
) -> tuple[int, int]:
    """Where the run that begins with the line ending at `line_end` ends (`route_block`):
    the line end of its last line, and how many lines follow the first in it.

    A following line goes on with the run when it has its line end, holds `reference` (the
    first line's reference text, which holds `Patient/` once, 13 bytes in, and no line end)
    and starts with `start` and ends with `}` (vouched for by `whole`, else checked); and
    names `Patient/` only there: one count for the run's following lines, as many as lines
    exactly when each names it once (each names it at least once, in `reference`). Only when
    the count says otherwise are the lines counted one by one, and the run ends before the
    first that names it more than once.
    """
    first_end = line_end
    following = 0
    find = _find
    starts_with = buffer.startswith
    while True:
        line_start = line_end + 1
        next_end = find(buffer, b"\n", line_start, stop)
        if next_end < 0 or find(buffer, reference, line_start, next_end) < 0:
            break
        if not whole and not (
            starts_with(start, line_start, next_end) and buffer[next_end - 1] == _CLOSING_BRACE
        ):
            break
        line_end = next_end
        following += 1
    if not following or _count(buffer, b"Patient/", first_end, line_end) == following:
        return line_end, following
    # A line names Patient/ more than once: the run ends before the first that does.
    last = following
    line_end, following = first_end, 0
    while following < last:
        next_end = _find(buffer, b"\n", line_end + 1, stop)
        if _count(buffer, b"Patient/", line_end + 1, next_end) != 1:
            break
        line_end = next_end
        following += 1
    return line_end, following


_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]*")


def _type_named_by(path: str) -> bytes | None:
    """The resource type a file's name starts with (`Encounter.000.ndjson`), or None.

    A Bulk Data export file holds resources of one type (Bulk Data Access IG v2.0.0, the
    manifest's `output.type`: "each file item SHALL contain resources of only one type") and
    is named after it; `split_blocks` checks every line, so a misnamed file only costs time.
    """
    name = Path(path).name.split(".", 1)[0]
    return name.encode() if _TYPE_NAME.fullmatch(name) else None


def _range_blocks(
    handle: io.BufferedIOBase, position: int, end: int | None, max_line_bytes: int
) -> Iterator[tuple[bytes, int, int] | _LongLine]:
    """The range's lines in blocks: `(buffer, first, stop)`, `buffer[first:stop]` whole lines.

    `position` is the offset of the range's first line; the range owns the lines that start
    before `end` (None: to the end of the file). Every block ends with a line end except the
    file's last line when it has none; a line cut by a read comes as a block of its own, or,
    when longer than `max_line_bytes` (at least `_BLOCK_BYTES`, so only a line cut by a read
    can be), as a `_LongLine`: its bytes are dropped as they are read.
    """
    if end is not None and position >= end:
        return
    pending: list[bytes] = []
    pending_bytes = 0
    skipping = False  # pending_bytes counts a long line's bytes, dropped
    offset = position  # of the next byte read
    while True:
        data = handle.read1(_BLOCK_BYTES)
        if not data:
            if skipping:
                yield _LongLine(pending_bytes, pending_bytes)
            elif pending:
                rest = b"".join(pending)
                yield rest, 0, len(rest)
            return
        if skipping:
            line_end = data.find(b"\n")
            if line_end < 0:
                pending_bytes += len(data)
                offset += len(data)
                continue
            yield _LongLine(pending_bytes + line_end, pending_bytes + line_end + 1)
            skipping = False
            pending_bytes = 0
            offset += line_end + 1
            data = data[line_end + 1 :]
            if end is not None and offset >= end:
                return
            if not data:
                continue
        stop = len(data)
        last = False
        if end is not None and offset + stop >= end:
            line_end = data.find(b"\n", max(0, end - 1 - offset))
            if line_end >= 0:
                stop = line_end + 1
                last = True
        offset += len(data)
        cut = data.rfind(b"\n", 0, stop) + 1
        if cut == 0:
            pending_bytes += len(data)
            if pending_bytes > max_line_bytes:
                pending = []
                skipping = True
            else:
                pending.append(data)
            continue
        first = 0
        if pending:
            first = data.find(b"\n") + 1
            size = pending_bytes + first - 1
            if size > max_line_bytes:
                yield _LongLine(size, size + 1)
            else:
                pending.append(data[:first])
                rest = b"".join(pending)
                yield rest, 0, len(rest)
            pending = []
            pending_bytes = 0
        if first < cut:
            yield data, first, cut
        if last:
            return
        if cut < stop:
            pending.append(data[cut:stop])
            pending_bytes = stop - cut


def _reason(error: BaseException) -> str:
    if isinstance(error, EOFError):
        return "the compressed stream ends early (truncated file)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


# --------------------------------------------------------------------------- pass 2


def _read_section(path: Path, offset: int, length: int) -> bytes:
    """`length` bytes of the file at `path` from byte `offset` (a partition's runs)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


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


Run = tuple[bytes, int, int, int]
"""A run of a partition's lines: patient, range number, line number (from 1 within the
range) of its first line, number of lines."""


@dataclass(frozen=True)
class PartitionLines:
    """One partition's lines with all it takes to group them anywhere (picklable).

    `chunks` are the partition's lines (unchanged, in export order), a run at a time: the
    lines of `runs[i]` (whose they are and where they come from) are `chunks[i]`, or, when
    that is None, the bytes of an input file at `places[i]` (file number, byte offset,
    bytes; `file_states` says what the file was like in pass 1), read when their patient is
    (`patients`); `heads[i]`, when given and not None, is how every line of run i starts
    (`{"resourceType":"<T>"`, pass 1's `_OF_NAMED_TYPE`); `files` and `ranges` turn a range
    and line into a file and line number; `shared` holds the shared resources patients may
    refer to. A pickled copy carries every line (the input's are read first): a worker on
    another machine needs nothing else.
    """

    index: int
    chunks: tuple[bytes | None, ...]
    runs: tuple[Run, ...]
    files: tuple[str, ...]
    ranges: tuple[tuple[int, int], ...]
    shared: SharedResources
    places: tuple[tuple[int, int, int], ...] = ()
    file_states: tuple[tuple[int, int] | None, ...] = ()
    heads: tuple[bytes | None, ...] = ()

    @classmethod
    def read(cls, export: PartitionedExport, index: int, shared: SharedResources) -> PartitionLines:
        """Partition `index` from the work folder: its runs, and the lines pass 1 copied (the
        others are read where they are in the input files, a patient at a time, by
        `patients`: still in the processor's cache when they are split and read)."""
        chunks: list[bytes | None] = []
        places: list[tuple[int, int, int]] = []
        heads: list[bytes | None] = []
        runs: list[Run] = []
        for range_number, copies_path, runs_path, (offset, section_bytes, _copied) in zip(
            export.partition_ranges[index],
            export.partition_paths(index),
            export.run_paths(index),
            export.run_sections[index],
            strict=True,
        ):
            copies = b"" if copies_path is None else copies_path.read_bytes()
            file_number = export.ranges[range_number][0]
            named = _type_named_by(export.files[file_number])
            head = None if named is None else b'{"resourceType":"%s"' % named
            for line in _read_section(runs_path, offset, section_bytes).splitlines():
                patient, first_line, count, kind, at, length = line.split(b"\t")
                start, size = int(at), int(length)
                chunks.append(copies[start : start + size] if kind == _COPY else None)
                places.append((file_number, start, size))
                heads.append(head if kind == _OF_NAMED_TYPE else None)
                runs.append((patient, range_number, int(first_line), int(count)))
        return cls(
            index,
            tuple(chunks),
            tuple(runs),
            export.files,
            export.ranges,
            shared,
            tuple(places),
            export.file_states,
            tuple(heads),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with every line in `chunks` (read from the input files now)."""
        with self._inputs() as inputs:
            chunks = tuple(self._chunk(number, inputs) for number in range(len(self.runs)))
        fields = (self.index, chunks, self.runs, self.files, self.ranges, self.shared)
        return (type(self), (*fields, (), (), self.heads))

    @contextmanager
    def _inputs(self) -> Iterator[dict[int, _InputFile]]:
        """The input files holding lines of `chunks` left None, by file number, each opened
        and checked to be as pass 1 read it (in the order of the runs), closed afterwards.

        Raises InputError when an input file changed since pass 1 read it."""
        inputs: dict[int, _InputFile] = {}
        try:
            for chunk, (file_number, _at, _size) in zip(self.chunks, self.places, strict=False):
                if chunk is None and file_number not in inputs:
                    state = self.file_states[file_number] if self.file_states else None
                    inputs[file_number] = _InputFile(self.files[file_number], state)
                    inputs[file_number].open()
            yield inputs
        finally:
            for source in inputs.values():
                source.close()

    def _chunk(self, number: int, inputs: dict[int, _InputFile]) -> bytes:
        """The lines of run `number`."""
        chunk = self.chunks[number]
        if chunk is None:
            file_number, at, size = self.places[number]
            chunk = inputs[file_number].read(at, size)
        return chunk

    @functools.cached_property
    def run_starts(self) -> list[int]:
        """The position (among the partition's lines) of each run's first line."""
        return list(itertools.accumulate((run[3] for run in self.runs), initial=0))

    def location(self, position: int) -> tuple[str, int]:
        """The file and line number of the partition's line at `position` (from 0)."""
        run_number = bisect.bisect_right(self.run_starts, position) - 1
        _patient, range_number, first_line, _count = self.runs[run_number]
        file_number, range_first_line = self.ranges[range_number]
        line = range_first_line + first_line - 1 + position - self.run_starts[run_number]
        return self.files[file_number], line

    def patients(
        self,
        on_problem: ProblemHandler = raise_problem,
        screen: LineScreen | None = None,
        preview_first: bool = False,
    ) -> Iterator[PatientResources]:
        """The partition's patients, sorted by patient id.

        Each patient's resources are in export order, followed by the shared resources they
        refer to. A patient whose data holds no Patient is reported and left out. `screen`:
        leave unparsed the lines it finds no criterion can read (`engine.cohort.line_screen`;
        those parsed to settle the newest data date come after the others). `preview_first`:
        parse only the preview's lines (Patient, Conditions, Procedures) and yield a
        `PreviewFirst` whose `rest` the caller resolves, parsed or screened (see there).
        """
        # By patient, the number of each of their runs.
        groups: dict[bytes, list[int]] = {}
        for number, run in enumerate(self.runs):
            group = groups.get(run[0])
            if group is None:
                groups[run[0]] = [number]
            else:
                group.append(number)
        with self._inputs() as inputs:
            yield from self._patients(groups, inputs, on_problem, screen, preview_first)

    def _patients(
        self,
        groups: dict[bytes, list[int]],
        inputs: dict[int, _InputFile],
        on_problem: ProblemHandler,
        screen: LineScreen | None,
        preview_first: bool,
    ) -> Iterator[PatientResources]:
        run_chunks = self.chunks
        places = self.places
        runs = self.runs
        heads = self.heads
        run_starts = self.run_starts
        shared_types = tuple(sorted({key.split("/")[0] for key in self.shared}))
        references = _shared_reference_pattern(shared_types)
        needles = _shared_type_needles(shared_types)
        for patient in sorted(groups):
            numbers = groups.pop(patient)
            # Read and split a patient at a time, just before the lines are read (still in
            # the processor's cache), by BytesIO, which finds line ends with memchr (a byte
            # loop in bytes.split). Each line keeps its line end: JSON white space to every
            # reader of it (`parse_unscreened` words an error as for the line without it).
            texts: list[bytes] = []
            chunks: list[tuple[bytes, int]] = []
            for number in numbers:
                chunk = run_chunks[number]
                if chunk is None:  # `_chunk`, inline
                    file_number, at, size = places[number]
                    chunk = inputs[file_number].read(at, size)
                texts += io.BytesIO(chunk).readlines()
                chunks.append((chunk, runs[number][3]))
            segments = [(run_starts[number], runs[number][3]) for number in numbers]
            reader = _PatientLines(
                self,
                patient,
                texts,
                segments,
                chunks,
                needles if references is not None else (),
                references,
                on_problem,
                screen,
                [heads[number] for number in numbers] if heads else None,
            )
            if not preview_first:
                reader.read(None)
                grouped = reader.finish()
                if grouped is not None:
                    yield grouped
                continue
            reader.read(_PREVIEW_HEADS)
            if reader.origin is None:  # no Patient: parse the rest to report it as before
                reader.parse_rest()
                reader.finish()
                continue
            preview, preview_texts = reader.preview()
            yield PreviewFirst(
                reader.patient_id,
                preview,
                [None] * len(preview),
                reader.origin,
                texts=preview_texts,
                rest=RestOfRecord(reader),
            )


_PREVIEW_HEADS = tuple(sorted(b'{"resourceType":"%s"' % name.encode() for name in PREVIEW_TYPES))
"""How the lines of the preview's types start."""


_PREAD: Callable[[int, int, int], bytes] | None = getattr(os, "pread", None)


class _InputFile:
    """An input file, checked when opened to be as pass 1 read it (`state`: its size and
    modification time then)."""

    def __init__(self, name: str, state: tuple[int, int] | None) -> None:
        self.name = name
        self.state = state
        self.handle: IO[bytes] | None = None
        self.descriptor = -1

    def open(self) -> None:
        if self.handle is None:
            self.handle = self._open()
            self.descriptor = self.handle.fileno()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def read(self, start: int, size: int) -> bytes:
        """The `size` bytes from byte `start` (of the file `open` opened): whole lines, the
        last ending with a line end."""
        try:
            if _PREAD is not None:
                text = _PREAD(self.descriptor, size, start)
            else:  # no pread (Windows)
                os.lseek(self.descriptor, start, os.SEEK_SET)
                text = os.read(self.descriptor, size)
        except OSError as error:
            raise self._changed(_reason(error)) from error
        if len(text) != size or not text.endswith(b"\n"):
            raise self._changed("its lines are no longer where they were")
        return text

    def _open(self) -> IO[bytes]:
        try:
            handle = open(self.name, "rb", buffering=0)  # noqa: SIM115
        except OSError as error:
            raise self._changed(_reason(error)) from error
        status = os.fstat(handle.fileno())
        if self.state != (status.st_size, status.st_mtime_ns):
            handle.close()
            raise self._changed("its size or modification time differs")
        return handle

    def _changed(self, reason: str) -> InputChangedError:
        return InputChangedError(
            f"the input file changed while the cohort ran ({reason})", Location(file=self.name)
        )


def _lines_referring(chunks: list[tuple[bytes, int]], needles: tuple[bytes, ...]) -> frozenset[int]:
    """The positions (among the lines of `chunks`, a patient's runs and their numbers of
    lines) of the lines that may refer to a shared resource: those holding one of
    `needles`, `<shared type>/` (`_shared_type_needles`). Only they are searched for
    references (`_shared_keys`), which costs as much as reading every line; the literal
    is found much faster (StringZilla's SIMD find and count). Searched a patient at a time,
    just before the patient's lines are read (still in the processor's cache)."""
    found: set[int] = set()
    position = 0  # of each chunk's first line
    for chunk, count in chunks:
        size = len(chunk)
        for needle in needles:
            at = _find(chunk, needle, 0, size)
            line = position  # the line holding byte `counted`
            counted = 0
            while at >= 0:
                line += _count(chunk, b"\n", counted, at)
                counted = at
                found.add(line)
                end = _find(chunk, b"\n", at, size)
                at = -1 if end < 0 else _find(chunk, needle, end, size)
        position += count
    return frozenset(found)


@dataclass(frozen=True)
class PreviewFirst(PatientResources):
    """A patient's preview (Patient, Conditions, Procedures), the rest of their lines not yet
    parsed: `rest.parsed()` gives the whole patient as `PartitionLines.patients` would have;
    `rest.screened()` only checks the rest (for a patient settled from the preview). Either
    reports the patient's input problems, in line order."""

    rest: RestOfRecord | None = None


class RestOfRecord:
    """The lines of a `PreviewFirst` patient outside the preview, to resolve once."""

    def __init__(self, reader: _PatientLines) -> None:
        self._reader = reader
        self.resolved = False

    def parsed(self) -> PatientResources:
        """The patient's whole resources, every line parsed and checked (as without
        `preview_first`)."""
        self._resolve()
        self._reader.parse_rest()
        whole = self._reader.finish()
        assert whole is not None  # the preview holds the Patient
        return whole

    def screened(self) -> None:
        """Check the rest without building it: each line is validated as JSON (msgspec, and
        simdjson unless the runs are `plain_json`) and
        must be an object with a resourceType whose patient field names the patient; its
        `Type/id` still takes part in dropping duplicates. A line that fails a check is
        parsed, which reports why, as it would in a full run. Problems of screened lines say
        so (`SourceProblem.check`: a repeated resource)."""
        self._resolve()
        self._reader.screen_rest()
        self._reader.finish(build=False)

    def _resolve(self) -> None:
        if self.resolved:
            raise RuntimeError("the rest of a record is resolved once")
        self.resolved = True


_NEEDS_PARSING = "parse"
"""What `_screened_label` says of a line that parsing must check (it reports the problem)."""


def _screened_label(
    validate: Validator | None,
    text: bytes,
    own_reference: str,
    decode_kept: Callable[[bytes], Any] | None = None,
) -> str | None:
    """A line's `Type/id` (None: it has no id) when it is valid JSON, an object with a
    resourceType whose type's first patient field refers to `own_reference`, exactly the
    checks parsing makes of it; else `_NEEDS_PARSING` (parsing reports the problem or
    settles the less common cases, such as the patient in another field).

    msgspec reads the fields (`decode_checked_line`: a repeated key's last value, as orjson
    reads it); `validate` (simdjson's parse, None when the patient's runs are
    `plain_json`) then validates the whole line (the UTF-8 and the numbers msgspec skips
    unchecked). simdjson accepts no document that orjson rejects; a document either
    rejects (or cannot represent, such as an integer beyond 64 bits) is parsed by orjson,
    which decides. `decode_kept` (`LineScreen.decode_kept`): read a line of a type the run
    keeps through its own Struct first, which makes most checks in the decoding (the same
    answer; a line it does not decode is read as without it).
    """
    kept = None
    if decode_kept is not None:
        try:
            kept = decode_kept(text)
        except UNDECODABLE:
            kept = None  # read as without it, below
    if kept is not None:
        if kept.patient.reference != own_reference:
            return _NEEDS_PARSING
        label_head, resource_id = kept.label_head, kept.id
    else:
        try:
            line = decode_checked_line(text)
        except UNDECODABLE:
            return _NEEDS_PARSING
        resource_type = line.resourceType
        if type(resource_type) is not str or not resource_type or resource_type == "Patient":
            return _NEEDS_PARSING
        patient_field = _FIRST_PATIENT_FIELD.get(resource_type, DEFAULT_PATIENT_FIELDS[0])
        holder = getattr(line, patient_field)
        if type(holder) is not CheckedReference or holder.reference != own_reference:
            return _NEEDS_PARSING
        label_head, resource_id = resource_type + "/", line.id
    if validate is not None:
        try:
            validate(text)
        except (ValueError, RuntimeError):  # UnicodeDecodeError is a ValueError
            return _NEEDS_PARSING
    return label_head + resource_id if _labels(resource_id) else None


class _PatientLines:
    """One patient's partition lines turned into resources: parsed and checked line by line,
    problems kept by line position and reported in line order when the patient is finished.

    With a `screen`, lines it finds no criterion can read are left unparsed
    (`engine.cohort.line_screen`); of those, the first of the latest data day (of all of
    them, and of the preview's) is parsed after all, so the newest data date is exact. A
    resource without an id (or with an empty one) is labelled by its position among the
    patient's resources, which unparsed lines would change: a patient with one is read again
    without the screen.
    """

    def __init__(
        self,
        partition: PartitionLines,
        patient: bytes,
        lines: list[bytes],
        segments: list[tuple[int, int]],
        chunks: list[tuple[bytes, int]],
        needles: tuple[bytes, ...],
        references: re.Pattern[bytes] | None,
        on_problem: ProblemHandler,
        screen: LineScreen | None,
        heads: list[bytes | None] | None = None,
    ) -> None:
        self.partition = partition
        self.patient_id = patient.decode()
        self.lines = lines
        # Where the lines are among the partition's: (first position, count) per run.
        self.segments = segments
        # How every line of each run starts, when pass 1 knows (None: it does not).
        self.heads = heads or [None] * len(segments)
        # The lines that may refer to shared resources (`_lines_referring` finds them in the
        # runs' texts, `chunks`, with `needles`: a run when its lines are first read), and
        # how to find their references.
        self.chunks = chunks
        self.needles = needles
        self.unsearched = [bool(needles)] * len(segments)
        self.references = references if needles else None
        self.referring: frozenset[int] = frozenset()
        self.on_problem = on_problem
        self.own_reference = "Patient/" + self.patient_id
        self.shared: SharedResources = partition.shared
        self.screen = screen
        self._start()

    def _start(self) -> None:
        """Nothing read yet."""
        self.entries: list[tuple[int, dict[str, Any]]] = []
        self.kept_referring: list[tuple[int, bytes]] = []
        self.problems: list[tuple[int, SourceProblem]] = []
        self.seen: dict[str, int] = {}
        self.skipped = False
        self.unlabelled = False
        # The shared Medications skipped lines were classified by (`LineScreen.skippable`).
        self.relied: list[str] = []
        # The first skipped line of the latest data day, of all and of the preview's types.
        self.newest: tuple[str, int, bytes] = ("", 0, b"")
        self.newest_in_preview: tuple[str, int, bytes] = ("", 0, b"")
        self.rest: list[tuple[int, bytes]] = []
        self.origin: str | None = None

    @functools.cached_property
    def validate(self) -> Validator | None:
        """What validates a line msgspec decoded: None when the patient's runs hold no
        invalid UTF-8 nor a number that could overflow a double (`plain_json`, asked once a
        line is to be screened), so that msgspec's checks are orjson's; else simdjson's."""
        return line_validator(chunk for chunk, _count in self.chunks)

    def _read_again_unscreened(self) -> bool:
        """Whether the lines must be read again without the screen (a resource without an id
        was kept while lines were left unparsed, or a line was skipped for the code of a
        shared Medication that a resource of the patient's own, with the same `Type/id`,
        stands for in their record); if so, forget what was read."""
        if not (self.unlabelled and self.skipped) and (
            not self.relied or self.seen.keys().isdisjoint(self.relied)
        ):
            return False
        self.screen = None
        self._start()
        return True

    def location(self, position: int) -> tuple[str, int]:
        """The file and line number of the patient's line at `position`."""
        for first, count in self.segments:
            if position < count:
                return self.partition.location(first + position)
            position -= count
        raise IndexError(position)

    def problem(self, position: int, message: str, label: str | None, check: str = PARSED) -> None:
        file, line = self.location(position)
        found = SourceProblem(file, line, label, self.patient_id, message, check)
        self.problems.append((position, found))

    def repeated(self, position: int, label: str, earlier: int, check: str) -> None:
        """Report the line at `position`, a repeat of the one at `earlier`."""
        file, line = self.location(earlier)
        message = f"the same resource as {file}:{line}; the first is kept"
        self.problem(position, message, label, check)

    def read(self, first_types: tuple[bytes, ...] | None) -> None:
        """Parse the lines (only those that start as `first_types` does when given, or
        without `{"resourceType":"`; the others wait in `rest`)."""
        self._read(first_types)
        if self._read_again_unscreened():
            self._read(first_types)

    def _search_referring(self, first_types: tuple[bytes, ...] | None) -> None:
        """Add to `referring` the lines that may refer to a shared resource, of the runs not
        searched yet whose lines may start as `first_types` does (all, when None): a patient
        settled from the preview needs no search of the rest (`finish` uses them only to
        build the resources)."""
        unsearched = self.unsearched
        if not any(unsearched):
            return
        chunks = self.chunks
        searched: list[tuple[bytes, int]] = []
        for number, (chunk, count) in enumerate(chunks):
            head = self.heads[number]
            if unsearched[number] and (first_types is None or head is None or head in first_types):
                unsearched[number] = False
                searched.append((chunk, count))
            else:
                searched.append((b"", count))  # its lines keep their positions
        found = _lines_referring(searched, self.needles)
        if found:
            self.referring = self.referring | found

    def _read(self, first_types: tuple[bytes, ...] | None) -> None:
        self._search_referring(first_types)
        parse_line = self.parse_line
        parse_lines = self.parse_lines
        lines = self.lines
        if first_types is None:
            start = 0
            for (_first, count), head in zip(self.segments, self.heads, strict=True):
                parse_lines(enumerate(lines[start : start + count], start), head)
                start += count
            return
        rest = self.rest
        # A line starts as one of `first_types` (each `{"resourceType":"<type>"`) does
        # exactly when its run's head is one of them: decided a run at a time where the head
        # is known, a line at a time where it is not.
        start = 0
        for (_first, count), head in zip(self.segments, self.heads, strict=True):
            end = start + count
            if head is None:
                for position in range(start, end):
                    text = lines[position]
                    if not text.startswith(first_types) and text.startswith(b'{"resourceType":"'):
                        rest.append((position, text))
                    else:
                        parse_line(position, text)
            elif head in first_types:
                parse_lines(enumerate(lines[start:end], start), head)
            else:
                rest += zip(range(start, end), lines[start:end], strict=True)
            start = end

    def parse_rest(self) -> None:
        self._search_referring(None)
        self.parse_lines(self.rest, None)
        self.rest = []
        if self._read_again_unscreened():
            self._read(None)

    def screen_rest(self) -> None:
        """Check the rest's lines without building them (`RestOfRecord.screened`)."""
        validate = self.validate
        own_reference = self.own_reference
        seen = self.seen
        decode_kept = None if self.screen is None else self.screen.decode_kept
        for position, text in self.rest:
            label = _screened_label(validate, text, own_reference, decode_kept)
            if label is _NEEDS_PARSING:
                self.parse_line(position, text)
            elif label is not None:  # its first line is kept, a repeat reported
                earlier = seen.setdefault(label, position)
                if earlier != position:
                    self.repeated(position, label, earlier, SCREENED)
        self.rest = []

    def parse_line(self, position: int, text: bytes) -> None:
        """Parse and check the line at `position`, or leave it unparsed (see `parse_lines`)."""
        self.parse_lines(((position, text),), None)

    def parse_lines(self, numbered: Iterable[tuple[int, bytes]], head: bytes | None) -> None:
        """Parse and check these lines (position, text), in order, or leave unparsed those the
        screen finds no criterion can read (`LineScreen.screen_lines`, which notes them
        here). `head`: how every one of them starts, when pass 1 knows (a run of one type's
        lines): the screen is not asked of a type it may not skip, nor looks at the start of
        a line of a type it may."""
        screen = self.screen
        if screen is None or (head is not None and head not in screen.run_heads):
            parse = self.parse_unscreened
            for position, text in numbered:
                parse(position, text)
            return
        screen.screen_lines(self, numbered, head is not None)

    def parse_unscreened(self, position: int, text: bytes) -> None:
        """Parse and check the line at `position` (the screen not asked)."""
        try:
            resource = _loads(text)
        except orjson.JSONDecodeError as error:
            self.problem(position, f"not valid JSON: {_json_error(text, error)}", None)
            return
        resource_type = resource.get("resourceType") if type(resource) is dict else None
        if type(resource_type) is not str or not resource_type:
            self.problem(position, _not_a_resource(resource) or "", None)
            return
        resource_id = resource.get("id")
        label = f"{resource_type}/{resource_id}" if _labels(resource_id) else None
        # Whether the resource's patient is this one: fast for a plain `Patient/<id>` in the
        # type's first patient field, else as `patient_reference` finds it.
        holder = (
            resource.get(_FIRST_PATIENT_FIELD.get(resource_type, _DEFAULT_FIRST_FIELD))
            if resource_type != "Patient"
            else None
        )
        if (type(holder) is not dict or holder.get("reference") != self.own_reference) and (
            patient_reference(resource) != self.patient_id
        ):
            fields = ", ".join(PATIENT_FIELDS.get(resource_type, DEFAULT_PATIENT_FIELDS))
            self.problem(
                position,
                f"no reference to a Patient in {fields}; "
                "the resource belongs to no patient and is left out",
                label,
            )
            return
        if label is None:
            self.unlabelled = True
        else:  # its first line is kept, a repeat reported
            earlier = self.seen.setdefault(label, position)
            if earlier != position:
                self.repeated(position, label, earlier, PARSED)
                return
        if self.origin is None and resource_type == "Patient":
            file, line = self.location(position)
            self.origin = f"{file}:{line}"
        self.entries.append((position, resource))
        if position in self.referring:
            self.kept_referring.append((position, text))

    def preview(self) -> tuple[list[dict[str, Any]], dict[int, bytes]]:
        """The resources parsed so far (the preview's), with the skipped line that decides
        its newest data date, and their lines (`PatientResources.texts`)."""
        lines = self.lines
        resources = [resource for _position, resource in self.entries]
        texts = {id(resource): lines[position] for position, resource in self.entries}
        if self.newest_in_preview[0]:
            newest = orjson.loads(self.newest_in_preview[2])
            resources.append(newest)
            texts[id(newest)] = self.newest_in_preview[2]
        return resources, texts

    def finish(self, build: bool = True) -> PatientResources | None:
        """Report the patient's problems in line order; their resources (`build`), or None
        when there is no Patient among them."""
        self.problems.sort(key=_first)
        for _position, found in self.problems:
            self.on_problem(found)
        self.problems = []
        if self.origin is None:
            file, _line = self.location(0)
            self.on_problem(
                SourceProblem(
                    file,
                    None,
                    f"Patient/{self.patient_id}",
                    self.patient_id,
                    f"{len(self.lines)} lines refer to Patient/{self.patient_id}, which is "
                    "not in the export; they are not evaluated",
                )
            )
            return None
        if not build:
            return None
        self.entries.sort(key=_first)
        lines = self.lines
        resources = [resource for _position, resource in self.entries]
        # each resource's line, for the re-run store (PatientResources.texts)
        texts = {id(resource): lines[position] for position, resource in self.entries}
        if self.newest[0]:
            newest = orjson.loads(self.newest[2])
            resources.append(newest)
            texts[id(newest)] = self.newest[2]
        if self.references is not None and self.kept_referring:
            self.kept_referring.sort(key=_first)
            # One search over the kept lines (a reference never spans lines), in line order;
            # a line at a time only when some mention is not a compact reference.
            kept = b"\n".join(text for _position, text in self.kept_referring)
            referred = _compact_keys(kept, self.references, self.needles)
            if referred is None:
                referred = {}
                for _position, text in self.kept_referring:
                    referred.update(_shared_keys(text, self.references, self.needles))
            for key in referred:
                shared_text = self.partition.shared.get(key)
                if shared_text is not None and key not in self.seen:
                    shared = orjson.loads(shared_text)
                    resources.append(shared)
                    texts[id(shared)] = shared_text
        return PatientResources(
            self.patient_id, resources, [None] * len(resources), self.origin, texts=texts
        )


def _json_error(text: bytes, error: orjson.JSONDecodeError) -> str:
    """Why orjson rejects a line, worded for the line without its line end (orjson words
    some errors differently with a line end after them: a truncated string ends in a control
    character)."""
    try:
        orjson.loads(text.removesuffix(b"\n"))
    except orjson.JSONDecodeError as without_end:
        return without_end.msg
    return error.msg  # not reached: white space after a JSON document leaves it valid


_first: Callable[[tuple[int, Any]], int] = operator.itemgetter(0)
"""An item's position (a sort key)."""


_FIRST_PATIENT_FIELD = {name: fields[0] for name, fields in PATIENT_FIELDS.items()}
"""The field that usually holds the patient reference, by resource type."""
_DEFAULT_FIRST_FIELD = DEFAULT_PATIENT_FIELDS[0]
_loads = orjson.loads


def _shared_type_needles(shared_types: tuple[str, ...]) -> tuple[bytes, ...]:
    """What a line referring to a resource of a shared type holds, however the reference is
    written: the type's name and a slash, `Medication/` (relative, absolute or versioned, with
    JSON white space around the colon) or `Medication\\/` (the slash escaped, as JSON allows),
    and any `\\u` escape (`Medication\\u002f`, `Medic\\u0061tion/`: such a line is parsed to
    find its references, `_shared_keys`; an export written with orjson or Synthea holds none)."""
    found = [
        needle
        for name in shared_types
        for needle in (b"%s/" % name.encode(), b"%s\\/" % name.encode())
    ]
    return (*found, b"\\u") if found else ()


def _compact_keys(
    text: bytes, compact: re.Pattern[bytes], needles: tuple[bytes, ...]
) -> dict[str, None] | None:
    """The `Type/id` of the shared resources `text` (lines) refers to, in order, when every
    mention of a shared type in it is a compact `"reference":"Type/id"`; else None."""
    found = compact.findall(text)
    if sum(text.count(needle) for needle in needles) > len(found):
        return None
    return dict.fromkeys(key.decode() for key in found)


def _shared_keys(
    text: bytes, compact: re.Pattern[bytes], needles: tuple[bytes, ...]
) -> dict[str, None]:
    """The `Type/id` of every shared resource a line refers to, in order: found in its text
    when every mention of a shared type is a reference written `"reference":"Type/id"` (an
    export's usual form, `_shared_reference_pattern`), else read from the line parsed (any
    `reference` value that names a `Type/id`, `reference_key`: white space, escapes, an
    absolute or versioned reference), as a Bundle's are resolved."""
    found = _compact_keys(text, compact, needles)
    if found is not None:
        return found
    keys: dict[str, None] = {}
    try:
        stack: list[Any] = [orjson.loads(text)]
    except orjson.JSONDecodeError:
        return dict.fromkeys(key.decode() for key in compact.findall(text))
    while stack:  # (no recursion: a line may nest a thousand levels deep)
        value = stack.pop()
        if type(value) is dict:
            reference = value.get("reference")
            key = reference_key(reference) if type(reference) is str else None
            if key is not None:
                keys[key] = None
            stack.extend(reversed(list(value.values())))
        elif type(value) is list:
            stack.extend(reversed(value))
    return keys


@functools.lru_cache(maxsize=8)
def _shared_reference_pattern(shared_types: tuple[str, ...]) -> re.Pattern[bytes] | None:
    """References to resources of the shared types there are, as they appear in line text."""
    if not shared_types:
        return None
    names = "|".join(re.escape(name) for name in shared_types)
    return re.compile(b'"reference":"((?:%s)/%s)"' % (names.encode(), FHIR_ID.pattern.encode()))


def read_partition(
    export: PartitionedExport,
    index: int,
    shared: SharedResources,
    on_problem: ProblemHandler = raise_problem,
) -> Iterator[PatientResources]:
    """Pass 2: the patients of one partition, sorted by patient id (see `PartitionLines`)."""
    return PartitionLines.read(export, index, shared).patients(on_problem)


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
