"""Assemble a cohort run's files from its partition results, in patient id order.

- `subjects.ndjson`, `issues.ndjson`: every patient's ResearchSubject and DetectedIssue.
- `study.json`: the ResearchStudy the ResearchSubjects refer to (`ResearchStudy/<id>`), so
  every reference resolves inside the output set.
- `cohort.csv`: a row per patient: id, status, `deceased` (`no`; `yes`: the record says they
  died on or before the as-of day; `unknown`: it cannot tell whether before or after), and
  per criterion `met` / `not_met` / `unknown_missing` / `manual` (the criterion's own truth;
  see `criterion_value`), or `not_evaluated` for the criteria a pre-filter-settled patient
  was not evaluated on.
- `cohort.parquet`: the same rows and columns, typed: status and criterion columns are
  dictionary-encoded strings (fixed dictionaries: every status, every criterion value).
- `attrition.csv`, `attrition.html`: the funnel in protocol order: how many patients remain
  after each criterion (remaining = failing none so far: an inclusion not met or an exclusion
  met is a failure) and how many each criterion loses, as ATLAS draws it. Its first row, step
  0 (`deceased`, kind `vital-status`), loses the patients who died on or before the as-of
  day: they are no candidates whatever the criteria say.
- `data_availability.csv`: per criterion, the share of the patients evaluated on it whose
  record could answer it (anything but `unknown_missing`) and the most frequent missing items;
  `patients` counts those evaluated, `not_evaluated` those the pre-filter settled without it.
- `errors.ndjson`: every input problem (file, line, resource, patient, message, check).

Partition results are read as streams and merged, so memory does not grow with the cohort.

A run whose outputs would be those already in `out` keeps them (`kept_outputs`): what they
were assembled from (each partition result's digest, the first pass's problems, the criteria
headings they show, trialsieve's code) is recorded beside them (`remember_outputs`), with
each file's identity (inode, size, modification time), so a re-run after an edit that
changes no patient's result writes only its summary.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import heapq
import html
import mmap
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from engine.atomic_write import AtomicFiles, atomic_files, write_atomically
from engine.cohort.outcome_store import complete_digest
from engine.cohort.partition import (
    CRITERION_VALUES,
    NOT_EVALUATED,
    result_path,
)
from engine.cohort.run_folder import SUMMARY
from engine.cohort.whatif import ATTRITION_COLUMNS, DECEASED, VITAL_STATUS_KIND
from engine.compiled_cache import code_digest, save_validated_shapes, validated_shapes
from engine.criteria.model import CriterionKind
from engine.evaluate import CompiledCriteria, SubjectStatus
from engine.report import research_study
from engine.report.explanation import criterion_labels
from engine.report.validate import OutputShapes

SOURCE_PROBLEMS = "source-problems.ndjson"
OUTPUTS_RECORD = "outputs.json"
"""In `partitions/`: what the outputs were assembled from, their files and counts."""
PREVIOUS_OUTPUTS = "previous-outputs"
"""In `partitions/`: the earlier criteria's outputs while a re-run of edited criteria has
not finished (`set_aside_outputs`)."""
ASSEMBLED_FILES = (
    "subjects.ndjson",
    "issues.ndjson",
    "cohort.csv",
    "cohort.parquet",
    "study.json",
    "errors.ndjson",
    "attrition.csv",
    "attrition.html",
    "data_availability.csv",
)
"""The files `assemble_outputs` writes into `out`."""
DECEASED_VALUES = ("no", "yes", "unknown")
"""The `deceased` column's values: `yes` died on or before the as-of day (Patient.deceased[x]:
not a candidate); `unknown` the record cannot tell whether before or after it."""
DECEASED_LABEL = "Deceased on or before the as-of day"
MISSING_ITEMS_SHOWN = 3
PARQUET_ROWS_PER_GROUP = 64 * 1024


@dataclass
class CohortCounts:
    """What the assembled outputs add up to."""

    patients: int = 0
    statuses: dict[str, int] = field(
        default_factory=lambda: {status.value: 0 for status in SubjectStatus}
    )
    settled_by_prefilter: int = 0
    deceased: int = 0
    """Patients the record says died on or before the as-of day (lost at step 0)."""
    problems: int = 0
    lines_affected: int = 0
    patients_affected: int = 0


@dataclass
class _CriterionTally:
    id: str
    kind: CriterionKind
    values: Counter[str] = field(default_factory=Counter)
    first_failures: int = 0
    remaining_values: Counter[str] = field(default_factory=Counter)
    """The values among the patients still remaining before this criterion (the funnel's
    base), so a row's unknown and manual counts add up with its `remaining_before`."""
    missing_items: Counter[str] = field(default_factory=Counter)

    def fails(self, value: str) -> bool:
        return value == ("not_met" if self.kind is CriterionKind.INCLUSION else "met")

    @property
    def failures(self) -> int:
        return self.values["not_met" if self.kind is CriterionKind.INCLUSION else "met"]


def assemble_outputs(
    out: Path, criteria: CompiledCriteria, partition_count: int, files: AtomicFiles | None = None
) -> CohortCounts:
    """Write the cohort files into `out` from `out/partitions/`; returns the counts.

    `files`: the caller's set of files written as one (`output_files()`), to which the
    outputs are added (renamed into place when its block ends); else they are a set of their
    own, renamed into place on return."""
    if files is None:
        with output_files() as own:
            return assemble_outputs(out, criteria, partition_count, own)
    results_folder = out / "partitions"
    tallies = [_CriterionTally(c.id, c.kind) for c in criteria.criteria]
    counts = CohortCounts()
    duplicates: list[dict[str, Any]] = []
    # Every output is renamed into place when the set's block ends, after one fsync of all of
    # them at once (`atomic_files`): each file is whole or absent, as with an atomic write each.
    subjects = files.open(out / "subjects.ndjson")
    issues = files.open(out / "issues.ndjson")
    table_file = files.open(out / "cohort.csv")
    parquet_file = files.open(out / "cohort.parquet")
    with _CohortParquet(parquet_file, [tally.id for tally in tallies]) as parquet:
        table = csv.writer(_TextSink(table_file), lineterminator="\n")
        table.writerow(["patient", "status", DECEASED, *(tally.id for tally in tallies)])
        problems_at = [0] * partition_count
        streams = [
            _patient_results(result_path(results_folder, index), problems_at, index)
            for index in range(partition_count)
        ]
        cells_seen = _CellsTally(tallies)
        previous: str | None = None
        kept_file: Path | None = None
        merged = heapq.merge(*streams)
        for patient_id, file, _index, _position, result, line, tab, second_tab in merged:
            if patient_id == previous:
                duplicates.append(_duplicate_problem(patient_id, file, kept_file))
                continue
            previous = patient_id
            kept_file = file
            subjects.write(line[tab + 1 : second_tab])
            subjects.write(b"\n")
            issues.write(line[second_tab + 1 :])
            status = result["status"]
            deceased = result.get(DECEASED, "no")
            dead = deceased == "yes"
            values, numbers = cells_seen.add(result["cells"], dead)
            table.writerow([patient_id, status, deceased, *values])
            parquet.add(patient_id, status, deceased, numbers)
            counts.patients += 1
            counts.statuses[status] += 1
            counts.deceased += dead
            if result["settled_by"] is not None:
                counts.settled_by_prefilter += 1
        cells_seen.flush()
    study_resource = research_study(criteria.trial)
    _validate_once(study_resource)
    study = orjson.dumps(study_resource, option=orjson.OPT_INDENT_2)
    files.open(out / "study.json").write(study)
    _write_errors(files, out, results_folder, problems_at, duplicates, counts)
    _write_attrition(files, out, criteria, tallies, counts)
    _write_availability(files, out, tallies, counts.patients)
    return counts


def _validate_once(resource: dict[str, Any]) -> None:
    """Validate a resource the run writes once (the ResearchStudy) as the workers validate
    theirs: with the R4B models once per shape, shapes validated before known from the cache
    (`engine.compiled_cache.validated_shapes`); raises OutputValidationError."""
    shapes = OutputShapes(validated_shapes())
    shapes.validate(resource)
    if shapes.validated:
        save_validated_shapes(shapes.valid_shapes)


def outputs_key(out: Path, criteria: CompiledCriteria, partition_count: int) -> str | None:
    """SHA-256 of everything `assemble_outputs` reads: each partition result's digest (its
    `complete` line's; every result file is whole when the outputs are assembled: verified
    or written by the run), the first pass's problems, what the outputs show of the
    criteria (the study, each criterion's id, kind and label) and trialsieve's code
    (`code_digest`). None when a result file has no `complete` line."""
    results_folder = out / "partitions"
    digest = hashlib.sha256(_OUTPUTS_FORMAT + code_digest())
    headings = [
        research_study(criteria.trial),
        [[compiled.id, compiled.kind.value] for compiled in criteria.criteria],
        criterion_labels(criteria),
        partition_count,
    ]
    digest.update(orjson.dumps(headings))
    for index in range(partition_count):
        result = _result_digest(result_path(results_folder, index))
        if result is None:
            return None
        digest.update(result.encode())
    try:
        digest.update(hashlib.sha256((results_folder / SOURCE_PROBLEMS).read_bytes()).digest())
    except OSError:
        return None
    return digest.hexdigest()


_OUTPUTS_FORMAT = b"trialsieve-cohort-outputs-2\0"
_TAIL = 512
"""Bytes read from a result file's end for its `complete` line (about 110 bytes)."""


def _result_digest(path: Path) -> str | None:
    """The digest a result file's `complete` line names (read from the file's end)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL))
            tail = handle.read()
            if size > _TAIL and tail.rfind(b"\n", 0, len(tail) - 1) < 0:
                handle.seek(0)  # the last line is longer than that: read the whole file
                tail = handle.read()
    except OSError:
        return None
    return complete_digest(tail)


def kept_outputs(out: Path, key: str) -> CohortCounts | None:
    """The counts of the outputs in `out` when they were assembled under `key` and their
    files are the ones written then (`remember_outputs`); else None (assemble them).
    Outputs set aside by a re-run (`set_aside_outputs`) that are the ones it would assemble
    are moved back into `out`."""
    try:
        record = orjson.loads((out / "partitions" / OUTPUTS_RECORD).read_bytes())
        if type(record) is not dict or record.get("key") != key:
            return None
        files = record["files"]
        aside = out / "partitions" / PREVIOUS_OUTPUTS
        places = [
            out / name if os.path.lexists(out / name) else aside / name for name in ASSEMBLED_FILES
        ]
        if [_identity(place) for place in places] != files:
            return None
        counts = CohortCounts(**record["counts"])
        for name, place in zip(ASSEMBLED_FILES, places, strict=True):
            if place.parent == aside:
                os.replace(place, out / name)  # a rename: the file's identity stays
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return counts


def set_aside_outputs(out: Path) -> None:
    """Before a re-run names other criteria in the manifest: remove `summary.json` (which
    says the outputs are finished) first, then move each output file into
    `partitions/previous-outputs/`, so that `out` shows no output of the earlier criteria
    while the re-run has not finished. The re-run moves them back when they are the ones
    it would assemble (`kept_outputs`), else removes them once its own are in place
    (`discard_previous_outputs`)."""
    (out / SUMMARY).unlink(missing_ok=True)
    present = [name for name in ASSEMBLED_FILES if os.path.lexists(out / name)]
    if present:
        aside = out / "partitions" / PREVIOUS_OUTPUTS
        aside.mkdir(parents=True, exist_ok=True)
        for name in present:
            os.replace(out / name, aside / name)


def discard_previous_outputs(out: Path) -> None:
    """Remove the outputs a re-run set aside (its own are in place)."""
    shutil.rmtree(out / "partitions" / PREVIOUS_OUTPUTS, ignore_errors=True)


def remember_outputs(out: Path, key: str, counts: CohortCounts) -> None:
    """Record, once the outputs are in place, the key they were assembled under, their
    files' identities and counts (written without an fsync: a record lost or cut short
    only means the next run assembles them again; one whose files were replaced since
    does not match them)."""
    record = {
        "key": key,
        "files": [_identity(out / name) for name in ASSEMBLED_FILES],
        "counts": dataclasses.asdict(counts),
    }
    write_atomically(out / "partitions" / OUTPUTS_RECORD, orjson.dumps(record), durable=False)


def _identity(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_ino, status.st_size, status.st_mtime_ns]


class _CellsTally:
    """The criteria cells of the patients' summaries, tallied by their JSON text: most
    patients share their cells with many others, so each distinct text is parsed once and
    counted into the criteria's tallies once, times the patients who have it (at most
    `_CELLS_KEPT` texts are kept at a time: memory does not grow with the cohort)."""

    def __init__(self, tallies: list[_CriterionTally]) -> None:
        self.tallies = tallies
        self.value_numbers = {value: number for number, value in enumerate(CRITERION_VALUES)}
        self.known: dict[bytes, tuple[list[str], list[int], list[Any]]] = {}
        self.patients: Counter[tuple[bytes, bool]] = Counter()

    def add(self, text: bytes, dead: bool = False) -> tuple[list[str], list[int]]:
        """One patient's cells (JSON text): their values, and the values' numbers. `dead`:
        the patient left the funnel before the criteria (step 0, deceased)."""
        known = self.known.get(text)
        if known is None:
            if len(self.known) >= _CELLS_KEPT:
                self.flush()
            cells = orjson.loads(text)
            values = [value for value, _missing in cells]
            numbers = self.value_numbers
            known = self.known[text] = (values, [numbers[value] for value in values], cells)
        self.patients[text, dead] += 1
        return known[0], known[1]

    def flush(self) -> None:
        """Count the patients seen so far into the tallies."""
        for (text, dead), patients in self.patients.items():
            _count(self.tallies, self.known[text][2], patients, dead)
        self.known.clear()
        self.patients.clear()


_CELLS_KEPT = 4096


def _count(
    tallies: list[_CriterionTally], cells: list[Any], patients: int, dead: bool = False
) -> None:
    """Count `patients` patients whose criteria cells are `cells` into the tallies (`dead`:
    lost before the first criterion, at step 0)."""
    failed = dead
    for tally, (value, missing) in zip(tallies, cells, strict=True):
        tally.values[value] += patients
        if value == "unknown_missing":
            for item in missing:
                tally.missing_items[item] += patients
        if not failed:
            tally.remaining_values[value] += patients
            if tally.fails(value):
                tally.first_failures += patients
                failed = True


_CRITERIA_KEY = b',"criteria":'
"""Ends what a summary says of the patient (`partition.report_result_line` writes its keys
in this order); a JSON string holding these characters would escape its quotes, so the first
match is the key."""


def _patient_results(
    path: Path, problems_at: list[int], index: int
) -> Iterator[tuple[str, Path | None, int, int, dict[str, Any], memoryview, int, int]]:
    """The patients' result lines of a partition result file, in order (they come first):
    the patient id; the Bundle file they were read from (None for other inputs), the
    partition's index and the line's position (a patient met twice is taken first from the
    first file in the order `evaluate` reads a folder, sorted paths; else from the first
    partition, then from the first line); the summary's other
    members (`cells`: the criteria's JSON text); the line and where its two tabs are.
    `problems_at[index]` becomes the offset of the lines after them (problems, then the
    `complete` line), which `_write_errors` reads.

    The file is mapped into memory (`mmap`, the page cache's own pages: memory does not
    grow with the cohort) and each line is a view of it: no line is read into a bytes object
    of its own (nor is the file), so a line costs its searches and its summary's parse (16
    result files at 10x: 0.024 -> 0.006 s of CPU).
    """
    data = _mapped(path)
    size = len(data)
    view = memoryview(data)
    find = data.find
    loads = orjson.loads
    start = position = 0
    while view[start : start + _PATIENT_LINE_START_SIZE] == _PATIENT_LINE_START:
        end = find(b"\n", start) + 1 or size
        tab = _index(find, b"\t", start, end)
        second_tab = _index(find, b"\t", tab + 1, end)
        cut = _index(find, _CRITERIA_KEY, start, tab)
        result = loads(data[start:cut] + b"}")
        result["cells"] = data[cut + len(_CRITERIA_KEY) : tab - 1]
        line = view[start:end]
        file = result.get("file")
        yield (
            result["patient"],
            None if file is None else Path(file),
            index,
            position,
            result,
            line,
            tab - start,
            second_tab - start,
        )
        start = end
        position += 1
    problems_at[index] = start


def _mapped(path: Path) -> mmap.mmap | bytes:
    """The file's content, mapped into memory (read whole where it cannot be mapped: an
    empty file, a file system without `mmap`)."""
    with open(path, "rb") as handle:
        try:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return handle.read()


_PATIENT_LINE_START = b'{"patient"'
_PATIENT_LINE_START_SIZE = len(_PATIENT_LINE_START)


def _index(find: Callable[[bytes, int, int], int], text: bytes, start: int, end: int) -> int:
    """Where `text` first is between `start` and `end`; ValueError when it is not there."""
    found = find(text, start, end)
    if found < 0:
        raise ValueError(f"{text!r} not found in a result line")
    return found


def _problem_lines(path: Path, offset: int = 0) -> Iterator[bytes]:
    """The problem lines of a partition result file (from `offset`: after its patients'
    lines), or of the first pass's problems file."""
    if not path.is_file():
        return
    with open(path, "rb") as lines:
        lines.seek(offset)
        for line in lines:
            if line.startswith(b'{"problem"'):
                yield line


def _duplicate_problem(
    patient_id: str, file: Path | None, kept_file: Path | None
) -> dict[str, Any]:
    """A patient met again, in `file`, after the result kept from `kept_file` (the Bundle
    files, None for an input without them)."""
    if file is None or kept_file is None:
        message = "the patient is in more than one input; the first (in file order) is kept"
    else:
        message = (
            f"this patient is also in {kept_file}, the first in file order, whose data is "
            "evaluated; each patient's data must be in one Bundle"
        )
    return {
        "file": None if file is None else str(file),
        "line": None,
        "resource": f"Patient/{patient_id}",
        "patient": patient_id,
        "message": message,
        "check": None,
    }


def _write_errors(
    files: AtomicFiles,
    out: Path,
    results_folder: Path,
    problems_at: list[int],
    duplicates: list[dict[str, Any]],
    counts: CohortCounts,
) -> None:
    """errors.ndjson: the first pass's problems, each partition's (after its patients'
    lines, at `problems_at`), then the duplicate patients."""
    lines_affected: set[tuple[str, int]] = set()
    patients_affected: set[str] = set()
    places = [(results_folder / SOURCE_PROBLEMS, 0)]
    places += [(result_path(results_folder, i), at) for i, at in enumerate(problems_at)]
    errors = files.open(out / "errors.ndjson")
    problems = (
        orjson.loads(line)["problem"] for path, at in places for line in _problem_lines(path, at)
    )
    for problem in [*problems, *duplicates]:
        errors.write(orjson.dumps(problem) + b"\n")
        counts.problems += 1
        if problem["line"] is not None:
            lines_affected.add((problem["file"], problem["line"]))
        if problem["patient"] is not None:
            patients_affected.add(problem["patient"])
    counts.lines_affected = len(lines_affected)
    counts.patients_affected = len(patients_affected)


# --------------------------------------------------------------------------- attrition


def _write_attrition(
    files: AtomicFiles,
    out: Path,
    criteria: CompiledCriteria,
    tallies: list[_CriterionTally],
    counts: CohortCounts,
) -> None:
    dead = counts.deceased
    patients = counts.patients
    step_0 = [0, DECEASED, VITAL_STATUS_KIND, patients, dead, patients - dead, 0, 0, 0, dead]
    rows: list[list[Any]] = [step_0]
    remaining = counts.patients - dead
    for step, tally in enumerate(tallies, start=1):
        rows.append(
            [
                step,
                tally.id,
                tally.kind.value,
                remaining,
                tally.first_failures,
                remaining - tally.first_failures,
                tally.remaining_values["unknown_missing"],
                tally.remaining_values["manual"],
                tally.remaining_values[NOT_EVALUATED],
                tally.failures,
            ]
        )
        remaining -= tally.first_failures
    handle = files.open(out / "attrition.csv")
    writer = csv.writer(_TextSink(handle), lineterminator="\n")
    writer.writerow(ATTRITION_COLUMNS)
    writer.writerows(rows)
    files.open(out / "attrition.html").write(_attrition_page(criteria, rows, counts).encode())


_ROW_HEIGHT = 28
_CHARACTER_WIDTH = 6.8
"""Width of one label character at 13 px (sans-serif, generous), for the label column."""
_BAR_WIDTH = 520
_STATUS_COLOURS = (
    (SubjectStatus.ELIGIBLE, "#1e7a3c"),
    (SubjectStatus.CANDIDATE, "#2f5f9e"),
    (SubjectStatus.POTENTIAL_CANDIDATE, "#c48a00"),
)


def _attrition_page(criteria: CompiledCriteria, rows: list[list[Any]], counts: CohortCounts) -> str:
    """A self-contained page: the funnel as an inline SVG bar chart (criteria by number and
    label; the final bar split by status), and the table."""
    escape = html.escape
    patients = counts.patients
    scale = _BAR_WIDTH / patients if patients else 0.0
    labels = ["All patients", DECEASED_LABEL, *criterion_labels(criteria)]
    final = patients - sum(row[4] for row in rows)
    labels.append("Remaining, by status")
    label_width = int(max(len(label) for label in labels) * _CHARACTER_WIDTH) + 16
    bars: list[str] = []
    steps = [(patients, 0), *((row[5], row[4]) for row in rows)]
    for row_number, ((remaining, lost), label) in enumerate(zip(steps, labels, strict=False)):
        y = row_number * _ROW_HEIGHT
        kept_width = remaining * scale
        lost_width = lost * scale
        bars.append(
            f'<text x="{label_width - 8}" y="{y + 18}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y + 5}" width="{kept_width:.1f}" height="18" '
            f'fill="#3b6ea8"><title>{remaining} remain</title></rect>'
            f'<rect x="{label_width + kept_width:.1f}" y="{y + 5}" width="{lost_width:.1f}" '
            f'height="18" fill="#d9534f"><title>{lost} excluded here</title></rect>'
            f'<text x="{label_width + kept_width + lost_width + 6:.1f}" y="{y + 18}">'
            f"{remaining}{f' (-{lost})' if lost else ''}</text>"
        )
    y = len(steps) * _ROW_HEIGHT
    x = float(label_width)
    legend = []
    bars.append(
        f'<text x="{label_width - 8}" y="{y + 18}" text-anchor="end" font-weight="bold">'
        f"{escape(labels[-1])}</text>"
    )
    for status, colour in _STATUS_COLOURS:
        count = counts.statuses.get(status.value, 0)
        width = count * scale
        if count:
            bars.append(
                f'<rect x="{x:.1f}" y="{y + 5}" width="{width:.1f}" height="18" fill="{colour}">'
                f"<title>{count} {status.value}</title></rect>"
            )
        x += width
        legend.append(
            f'<span class="key" style="background:{colour}"></span>{escape(status.value)}: {count}'
        )
    bars.append(f'<text x="{x + 6:.1f}" y="{y + 18}">{final}</text>')
    height = (len(steps) + 1) * _ROW_HEIGHT + 8
    width = label_width + _BAR_WIDTH + 90
    table_rows = "".join(
        "<tr>"
        + "".join(f"<td>{escape(str(cell))}</td>" for cell in (row[0], label, *row[2:]))
        + "</tr>"
        for row, label in zip(rows, labels[1:-1], strict=True)
    )
    trial = criteria.trial
    settled = (
        f" {counts.settled_by_prefilter} were settled by the pre-filter from their diagnoses"
        " and demographics (excluded at the first criterion they fail)."
        if counts.settled_by_prefilter
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Attrition: {escape(trial.id)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;color:#1d2430}"
        "svg text{font-size:13px;fill:#1d2430}"
        "table{border-collapse:collapse;margin-top:1em}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right}td:nth-child(2),th:nth-child(2){text-align:left}"
        ".key{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;"
        "vertical-align:middle}"
        "</style></head><body>"
        f"<h1>{escape(trial.id)}: {escape(trial.title)}</h1>"
        f"<p>{patients} patients; criteria in protocol order.{escape(settled)} Blue: patients "
        "who fail none of the criteria so far; red: patients this criterion is the first to "
        "exclude. The first step loses the patients the record says died on or before the "
        f"as-of day ({counts.deceased}): no candidates, whatever the criteria say. The last "
        "bar splits the remaining patients by status.</p>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="attrition funnel">{"".join(bars)}</svg>'
        f"<p>{''.join(legend)}</p>"
        "<table><thead><tr><th>step</th><th>criterion</th><th>kind</th>"
        "<th>remaining before</th><th>excluded here</th><th>remaining</th>"
        "<th>of those remaining before: unknown (missing data)</th><th>manual review</th>"
        "<th>not evaluated (pre-filter)</th><th>fails among all patients</th></tr></thead>"
        f"<tbody>{table_rows}</tbody></table>"
        "</body></html>\n"
    )


# --------------------------------------------------------------------------- data availability


def _write_availability(
    files: AtomicFiles, out: Path, tallies: list[_CriterionTally], patients: int
) -> None:
    handle = files.open(out / "data_availability.csv")
    writer = csv.writer(_TextSink(handle), lineterminator="\n")
    writer.writerow(
        [
            "criterion",
            "kind",
            "patients",
            "not_evaluated",
            "answerable",
            "answerable_share",
            "missing_data",
            "most_missing",
        ]
    )
    for tally in tallies:
        missing = tally.values["unknown_missing"]
        skipped = tally.values[NOT_EVALUATED]
        evaluated = patients - skipped
        answerable = evaluated - missing
        share = f"{answerable / evaluated:.3f}" if evaluated else ""
        shown = "; ".join(
            f"{item} ({count})"
            for item, count in tally.missing_items.most_common(MISSING_ITEMS_SHOWN)
        )
        writer.writerow(
            [tally.id, tally.kind.value, evaluated, skipped, answerable, share, missing, shown]
        )


# --------------------------------------------------------------------------- files


_BUFFER = 1 << 20
"""Write buffer of each cohort output file."""


def output_files() -> AbstractContextManager[AtomicFiles]:
    """A set of files written as one (`atomic_files`), with the outputs' write buffers: for
    `assemble_outputs` and what its caller writes with them (one wait for the disk)."""
    return atomic_files(_BUFFER)


class _CohortParquet:
    """cohort.parquet, written in row groups as rows come (memory does not grow with them).

    Writes into `target`, an open `atomic_files` file that the caller renames into place.
    """

    def __init__(self, target: BinaryIO, criterion_ids: list[str]) -> None:
        self.target = target
        self.statuses = [status.value for status in SubjectStatus]
        self.status_numbers = {status: number for number, status in enumerate(self.statuses)}
        self.deceased_numbers = {value: number for number, value in enumerate(DECEASED_VALUES)}
        self.value_numbers = {value: number for number, value in enumerate(CRITERION_VALUES)}
        status_type = pa.dictionary(pa.int8(), pa.string())
        self.schema = pa.schema(
            [
                pa.field("patient", pa.string(), nullable=False),
                pa.field("status", status_type, nullable=False),
                pa.field(DECEASED, status_type, nullable=False),
                *(pa.field(criterion, status_type, nullable=False) for criterion in criterion_ids),
            ]
        )
        self.patients: list[str] = []
        self.rows: list[list[int]] = []

    def __enter__(self) -> _CohortParquet:
        self.writer = pq.ParquetWriter(self.target, self.schema)
        return self

    def add(self, patient_id: str, status: str, deceased: str, value_numbers: list[int]) -> None:
        """A row: the patient, their status, whether deceased and each criterion's value, by
        its number in `CRITERION_VALUES`."""
        self.patients.append(patient_id)
        self.rows.append(
            [self.status_numbers[status], self.deceased_numbers[deceased], *value_numbers]
        )
        if len(self.rows) >= PARQUET_ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        columns = list(zip(*self.rows, strict=True))
        statuses = pa.array(self.statuses, pa.string())
        deceased = pa.array(DECEASED_VALUES, pa.string())
        values = pa.array(CRITERION_VALUES, pa.string())
        arrays = [
            pa.array(self.patients, pa.string()),
            pa.DictionaryArray.from_arrays(pa.array(columns[0], pa.int8()), statuses),
            pa.DictionaryArray.from_arrays(pa.array(columns[1], pa.int8()), deceased),
            *(
                pa.DictionaryArray.from_arrays(pa.array(column, pa.int8()), values)
                for column in columns[2:]
            ),
        ]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.patients, self.rows = [], []

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if error is None:
            self._flush()
        self.writer.close()


class _TextSink:
    """Lets `csv.writer` write UTF-8 into a binary file."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target

    def write(self, text: str) -> int:
        self.target.write(text.encode())
        return len(text)
