"""The line screen (`engine.cohort.line_screen`): lines left unparsed change nothing.

A cohort run that leaves unparsed the lines no criterion can read (the default) writes
exactly what a run that parses every line writes: on the shipped examples for both trials,
and for generated patients whose Observations, Conditions, Procedures and medication
resources (MedicationRequest, -Administration, -Statement) mix concept codes, inert codes,
unknown systems, text-only and missing codes, references to shared and contained
Medications, missing subjects and ids, duplicates, Periods (partial ones too, a validity
period inside `dispenseRequest`), contained resources and escaped text, with lines spoiled
after they were written (invalid JSON still ending with `}`, invalid UTF-8, a key given
twice, at the top or in the subject, escaped, a field of another type).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cohort_examples import AS_OF, CRITERIA, OUTPUT_FILES, PARTITIONS, ROOT, bundles_to_ndjson
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cohort import CohortSummary, NdjsonInput, run_cohort
from engine.cohort.line_screen import LineScreen, line_validator
from engine.cohort.ndjson_partitions import _NEEDS_PARSING, PartitionLines, _screened_label
from engine.cohort.partition import PartitionEvaluator
from engine.evaluate import CompiledCriteria
from engine.evaluate.patient import data_day
from engine.record import PatientRecord
from engine.resource_types import RESOURCE_TYPES
from engine.sources.ndjson import DEFAULT_PATIENT_FIELDS, PATIENT_FIELDS
from engine.trial import load_trial

CKD_CRITERIA = ROOT / "criteria" / "NCT03036150.yaml"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CONDITION_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SHARED_MEDICATION = "Medication/m-shared"
INERT_MEDICATION = "Medication/m-inert"


def _screened_lines(folder: Path, criteria: CompiledCriteria, resource_type: str) -> int:
    """How many lines of one type in the folder the screen would leave unparsed."""
    screen = LineScreen.from_criteria(criteria)
    count = 0
    path = folder / f"{resource_type}.000.ndjson"
    for line in path.read_bytes().splitlines() if path.exists() else ():
        resource = orjson.loads(line) if line.endswith(b"}") else None
        if resource is None or "subject" not in resource:
            continue
        if screen.skippable(line, resource["subject"]["reference"]) is not None:
            count += 1
    return count


@pytest.mark.parametrize("full", [True, False], ids=["full", "default"])
def test_a_run_parsing_every_line_writes_what_a_screened_run_writes(
    ndjson_folder: Path,
    full_run: CohortSummary,
    one_worker: CohortSummary,
    trial: CompiledCriteria,
    tmp_path: Path,
    full: bool,
) -> None:
    assert _screened_lines(ndjson_folder, trial, "Observation") > 100
    assert _screened_lines(ndjson_folder, trial, "MedicationRequest") > 50
    screened = full_run if full else one_worker  # the screen is on by default
    run_cohort(
        CRITERIA,
        NdjsonInput(ndjson_folder),
        tmp_path,
        AS_OF,
        workers=1,
        partition_count=PARTITIONS,
        full=full,
        screen_lines=False,
    )
    for name in OUTPUT_FILES:
        assert (tmp_path / name).read_bytes() == (screened.out_dir / name).read_bytes(), name


def test_the_dapa_ckd_run_is_the_same_screened_or_not(tmp_path: Path) -> None:
    folder = tmp_path / "ndjson"
    bundles_to_ndjson((ROOT / "examples" / "ckd", ROOT / "examples" / "synthea"), folder)
    assert _screened_lines(folder, load_trial(CKD_CRITERIA), "Observation") > 100
    assert _screened_lines(folder, load_trial(CKD_CRITERIA), "MedicationRequest") > 50
    outputs = {}
    for screen in (False, True):
        out = tmp_path / f"out-{screen}"
        run_cohort(
            CKD_CRITERIA,
            NdjsonInput(folder),
            out,
            AS_OF,
            workers=1,
            partition_count=3,
            screen_lines=screen,
        )
        outputs[screen] = {name: (out / name).read_bytes() for name in OUTPUT_FILES}
    assert outputs[True] == outputs[False]


@pytest.mark.parametrize("full", [True, False], ids=["full", "default"])
def test_lines_nested_deeper_than_msgspec_goes_are_parsed_as_without_the_screen(
    tmp_path: Path, full: bool
) -> None:
    """msgspec gives up on nesting about 1,000 levels deep with a RecursionError (orjson reads
    1,024): such a line, screened (an inert Observation), checked for a settled patient (the
    pre-filter settles the Synthea patient) or read for its patient id in pass 1 (a Patient),
    is parsed, and the run writes what a run parsing every line writes (it ended with a
    traceback). Nesting orjson reads is evaluated; deeper nesting is an error line."""
    folder = tmp_path / "ndjson"
    bundles_to_ndjson((ROOT / "examples" / "synthea", ROOT / "examples" / "patients"), folder)
    settled = next(
        orjson.loads(line)["id"]
        for line in (folder / "Patient.000.ndjson").read_bytes().splitlines()
        if not orjson.loads(line)["id"].startswith("itp-")
    )
    inert = b'{"coding":[{"system":"http://snomed.info/sct","code":"302870006"}]}'
    lines = [
        b'{"resourceType":"Observation","id":"deep-%d","status":"final","code":%s,'
        b'"subject":{"reference":"Patient/%s"},"note":%s}'
        % (number, inert, patient.encode(), _nested(depth))
        for number, (patient, depth) in enumerate(
            [
                ("itp-relapsed-candidate", DEEP),
                ("itp-relapsed-candidate", TOO_DEEP),
                (settled, DEEP),
                (settled, TOO_DEEP),
            ]
        )
    ]
    with open(folder / "Observation.000.ndjson", "ab") as observations:
        observations.writelines(line + b"\n" for line in lines)
    with open(folder / "Patient.000.ndjson", "ab") as patients:
        patients.write(
            b'{"resourceType":"Patient","id":"deep-patient","gender":"female",'
            b'"birthDate":"1980-01-01","extension":%s}\n' % _nested(DEEP)
        )
    outputs = {}
    for screen in (True, False):
        out = tmp_path / f"out-{screen}"
        summary = run_cohort(
            CRITERIA,
            NdjsonInput(folder),
            out,
            AS_OF,
            workers=1,
            partition_count=2,
            full=full,
            screen_lines=screen,
            keep_store=False,
        )
        outputs[screen] = {name: (out / name).read_bytes() for name in OUTPUT_FILES}
        assert summary.problems == 2  # the two lines nested deeper than orjson reads
        assert "deep-patient" in (out / "cohort.csv").read_text()
    assert outputs[True] == outputs[False]
    errors = outputs[True]["errors.ndjson"].decode()
    assert errors.count("depth limit exceeded") == 2


@pytest.mark.parametrize("criteria_path", [CRITERIA, CKD_CRITERIA], ids=["itp", "ckd"])
def test_the_criteria_look_up_no_concept_but_those_they_read(
    criteria_path: Path,
    ndjson_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The screen leaves unparsed the lines of concepts the criteria do not read
    (`CompiledCriteria.concepts_read`): evaluating and reporting every example patient, in
    full and from the pre-filter's preview, asks a record for no other concept (atoms,
    computed values' inputs, medication uses, the pre-filter's requirements)."""
    asked: set[str] = set()
    resources_of_concept = PatientRecord.resources_of_concept
    holds_any_of = PatientRecord.holds_any_of

    def asking(self: PatientRecord, concept_id: str, *more: Any) -> Any:
        asked.add(concept_id)
        return resources_of_concept(self, concept_id, *more)

    def asking_any(self: PatientRecord, concept_ids: frozenset[str]) -> bool:
        asked.update(concept_ids)
        return holds_any_of(self, concept_ids)

    monkeypatch.setattr(PatientRecord, "resources_of_concept", asking)
    monkeypatch.setattr(PatientRecord, "holds_any_of", asking_any)
    folder = ndjson_folder
    if criteria_path == CKD_CRITERIA:
        folder = tmp_path / "ndjson"
        bundles_to_ndjson((ROOT / "examples" / "ckd", ROOT / "examples" / "synthea"), folder)
    for full in (True, False):
        out = tmp_path / f"out-{full}"
        run_cohort(criteria_path, NdjsonInput(folder), out, AS_OF, workers=1, full=full)
    read = load_trial(criteria_path).concepts_read
    assert asked <= read, asked - read
    # a computed value's input (eGFR's creatinine), a lab, a medication use
    assert {"creatinine", "urine-albumin-creatinine-ratio", "sglt2-inhibitors"} <= asked or {
        "hemoglobin",
        "platelets",
        "anticoagulant-or-antiplatelet",
    } <= asked


# --------------------------------------------------------------------------- generated patients

# haemoglobin, platelets (NCT05315778's), creatinine (both trials'), urine albumin/creatinine
# (DAPA-CKD's), body weight (a concept neither trial's criteria read)
_CONCEPT_CODES = ("718-7", "777-3", "2160-0", "9318-7", "29463-7")
_INERT_CODES = ("72514-3", "8867-4", "9279-1")  # pain score, heart rate, respiratory rate
_codings = st.one_of(
    st.tuples(st.just(LOINC), st.sampled_from(_INERT_CODES)),  # most often: inert
    st.tuples(st.just(LOINC), st.sampled_from(_INERT_CODES)),
    st.tuples(st.just(LOINC), st.sampled_from(_CONCEPT_CODES)),
    st.tuples(st.just("http://example.org/local"), st.sampled_from(("A1", "B2"))),
).map(lambda pair: {"system": pair[0], "code": pair[1], "display": "x"})
_code = st.one_of(
    _codings.map(lambda coding: {"coding": [coding]}),
    _codings.map(lambda coding: {"coding": [coding]}),
    st.lists(_codings, min_size=1, max_size=2).map(lambda codings: {"coding": codings}),
    st.just({"text": "free text only"}),
    st.just({"coding": []}),
    st.none(),
)
_day = st.dates(dt.date(2015, 1, 1), dt.date(2026, 10, 31)).map(lambda day: day.isoformat())
_dating = st.one_of(
    _day.map(lambda day: {"effectiveDateTime": day + "T10:00:00+00:00"}),
    st.tuples(_day, _day).map(lambda days: {"effectivePeriod": {"start": days[0], "end": days[1]}}),
    st.just({}),
)


_component = st.one_of(
    _code.map(lambda code: {"code": code or {"text": "none"}}),
    _code.map(lambda code: {"code": code or {"text": "none"}, "valueString": "yes"}),
    st.just({"valueString": "no code"}),
    st.just({"code": None}),
)
_components = st.one_of(
    st.lists(_component, min_size=1, max_size=4),
    st.just([]),
    st.just(None),
    st.just(["not an object"]),
)
"""An Observation's `component`: mostly objects with codes inert or not, sometimes odd."""


@st.composite
def _observation(draw: st.DrawFn, number: int) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Observation"}
    if draw(st.integers(0, 29)):
        resource["id"] = f"obs-{draw(st.integers(0, number))}"  # sometimes a duplicate id
    resource["status"] = draw(st.sampled_from(("final", "amended", "entered-in-error")))
    code = draw(_code)
    if code is not None:
        resource["code"] = code
    subject = draw(st.sampled_from(("own",) * 6 + ("none", "patient")))
    if subject == "own":
        resource["subject"] = {"reference": "Patient/p1"}
    elif subject == "patient":
        resource["patient"] = {"reference": "Patient/p1"}
    resource.update(draw(_dating))
    resource["issued"] = draw(_day) + "T11:00:00+00:00"
    resource["valueQuantity"] = {
        "value": draw(st.floats(1, 500, allow_nan=False)),
        "unit": "g/dL",
        "system": "http://unitsofmeasure.org",
        "code": "g/dL",
    }
    if draw(st.integers(0, 3)) == 0:
        resource["component"] = draw(_components)
    if draw(st.integers(0, 7)) == 0:
        resource["note"] = [{"text": 'said "fine"'}]  # escaped text
    if draw(st.integers(0, 9)) == 0:
        resource["contained"] = [{"resourceType": "Device", "id": "d1"}]
    return resource


_period = st.one_of(
    st.tuples(_day, _day).map(lambda days: {"start": days[0], "end": days[1]}),
    _day.map(lambda day: {"start": day}),
    _day.map(lambda day: {"end": day + "T08:00:00Z"}),
    st.just({"start": "2020"}),  # a partial date: no day
)


@st.composite
def _condition(draw: st.DrawFn, number: int) -> dict[str, Any]:
    code = draw(st.sampled_from(("444814009", "195662009", "10509002", "32273002", "709044004")))
    resource: dict[str, Any] = {"resourceType": "Condition"}
    if draw(st.integers(0, 19)):
        resource["id"] = f"condition-{number}"
    resource["clinicalStatus"] = {"coding": [{"system": CONDITION_STATUS, "code": "active"}]}
    resource["code"] = {"coding": [{"system": SNOMED, "code": code}]}
    resource["subject"] = {"reference": "Patient/p1"}
    onset = draw(st.sampled_from(("dateTime", "period", "none")))
    if onset == "dateTime":
        resource["onsetDateTime"] = draw(_day) + "T09:00:00+00:00"
    elif onset == "period":
        resource["onsetPeriod"] = draw(_period)
    if draw(st.booleans()):
        resource["abatementPeriod"] = draw(_period)
    if draw(st.booleans()):
        resource["recordedDate"] = draw(_day)
    return resource


@st.composite
def _procedure(draw: st.DrawFn, number: int) -> dict[str, Any]:
    code = draw(st.sampled_from(("430193006", "710824005", "70536003", "265764009")))
    resource: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": f"procedure-{draw(st.integers(0, number))}",  # sometimes a duplicate id
        "status": "completed",
        "code": {"coding": [{"system": SNOMED, "code": code, "display": "a [bracketed] name"}]},
        "subject": {"reference": "Patient/p1"},
    }
    if draw(st.booleans()):
        resource["performedPeriod"] = draw(_period)
    else:
        resource["performedDateTime"] = draw(_day) + "T09:00:00+00:00"
    if draw(st.integers(0, 5)) == 0:
        resource["contained"] = [{"resourceType": "Location", "id": "l1"}]
    return resource


_MEDICATION_CONCEPT_CODES = ("314076", "309362", "1664463")  # lisinopril, clopidogrel, tacrolimus
_MEDICATION_INERT_CODES = ("310798", "308136", "1535362")  # thiazide, amlodipine, fluoride gel
_medication_codings = st.one_of(
    st.tuples(st.just(RXNORM), st.sampled_from(_MEDICATION_INERT_CODES)),  # most often: inert
    st.tuples(st.just(RXNORM), st.sampled_from(_MEDICATION_INERT_CODES)),
    st.tuples(st.just(RXNORM), st.sampled_from(_MEDICATION_CONCEPT_CODES)),
    st.tuples(st.just("http://example.org/local-drugs"), st.just("D1")),
).map(lambda pair: {"system": pair[0], "code": pair[1], "display": "a drug"})
_medication_concept = st.one_of(
    _medication_codings.map(lambda coding: {"coding": [coding], "text": "a drug"}),
    _medication_codings.map(lambda coding: {"coding": [coding]}),
    st.lists(_medication_codings, min_size=1, max_size=2).map(lambda codings: {"coding": codings}),
    st.just({"text": "free text only"}),
    st.just("not an object"),
)
_late_day = st.dates(dt.date(2026, 6, 1), dt.date(2027, 6, 1)).map(lambda day: day.isoformat())
_dispense_request = st.one_of(
    _period.map(lambda period: {"validityPeriod": period, "numberOfRepeatsAllowed": 3}),
    _late_day.map(lambda day: {"validityPeriod": {"start": "2026-01-01", "end": day}}),
    _late_day.map(lambda day: {"validityPeriod": {"start": day}}),
    st.just({"quantity": {"value": 30, "unit": "tablet"}}),
    st.just({"validityPeriod": None}),
    st.just(None),
    st.just(["not an object"]),
)


@st.composite
def _medication(draw: st.DrawFn, number: int) -> dict[str, Any]:
    """A MedicationRequest, -Administration or -Statement: its medication a concept inert or
    not (or text only, or not an object), a reference to a shared or contained Medication
    (sometimes beside a concept), none; its dating fields in any mix (the validity period
    inside `dispenseRequest`, which may be null or of another type)."""
    resource_type = draw(
        st.sampled_from(("MedicationRequest", "MedicationAdministration", "MedicationStatement"))
    )
    resource: dict[str, Any] = {"resourceType": resource_type}
    if draw(st.integers(0, 19)):
        resource["id"] = f"medication-{draw(st.integers(0, number))}"  # sometimes a duplicate
    resource["status"] = draw(st.sampled_from(("active", "completed", "stopped", "on-hold")))
    medication = draw(st.sampled_from(("concept",) * 6 + ("shared", "contained", "both", "none")))
    if medication in ("concept", "both"):
        resource["medicationCodeableConcept"] = draw(_medication_concept)
    if medication in ("shared", "both"):
        target = draw(st.sampled_from((SHARED_MEDICATION, INERT_MEDICATION, "Medication/m-gone")))
        resource["medicationReference"] = {"reference": target}
    if medication == "contained":
        resource["contained"] = [
            {
                "resourceType": "Medication",
                "id": "m1",
                "code": {"coding": [{"system": RXNORM, "code": "314076"}]},
            }
        ]
        resource["medicationReference"] = {"reference": "#m1"}
    subject = draw(st.sampled_from(("own",) * 6 + ("none", "patient")))
    if subject == "own":
        resource["subject"] = {"reference": "Patient/p1"}
    elif subject == "patient":
        resource["patient"] = {"reference": "Patient/p1"}
    for name in ("authoredOn", "effectiveDateTime", "dateAsserted"):
        if draw(st.integers(0, 2)) == 0:
            resource[name] = draw(_day) + "T09:00:00+00:00"
    if draw(st.integers(0, 2)) == 0:
        resource["effectivePeriod"] = draw(_period)
    if draw(st.booleans()):
        resource["dispenseRequest"] = draw(_dispense_request)
    if draw(st.booleans()):
        resource["dosageInstruction"] = [
            {"text": "1 tablet daily", "doseAndRate": [{"doseQuantity": {"value": 1.5}}]}
        ]
    return resource


DEEP = 1_000
"""Nesting as deep as orjson reads (it allows 1,024 levels) but deeper than msgspec goes under
the interpreter's recursion limit (it raises RecursionError, not DecodeError)."""
TOO_DEEP = 1_100
"""Nesting deeper than orjson reads: the line is not valid JSON for the run."""


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@contextlib.contextmanager
def python_s_recursion_limit() -> Iterator[None]:
    """Python's default recursion limit, as a cohort run has it, for the code under test:
    Hypothesis raises the limit while it runs a test, under which the screen validates every
    line with simdjson (`nesting_checked_by_msgspec`), and the checks of msgspec's own would
    go untested."""
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)
    try:
        yield
    finally:
        sys.setrecursionlimit(raised)


_MANGLINGS = {
    "deep nesting": (b'"subject":', b'"note":' + _nested(DEEP) + b',"subject":'),
    "empty id": (b'"id":', b'"id":"","note":'),  # labels no resource: labelled by position
    "nesting too deep": (b'"subject":', b'"note":' + _nested(TOO_DEEP) + b',"subject":'),
    # a key escaped: orjson reads `"c\u006fde"` as `code`, `"c\u006fntained"` as `contained`
    "escaped key": (b'"code":', b'"c\\u006fde":'),
    "escaped contained": (
        b'"subject":',
        b'"c\\u006fntained":[{"resourceType":"Device"}],"subject":',
    ),
    "escaped value": (b'"reference":"Patient/p1"', b'"reference":"Patient\\/p\\u0031"'),
    "non-ascii": (b'"subject":', b'"note":[{"text":"caf\xc3\xa9 \xe2\x82\xac"}],"subject":'),
    "utf-8": (b'"subject"', b'"sub\xffject"'),
    "invalid utf-8 skipped": (b'"subject":', b'"note":[{"text":"\xed\xa0\x80"}],"subject":'),
    "invalid utf-8 in code": (b'"code":{', b'"code":{"text":"\xc0\xaf",'),
    "overflowing number in code": (b'"code":{', b'"code":{"rank":-2e999,'),
    "big integer": (b'"subject":', b'"count":123456789012345678901234567890,"subject":'),
    "overflowing number": (b'"subject":', b'"count":1e400,"subject":'),
    "long number": (b'"subject":', b'"count":' + b"9" * 400 + b',"subject":'),
    "nested keys": (
        b'"subject":',
        b'"extension":[{"id":"x","subject":{"reference":"Patient/p9"},'
        b'"code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]},'
        b'"effectiveDateTime":"2031-01-01","contained":[]}],"subject":',
    ),
    "repeated subject": (
        b'"subject":{"reference":"Patient/p1"}',
        b'"subject":{"reference":"Patient/p1"},"subject":{"reference":"Patient/p2"}',
    ),
    "repeated own subject": (
        b'"subject":{"reference":"Patient/p1"}',
        b'"subject":{"reference":"Patient/p2"},"subject":{"reference":"Patient/p1"}',
    ),
    "repeated period end": (b'Period":{', b'Period":{"end":"2032-01-01",'),
    "escaped date key": (b'"issued":', b'"issu\\u0065d":'),
    "repeated date": (b'"subject":', b'"issued":"2031-05-05T00:00:00Z","subject":'),
    "date of another type": (b'"subject":', b'"effectiveDateTime":17,"subject":'),
    "repeated reference": (
        b'{"reference":"Patient/p1"',
        b'{"reference":"Patient/p1","reference":"x"',
    ),
    "subject of another type": (b'"subject":{"reference":"Patient/p1"}', b'"subject":["p1"]'),
    "reference of another type": (b'"reference":"Patient/p1"', b'"reference":["Patient/p1"]'),
    "escaped medication reference": (
        b'"subject":',
        b'"medic\\u0061tionReference":{"reference":"Medication/m-shared"},"subject":',
    ),
    "repeated medication": (
        b'"medicationCodeableConcept":',
        b'"medicationCodeableConcept":{"coding":[{"system":"%s","code":"314076"}]},'
        b'"medicationCodeableConcept":' % RXNORM.encode(),
    ),
    "medication of another type": (b'"subject":', b'"medicationCodeableConcept":7,"subject":'),
    "later validity period": (
        b'"subject":',
        b'"dispenseRequest":{"validityPeriod":{"start":"2031-02-02"}},"subject":',
    ),
    "null dispense request": (b'"subject":', b'"dispenseRequest":null,"subject":'),
    "escaped validity period": (b'"validityPeriod":', b'"validit\\u0079Period":'),
    "repeated resource type": (b'"id":', b'"resourceType":"Encounter","id":'),
}
"""Text edits of a written line (the first occurrence of the first text becomes the second)."""


def _mangled(text: bytes, how: str) -> bytes:
    """A line spoiled or edited after it was written: invalid JSON that still ends with `}`,
    a `code` key given twice (orjson keeps the last), or one of `_MANGLINGS` (escapes,
    non-ASCII and invalid UTF-8, big and overflowing numbers, keys nested elsewhere or given
    twice, a dating field of another type)."""
    if how == "invalid":
        return text.replace(b'":', b'";', 1)
    if how == "repeated key" and b'"code":{' in text:
        concept = b'"code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]},'
        at = text.index(b'"code":{')
        return text[:at] + concept + text[at:]
    if how in _MANGLINGS:
        old, new = _MANGLINGS[how]
        return text.replace(old, new, 1)
    return text


@st.composite
def _patient_lines(draw: st.DrawFn) -> list[bytes]:
    count = draw(st.integers(1, 12))
    resources = [draw(_observation(number)) for number in range(count)]
    resources += [draw(_condition(number)) for number in range(draw(st.integers(0, 3)))]
    resources += [draw(_procedure(number)) for number in range(draw(st.integers(0, 4)))]
    resources += [draw(_medication(number)) for number in range(draw(st.integers(0, 4)))]
    if draw(st.integers(0, 5)) == 0:
        resources.append(_OWN_MEDICATION)
    resources = draw(st.permutations(resources))
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}
    texts = [orjson.dumps(patient)] + [orjson.dumps(resource) for resource in resources]
    hows = st.sampled_from(("as written",) * 12 + ("invalid", "repeated key", *_MANGLINGS))
    texts = [texts[0]] + [_mangled(text, draw(hows)) for text in texts[1:]]
    return texts


_SHARED_MEDICATION_TEXT = orjson.dumps(
    {
        "resourceType": "Medication",
        "id": "m-shared",
        "code": {"coding": [{"system": RXNORM, "code": "309362"}]},  # clopidogrel: a concept
    }
)
_INERT_MEDICATION_TEXT = orjson.dumps(
    {
        "resourceType": "Medication",
        "id": "m-inert",
        "code": {"coding": [{"system": RXNORM, "code": "308136"}]},  # amlodipine: none
    }
)
_OWN_MEDICATION = {
    "resourceType": "Medication",
    "id": "m-inert",
    "code": {"coding": [{"system": RXNORM, "code": "314076"}]},  # lisinopril: DAPA-CKD's
    "subject": {"reference": "Patient/p1"},
}
"""A Medication of the patient's own with the `Type/id` of a shared one: their record
resolves the reference to it, not to the shared one."""


Runs = list[tuple[int, bytes | None]]
"""A patient's lines cut into runs: each run's number of lines and how pass 1 says every line
of it starts (`{"resourceType":"<T>"`), or None."""


def _results(
    criteria: CompiledCriteria,
    lines: list[bytes],
    screen: bool,
    full: bool,
    cut: Runs | None = None,
) -> tuple[bytes, ...]:
    """The partition result (every patient's result line, problems) of a cohort worker, and
    what it stores for re-runs (outcomes, records: the Medications references resolve to).
    `cut`: the lines as these runs (else one run of unknown start)."""
    cut = cut or [(len(lines), None)]
    chunks: list[bytes | None] = []
    runs = []
    first = 0
    for count, _head in cut:  # one patient's lines, from line 1 of range 0
        chunks.append(b"".join(line + b"\n" for line in lines[first : first + count]))
        runs.append((b"p1", 0, first + 1, count))
        first += count
    shared = {
        SHARED_MEDICATION: _SHARED_MEDICATION_TEXT,
        INERT_MEDICATION: _INERT_MEDICATION_TEXT,
    }
    heads = tuple(head for _count, head in cut)
    files = ("Observation.ndjson",)
    partition = PartitionLines(0, tuple(chunks), tuple(runs), files, ((0, 1),), shared, heads=heads)
    evaluator = PartitionEvaluator(
        criteria, AS_OF, {}, full=full, screen_lines=screen, store_key="generated"
    )
    result = evaluator.evaluate(partition)
    assert result.stored is not None and result.stored.records is not None
    return result.data, result.stored.outcomes, result.stored.records


def test_a_resource_with_an_empty_id_is_labelled_as_without_the_screen(
    both_trials: tuple[CompiledCriteria, CompiledCriteria],
) -> None:
    """An empty id labels no resource: the record labels it by its position among the
    patient's resources (`Procedure#3`), which lines left unparsed would change, so the
    patient is read again without the screen, as for a resource without an id (the screened
    run's reports named another position). Two such resources are not duplicates."""
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}
    subject = {"reference": "Patient/p1"}
    inert = {"coding": [{"system": SNOMED, "code": "302870006"}]}
    resources: list[dict[str, Any]] = [
        {"resourceType": "Observation", "id": f"inert-{number}", "status": "final",
         "code": inert, "subject": subject, "effectiveDateTime": "2020-01-01"}
        for number in range(3)
    ]  # fmt: skip
    resources += [
        {"resourceType": "Procedure", "id": "", "status": "completed",
         "code": {"text": "spleen removal (local)"}, "subject": subject,
         "performedDateTime": "2019-01-01"},
        {"resourceType": "Observation", "id": "", "status": "final",
         "code": {"text": "platelets (local)"}, "subject": subject,
         "effectiveDateTime": "2021-01-01", "valueQuantity": {"value": 50, "unit": "10*9/L"}},
        {"resourceType": "Observation", "id": "", "status": "final", "code": inert,
         "subject": subject, "effectiveDateTime": "2020-02-01"},
    ]  # fmt: skip
    lines = [orjson.dumps(resource) for resource in (patient, *resources)]
    for criteria in both_trials:
        for full in (False, True):
            with python_s_recursion_limit():
                screened = _results(criteria, lines, screen=True, full=full)
                assert screened == _results(criteria, lines, screen=False, full=full)
            if criteria is both_trials[0] and full:
                assert b"Procedure#4" in screened[0]  # its position among all resources
                assert b"the same resource as" not in screened[0]


@pytest.fixture(scope="module")
def both_trials(trial: CompiledCriteria) -> tuple[CompiledCriteria, CompiledCriteria]:
    return trial, load_trial(CKD_CRITERIA)


def test_a_medication_of_the_patient_s_own_stands_for_the_shared_one(
    both_trials: tuple[CompiledCriteria, CompiledCriteria],
) -> None:
    """A patient's line referring to a shared Medication whose code is inert is skipped,
    unless the patient has a Medication of their own with its `Type/id` (their record
    resolves the reference to that one, here lisinopril, which DAPA-CKD reads): then the
    lines are read again without the screen, and the results are those of a run parsing
    every line (without the check, the DAPA-CKD run would miss the lisinopril)."""
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}
    request = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": INERT_MEDICATION},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-09-01T10:00:00Z",
    }
    later = {  # a heart rate, inert: the skipped line of the latest day, parsed after all
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-10-01T10:00:00Z",
    }
    for own_first in (True, False):
        resources = [_OWN_MEDICATION, request] if own_first else [request, _OWN_MEDICATION]
        resources.append(later)
        lines = [orjson.dumps(patient), *map(orjson.dumps, resources)]
        for criteria in both_trials:
            for full in (False, True):
                screened = _results(criteria, lines, screen=True, full=full)
                assert screened == _results(criteria, lines, screen=False, full=full)


@given(lines=_patient_lines())
def test_generated_patients_get_the_same_results_screened_or_not(
    both_trials: tuple[CompiledCriteria, CompiledCriteria], lines: list[bytes]
) -> None:
    with python_s_recursion_limit():
        for criteria in both_trials:
            for full in (False, True):
                screened = _results(criteria, lines, screen=True, full=full)
                assert screened == _results(criteria, lines, screen=False, full=full)


_HEAD = re.compile(rb'\{"resourceType":"[A-Za-z]+"')


def _common_head(lines: list[bytes]) -> bytes | None:
    """How every one of the lines starts (`{"resourceType":"<T>"`), if they all start alike."""
    heads = {found.group() if found else None for found in map(_HEAD.match, lines)}
    return heads.pop() if len(heads) == 1 else None


@st.composite
def _runs(draw: st.DrawFn) -> tuple[list[bytes], Runs]:
    """A patient's generated lines, sorted by type or not, cut into runs (of consecutive
    lines of one start, or anywhere: types mixed into a run), each run with how all its
    lines start when they do, as pass 1 gives it, or without."""
    lines = draw(_patient_lines())
    if draw(st.booleans()):
        lines = [lines[0], *sorted(lines[1:], key=lambda line: line[:30])]
    counts: list[int] = []
    if draw(st.booleans()):
        for previous, line in zip([b"", *lines], lines, strict=False):
            if counts and _common_head([previous, line]) is not None:
                counts[-1] += 1
            else:
                counts.append(1)
    else:
        left = len(lines)
        while left:
            counts.append(draw(st.integers(1, left)))
            left -= counts[-1]
    cut: Runs = []
    first = 0
    for count in counts:
        head = _common_head(lines[first : first + count])
        cut.append((count, draw(st.sampled_from((head, None)))))
        first += count
    return lines, cut


@given(cut=_runs())
def test_runs_of_one_type_get_the_same_results_screened_or_not(
    both_trials: tuple[CompiledCriteria, CompiledCriteria], cut: tuple[list[bytes], Runs]
) -> None:
    """The screen leaves unparsed the lines of a run pass 1 says start as a type it may skip
    without looking at their start (`LineScreen.skippable_started`), and parses those of a
    run of another type without asking it: the same results as every line parsed."""
    lines, runs = cut
    with python_s_recursion_limit():
        for criteria in both_trials:
            for full in (False, True):
                screened = _results(criteria, lines, screen=True, full=full, cut=runs)
                assert screened == _results(criteria, lines, screen=False, full=full)


@st.composite
def _other_resource(draw: st.DrawFn, number: int) -> dict[str, Any]:
    """A resource of a type the screen never skips (a settled patient's lines are of every
    type): its patient in `subject` or, per type, `patient`."""
    resource_type = draw(st.sampled_from(("Encounter", "MedicationRequest", "Immunization")))
    field = "patient" if resource_type == "Immunization" else "subject"
    resource: dict[str, Any] = {"resourceType": resource_type}
    if draw(st.integers(0, 9)):
        resource["id"] = f"other-{number}"
    resource["status"] = "finished"
    resource[field] = {"reference": draw(st.sampled_from(("Patient/p1", "Patient/p2")))}
    resource["code"] = {"coding": [{"system": SNOMED, "code": "185349003"}]}
    return resource


@st.composite
def _line(draw: st.DrawFn) -> tuple[bytes, bool]:
    """One written line, as written or spoiled/edited (`_mangled`), and whether it is as
    written."""
    number = draw(st.integers(0, 3))
    resource = draw(
        st.one_of(
            _observation(number),
            _condition(number),
            _procedure(number),
            _medication(number),
            _other_resource(number),
        )
    )
    how = draw(st.sampled_from(("as written",) * 6 + ("invalid", "repeated key", *_MANGLINGS)))
    written = orjson.dumps(resource)
    text = _mangled(written, how)
    return text, text == written


def _parsed(text: bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _skippable_by_orjson(screen: LineScreen, resource: Any) -> tuple[str, str, str] | None:
    """What the screen may say of a line, decided on the line parsed by orjson."""
    if type(resource) is not dict or resource.get("resourceType") not in screen.types:
        return None
    resource_type = resource["resourceType"]
    medication = RESOURCE_TYPES[resource_type].medication
    if "contained" in resource:  # (a medicationReference decides only with shared resources)
        return None
    known = RESOURCE_TYPES[resource_type]
    for dating_field in (*known.start_fields, *known.end_fields):
        container = dating_field.container
        if container in resource and type(resource[container]) is not dict:
            return None  # a container of another JSON type (`null` too): parsed
    if resource_type == "Observation" and "component" in resource:
        components = resource["component"]
        if type(components) is not list or not components:
            return None
        for component in components:
            if type(component) is not dict or not screen._inert_code(component.get("code")):
                return None
    subject, resource_id = resource.get("subject"), resource.get("id")
    if type(subject) is not dict or subject.get("reference") != "Patient/p1":
        return None
    coded = resource.get("medicationCodeableConcept" if medication else "code")
    if type(resource_id) is not str or not resource_id or not screen._inert_code(coded):
        return None
    return resource_type, f"{resource_type}/{resource_id}", data_day(resource)


@settings(max_examples=300)
@given(line=_line())
def test_a_line_the_screen_skips_is_one_orjson_reads_as_inert(
    both_trials: tuple[CompiledCriteria, CompiledCriteria], line: tuple[bytes, bool]
) -> None:
    """Whatever the line (keys escaped, repeated or nested, non-ASCII, invalid UTF-8, big or
    overflowing numbers, contained resources), the screen skips it only when orjson parses
    it into a resource of a skippable type with the same `Type/id` and data day, the
    patient's subject, an inert code, components (if any) with inert codes and no contained
    resources; a line as written is skipped exactly then."""
    text, as_written = line
    resource = _parsed(text)
    for criteria in both_trials:
        screen = LineScreen.from_criteria(criteria)
        with python_s_recursion_limit():
            verdict = screen.skippable(text, "Patient/p1")
            # Pass 2 reads each line with its line end: the same verdict.
            assert screen.skippable(text + b"\n", "Patient/p1") == verdict
        expected = _skippable_by_orjson(screen, resource)
        if verdict is not None:
            assert verdict == expected
        elif as_written:
            assert expected is None


def _label_by_orjson(resource: Any) -> str | object | None:
    """What `_screened_label` may say of a line, decided on the line parsed by orjson."""
    if type(resource) is not dict:
        return _NEEDS_PARSING
    resource_type = resource.get("resourceType")
    if type(resource_type) is not str or not resource_type or resource_type == "Patient":
        return _NEEDS_PARSING
    holder = resource.get(PATIENT_FIELDS.get(resource_type, DEFAULT_PATIENT_FIELDS)[0])
    if type(holder) is not dict or holder.get("reference") != "Patient/p1":
        return _NEEDS_PARSING
    resource_id = resource.get("id")
    return f"{resource_type}/{resource_id}" if type(resource_id) is str and resource_id else None


@settings(max_examples=300)
@given(line=_line())
def test_a_settled_patient_s_line_is_labelled_as_orjson_reads_it(
    both_trials: tuple[CompiledCriteria, CompiledCriteria], line: tuple[bytes, bool]
) -> None:
    """A settled patient's line is checked without being built (`_screened_label`): it is
    left to parsing, or labelled with the `Type/id` orjson reads (a repeated key: the last
    value), only when orjson parses it into a resource whose patient field names the
    patient; a line as written is never left to parsing needlessly. Read first through the
    Struct of its type (`LineScreen.decode_kept`, of either trial), it gets the same answer."""
    text, as_written = line
    resource = _parsed(text)
    with python_s_recursion_limit():
        validate = line_validator((text,))  # as pass 2 checks a run of lines, first
        label = _screened_label(validate, text, "Patient/p1")
        assert _screened_label(validate, text + b"\n", "Patient/p1") == label  # line end
        for criteria in both_trials:
            decode_kept = LineScreen.from_criteria(criteria).decode_kept
            assert _screened_label(validate, text, "Patient/p1", decode_kept) == label
            assert _screened_label(validate, text + b"\n", "Patient/p1", decode_kept) == label
    expected = _label_by_orjson(resource)
    if label is not _NEEDS_PARSING:
        assert label == expected
    elif as_written:
        assert expected is _NEEDS_PARSING


def test_under_a_raised_recursion_limit_every_line_is_validated(trial: CompiledCriteria) -> None:
    """Where the recursion limit lets msgspec nest deeper than orjson reads (1,024 levels), a
    line nested deeper is validated by simdjson, which rejects it: it is parsed, not skipped
    (under Python's default limit msgspec gives up first, and plain ASCII lines need no
    simdjson)."""
    screen = LineScreen.from_criteria(trial)
    inert = b'{"coding":[{"system":"http://snomed.info/sct","code":"302870006"}]}'
    line = (
        b'{"resourceType":"Observation","id":"o1","code":%s,"subject":{"reference":"Patient/p1"}%s}'
    )
    plain, deep = line % (inert, b""), line % (inert, b',"note":' + _nested(TOO_DEEP))
    raised = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(5_000)
        assert line_validator((plain,)) is not None
        assert screen.skippable(plain, "Patient/p1") is not None
        assert screen.skippable(deep, "Patient/p1") is None
        assert _screened_label(line_validator((deep,)), deep, "Patient/p1") is _NEEDS_PARSING
        sys.setrecursionlimit(1_000)
        assert line_validator((plain,)) is None
        assert screen.skippable(deep, "Patient/p1") is None
    finally:
        sys.setrecursionlimit(raised)


def test_the_screen_parses_concept_codes_and_skips_inert_ones(trial: CompiledCriteria) -> None:
    screen = LineScreen.from_criteria(trial)
    subject = "Patient/p1"

    def line(code: str, system: str = LOINC) -> bytes:
        return orjson.dumps(
            {
                "resourceType": "Observation",
                "id": "o1",
                "code": {"coding": [{"system": system, "code": code}]},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2024-05-01T10:00:00Z",
            }
        )

    assert screen.skippable(line("8867-4"), subject) == (
        "Observation",
        "Observation/o1",
        "2024-05-01",
    )
    assert screen.skippable(line("718-7"), subject) is None  # haemoglobin: a concept read
    # urine albumin/creatinine (DAPA-CKD's), body weight (a computed value's input no
    # criterion of either trial reads): concepts NCT05315778's criteria do not read
    for code in ("9318-7", "29463-7"):
        assert screen.skippable(line(code), subject) is not None
    ckd_screen = LineScreen.from_criteria(load_trial(CKD_CRITERIA))
    assert ckd_screen.skippable(line("9318-7"), subject) is None
    assert ckd_screen.skippable(line("718-7"), subject) is not None
    assert ckd_screen.skippable(line("2160-0"), subject) is None  # creatinine: eGFR's input
    assert screen.skippable(line("A1", "http://example.org/local"), subject) is None
    assert screen.skippable(line("8867-4")[:-1], subject) is None  # not a whole line
    other = "Patient/p2"
    assert screen.skippable(line("8867-4"), other) is None


def test_the_screen_skips_medications_of_inert_codes_only(trial: CompiledCriteria) -> None:
    """A medication line is skipped only when its `medicationCodeableConcept` is inert and it
    refers to no Medication (shared or contained); its data day counts the validity period
    inside `dispenseRequest`."""
    screen = LineScreen.from_criteria(trial)
    subject = "Patient/p1"

    def line(code: str = "310798", resource_type: str = "MedicationRequest", **more: Any) -> bytes:
        resource = {
            "resourceType": resource_type,
            "id": "m1",
            "status": "active",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
            "subject": {"reference": "Patient/p1"},
            "authoredOn": "2024-05-01T10:00:00Z",
        }
        return orjson.dumps(resource | more)

    for resource_type in ("MedicationRequest", "MedicationAdministration", "MedicationStatement"):
        assert screen.skippable(line(resource_type=resource_type), subject) == (
            resource_type,
            f"{resource_type}/m1",
            "2024-05-01",
        )
    validity = {"validityPeriod": {"start": "2024-05-01", "end": "2024-08-01"}}
    assert screen.skippable(line(dispenseRequest=validity), subject) == (
        "MedicationRequest",
        "MedicationRequest/m1",
        "2024-08-01",
    )
    assert screen.skippable(line("309362"), subject) is None  # clopidogrel: a concept read
    # lisinopril: a concept of DAPA-CKD's criteria (ACE inhibitors), none of NCT05315778's
    assert screen.skippable(line("314076"), subject) == (
        "MedicationRequest",
        "MedicationRequest/m1",
        "2024-05-01",
    )
    ckd_screen = LineScreen.from_criteria(load_trial(CKD_CRITERIA))
    assert ckd_screen.skippable(line("314076"), subject) is None
    assert ckd_screen.skippable(line("309362"), subject) is not None
    # with a medicationCodeableConcept, the record classifies it by that alone
    shared = {"reference": SHARED_MEDICATION}
    assert screen.skippable(line(medicationReference=shared), subject) is not None
    assert screen.skippable(line("309362", medicationReference=shared), subject) is None
    contained = [{"resourceType": "Medication", "id": "x"}]
    assert screen.skippable(line(contained=contained), subject) is None
    assert screen.skippable(line(dispenseRequest=None), subject) is None  # null: parsed
    assert screen.skippable(line(medicationCodeableConcept={"text": "a drug"}), subject) is None


def test_a_medication_line_referring_to_a_shared_medication_is_screened_by_its_code(
    trial: CompiledCriteria,
) -> None:
    """A medication line without a medicationCodeableConcept is skipped only when its
    `medicationReference` is a plain `Medication/<id>` (written as the search for shared
    references finds it) of a shared Medication whose code is inert; its reference is then
    noted (`relied`), so that a patient with a resource of their own of that `Type/id` is
    read again without the screen."""
    screen = LineScreen.from_criteria(trial)
    ckd_screen = LineScreen.from_criteria(load_trial(CKD_CRITERIA))
    subject = "Patient/p1"
    shared = {SHARED_MEDICATION: _SHARED_MEDICATION_TEXT, INERT_MEDICATION: _INERT_MEDICATION_TEXT}

    def line(reference: Any = INERT_MEDICATION) -> bytes:
        resource = {
            "resourceType": "MedicationRequest",
            "id": "m1",
            "status": "active",
            "medicationReference": {"reference": reference, "display": "a drug"},
            "subject": {"reference": "Patient/p1"},
            "authoredOn": "2024-05-01T10:00:00Z",
        }
        return orjson.dumps(resource)

    relied: list[str] = []
    skipped = ("MedicationRequest", "MedicationRequest/m1", "2024-05-01")
    assert screen.skippable(line(), subject, shared, relied) == skipped
    assert relied == [INERT_MEDICATION]
    assert screen.skippable(line(), subject) is None  # no shared resources given: parsed
    # clopidogrel: NCT05315778 reads it, DAPA-CKD does not
    relied = []
    assert screen.skippable(line(SHARED_MEDICATION), subject, shared, relied) is None
    assert relied == []
    assert ckd_screen.skippable(line(SHARED_MEDICATION), subject, shared, relied) == skipped
    assert relied == [SHARED_MEDICATION]
    for odd in (
        "Medication/m-gone",  # resolves to nothing: a data problem
        "#m-inert",  # contained
        "Medication/m-inert/_history/1",
        "https://example.org/fhir/Medication/m-inert",
        "Observation/m-inert",
        7,
        None,
    ):
        relied = []
        assert screen.skippable(line(odd), subject, shared, relied) is None, odd
        assert relied == []
    escaped = line().replace(b'"Medication/m-inert"', b'"Medication\\/m-inert"')
    assert orjson.loads(escaped)["medicationReference"]["reference"] == INERT_MEDICATION
    assert screen.skippable(escaped, subject, shared, []) is None  # not found by search
    not_a_medication = {INERT_MEDICATION: _INERT_MEDICATION_TEXT.replace(b"Medication", b"Device")}
    assert screen.skippable(line(), subject, not_a_medication, []) is None
