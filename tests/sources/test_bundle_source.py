"""Reading patient Bundles: every accepted shape, and every way a file can be wrong."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.errors import InputError, Location
from engine.sources import (
    ACCEPTED_BUNDLE_TYPES,
    BundleFileSource,
    PatientResources,
    PatientSource,
    parse_bundle,
    read_bundle_file,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "synthea"


def patient(patient_id: str = "p1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "birthDate": "1970-01-01"}


def observation(observation_id: str = "o1", subject: str = "Patient/p1") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": observation_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": subject},
    }


def bundle(*resources: dict[str, Any], bundle_type: str = "collection") -> dict[str, Any]:
    """A Bundle whose entries carry `https://example.org/fhir/Type/id` fullUrls."""
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [
            {
                "fullUrl": f"https://example.org/fhir/{resource['resourceType']}/{resource['id']}",
                "resource": resource,
            }
            for resource in resources
        ],
    }


def write(folder: Path, name: str, content: Any) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))
    return path


def read_error(tmp_path: Path, content: Any, name: str = "patient.json") -> InputError:
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as caught:
        read_bundle_file(path)
    assert caught.value.location.file == str(path)
    return caught.value


# --------------------------------------------------------------------------- good Bundles


@pytest.mark.parametrize("bundle_type", ACCEPTED_BUNDLE_TYPES)
def test_every_accepted_bundle_type_reads(tmp_path: Path, bundle_type: str) -> None:
    path = write(tmp_path, "p.json", bundle(patient(), observation(), bundle_type=bundle_type))
    patient_data = read_bundle_file(path)
    assert patient_data.patient_id == "p1"
    assert [resource["id"] for resource in patient_data.resources] == ["p1", "o1"]
    assert patient_data.full_urls == [
        "https://example.org/fhir/Patient/p1",
        "https://example.org/fhir/Observation/o1",
    ]
    assert patient_data.origin == str(path)


def test_transaction_with_urn_uuid_references_reads(tmp_path: Path) -> None:
    patient_url = "urn:uuid:9b1f7c5e-0000-4000-8000-000000000001"
    document = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": patient_url, "resource": {"resourceType": "Patient"}},
            {
                "fullUrl": "urn:uuid:9b1f7c5e-0000-4000-8000-000000000002",
                "resource": {"resourceType": "Observation", "subject": {"reference": patient_url}},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    patient_data = read_bundle_file(write(tmp_path, "p.json", document))
    # A transaction may leave Patient.id out; the id comes from the fullUrl then.
    assert patient_data.patient_id == "9b1f7c5e-0000-4000-8000-000000000001"


def test_searchset_keeps_include_entries_and_drops_outcomes(tmp_path: Path) -> None:
    medication = {"resourceType": "Medication", "id": "m1"}
    outcome = {"resourceType": "OperationOutcome", "id": "warn", "issue": []}
    document = bundle(patient(), medication, outcome, bundle_type="searchset")
    document["entry"][0]["search"] = {"mode": "match"}
    document["entry"][1]["search"] = {"mode": "include"}
    document["entry"][2]["search"] = {"mode": "outcome"}
    patient_data = read_bundle_file(write(tmp_path, "p.json", document))
    assert [resource["resourceType"] for resource in patient_data.resources] == [
        "Patient",
        "Medication",
    ]


def test_same_patient_twice_is_one_patient(tmp_path: Path) -> None:
    document = bundle(patient(), observation(), patient(), bundle_type="searchset")
    assert read_bundle_file(write(tmp_path, "p.json", document)).patient_id == "p1"


@pytest.mark.parametrize(
    "subject",
    [
        "Patient/p1",
        "Patient/p1/_history/3",
        "https://other.example/fhir/Patient/p1",
        "https://example.org/fhir/Patient/p1",
        "Group/g1",
        "#contained-patient",
        "Patient?identifier=urn:oid:1.2|123",
    ],
)
def test_references_to_the_bundle_patient_are_accepted(tmp_path: Path, subject: str) -> None:
    document = bundle(patient(), observation(subject=subject))
    assert read_bundle_file(write(tmp_path, "p.json", document)).patient_id == "p1"


def test_entries_without_full_url_have_none(tmp_path: Path) -> None:
    document = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": patient()}, {"resource": observation()}],
    }
    assert read_bundle_file(write(tmp_path, "p.json", document)).full_urls == [None, None]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "p.json", b"\xef\xbb\xbf" + orjson.dumps(bundle(patient())))
    assert read_bundle_file(path).patient_id == "p1"


def test_parse_bundle_reads_text_and_bytes() -> None:
    text = orjson.dumps(bundle(patient(), observation())).decode()
    assert parse_bundle(text, "upload").patient_id == "p1"
    assert parse_bundle(text.encode(), "upload").origin == "upload"
    with pytest.raises(InputError) as caught:
        parse_bundle("[]", "upload")
    assert caught.value.location == Location(file="upload")


def test_patient_resources_lists_must_run_parallel() -> None:
    with pytest.raises(ValueError, match="parallel"):
        PatientResources("p1", [patient()], [], "x")


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(InputError) as caught:
        read_bundle_file(path)
    assert str(caught.value) == f"{path}: file not found"


def test_folder_given_as_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder, not a Bundle file") as caught:
        read_bundle_file(tmp_path)
    assert caught.value.location.file == str(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "p.json", bundle(patient()))
    path.chmod(0)
    with pytest.raises(InputError, match="cannot read the file: Permission denied"):
        read_bundle_file(path)


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    content = b'{\n  "resourceType": "Bundle",\n  "type": "collection" "entry": []\n}'
    error = read_error(tmp_path, content)
    assert (error.location.line, error.location.column) == (3, 24)
    assert error.message.startswith("not valid JSON: ")
    assert error.snippet == '  "type": "collection" "entry": []\n                           ^'


def test_malformed_json_column_counts_characters_not_bytes(tmp_path: Path) -> None:
    content = '{"name": "Zoë Müller",\n "given": "Ünal", oops}'.encode()
    error = read_error(tmp_path, content)
    assert (error.location.line, error.location.column) == (2, 19)


def test_text_that_is_not_utf8_names_line_and_column(tmp_path: Path) -> None:
    error = read_error(tmp_path, b'{"a": 1,\n "b": "caf\xe9"}')
    assert (error.location.line, error.location.column) == (2, 11)
    assert "not UTF-8 (byte 0xe9)" in error.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not valid JSON: Input is a zero-length, empty document"),
        (b'{"a": 1}{"b": 2}', "not valid JSON: unexpected content after document"),
        (b"[" * 2000, "not valid JSON"),
    ],
)
def test_other_malformed_json(tmp_path: Path, content: bytes, message: str) -> None:
    assert read_error(tmp_path, content).message.startswith(message)


def test_ndjson_given_as_a_bundle_says_so(tmp_path: Path) -> None:
    """An export's NDJSON file named .json (one resource a line) is named as such, with the
    command that reads it; "unexpected content after document" alone left the user to guess."""
    content = b'{"resourceType": "Patient", "id": "a"}\n{"resourceType": "Patient", "id": "b"}\n'
    error = read_error(tmp_path, content)
    assert (error.location.line, error.location.column) == (2, 1)
    assert error.message == (
        "not valid JSON: unexpected content after document; one JSON object a line is NDJSON "
        "(a Bulk Data export file), which `trialsieve cohort --ndjson FOLDER` reads, not a Bundle"
    )
    missing_comma = read_error(tmp_path, b'[\n{"a": 1}\n{"b": 2}]')
    assert "NDJSON" not in missing_comma.message


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ([], "an array"),
        ("Bundle", "a string"),
        (3, "a number"),
        (None, "null"),
        (True, "true/false"),
    ],
)
def test_json_that_is_not_an_object(tmp_path: Path, content: Any, found: str) -> None:
    error = read_error(tmp_path, content)
    assert error.message == f"expected a JSON object (a FHIR Bundle), found {found}"


def test_resource_type_missing(tmp_path: Path) -> None:
    error = read_error(tmp_path, {"type": "collection", "entry": []})
    assert error.location.field == "resourceType"
    assert "no resourceType" in error.message


def test_resource_type_not_bundle_says_what_it_is(tmp_path: Path) -> None:
    error = read_error(tmp_path, patient())
    assert error.location.field == "resourceType"
    assert error.message.startswith("resourceType is 'Patient', expected 'Bundle'")


@pytest.mark.parametrize(
    ("bundle_type", "message"),
    [
        (None, "the Bundle has no type; expected one of searchset, collection"),
        ("transaction-response", "a transaction-response Bundle is not patient data"),
        ("batch-response", "a batch-response Bundle is not patient data"),
        ("history", "a history Bundle is not patient data"),
        ("bag", "Bundle type 'bag' is not a FHIR R4 Bundle type"),
        (7, "type must be a string, found a number"),
    ],
)
def test_bundle_type_refused(tmp_path: Path, bundle_type: Any, message: str) -> None:
    document = bundle(patient())
    if bundle_type is None:
        del document["type"]
    else:
        document["type"] = bundle_type
    error = read_error(tmp_path, document)
    assert error.location.field == "type"
    assert error.message.startswith(message)


@pytest.mark.parametrize("entries", [None, []])
def test_bundle_without_entries(tmp_path: Path, entries: Any) -> None:
    document = {"resourceType": "Bundle", "type": "collection"}
    if entries is not None:
        document["entry"] = entries
    error = read_error(tmp_path, document)
    assert (error.message, error.location.field) == ("the Bundle has no entries", "entry")


def test_entry_that_is_not_an_array(tmp_path: Path) -> None:
    error = read_error(tmp_path, {"resourceType": "Bundle", "type": "batch", "entry": {}})
    assert (error.message, error.location.field) == (
        "entry must be an array, found an object",
        "entry",
    )


def test_entry_that_is_not_an_object(tmp_path: Path) -> None:
    document = bundle(patient())
    document["entry"].append("Observation/o1")
    error = read_error(tmp_path, document)
    assert error.location.field == "entry[1]"
    assert error.message == "the entry must be a JSON object, found a string"


def test_entry_without_resource(tmp_path: Path) -> None:
    document = bundle(patient())
    document["entry"].append({"fullUrl": "urn:uuid:x", "request": {"method": "DELETE"}})
    error = read_error(tmp_path, document)
    assert error.location.field == "entry[1].resource"
    assert error.location.resource == "urn:uuid:x"
    assert error.message.startswith("the entry has no resource")


def test_resource_that_is_not_an_object(tmp_path: Path) -> None:
    document = bundle(patient())
    document["entry"].append({"resource": ["Observation"]})
    error = read_error(tmp_path, document)
    assert error.location.field == "entry[1].resource"
    assert error.message == "the resource must be a JSON object, found an array"


@pytest.mark.parametrize(("resource_type", "found"), [(None, "none"), ("", "''"), (4, "a number")])
def test_resource_without_resource_type(tmp_path: Path, resource_type: Any, found: str) -> None:
    document = bundle(patient(), observation())
    if resource_type is None:
        del document["entry"][1]["resource"]["resourceType"]
    else:
        document["entry"][1]["resource"]["resourceType"] = resource_type
    error = read_error(tmp_path, document)
    assert error.location.field == "entry[1].resource.resourceType"
    assert error.location.resource == "https://example.org/fhir/Observation/o1"
    assert error.message == f"the resource has no resourceType (found {found})"


def test_full_url_that_is_not_a_string(tmp_path: Path) -> None:
    document = bundle(patient())
    document["entry"][0]["fullUrl"] = 12
    assert read_error(tmp_path, document).location.field == "entry[0].fullUrl"


def test_bundle_without_patient(tmp_path: Path) -> None:
    error = read_error(tmp_path, bundle(observation()))
    assert error.message.startswith("the Bundle holds no Patient resource")


def test_bundle_with_several_patients_names_them(tmp_path: Path) -> None:
    error = read_error(
        tmp_path, bundle(patient("a"), observation(subject="Patient/a"), patient("b"))
    )
    assert error.message == (
        "the Bundle holds 2 patients: Patient/a, Patient/b; evaluate one patient per Bundle"
    )


def test_patient_without_id_or_full_url(tmp_path: Path) -> None:
    document = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient"}}],
    }
    error = read_error(tmp_path, document)
    assert (error.location.resource, error.location.field) == ("Patient#0", "id")


def test_patient_id_that_is_not_a_string(tmp_path: Path) -> None:
    document = bundle(patient())
    document["entry"][0]["resource"]["id"] = 5
    error = read_error(tmp_path, document)
    assert error.location.field == "id"
    assert error.message == "Patient.id must be a non-empty string, found a number"


@pytest.mark.parametrize(
    ("resource", "field", "message"),
    [
        (observation(subject="Patient/p2"), "subject", "refers to a different patient, Patient/p2"),
        (
            observation(subject="https://example.org/fhir/Patient/p2/_history/1"),
            "subject",
            "refers to a different patient, Patient/p2",
        ),
        (
            observation(subject="urn:uuid:11111111-2222-4333-8444-555555555555"),
            "subject",
            "refers to urn:uuid:11111111-2222-4333-8444-555555555555, which is not in this Bundle",
        ),
        (
            {
                "resourceType": "AllergyIntolerance",
                "id": "a1",
                "patient": {"reference": "Patient/p2"},
            },
            "patient",
            "refers to a different patient, Patient/p2",
        ),
    ],
)
def test_resource_of_another_patient(
    tmp_path: Path, resource: dict[str, Any], field: str, message: str
) -> None:
    error = read_error(tmp_path, bundle(patient(), resource))
    assert error.location.resource == f"{resource['resourceType']}/{resource['id']}"
    assert error.location.field == field
    assert error.message == f"{message}; the Bundle's patient is Patient/p1"


def test_resource_of_another_patient_without_id_is_named_by_full_url(tmp_path: Path) -> None:
    document = bundle(patient(), observation(subject="Patient/p2"))
    del document["entry"][1]["resource"]["id"]
    error = read_error(tmp_path, document)
    assert error.location.resource == "https://example.org/fhir/Observation/o1"
    assert str(error).startswith(
        f"{tmp_path / 'patient.json'}, https://example.org/fhir/Observation/o1, field subject: "
    )


# --------------------------------------------------------------------------- BundleFileSource


def test_source_reads_folders_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path, "b/2.json", bundle(patient("p3")))
    write(tmp_path, "a.json", bundle(patient("p1")))
    write(tmp_path, "b/1.json", bundle(patient("p2")))
    write(tmp_path, "notes.txt", b"not a Bundle")
    source: PatientSource = BundleFileSource(tmp_path)
    assert [patient_data.patient_id for patient_data in source] == ["p1", "p2", "p3"]


def test_source_reads_a_file_reached_twice_once(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", bundle(patient("p1")))
    source = BundleFileSource(path, tmp_path, str(path))
    assert source.files() == [path]
    assert [patient_data.patient_id for patient_data in source] == ["p1"]


def test_source_refuses_a_patient_in_two_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.json", bundle(patient("p1")))
    second = write(tmp_path, "b.json", bundle(patient("p1")))
    with pytest.raises(InputError) as caught:
        list(BundleFileSource(tmp_path))
    assert caught.value.location == Location(file=str(second), resource="Patient/p1")
    assert str(first) in caught.value.message


def test_source_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        list(BundleFileSource(tmp_path / "absent"))
    with pytest.raises(InputError, match=r"holds no \*\.json files"):
        BundleFileSource(tmp_path).files()
    with pytest.raises(ValueError):
        BundleFileSource()


def test_source_skips_synthea_shared_bundles_without_patient(tmp_path: Path) -> None:
    organization = {"resourceType": "Organization", "id": "org1"}
    write(
        tmp_path, "hospitalInformation1753719443038.json", bundle(organization, bundle_type="batch")
    )
    write(
        tmp_path,
        "practitionerInformation1753719443038.json",
        bundle(organization, bundle_type="batch"),
    )
    write(tmp_path, "p.json", bundle(patient()))
    assert [patient_data.patient_id for patient_data in BundleFileSource(tmp_path)] == ["p1"]


def test_source_reads_synthea_named_bundle_that_holds_a_patient(tmp_path: Path) -> None:
    write(tmp_path, "hospitalInformation1.json", bundle(patient("p9"), bundle_type="batch"))
    assert [patient_data.patient_id for patient_data in BundleFileSource(tmp_path)] == ["p9"]


def test_source_checks_synthea_named_bundles_too(tmp_path: Path) -> None:
    write(tmp_path, "hospitalInformation1.json", b"{")
    with pytest.raises(InputError, match="not valid JSON"):
        list(BundleFileSource(tmp_path))


def test_a_bundle_without_patient_holding_a_patient_s_resource_is_an_error(
    tmp_path: Path,
) -> None:
    """A Bundle of shared resources holds only resources no patient owns; one without a
    Patient that holds an Observation (or a Device of a patient) is an error naming the file
    and the resource, and the patients' Bundles are still read."""
    write(tmp_path, "p.json", bundle(patient()))
    medication = {"resourceType": "Medication", "id": "m1"}
    loose = write(tmp_path, "loose.json", bundle(medication, observation(subject="Patient/p1")))
    device = {"resourceType": "Device", "id": "d1", "patient": {"reference": "Patient/p1"}}
    owned = write(tmp_path, "owned.json", bundle(medication, device))
    errors: list[InputError] = []
    assert [each.patient_id for each in BundleFileSource(tmp_path, on_error=errors.append)] == [
        "p1"
    ]
    assert [(error.location.file, error.location.resource) for error in errors] == [
        (str(loose), "Observation/o1"),
        (str(owned), "Device/d1"),
    ]
    assert errors[0].message.startswith(
        "the Bundle holds no Patient resource, and Observation/o1 belongs to a patient; each "
        "Bundle must hold one patient's data, or only resources patients share (Device, "
    )
    assert "refers to a patient" in errors[1].message
    with pytest.raises(InputError, match="no Patient"):
        list(BundleFileSource(tmp_path))


def _medication_request(request_id: str, medication: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": request_id,
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": medication},
        "subject": {"reference": "Patient/p1"},
    }


@pytest.mark.parametrize("name", ["_shared.json", "hospitalInformation1.json", "zz.json"])
def test_a_bundle_of_shared_resources_is_read_for_every_patient_that_refers_to_them(
    tmp_path: Path, name: str
) -> None:
    """Whatever its name, a Bundle without a Patient holding only shared resources gives
    each patient the ones their Bundle refers to: by `Type/id`, by an absolute URL ending
    so, or by the shared entry's fullUrl; in the order referred to, after the patient's
    own, never twice nor one the patient's Bundle holds itself."""
    medications = [{"resourceType": "Medication", "id": f"m{number}"} for number in (1, 2, 3)]
    organization = {"resourceType": "Organization", "id": "o1", "name": "Patient First"}
    shared = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            *({"fullUrl": f"urn:uuid:{m['id']}", "resource": m} for m in medications),
            {"resource": organization},
        ],
    }
    write(tmp_path, name, shared)
    first = bundle(
        patient("p1"),
        _medication_request("r1", "urn:uuid:m2"),
        _medication_request("r2", "Medication/m1"),
        _medication_request("r3", "https://example.org/fhir/Medication/m2"),
        _medication_request("r4", "Medication/unknown"),
    )
    write(tmp_path, "p1.json", first)
    holds_its_own = bundle(
        patient("p2"),
        {"resourceType": "Medication", "id": "m3"},
        _medication_request("r5", "Medication/m3"),
    )
    holds_its_own["entry"][2]["resource"]["subject"] = {"reference": "Patient/p2"}
    write(tmp_path, "p2.json", holds_its_own)
    write(tmp_path, "p3.json", bundle(patient("p3")))
    read = {each.patient_id: each for each in BundleFileSource(tmp_path)}
    assert sorted(read) == ["p1", "p2", "p3"]
    attached = read["p1"].resources[5:]
    assert attached == [medications[1], medications[0]]
    assert read["p1"].full_urls[5:] == ["urn:uuid:m2", "urn:uuid:m1"]
    assert [resource["id"] for resource in read["p2"].resources] == ["p2", "m3", "r5"]
    assert len(read["p3"].resources) == 1


def test_source_with_on_error_reports_and_goes_on(tmp_path: Path) -> None:
    """The paths are listed first (a missing one reported), then the files without a
    Patient read (shared resources: `{oops` is one of those, and not JSON), then each
    patient's, in file order."""
    write(tmp_path, "1.json", bundle(patient("p1")))
    write(tmp_path, "2.json", b"{oops")
    write(tmp_path, "3.json", bundle(patient("p3")))
    write(tmp_path, "4.json", bundle(patient("p4"), observation(subject="Patient/p3")))
    errors: list[InputError] = []
    source = BundleFileSource(tmp_path, tmp_path / "absent", on_error=errors.append)
    assert [patient_data.patient_id for patient_data in source] == ["p1", "p3"]
    assert [error.location.file for error in errors] == [
        str(tmp_path / "absent"),
        str(tmp_path / "2.json"),
        str(tmp_path / "4.json"),
    ]


def test_synthea_examples_read(tmp_path: Path) -> None:
    patients = list(BundleFileSource(EXAMPLES))
    assert len(patients) == 20
    assert all(
        patient_data.origin.endswith(f"{patient_data.patient_id}.json") for patient_data in patients
    )
    assert all(patient_data.resources[0]["resourceType"] == "Patient" for patient_data in patients)


def test_synthea_folder_layout_with_shared_bundles(tmp_path: Path) -> None:
    """The original layout: patient Bundles beside hospital and practitioner Bundles."""
    example = next(EXAMPLES.glob("*.json"))
    shutil.copyfile(example, tmp_path / example.name)
    shared = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": {"resourceType": "Location", "id": "l"}}],
    }
    write(tmp_path, "hospitalInformation1753719443038.json", shared)
    assert [patient_data.patient_id for patient_data in BundleFileSource(tmp_path)] == [
        example.stem
    ]
