"""Cohort inputs: a record set split into partitions that workers evaluate independently.

A `CohortInput` describes where the patients are (for the run's manifest) and splits them
(`prepare`, the first pass) into a `PartitionedInput`: a small, picklable value whose
`payload(index)` is one partition ready to travel to a worker (an NDJSON partition carries
its lines, so a worker on another machine needs no shared filesystem).
`NdjsonInput` partitions a Bulk NDJSON folder by hashed patient id; `BundleInput` deals a
folder of per-patient Bundles out to partitions. A live FHIR server (Bulk `$export`, paged
searches) is one more `CohortInput`; the evaluator does not change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.atomic_write import AtomicFiles
from engine.cohort.line_screen import LineScreen
from engine.cohort.ndjson_partitions import (
    PartitionedExport,
    PartitionLines,
    SharedResources,
    load_shared_resources,
    partition_ndjson,
)
from engine.errors import InputError, Location
from engine.sources import BundleFileSource, PatientResources, SourceProblem, ndjson_files
from engine.sources.bundle import SharedBundleResources, shared_bundle_files
from engine.sources.ndjson import ProblemHandler


class PartitionPayload(Protocol):
    """All a worker needs to read one partition's patients; picklable."""

    @property
    def index(self) -> int: ...

    def patients(
        self,
        on_problem: ProblemHandler,
        screen: LineScreen | None = None,
        preview_first: bool = False,
    ) -> Iterator[PatientResources]:
        """The partition's patients; unusable input goes to `on_problem`. `screen`: lines
        that need no parsing (NDJSON only, `engine.cohort.line_screen`). `preview_first`:
        NDJSON may yield `PreviewFirst` patients, the rest of whose lines the caller parses or
        screens (`engine.cohort.ndjson_partitions`); other inputs ignore it."""
        ...


class PartitionedInput(Protocol):
    """Patients split into partitions; picklable, so it can be sent to worker processes."""

    @property
    def partition_count(self) -> int: ...

    @property
    def bytes_read(self) -> int: ...

    def patients_in(self, index: int) -> int:
        """How many patients partition `index` holds (for progress; may overcount)."""
        ...

    def payload(self, index: int) -> PartitionPayload:
        """Partition `index`, ready to travel to a worker (read where this runs)."""
        ...


class CohortInput(Protocol):
    """Where a cohort's patients come from."""

    def describe(self) -> dict[str, Any]:
        """What identifies the input (kind, path, files with sizes and times): the manifest's."""
        ...

    def size_in_bytes(self) -> int: ...

    def prepare(
        self,
        work_folder: Path,
        partition_count: int,
        on_problem: ProblemHandler,
        kept_types: frozenset[str],
        workers: int,
        on_started: Callable[[], None] | None = None,
        marker_files: AtomicFiles | None = None,
    ) -> PartitionedInput:
        """The first pass: split the input into partitions (work files go to `work_folder`).

        Only resources of `kept_types` need to be kept (nothing reads the others); the pass
        may use `workers` processes, and calls `on_started` once they exist (no fork follows).
        `marker_files`: the caller's set of files written as one, to which the file saying
        the pass is complete (if any) is added, renamed into place with them.
        """
        ...

    def reopen(self, work_folder: Path, partition_count: int) -> PartitionedInput | None:
        """The partitions an earlier `prepare` left in `work_folder`, or None if gone."""
        ...


def _file_fingerprints(files: list[Path], root: Path) -> list[list[Any]]:
    fingerprints: list[list[Any]] = []
    for file in files:
        try:
            status = file.stat()
            fingerprints.append(
                [file.relative_to(root).as_posix(), status.st_size, status.st_mtime_ns]
            )
        except OSError:
            fingerprints.append([file.relative_to(root).as_posix(), None, None])
    return fingerprints


# --------------------------------------------------------------------------- NDJSON


@dataclass(frozen=True)
class NdjsonPartitions:
    """An NDJSON export after pass 1; shared resources are loaded once per process."""

    export: PartitionedExport

    @property
    def partition_count(self) -> int:
        return self.export.partition_count

    @property
    def bytes_read(self) -> int:
        return self.export.bytes_read

    def patients_in(self, index: int) -> int:
        return self.export.patients_per_partition[index]

    def payload(self, index: int) -> PartitionLines:
        return PartitionLines.read(self.export, index, _shared_resources(self.export))


@functools.lru_cache(maxsize=1)
def _shared_resources(export: PartitionedExport) -> SharedResources:
    return load_shared_resources(export)


BULK_EXPORT_FILES = ("export.json", "export-merge.json")
"""What a Bulk export into a folder leaves there: its state file and the journal of an
incremental export being merged in (`engine.sources.bulk_export`'s STATE_FILE and
MERGE_JOURNAL; a test checks that they agree)."""


@dataclass(frozen=True)
class NdjsonInput:
    """A folder of Bulk Data style NDJSON (`<Type>[.n].ndjson`, optionally gzipped); given
    as a Path or a str, as `run_cohort`'s paths are."""

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    def exported_here(self) -> bool:
        """Whether a Bulk export wrote (or is merging into) the folder: only then has a run
        anything to check in `engine.sources.bulk_export`, whose import (the HTTP client)
        would otherwise cost a fifth of a second before pass 1 starts."""
        return any((self.folder / name).exists() for name in BULK_EXPORT_FILES)

    def describe(self) -> dict[str, Any]:
        files = ndjson_files(self.folder)
        return {
            "kind": "ndjson",
            "path": str(self.folder.resolve()),
            "files": _file_fingerprints(files, self.folder),
        }

    def size_in_bytes(self) -> int:
        return sum(file.stat().st_size for file in ndjson_files(self.folder) if file.is_file())

    def prepare(
        self,
        work_folder: Path,
        partition_count: int,
        on_problem: ProblemHandler,
        kept_types: frozenset[str],
        workers: int,
        on_started: Callable[[], None] | None = None,
        marker_files: AtomicFiles | None = None,
    ) -> NdjsonPartitions:
        return NdjsonPartitions(
            partition_ndjson(
                self.folder,
                work_folder,
                partition_count,
                on_problem,
                kept_types,
                workers,
                on_started,
                marker_files,
            )
        )

    def reopen(self, work_folder: Path, partition_count: int) -> NdjsonPartitions | None:
        export = PartitionedExport.load(work_folder)
        if export is None or export.partition_count != partition_count:
            return None
        return NdjsonPartitions(export)


# --------------------------------------------------------------------------- Bundles


@dataclass(frozen=True)
class BundlePartitions:
    """Per-patient Bundle files dealt out to partitions: file i goes to partition i mod N;
    the Bundles of shared resources (`shared_files`) go to every partition."""

    files: tuple[str, ...]
    partition_count: int
    bytes_read: int
    shared_files: tuple[str, ...] = ()

    def patients_in(self, index: int) -> int:
        return len(self.files[index :: self.partition_count])

    def payload(self, index: int) -> BundleFiles:
        return BundleFiles(index, self.files[index :: self.partition_count], self.shared_files)


@dataclass(frozen=True)
class BundleFiles:
    """One partition of Bundle files, by path (a remote worker needs them at the same path),
    and the record set's Bundles of shared resources (read once per process)."""

    index: int
    files: tuple[str, ...]
    shared_files: tuple[str, ...] = ()

    def patients(
        self,
        on_problem: ProblemHandler,
        screen: LineScreen | None = None,
        preview_first: bool = False,
    ) -> Iterator[PatientResources]:
        def report(error: InputError) -> None:
            on_problem(SourceProblem.from_error(error))

        shared = _shared_bundle_resources(self.shared_files)
        for file in self.files:
            yield from BundleFileSource(file, on_error=report, shared=shared)


@functools.lru_cache(maxsize=1)
def _shared_bundle_resources(files: tuple[str, ...]) -> SharedBundleResources:
    """The shared resources of these Bundles (checked by the first pass, which reported the
    problems of those it left out)."""
    return SharedBundleResources.from_files([Path(file) for file in files])


@dataclass(frozen=True)
class BundleInput:
    """A folder of per-patient Bundle files (`*.json`, searched recursively); given as a Path
    or a str, as `run_cohort`'s paths are."""

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            raise InputError("no such folder", Location(file=str(self.folder)))
        files = BundleFileSource(self.folder).files()
        return files

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "bundles",
            "path": str(self.folder.resolve()),
            "files": _file_fingerprints(self._files(), self.folder),
        }

    def size_in_bytes(self) -> int:
        return sum(file.stat().st_size for file in self._files())

    def prepare(
        self,
        work_folder: Path,
        partition_count: int,
        on_problem: ProblemHandler,
        kept_types: frozenset[str],
        workers: int,
        on_started: Callable[[], None] | None = None,
        marker_files: AtomicFiles | None = None,
    ) -> BundlePartitions:
        """The files dealt out to partitions; the Bundles of shared resources among them
        (`engine.sources.bundle.shared_bundle_files`) are checked here, once, a file that is
        not one reported to `on_problem` and left out."""
        if on_started is not None:
            on_started()
        files = self._files()
        found = set(shared_bundle_files(files))
        shared: list[str] = []
        for file in (file for file in files if file in found):
            try:
                SharedBundleResources().add(file)
            except InputError as error:
                on_problem(SourceProblem.from_error(error))
            else:
                shared.append(str(file))
        return BundlePartitions(
            tuple(str(file) for file in files if file not in found),
            partition_count,
            sum(file.stat().st_size for file in files),
            tuple(shared),
        )

    def reopen(self, work_folder: Path, partition_count: int) -> BundlePartitions | None:
        return None
