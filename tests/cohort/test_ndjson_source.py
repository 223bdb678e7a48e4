"""The NDJSON folder source: grouping by patient, gzip, shared resources, every bad input."""

from __future__ import annotations

import gzip
import pickle
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cohort.ndjson_partitions import (
    NdjsonFolderSource,
    PartitionedExport,
    PartitionLines,
    PreviewFirst,
    _lines_referring,
    load_shared_resources,
    partition_ndjson,
    read_partition,
)
from engine.errors import InputError
from engine.sources import PatientResources, SourceProblem, patient_reference


def patient(patient_id: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "birthDate": "1970-01-01"}


def observation(observation_id: str, patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": observation_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def medication_request(request_id: str, patient_id: str, medication: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": request_id,
        "status": "active",
        "medicationReference": {"reference": f"Medication/{medication}"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def lines(*resources: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(resource) + b"\n" for resource in resources)


def read(folder: Path, partitions: int = 4) -> tuple[list[PatientResources], list[SourceProblem]]:
    problems: list[SourceProblem] = []
    source = NdjsonFolderSource(folder, partition_count=partitions, on_problem=problems.append)
    return list(source), problems


def by_id(patients: list[PatientResources]) -> dict[str, list[str]]:
    return {
        each.patient_id: [f"{r['resourceType']}/{r['id']}" for r in each.resources]
        for each in patients
    }


def test_groups_resources_by_patient_in_export_order(tmp_path: Path) -> None:
    (tmp_path / "Patient.000.ndjson").write_bytes(lines(patient("a"), patient("b")))
    (tmp_path / "Observation.000.ndjson").write_bytes(
        lines(observation("o1", "b"), observation("o2", "a"), observation("o3", "b"))
    )
    (tmp_path / "Observation.001.ndjson").write_bytes(lines(observation("o4", "a")))
    for partitions in (1, 3):
        patients, problems = read(tmp_path, partitions)
        assert problems == []
        assert by_id(patients) == {
            "a": ["Observation/o2", "Observation/o4", "Patient/a"],
            "b": ["Observation/o1", "Observation/o3", "Patient/b"],
        }


def test_reads_gzipped_files(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson.gz").write_bytes(gzip.compress(lines(patient("a"))))
    (tmp_path / "Observation.ndjson.gz").write_bytes(gzip.compress(lines(observation("o", "a"))))
    patients, problems = read(tmp_path)
    assert problems == []
    assert by_id(patients) == {"a": ["Observation/o", "Patient/a"]}


def test_shared_medication_goes_to_every_patient_that_refers_to_it(tmp_path: Path) -> None:
    medication = {"resourceType": "Medication", "id": "m1", "code": {"text": "aspirin"}}
    unused = {"resourceType": "Medication", "id": "m2", "code": {"text": "other"}}
    (tmp_path / "Medication.ndjson").write_bytes(lines(medication, unused))
    (tmp_path / "Patient.ndjson").write_bytes(lines(patient("a"), patient("b"), patient("c")))
    (tmp_path / "MedicationRequest.ndjson").write_bytes(
        lines(medication_request("r1", "a", "m1"), medication_request("r2", "b", "m1"))
    )
    patients, problems = read(tmp_path)
    assert problems == []
    assert by_id(patients) == {
        "a": ["MedicationRequest/r1", "Patient/a", "Medication/m1"],
        "b": ["MedicationRequest/r2", "Patient/b", "Medication/m1"],
        "c": ["Patient/c"],
    }


def test_only_kept_lines_bring_shared_resources_in_line_order(tmp_path: Path) -> None:
    medications = [
        {"resourceType": name, "id": f"m{number}", "code": {"text": "aspirin"}}
        for number, name in enumerate(("Medication",) * 5 + ("Organization",))
    ]
    (tmp_path / "Medication.ndjson").write_bytes(lines(*medications[:5]))
    (tmp_path / "Organization.ndjson").write_bytes(lines(medications[5]))
    (tmp_path / "Patient.ndjson").write_bytes(lines(patient("a"), patient("b")))
    repeated = medication_request("r1", "a", "m4")  # a repeat of r1: not kept
    organization = observation("o1", "a") | {"performer": [{"reference": "Organization/m5"}]}
    elsewhere = medication_request("r3", "b", "m3") | {"subject": {"reference": "Patient/x"}}
    (tmp_path / "MedicationRequest.ndjson").write_bytes(
        lines(medication_request("r1", "a", "m2"), repeated, medication_request("r2", "a", "m1"))
        + b'{"resourceType":"MedicationRequest","medicationReference":{"reference":"Medication/'
        + b'm0"},"subject":{"reference":"Patient/a"}\n'  # not JSON: not kept
        + lines(elsewhere)
    )
    (tmp_path / "Observation.ndjson").write_bytes(lines(organization))
    patients, problems = read(tmp_path, partitions=1)
    assert by_id(patients) == {
        "a": [
            "MedicationRequest/r1",
            "MedicationRequest/r2",
            "Observation/o1",
            "Patient/a",
            "Medication/m2",
            "Medication/m1",
            "Organization/m5",
        ],
        "b": ["Patient/b"],
    }
    first = tmp_path / "MedicationRequest.ndjson"
    assert [(problem.line, problem.resource, problem.message) for problem in problems] == [
        (2, "MedicationRequest/r1", f"the same resource as {first}:1; the first is kept"),
        (4, None, "not valid JSON: unexpected end of data"),
        (
            None,
            "Patient/x",
            "1 lines refer to Patient/x, which is not in the export; they are not evaluated",
        ),
    ]


def test_patient_reference_per_type() -> None:
    assert patient_reference(patient("p")) == "p"
    assert (
        patient_reference(
            {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p"}}
        )
        == "p"
    )
    assert (
        patient_reference({"resourceType": "Coverage", "beneficiary": {"reference": "Patient/p"}})
        == "p"
    )
    assert (
        patient_reference(
            {
                "resourceType": "ResearchSubject",
                "individual": {"reference": "https://x/fhir/Patient/p"},
            }
        )
        == "p"
    )
    assert (
        patient_reference(
            {
                "resourceType": "Provenance",
                "target": [{"reference": "Encounter/e"}, {"reference": "Patient/p"}],
            }
        )
        == "p"
    )
    assert (
        patient_reference({"resourceType": "Observation", "subject": {"reference": "Group/g"}})
        is None
    )
    assert patient_reference({"resourceType": "Patient", "id": "not an id"}) is None


def problem_summary(problems: list[SourceProblem]) -> list[tuple[str, int | None, str | None, str]]:
    return [
        (Path(p.file).name, p.line, p.resource, p.message.split(";")[0].split(":")[0])
        for p in problems
    ]


def test_every_bad_input_is_reported_with_file_and_line_and_the_run_goes_on(tmp_path: Path) -> None:
    nested_only = {
        "resourceType": "Observation",
        "id": "nested",
        "subject": {"reference": "Group/g"},
        "focus": [{"reference": "Patient/a"}],
    }
    (tmp_path / "Patient.ndjson").write_bytes(lines(patient("a")) + b"{not json\n")
    (tmp_path / "Observation.ndjson").write_bytes(
        lines(observation("o1", "a"))
        + b"\n"  # blank lines are skipped
        + lines({"resourceType": "Observation", "id": "orphan", "status": "final"})
        + b"[1, 2]\n"
        + lines(nested_only, observation("o1", "a"), observation("o9", "ghost"))
    )
    whole = gzip.compress(lines(*(observation(f"g{n}", "a") for n in range(2000))))
    (tmp_path / "Condition.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "Procedure.ndjson").symlink_to(tmp_path / "missing.ndjson")
    patients, problems = read(tmp_path)
    assert by_id(patients)["a"][:2] == ["Observation/g0", "Observation/g1"]
    assert "Observation/o1" in by_id(patients)["a"]
    assert "ghost" not in by_id(patients)
    found = problem_summary(problems)
    truncated = [p for p in found if p[0] == "Condition.ndjson.gz"]
    assert len(truncated) == 1 and truncated[0][1] is not None
    assert truncated[0][3] == f"cannot read past line {truncated[0][1] - 1}"
    assert {p for p in found if p[0] != "Condition.ndjson.gz"} == (
        {
            (
                "Observation.ndjson",
                3,
                "Observation/orphan",
                "no reference to a Patient in subject, patient, beneficiary, individual",
            ),
            ("Observation.ndjson", 4, None, "expected a JSON object (a FHIR resource), found list"),
            (
                "Observation.ndjson",
                5,
                "Observation/nested",
                "no reference to a Patient in subject, patient, beneficiary, individual",
            ),
            (
                "Observation.ndjson",
                6,
                "Observation/o1",
                "the same resource as " + str(tmp_path / "Observation.ndjson"),
            ),
            (
                "Observation.ndjson",
                None,
                "Patient/ghost",
                "1 lines refer to Patient/ghost, which is not in the export",
            ),
            ("Patient.ndjson", 2, None, "not valid JSON"),
            ("Procedure.ndjson", None, None, "cannot read the file"),
        }
    )
    assert next(p for p in problems if p.resource == "Patient/ghost").patient == "ghost"


def test_without_a_problem_handler_the_first_problem_raises(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_bytes(b"{not json\n")
    with pytest.raises(InputError, match=r"Patient.ndjson:1: not valid JSON"):
        list(NdjsonFolderSource(tmp_path))


def test_a_folder_without_ndjson_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no \*\.ndjson"):
        partition_ndjson(tmp_path, tmp_path / "work", 2)


def test_byte_ranges_in_parallel_give_what_one_pass_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.ndjson").write_bytes(lines(*(patient(f"p{n}") for n in range(30))))
    observations = [observation(f"o{n}", f"p{n % 30}") for n in range(300)]
    (export / "Observation.ndjson").write_bytes(
        lines(*observations[:150]) + b"{broken\n" + lines(*observations[150:], observations[7])
    )
    (export / "Condition.ndjson.gz").write_bytes(gzip.compress(lines(observation("g", "p1"))))

    def split(workers: int) -> tuple[list[PatientResources], list[SourceProblem]]:
        problems: list[SourceProblem] = []
        work = tmp_path / f"work-{workers}"
        partitioned = partition_ndjson(export, work, 3, problems.append, workers=workers)
        shared = load_shared_resources(partitioned)
        patients = [
            each
            for index in range(3)
            for each in read_partition(partitioned, index, shared, problems.append)
        ]
        if workers > 1:
            assert len(partitioned.ranges) > 6  # the plain files were cut into byte ranges
        return patients, problems

    whole = split(1)
    monkeypatch.setattr("engine.cohort.ndjson_partitions._MINIMUM_RANGE_BYTES", 997)
    in_ranges = split(2)
    assert in_ranges == whole
    assert problem_summary(whole[1]) == [
        ("Observation.ndjson", 151, None, "not valid JSON"),
        (
            "Observation.ndjson",
            302,
            "Observation/o7",
            "the same resource as " + str(export / "Observation.ndjson"),
        ),
    ]


def test_only_the_kept_types_are_partitioned(tmp_path: Path) -> None:
    encounter = {"resourceType": "Encounter", "id": "e", "subject": {"reference": "Patient/a"}}
    (tmp_path / "Patient.ndjson").write_bytes(lines(patient("a")))
    (tmp_path / "Encounter.ndjson").write_bytes(
        lines(encounter, encounter) + b'{"resourceType":"Encounter","id":"cut\n'
    )
    (tmp_path / "Observation.ndjson").write_bytes(lines(observation("o", "a")))
    problems: list[SourceProblem] = []
    kept = frozenset({"Patient", "Observation"})
    partitioned = partition_ndjson(tmp_path, tmp_path / "work", 2, problems.append, kept)
    patients = [
        each
        for index in range(2)
        for each in read_partition(partitioned, index, load_shared_resources(partitioned))
    ]
    assert by_id(patients) == {"a": ["Observation/o", "Patient/a"]}
    assert problem_summary(problems) == [("Encounter.ndjson", 3, None, "not valid JSON")]


def test_partitions_an_earlier_version_wrote_are_not_reused(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_bytes(lines(patient("a")))
    work = tmp_path / "work"
    partition_ndjson(tmp_path, work, 2)
    assert PartitionedExport.load(work) is not None
    (work / "input-00000.runs").unlink()  # a file of the pass is gone
    assert PartitionedExport.load(work) is None
    gzipped = tmp_path / "gzipped"
    gzipped.mkdir()
    (gzipped / "Patient.ndjson.gz").write_bytes(gzip.compress(lines(patient("a"))))
    partition_ndjson(gzipped, work, 2)
    assert PartitionedExport.load(work) is not None
    (work / "input-0001.00000.ndjson").unlink()  # its lines copied from the gzipped file
    assert PartitionedExport.load(work) is None
    partition_ndjson(tmp_path, work, 2)
    marker = work / "partitioned.json"
    earlier = orjson.loads(marker.read_bytes())
    del earlier["format"]  # an earlier version's lines each began `patient TAB range TAB line`
    marker.write_bytes(orjson.dumps(earlier))
    assert PartitionedExport.load(work) is None


def test_partitions_cut_short_by_a_crash_are_not_reused(tmp_path: Path) -> None:
    """Pass 1 writes its files without fsync and its marker last, with one: after a crash of
    the machine the marker may survive files it vouches for that are empty or cut short, so
    each file's size is checked against the marker's record of it."""
    gzipped = tmp_path / "export"
    gzipped.mkdir()
    (gzipped / "Patient.ndjson.gz").write_bytes(gzip.compress(lines(patient("a"), patient("b"))))
    medication = {"resourceType": "Medication", "id": "m1"}
    (gzipped / "Medication.ndjson").write_bytes(lines(medication))
    (gzipped / "MedicationRequest.ndjson").write_bytes(lines(medication_request("r", "a", "m1")))
    work = tmp_path / "work"
    partition_ndjson(gzipped, work, 1)
    written = {
        path: path.read_bytes() for path in work.iterdir() if path.name != "partitioned.json"
    }
    kinds = sorted(path.name.split(".")[-1] for path in written)
    assert kinds == ["ndjson", "ndjson", "runs", "runs"]  # copies of the gzipped lines, shared
    assert all(written.values())
    assert PartitionedExport.load(work) is not None
    for path, data in written.items():
        for spoiled in (b"", data[:-1], data + b"\n"):
            path.write_bytes(spoiled)
            assert PartitionedExport.load(work) is None, (path.name, spoiled)
        path.write_bytes(data)
        assert PartitionedExport.load(work) is not None


def test_an_input_file_changed_after_pass_1_is_an_error_naming_it(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.ndjson").write_bytes(lines(patient("a")))
    observations = export / "Observation.ndjson"
    observations.write_bytes(lines(observation("o", "a")))
    partitioned = partition_ndjson(export, tmp_path / "work", 1)
    shared = load_shared_resources(partitioned)
    assert [each.patient_id for each in read_partition(partitioned, 0, shared)] == ["a"]
    observations.write_bytes(lines(observation("o2", "a")))  # pass 2 reads its lines there
    with pytest.raises(InputError) as raised:
        list(read_partition(partitioned, 0, shared))
    assert raised.value.location.file == str(observations)
    assert "changed while the cohort ran" in str(raised.value)


def test_runs_are_read_where_they_are_without_pread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Patient.ndjson").write_bytes(lines(patient("a"), patient("b")))
    (tmp_path / "Observation.ndjson").write_bytes(
        lines(observation("o1", "a"), observation("o2", "b"), observation("o3", "a"))
    )
    partitioned = partition_ndjson(tmp_path, tmp_path / "work", 1)
    shared = load_shared_resources(partitioned)
    with_pread = list(read_partition(partitioned, 0, shared))
    monkeypatch.setattr("engine.cohort.ndjson_partitions._PREAD", None)  # as on Windows
    assert list(read_partition(partitioned, 0, shared)) == with_pread
    assert by_id(with_pread) == {
        "a": ["Observation/o1", "Observation/o3", "Patient/a"],
        "b": ["Observation/o2", "Patient/b"],
    }


def test_a_pickled_partition_carries_its_lines(tmp_path: Path) -> None:
    """`PartitionLines.read` leaves the lines in the input files until a patient is read; a
    pickled copy (a Dask payload) holds them all: it reads alike once the files are gone."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.ndjson").write_bytes(lines(patient("a"), patient("b")))
    (export / "Observation.ndjson").write_bytes(
        lines(observation("o1", "a"), observation("o2", "b"), observation("o3", "a"))
    )
    (export / "Medication.ndjson").write_bytes(lines({"resourceType": "Medication", "id": "m"}))
    with gzip.open(export / "MedicationRequest.ndjson.gz", "wb") as requests:  # lines copied
        requests.write(lines(medication_request("r", "b", "m")))
    partitioned = partition_ndjson(export, tmp_path / "work", 1)
    shared = load_shared_resources(partitioned)
    partition = PartitionLines.read(partitioned, 0, shared)
    assert None in partition.chunks  # read when their patient is
    expected = list(partition.patients())
    shipped = pickle.dumps(partition)
    shutil.rmtree(export)
    shutil.rmtree(tmp_path / "work")
    arrived = pickle.loads(shipped)
    assert None not in arrived.chunks
    assert list(arrived.patients()) == expected
    assert by_id(expected) == {
        "a": ["Observation/o1", "Observation/o3", "Patient/a"],
        "b": ["MedicationRequest/r", "Observation/o2", "Patient/b", "Medication/m"],
    }


def test_lines_known_by_their_run_to_be_of_a_type_are_read_as_those_looked_at(
    tmp_path: Path,
) -> None:
    """Pass 2 reads the preview's lines first: a run pass 1 found to hold lines of its
    file's type only (`heads`) is sorted whole, any other line by how it starts, with the
    same preview, rest and problems either way (a misnamed line, white space, not JSON);
    the rest is searched for references to shared resources when it is parsed."""
    condition = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/a"}}
    (tmp_path / "Patient.ndjson").write_bytes(lines(patient("a"), patient("b")))
    (tmp_path / "Condition.ndjson").write_bytes(
        lines(condition, {**condition, "id": "c2"}, observation("o9", "b"))
        + b' {"resourceType": "Condition", "id": "c3", "subject": {"reference": "Patient/b"}}\n'
        + b'{"resourceType":"Condition","id":"c4","subject":{"reference":"Patient/a"}\n'
    )
    other = {**condition, "id": "c5", "subject": {"reference": "Patient/b"}}
    (tmp_path / "Observation.ndjson").write_bytes(
        lines(observation("o1", "a"), other, observation("o2", "a"))
    )
    (tmp_path / "Medication.ndjson").write_bytes(lines({"resourceType": "Medication", "id": "m"}))
    (tmp_path / "MedicationRequest.ndjson").write_bytes(lines(medication_request("r", "a", "m")))
    partitioned = partition_ndjson(tmp_path, tmp_path / "work", 1)
    partition = PartitionLines.read(partitioned, 0, load_shared_resources(partitioned))
    assert partition.heads.count(None) < len(partition.heads)

    def preview_then_rest(lines: PartitionLines) -> list[Any]:
        problems: list[SourceProblem] = []
        read = []
        for each in lines.patients(problems.append, None, preview_first=True):
            assert isinstance(each, PreviewFirst) and each.rest is not None
            read.append((each.patient_id, each.resources, each.rest.parsed().resources))
        return [read, problems]

    preview, problems = preview_then_rest(partition)
    assert (preview, problems) == tuple(preview_then_rest(replace(partition, heads=())))
    assert [[r["id"] for r in resources] for _patient, resources, _whole in preview] == [
        ["c", "c2", "a"],
        ["c3", "c5", "b"],
    ]
    assert [[r["id"] for r in whole] for _patient, _resources, whole in preview] == [
        ["c", "c2", "r", "o1", "o2", "a", "m"],  # the shared Medication the rest refers to
        ["o9", "c3", "c5", "b"],
    ]
    assert [(problem.file, problem.line) for problem in problems] == [
        (str(tmp_path / "Condition.ndjson"), 5)
    ]


_NEEDLES = (b'"reference":"Medication/', b'"reference":"Organization/')
_line_pieces = st.sampled_from(
    (b"{", b"}", b'"a":1', b",", *_NEEDLES, b'm1"', b'"reference":"Medic', b"ation/", b'"x"')
)


@given(
    runs=st.lists(
        st.lists(st.lists(_line_pieces, max_size=8).map(b"".join), min_size=1, max_size=6),
        min_size=1,
        max_size=4,
    )
)
def test_the_lines_that_may_refer_to_shared_resources_are_found_in_every_run(
    runs: list[list[bytes]],
) -> None:
    """`_lines_referring` (one search of each run for each literal) finds the lines a search
    of each line finds: a literal twice on a line, at its start or end, split by a line
    end, in several runs."""
    chunks = [(b"".join(line + b"\n" for line in run), len(run)) for run in runs]
    lines = [line for run in runs for line in run]
    expected = {number for number, line in enumerate(lines) if any(n in line for n in _NEEDLES)}
    assert _lines_referring(chunks, _NEEDLES) == expected


def test_a_line_that_is_not_json_is_reported_in_orjson_s_words_for_the_line(
    tmp_path: Path,
) -> None:
    """Pass 2 reads each line with its line end; a line that is not JSON is still reported
    with what orjson says of the line as written (with a line end after them, a truncated
    string or number are worded otherwise)."""
    (tmp_path / "Patient.ndjson").write_bytes(lines(patient("a")))
    start = b'{"resourceType":"Observation","subject":{"reference":"Patient/a"},'
    spoiled = [start + b'"note":"cut', start + b'"value":1.', start + b'"value":nul']
    (tmp_path / "Observation.ndjson").write_bytes(b"".join(line + b"\n" for line in spoiled))
    _patients, problems = read(tmp_path)
    reasons = []
    for line in spoiled:
        with pytest.raises(orjson.JSONDecodeError) as raised:
            orjson.loads(line)
        reasons.append(f"not valid JSON: {raised.value.msg}")
    assert [(problem.line, problem.message) for problem in problems] == [
        (1, reasons[0]),
        (2, reasons[1]),
        (3, reasons[2]),
    ]
