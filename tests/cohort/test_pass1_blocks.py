"""Pass 1 over a file named for a resource type: read in blocks, reported as line by line.

`_RangeSplitter.split_blocks` reads such a file (`Encounter.000.ndjson`) in blocks and checks
each line in place: a line of a type nothing reads (Encounter when it is not kept) is only
counted, a kept line naming its patient once is routed; every line it cannot vouch for goes
through the per-line path. These tests check it gives exactly what the per-line path
(`split_lines`, taken when the file's name names no type) gives: the same problems with the
same texts and line numbers, in the same order, the same line and byte counts, the same
partition files and shared resources.
"""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from fresh_interpreter import run_python
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cohort import ndjson_partitions
from engine.cohort.ndjson_partitions import (
    MAX_LINE_BYTES,
    _RangeResult,
    _RangeTask,
    _split_range,
    load_shared_resources,
    partition_ndjson,
    read_partition,
)
from engine.sources import SourceProblem

KEPT = frozenset({b"Patient", b"Observation", b"Medication"})


def dumps(resource: dict[str, Any]) -> bytes:
    return orjson.dumps(resource)


def encounter(number: int) -> bytes:
    return dumps(
        {"resourceType": "Encounter", "id": f"e{number}", "subject": {"reference": "Patient/a"}}
    )


def observation(number: int) -> bytes:
    return dumps(
        {
            "resourceType": "Observation",
            "id": f"o{number}",
            "subject": {"reference": f"Patient/p{number % 3}"},
        }
    )


def observation_with(number: int, **fields: Any) -> bytes:
    return dumps({"resourceType": "Observation", "id": f"o{number}", **fields})


KEPT_LINES = [
    dumps({"resourceType": "Patient", "id": "p2"}),
    dumps({"resourceType": "Patient", "id": "bad id"}),
    dumps({"resourceType": "Medication", "id": "m1", "code": {"text": "x"}}),
    dumps({"resourceType": "Medication", "code": {"text": "no id"}}),
    observation_with(  # two patients named: parsed, routed by the subject
        20, performer=[{"reference": "Patient/p2"}], subject={"reference": "Patient/p1"}
    ),
    observation_with(21, subject={"reference": "Patient/p1/_history/2"}),
    observation_with(22, subject={"reference": "Group/g"}, note=[{"text": "Patient/p1"}]),
    observation_with(23, subject={"reference": "Patient/" + "x" * 65}),
    observation_with(24, subject={"display": "Patient/p1"}),
    observation_with(25, subject={"reference": "Patient/p0"}, note=[{"text": "\u00e9 \n"}]),
    b'{"resourceType":"Observation","id":"o26","subject":{"reference":"Patient/p1"},}',
]


@contextmanager
def line_by_line() -> Iterator[None]:
    """Pass 1 as it reads a file again after a read error: every line through `split_line`."""
    with mock.patch.object(ndjson_partitions._RangeSplitter, "split", _split_lines):
        yield


def _split_lines(splitter: ndjson_partitions._RangeSplitter) -> None:
    splitter.split_lines()


def split(
    path: Path,
    work: Path,
    start: int = 0,
    end: int | None = None,
    number: int = 0,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> tuple[_RangeResult, dict[str, bytes]]:
    """One range of `path` through pass 1, and what it wrote per partition: its section of
    the range's runs file (under the name `input-PPPP.RRRRR.runs`) and (under the name of the
    partition's file of copies) the partition's lines, read where the runs say they are (in
    `path`, or copied to the partition's file, which exists only when lines were copied)."""
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("input-*"):
        old.unlink()
    task = _RangeTask(number, 0, str(path), start, end, str(work), 3, KEPT, max_line_bytes)
    result = _split_range(task)
    runs_file = work / f"input-{number:05d}.runs"
    assert runs_file.exists() == bool(result.sections)
    text = runs_file.read_bytes() if result.sections else b""
    assert sum(length for _index, (_offset, length, _copied) in result.sections) == len(text)
    written: dict[str, bytes] = {}
    for index, (offset, length, copied) in result.sections:
        copies_file = work / f"input-{index:04d}.{number:05d}.ndjson"
        assert copies_file.exists() == bool(copied)
        copies = copies_file.read_bytes() if copied else b""
        assert len(copies) == copied
        section = text[offset : offset + length]
        lines = b""
        for run in section.splitlines():
            _patient, _line, _count, kind, at, size = run.split(b"\t")
            where = copies if kind == b"c" else path.read_bytes()
            lines += where[int(at) : int(at) + int(size)]
        written[f"input-{index:04d}.{number:05d}.runs"] = section
        written[copies_file.name] = lines
    return result, written


def lines_in(written: dict[str, bytes]) -> list[bytes]:
    """The partitions' lines (not the runs files naming their patients)."""
    return [text for name, text in written.items() if name.endswith(".ndjson")]


def both_ways(
    path: Path,
    work: Path,
    start: int = 0,
    end: int | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> tuple[_RangeResult, dict[str, bytes]]:
    """The range split in blocks, checked equal to it split line by line."""
    fast = split(path, work / "fast", start, end, max_line_bytes=max_line_bytes)
    with line_by_line():
        slow = split(path, work / "slow", start, end, max_line_bytes=max_line_bytes)
    assert fast == slow
    return fast


def test_a_file_of_an_unread_type_is_counted_without_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "Encounter.000.ndjson"
    path.write_bytes(b"".join(encounter(n) + b"\n" for n in range(50)))
    result, written = both_ways(path, tmp_path)
    assert (result.line_count, result.resource_lines, result.bytes_read) == (
        50,
        50,
        path.stat().st_size,
    )
    assert result.problems == [] and written == {}


BAD_LINES = [
    encounter(1),
    b'{"resourceType":"Encounter","id":"cut',  # not JSON: reported
    b"",  # an empty line: counted as a line, not as a resource
    b"   ",
    encounter(2) + b"\r",  # CRLF line end
    b"  " + encounter(3),  # leading white space
    observation(4),  # a kept type in a file named for another: routed
    dumps({"resourceType": "Patient", "id": "p1"}),
    dumps({"resourceType": "CarePlan", "id": "c", "status": "draft"}),  # another unread type
    b'{"resourceType":"EncounterHistory","id":"h"}',  # a longer name, same start
    b'{"resourceType": "Encounter", "id": "spaced"}',  # parsed: not reported, not kept
    b"[1, 2]",  # not a resource
    b'{"resourceType":"Encounter","id":"x"} trailing',
    encounter(5),
]


@pytest.mark.parametrize("final_line_end", [b"\n", b""])
@pytest.mark.parametrize("compressed", [False, True])
def test_every_line_the_blocks_cannot_vouch_for_is_reported_as_line_by_line(
    tmp_path: Path, final_line_end: bytes, compressed: bool
) -> None:
    data = b"\n".join(BAD_LINES) + final_line_end
    path = tmp_path / ("Encounter.000.ndjson.gz" if compressed else "Encounter.000.ndjson")
    path.write_bytes(gzip.compress(data) if compressed else data)
    with mock.patch.object(ndjson_partitions, "_BLOCK_BYTES", 16):
        result, written = both_ways(path, tmp_path)
    assert result.line_count == len(BAD_LINES)
    assert result.resource_lines == len(BAD_LINES) - 2
    assert result.bytes_read == len(data)
    assert [(line, message.split(":")[0]) for line, message, _label in result.problems] == [
        (2, "not valid JSON"),
        (12, "expected a JSON object (a FHIR resource), found list"),
        (13, "not valid JSON"),
    ]
    routed = b"".join(lines_in(written))
    assert b'"id":"o4"' in routed and b'"id":"p1"' in routed and len(written) == 2
    # One patient's lines 7 and 8, where they are in the file unless it is gzipped.
    runs = written["input-0001.00000.runs"].split(b"\t")
    assert runs[:4] == [b"p1", b"7", b"2", b"c" if compressed else b"s"]
    assert [label for label, _line, _text in result.shared] == []
    assert b"spaced" not in routed and b"CarePlan" not in routed


def test_a_truncated_gzip_file_is_reported_as_line_by_line(tmp_path: Path) -> None:
    whole = gzip.compress(b"".join(encounter(n) + b"\n" for n in range(3000)))
    path = tmp_path / "Encounter.000.ndjson.gz"
    path.write_bytes(whole[: len(whole) // 2])
    result, _written = both_ways(path, tmp_path)
    assert result.read_error == "the compressed stream ends early (truncated file)"
    assert 0 < result.line_count < 3000


def test_an_unreadable_file_is_reported_as_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "Encounter.000.ndjson"
    path.symlink_to(tmp_path / "missing.ndjson")
    result, _written = both_ways(path, tmp_path)
    assert result.read_error is not None and result.line_count == 0


def test_byte_ranges_own_the_lines_that_start_in_them(tmp_path: Path) -> None:
    data = b"".join(line + b"\n" for line in BAD_LINES * 3)
    path = tmp_path / "Encounter.000.ndjson"
    path.write_bytes(data)
    with mock.patch.object(ndjson_partitions, "_BLOCK_BYTES", 7):
        for cut in range(1, len(data) + 1, 5):
            first, _ = both_ways(path, tmp_path, 0, cut)
            second, _ = both_ways(path, tmp_path, cut)
            assert first.line_count + second.line_count == len(BAD_LINES) * 3
            assert first.bytes_read + second.bytes_read == len(data)


def test_the_export_reports_the_same_problems_as_line_by_line(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.000.ndjson").write_bytes(
        b"".join(dumps({"resourceType": "Patient", "id": f"p{n}"}) + b"\n" for n in range(3))
    )
    (export / "Encounter.000.ndjson").write_bytes(b"\n".join(BAD_LINES))
    (export / "Observation.000.ndjson").write_bytes(
        b"".join(observation(n) + b"\n" for n in range(9))
    )

    def run(work: Path) -> tuple[list[SourceProblem], list[Any], tuple[int, int, int]]:
        problems: list[SourceProblem] = []
        kept = frozenset({"Patient", "Observation"})
        partitioned = partition_ndjson(export, work, 3, problems.append, kept)
        shared = load_shared_resources(partitioned)
        patients = [
            (each.patient_id, each.resources)
            for index in range(3)
            for each in read_partition(partitioned, index, shared, problems.append)
        ]
        counts = (partitioned.lines, partitioned.bytes_read, partitioned.problems)
        return problems, patients, counts

    fast = run(tmp_path / "fast")
    with line_by_line():
        slow = run(tmp_path / "slow")
    assert fast == slow
    assert [(p.line, p.message.split(":")[0]) for p in fast[0]][:3] == [
        (2, "not valid JSON"),
        (12, "expected a JSON object (a FHIR resource), found list"),
        (13, "not valid JSON"),
    ]


@dataclass(frozen=True)
class ExportFile:
    """How a generated export file is written and read: its name (`<named>.000.ndjson`),
    gzipped or not, with a line end after its last line or not, read in blocks of `block`
    bytes, and where it is cut in two byte ranges (`cut_at` of its length)."""

    named: str
    compressed: bool
    final_line_end: bool
    block: int
    cut_at: float

    def data(self, lines: list[bytes], line_end: bytes = b"\n") -> bytes:
        return line_end.join(lines) + (line_end if self.final_line_end and lines else b"")

    @contextmanager
    def written(self, data: bytes) -> Iterator[tuple[Path, Path]]:
        """`data` written as the file in a new folder, pass 1 reading blocks of `block`
        bytes: the file and the folder."""
        with (
            tempfile.TemporaryDirectory() as folder,
            mock.patch.object(ndjson_partitions, "_BLOCK_BYTES", self.block),
        ):
            work = Path(folder)
            suffix = ".ndjson.gz" if self.compressed else ".ndjson"
            path = work / f"{self.named}.000{suffix}"
            path.write_bytes(gzip.compress(data) if self.compressed else data)
            yield path, work

    def cut_in_two(
        self, path: Path, work: Path, data: bytes, max_line_bytes: int = MAX_LINE_BYTES
    ) -> tuple[_RangeResult, _RangeResult] | None:
        """The file split as two byte ranges, each both ways (None: a gzipped file, read
        whole, or a cut at its start)."""
        cut = int(len(data) * self.cut_at)
        if self.compressed or cut == 0:
            return None
        first, _ = both_ways(path, work, 0, cut, max_line_bytes=max_line_bytes)
        second, _ = both_ways(path, work, cut, max_line_bytes=max_line_bytes)
        return first, second


def export_files(names: list[str], blocks: list[int]) -> st.SearchStrategy[ExportFile]:
    return st.builds(
        ExportFile,
        named=st.sampled_from(names),
        compressed=st.booleans(),
        final_line_end=st.booleans(),
        block=st.sampled_from(blocks),
        cut_at=st.floats(0, 1),
    )


LINES = st.one_of(
    st.integers(0, 99).map(encounter),
    st.integers(0, 99).map(observation),
    st.sampled_from(BAD_LINES),
    st.sampled_from(KEPT_LINES),
    st.binary(max_size=12),
    st.tuples(st.integers(0, 99), st.binary(max_size=3)).map(
        lambda pair: encounter(pair[0])[: -1 - len(pair[1])] + pair[1] + b"}"
    ),
    st.tuples(st.integers(0, 99), st.integers(0, 40)).map(
        lambda pair: encounter(pair[0])[: pair[1]]
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(LINES, max_size=25),
    line_end=st.sampled_from([b"\n", b"\r\n"]),
    file=export_files(
        ["Encounter", "Observation", "Patient", "Medication", "export"], [1, 5, 64, 1 << 20]
    ),
)
def test_blocks_and_lines_give_the_same_result(
    lines: list[bytes], line_end: bytes, file: ExportFile
) -> None:
    data = file.data(lines, line_end)
    with file.written(data) as (path, work):
        whole, _written = both_ways(path, work)
        assert whole.bytes_read == len(data)
        halves = file.cut_in_two(path, work, data)
        if halves is not None:
            first, second = halves
            assert first.line_count + second.line_count == whole.line_count
            assert (
                first.problems
                + [
                    (line + first.line_count, message, label)
                    for line, message, label in second.problems
                ]
                == whole.problems
            )


@pytest.mark.parametrize("final_line_end", [b"\n", b""])
@pytest.mark.parametrize("named", ["Observation", "Patient", "Medication"])
def test_a_file_of_a_kept_type_is_routed_as_line_by_line(
    tmp_path: Path, named: str, final_line_end: bytes
) -> None:
    data = b"\n".join(KEPT_LINES + [observation(n) for n in range(30)] + BAD_LINES)
    path = tmp_path / f"{named}.000.ndjson"
    path.write_bytes(data + final_line_end)
    with mock.patch.object(ndjson_partitions, "_BLOCK_BYTES", 100):
        result, written = both_ways(path, tmp_path)
    assert [label for label, _line, _text in result.shared] == ["Medication/m1"]
    assert sum(text.count(b"\n") for text in lines_in(written)) == 5 + 30 + 2
    assert result.line_count == len(KEPT_LINES) + 30 + len(BAD_LINES)
    assert [(line, message.split(";")[0]) for line, message, _label in result.problems][:5] == [
        (2, "Patient.id is missing or not a FHIR id"),
        (4, "a shared resource needs a FHIR id to be referred to"),
        (7, "no reference to a Patient in subject, patient, beneficiary, individual"),
        (8, "no reference to a Patient in subject, patient, beneficiary, individual"),
        (9, "no reference to a Patient in subject, patient, beneficiary, individual"),
    ]


def run_line(patient: str, how: str) -> bytes:
    """An Observation of `patient`, named as `how` says (most name it once, plainly)."""
    reference = {"reference": f"Patient/{patient}"}
    fields: dict[str, Any] = {"subject": reference}
    if how == "history":
        fields = {"subject": {"reference": f"Patient/{patient}/_history/1"}}
    elif how == "named again":
        fields["performer"] = [reference]
    elif how == "named first elsewhere":
        fields = {"performer": [{"reference": "Patient/p1"}], "subject": reference}
    elif how == "mentioned":
        fields["note"] = [{"text": f"Patient/{patient}"}]
    elif how == "id too long":
        fields = {"subject": {"reference": "Patient/" + patient * 40}}
    elif how == "display only":
        fields = {"subject": {"display": f"Patient/{patient}"}}
    elif how == "no quote after the id":
        return b'{"resourceType":"Observation","subject":{"reference":"Patient/%s}' % (
            patient.encode()
        )
    elif how == "white space after":  # the block is not vouched for whole: lines checked
        return observation_with(0, **fields) + b" "
    elif how == "white space before":
        return b" " + observation_with(0, **fields)
    return observation_with(0, **fields)


RUN_LINES = st.lists(
    st.tuples(
        st.sampled_from(["p0", "p1", "p1", "p10"]),
        st.sampled_from(
            ["plain"] * 5
            + [
                "history",
                "named again",
                "named first elsewhere",
                "mentioned",
                "id too long",
                "display only",
                "no quote after the id",
                "white space after",
                "white space before",
            ]
        ),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    described=RUN_LINES,
    block=st.sampled_from([64, 300, 1 << 20]),
    final_line_end=st.booleans(),
    cut_at=st.floats(0, 1),
)
def test_runs_of_a_patient_are_routed_as_line_by_line(
    described: list[tuple[str, str]], block: int, final_line_end: bool, cut_at: float
) -> None:
    """Consecutive lines of one patient go as one run (one runs-file line) exactly when the
    per-line path routes each of them to that patient."""
    lines = [run_line(patient, how) for patient, how in described]
    data = b"\n".join(lines) + (b"\n" if final_line_end and lines else b"")
    with (
        tempfile.TemporaryDirectory() as folder,
        mock.patch.object(ndjson_partitions, "_BLOCK_BYTES", block),
    ):
        work = Path(folder)
        path = work / "Observation.000.ndjson"
        path.write_bytes(data)
        whole, written = both_ways(path, work)
        routed = sum(text.count(b"\n") for text in lines_in(written))
        runs = [
            line.split(b"\t")
            for name, text in written.items()
            if name.endswith(".runs")
            for line in text.splitlines()
        ]
        assert sum(int(run[2]) for run in runs) == routed
        cut = int(len(data) * cut_at)
        if cut > 0:
            first, _ = both_ways(path, work, 0, cut)
            second, _ = both_ways(path, work, cut)
            assert first.line_count + second.line_count == whole.line_count


def test_a_run_is_one_line_of_the_runs_file(tmp_path: Path) -> None:
    lines = [run_line("p1", "plain")] * 5 + [run_line("p1", "named again")]
    lines += [run_line("p1", "plain")] * 2 + [run_line("p0", "named first elsewhere")]
    lines += [run_line("p1", "history"), run_line("p1", "plain")]
    path = tmp_path / "Observation.000.ndjson"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    _result, written = both_ways(path, tmp_path)
    # p0 and p1 share partition 1. Lines 1-8 are p1's (line 6, naming the patient twice, is
    # parsed and routed by its subject: the same patient, so the runs join); line 9 names
    # Patient/p1 first but its subject is p0: parsed, a run of its own; lines 10-11 name p1,
    # with a history reference and without. A run whose every line starts as a line of the
    # file's type does (`{"resourceType":"Observation"`, found where the patient is read
    # from the text) says so (`t`); joined with a parsed line it says only where it is (`s`).
    at = [sum(len(line) + 1 for line in lines[:number]) for number in range(len(lines) + 1)]
    assert written == {
        "input-0001.00000.ndjson": b"".join(line + b"\n" for line in lines),
        "input-0001.00000.runs": b"p1\t1\t8\ts\t0\t%d\np0\t9\t1\ts\t%d\t%d\np1\t10\t2\tt\t%d\t%d\n"
        % (at[8], at[8], at[9] - at[8], at[9], at[11] - at[9]),
    }


GOOD_LINES = st.one_of(st.integers(0, 99).map(encounter), st.integers(0, 99).map(observation))


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.one_of(GOOD_LINES, GOOD_LINES, LINES), min_size=1, max_size=12),
    before=st.lists(LINES, max_size=2),
    after=st.binary(max_size=40),
    named=st.sampled_from([b"Encounter", b"Observation"]),
    line_end=st.sampled_from([b"\n", b"\r\n"]),
)
def test_a_block_is_vouched_for_whole_only_when_every_line_is(
    lines: list[bytes], before: list[bytes], after: bytes, named: bytes, line_end: bytes
) -> None:
    """`_whole_lines_of` (two counts over the block) says what checking each line says: the
    block's lines when each starts with the type's `{"resourceType":"..."`, ends with `}`
    and has its line end, else 0, whatever comes before and after the block."""
    start = b'{"resourceType":"' + named + b'"'
    head = b"".join(line + b"\n" for line in before)
    block = line_end.join(lines) + line_end
    buffer = head + block + after
    each = block.split(b"\n")[:-1]
    vouched = all(line.startswith(start) and line.endswith(b"}") for line in each)
    expected = len(each) if vouched else 0
    stop = len(head) + len(block)
    assert ndjson_partitions._whole_lines_of(buffer, len(head), stop, start) == expected
    # A block whose lines are all good, but whose last line has no line end, is not vouched for.
    if vouched:
        cut = block[:-1]
        assert ndjson_partitions._whole_lines_of(head + cut, len(head), stop - 1, start) == 0


PATIENT_KEYS = [b'"resourceType"', b'"id"', b'"i\\u0064"', b'"resourceTyp\\u0065"', b'"name"']
PATIENT_VALUES = [
    b'"Patient"',
    b'"Patient"',
    b'"Observation"',
    b'"p1"',
    b'"p\\u0032"',
    b'"p 3"',
    b'"' + b"x" * 65 + b'"',
    b"1",
    b"1e999",
    b"123456789012345678901234567890",
    b'"\\ud800"',
    b'"\xff"',
    b'"\xc3\xa9"',
    b'{"id":"p4"}',
    b"[" * 1_000 + b"]" * 1_000,  # deeper than msgspec goes (RecursionError), orjson reads it
    b"[" * 1_100 + b"]" * 1_100,  # deeper than orjson reads
    b"null",
    b"[]",
    b'"\\"',
]


@st.composite
def patient_lines(draw: st.DrawFn) -> bytes:
    """A line shaped like a Patient: a resourceType and an id (mostly "Patient" and a FHIR
    id) and other pairs in any order, keys repeated or escaped, values of every JSON kind,
    some not FHIR ids or not valid JSON (invalid UTF-8, a lone surrogate, numbers out of
    range), the line cut short or with bytes after."""
    usual = draw(st.booleans())  # mostly a Patient with a FHIR id, or anything
    pairs = [
        (b'"resourceType"', b'"Patient"' if usual else draw(st.sampled_from(PATIENT_VALUES))),
        (b'"id"', b'"p1"' if usual else draw(st.sampled_from(PATIENT_VALUES))),
        (b'"name"', draw(st.sampled_from(PATIENT_VALUES))),
    ]
    pairs += draw(
        st.lists(
            st.tuples(st.sampled_from(PATIENT_KEYS), st.sampled_from(PATIENT_VALUES)),
            max_size=3,
        )
    )
    pairs = draw(st.permutations(pairs))
    line = b"{" + b",".join(key + b":" + value for key, value in pairs) + b"}"
    return line + draw(st.sampled_from([b"", b"", b"", b"", b"", b"", b" ", b",", b"}", b" x"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.one_of(
            patient_lines(),
            st.sampled_from(KEPT_LINES),
            st.integers(0, 9).map(lambda n: dumps({"resourceType": "Patient", "id": f"p{n}"})),
        ),
        max_size=12,
    )
)
def test_a_patient_read_without_parsing_is_routed_as_parsing_routes_it(lines: list[bytes]) -> None:
    """A Patient line of a file named for Patients is read with msgspec and validated with
    simdjson (`_patient_id_of`): it is routed, counted and reported exactly as when every
    line is parsed with orjson (whatever its keys, values, bytes and JSON errors)."""
    data = b"".join(line + b"\n" for line in lines)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        path = work / "Patient.000.ndjson"
        path.write_bytes(data)
        read = both_ways(path, work / "read")
        with mock.patch.object(ndjson_partitions, "_patient_id_of", _parse_instead):
            parsed = both_ways(path, work / "parsed")
    assert read == parsed


def _parse_instead(_text: bytes) -> None:
    return None


def test_a_patient_is_read_without_parsing_only_when_parsing_would_route_it() -> None:
    read = ndjson_partitions._patient_id_of
    assert read(b'{"resourceType":"Patient","id":"p1","name":[{"family":"\xc3\xa9"}]}') == "p1"
    assert read(b'{"resourceType":"Patient","id":"p1","id":"p2"}') == "p2"  # the last, as orjson
    assert read(b'{"resourceType":"Patient","id":"p1","i\\u0064":"p2"}') == "p2"
    assert read(b'{"resourceType":"Patient","id":"p1","name":"\xff"}') is None  # not UTF-8
    assert read(b'{"resourceType":"Patient","id":"p1","n":123456789012345678901234567890}') is None
    assert read(b'{"resourceType":"Patient","id":"p 1"}') is None
    assert read(b'{"resourceType":"Patient","id":"p1"') is None
    assert read(b'{"resourceType":"Observation","id":"p1"}') is None
    # nesting msgspec does not decode (RecursionError): parsing decides
    deep = b'{"resourceType":"Patient","id":"p1","extension":%s}'
    assert read(deep % (b"[" * 1_000 + b"]" * 1_000)) is None
    assert read(deep % (b"[" * 1_100 + b"]" * 1_100)) is None


# --------------------------------------------------------------------------- long lines

LIMIT = 120
"""The longest line the long-line tests read (`max_line_bytes`); every block size they use is
at most this, as `partition_ndjson` requires."""


def long_observation(length: int) -> bytes:
    """An Observation of patient p1 whose note makes the line `length` bytes or a few more."""
    return observation_with(
        0, subject={"reference": "Patient/p1"}, note=[{"text": "L" * max(0, length - 90)}]
    )


def lines_of(data: bytes) -> list[bytes]:
    """The lines of `data`, without their line ends."""
    lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        lines.pop()
    return lines


def long_lines_of(data: bytes) -> list[tuple[int, int]]:
    """(line number, bytes without the line end) of each line of `data` longer than LIMIT."""
    return [
        (number, len(line)) for number, line in enumerate(lines_of(data), 1) if len(line) > LIMIT
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.one_of(LINES, st.integers(LIMIT - 5, 4 * LIMIT).map(long_observation))),
    file=export_files(["Observation", "Encounter", "export"], [1, 7, 64, LIMIT]),
)
def test_a_line_longer_than_the_limit_is_counted_reported_and_read_past(
    lines: list[bytes], file: ExportFile
) -> None:
    data = file.data(lines)
    with file.written(data) as (path, work):
        whole, written = both_ways(path, work, max_line_bytes=LIMIT)
        assert whole.long_lines == long_lines_of(data)
        assert whole.bytes_read == len(data)
        assert whole.line_count == len(lines_of(data))
        routed = b"".join(lines_in(written))
        assert all(len(line) <= LIMIT for line in routed.splitlines())
        halves = file.cut_in_two(path, work, data, LIMIT)
        if halves is not None:
            first, second = halves
            assert first.line_count + second.line_count == whole.line_count
            assert first.bytes_read + second.bytes_read == whole.bytes_read
            shifted = [(line + first.line_count, size) for line, size in second.long_lines]
            assert first.long_lines + shifted == whole.long_lines


def test_the_export_reports_a_long_line_unchecked_and_reads_the_others(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.000.ndjson").write_bytes(
        b"".join(dumps({"resourceType": "Patient", "id": f"p{n}"}) + b"\n" for n in range(3))
    )
    long_line = long_observation(LIMIT * 3)
    (export / "Observation.000.ndjson").write_bytes(
        observation(1) + b"\n" + long_line + b"\n" + observation(4) + b"\n"
    )
    problems: list[SourceProblem] = []
    with mock.patch.object(ndjson_partitions, "_BLOCK_BYTES", 16):
        partitioned = partition_ndjson(
            export, tmp_path / "work", 2, problems.append, max_line_bytes=LIMIT
        )
        shared = load_shared_resources(partitioned)
        observations = sorted(
            resource["id"]
            for index in range(2)
            for patient in read_partition(partitioned, index, shared, problems.append)
            for resource in patient.resources
            if resource["resourceType"] == "Observation"
        )
    assert observations == ["o1", "o4"]
    assert partitioned.lines == 6 and partitioned.problems == 1
    [problem] = problems
    assert (problem.file, problem.line, problem.check) == (
        str(export / "Observation.000.ndjson"),
        2,
        None,
    )
    assert problem.message == (
        f"the line is {len(long_line)} bytes long, more than the {LIMIT} a line may be; "
        "it is not read, and the resource on it is left out"
    )


def test_the_limit_is_at_least_a_block(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_line_bytes must be at least"):
        partition_ndjson(tmp_path, tmp_path / "work", 2, max_line_bytes=10)


_PEAK_OF_PASS_1 = """
import resource, sys
from engine.cohort.ndjson_partitions import partition_ndjson
problems = []
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
partition_ndjson(sys.argv[1], sys.argv[2], 2, problems.append, max_line_bytes=int(sys.argv[3]))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
print(problems[0].line, problems[0].message)
"""


@pytest.mark.parametrize("name", ["Observation.000.ndjson.gz", "export.ndjson.gz"])
def test_a_gzipped_line_far_longer_than_the_limit_is_read_past_in_bounded_memory(
    tmp_path: Path, name: str
) -> None:
    """A 400 MiB line in a gzip file of about 2 MB (what a hostile or broken export can hold),
    read in blocks (a file named for a type) or line by line: pass 1 reports it and reads on,
    its memory growing by about the limit (it holds a line's bytes until they pass it), not by
    the line (pass 1 alone once took 0.86 GB for 400 MB). 16 MiB here, 256 MiB by default:
    the same code, a different constant."""
    export = tmp_path / "export"
    export.mkdir()
    head = b'{"resourceType":"Observation","id":"big","subject":{"reference":"Patient/p1"},'
    with gzip.open(export / name, "wb", compresslevel=1) as out:
        out.write(observation(1) + b"\n" + head + b'"note":[{"text":"')
        chunk = b"A" * (1 << 20)
        for _ in range(400):
            out.write(chunk)
        out.write(b'"}]}\n' + observation(4) + b"\n")
    limit = 16 << 20
    done = run_python(_PEAK_OF_PASS_1, str(export), str(tmp_path / "work"), str(limit))
    growth_mib, problem = done.stdout.splitlines()
    assert int(growth_mib) < 3 * 16 + 32, f"pass 1 grew by {growth_mib} MiB"
    assert problem.startswith("2 the line is 419,430,") and "more than the 16,777,216" in problem
