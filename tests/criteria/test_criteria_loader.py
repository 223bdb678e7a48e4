"""Loading criteria files: the typed model with positions, and every kind of bad input."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from engine.criteria.loader import load_criteria, parse_iso_duration
from engine.criteria.model import (
    AllOf,
    AnyOf,
    Comparator,
    CriterionKind,
    IsoDuration,
    ManualAtom,
    NotOf,
    PatientAtom,
    QuantityTest,
    ReferenceLimitTest,
    ResourceAtom,
    SourcePosition,
)
from engine.errors import CriteriaError, ErrorCollection, TrialsieveError

REPOSITORY = Path(__file__).resolve().parents[2]

VALID = """\
# yaml-language-server: $schema=criteria.schema.json
trial:
  id: NCT00000001
  title: A test trial
version: 2
mappings: [../mappings, extra/lab.yaml]
windows:
  screening:
    within: P28D
    description: The screening period
criteria:
  - id: inclusion-1-age
    kind: inclusion
    text: Ages 18-65
    expression:
      patient:
        age: {min: 18, max: 65}
        gender: [female]
  - id: exclusion-1-labs
    kind: exclusion
    text: Low hemoglobin or high ALT
    note: read from the latest results
    expression:
      any:
        - resource: Observation
          concept: hemoglobin
          within: screening
          value: "< 100 g/L"
        - resource: Observation
          concept: alt
          within: P3M
          select: max
          value: "> 20% above ULN"
          label: ALT high
        - not:
            resource: MedicationStatement
            concept: anti-cd20
          label: no anti-CD20
        - resource: [Condition, Procedure]
          concept: splenectomy
          within: ever
          select: count
          at_least: 2
          status: [active]
        - resource: AllergyIntolerance
          where: ["$[?($.criticality == 'high')]"]
          where_not: ["code"]
        - all:
            - manual:
                id: informed-consent
                question: Has the patient signed the consent form?
"""


def write(directory: Path, text: str, name: str = "trial.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_valid_file_loads_into_the_model(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    loaded = load_criteria(path)

    assert loaded.path == str(path)
    assert loaded.trial.id == "NCT00000001"
    assert loaded.trial.identifier_system == "https://clinicaltrials.gov"
    assert loaded.version == "2"
    assert loaded.mapping_paths == (
        os.path.normpath(tmp_path / "../mappings"),
        str(tmp_path / "extra" / "lab.yaml"),
    )
    assert all(os.path.isabs(mapping) for mapping in loaded.mapping_paths)
    screening = loaded.windows["screening"]
    assert screening.name == "screening"
    assert screening.description == "The screening period"
    assert screening.duration == IsoDuration(days=28, text="P28D")

    age, labs = loaded.criteria
    assert (age.id, age.kind, age.text, age.note) == (
        "inclusion-1-age",
        CriterionKind.INCLUSION,
        "Ages 18-65",
        None,
    )
    assert age.position == SourcePosition(str(path), 12, 5)
    assert age.expression == PatientAtom(
        minimum_age=18,
        maximum_age=65,
        genders=("female",),
        position=SourcePosition(str(path), 16, 7),
    )

    assert labs.kind is CriterionKind.EXCLUSION
    assert labs.note == "read from the latest results"
    assert isinstance(labs.expression, AnyOf)
    assert labs.expression.position == SourcePosition(str(path), 24, 7)
    hemoglobin, alt, negation, splenectomy, allergy, nested = labs.expression.operands

    assert isinstance(hemoglobin, ResourceAtom)
    assert hemoglobin.resource_types == ("Observation",)
    assert hemoglobin.window is screening
    assert hemoglobin.selection == "latest"  # default with a value test
    assert hemoglobin.value == QuantityTest(Comparator.LESS, 100.0, "g/L", "< 100 g/L")
    assert hemoglobin.status is None
    assert hemoglobin.position == SourcePosition(str(path), 25, 11)

    assert isinstance(alt, ResourceAtom)
    assert alt.window.name is None
    assert alt.window.duration == IsoDuration(months=3, text="P3M")
    assert alt.selection == "max"
    assert alt.value == ReferenceLimitTest(Comparator.GREATER, 1.2, "high", "> 20% above ULN")
    assert alt.label == "ALT high"

    assert isinstance(negation, NotOf)
    assert negation.label == "no anti-CD20"
    assert negation.position == SourcePosition(str(path), 35, 11)
    medication = negation.operand
    assert isinstance(medication, ResourceAtom)
    assert medication.resource_types == (
        "MedicationStatement",
        "MedicationRequest",
        "MedicationAdministration",
    )
    assert medication.window.is_ever and medication.window.name == "ever"
    assert medication.selection == "any"  # default without a value test
    assert medication.position == SourcePosition(str(path), 36, 13)

    assert isinstance(splenectomy, ResourceAtom)
    assert splenectomy.resource_types == ("Condition", "Procedure")
    assert splenectomy.window.is_ever
    assert (splenectomy.selection, splenectomy.minimum_count) == ("count", 2)
    assert splenectomy.status == ("active",)

    assert isinstance(allergy, ResourceAtom)
    assert allergy.concept is None
    assert allergy.where == ("$[?($.criticality == 'high')]",)
    assert allergy.where_not == ("code",)

    assert isinstance(nested, AllOf)
    (consent,) = nested.operands
    assert consent == ManualAtom(
        id="informed-consent",
        question="Has the patient signed the consent form?",
        position=SourcePosition(str(path), 49, 15),
    )
    assert loaded.manual_atoms == {"informed-consent": consent}


def test_the_shipped_criteria_files_load() -> None:
    files = sorted((REPOSITORY / "criteria").glob("*.yaml"))
    for path in files:
        assert load_criteria(path).criteria


def test_iso_durations() -> None:
    assert parse_iso_duration("P1Y2M3W4D") == IsoDuration(1, 2, 3, 4, "P1Y2M3W4D")
    for text in ("P", "P1H", "1D", "PT1H", "P1D2Y"):
        with pytest.raises(ValueError, match="not an ISO 8601 duration"):
            parse_iso_duration(text)


HEADER = """\
trial: {id: NCT00000001, title: A test trial}
windows:
  screening: {within: P28D}
criteria:
  - id: inclusion-1
    kind: inclusion
    text: something
    expression:
"""
# The first line of an expression below HEADER is line 9, its keys in column 7.


@pytest.mark.parametrize(
    ("expression", "line", "field", "message"),
    [
        pytest.param(
            "  resource: Observation\n  concept: hb\n  within: screenin\n",
            11,
            "within",
            "unknown window 'screenin' (did you mean 'screening'?)",
            id="unknown-window",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  within: P3X\n",
            11,
            "within",
            "ISO 8601 duration",
            id="bad-duration",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  at_least: 2\n",
            9,
            "select",
            "at_least needs select: count",
            id="at-least-without-select",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  within: P0D\n",
            11,
            "within",
            "'P0D' is a window of no length",
            id="window-of-no-length",
        ),
        pytest.param(
            "  resource: MedicationStatement\n  concept: acei\n  use: {continuous_for: P0D}\n",
            11,
            "use.continuous_for",
            "'P0D' is no length of use",
            id="continuous-for-no-length",
        ),
        pytest.param(
            "  resource: MedicationStatement\n  concept: acei\n  use: {within: P0Y0M}\n",
            11,
            "use.within",
            "'P0Y0M' is a window of no length",
            id="use-within-no-length",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  within: 6 months\n",
            11,
            "within",
            "or 'ever' (did you mean 'P6M'?).",
            id="duration-in-words",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  within: 180 days\n",
            11,
            "within",
            "(did you mean 'P180D'?)",
            id="days-in-words",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  within: 6M\n",
            11,
            "within",
            "(did you mean 'P6M'?)",
            id="duration-without-p",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  within: p6m\n",
            11,
            "within",
            "unknown window 'p6m' (did you mean 'P6M'?); named windows: screening",
            id="duration-in-lower-case",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  select: any\n  at_least: 2\n",
            11,
            "select",
            "at_least needs select: count",
            id="at-least-with-other-select",
        ),
        pytest.param(
            "  resource: Condition\n  concept: hb\n  select: count\n",
            9,
            "at_least",
            "select: count needs at_least",
            id="count-without-at-least",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  select: min\n",
            9,
            "value",
            "need a value test",
            id="min-without-value",
        ),
        pytest.param(
            "  resource: Condition\n  within: screening\n  timing: onset\n",
            9,
            "concept",
            "'concept' is missing",
            id="concept-missing",
        ),
        pytest.param(
            "  resource: AllergyIntolerance\n",
            9,
            "where",
            "give a 'where' filter",
            id="no-concept-no-where",
        ),
        pytest.param(
            '  resource: Observation\n  concept: hb\n  value: "< 100 g/LL"\n',
            11,
            "value",
            "cannot read '< 100 g/LL': unit 'g/LL' is not UCUM",
            id="value-bad-unit",
        ),
        pytest.param(
            '  resource: Observation\n  concept: hb\n  value: "100 g/L"\n',
            11,
            "value",
            "cannot read '100 g/L': a value test starts with a comparator",
            id="value-no-comparator",
        ),
        pytest.param(
            '  resource: Observation\n  concept: hb\n  value: "< 1e3"\n',
            11,
            "value",
            "without an exponent",
            id="value-exponent",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  value: != 2\n",
            11,
            "value",
            "put it in quotes",
            id="value-read-as-yaml-tag",
        ),
        pytest.param(
            '  resource: Condition\n  concept: hb\n  value: "is positive"\n',
            11,
            "value",
            "reads Observation values",
            id="value-on-condition",
        ),
        pytest.param(
            '  resource: Observation\n  concept: hb\n  valeu: "< 2"\n',
            11,
            "valeu",
            "unknown key 'valeu' (did you mean 'value'?)",
            id="unknown-key",
        ),
        pytest.param(
            "  resource: Observaton\n  concept: hb\n",
            9,
            "resource",
            "'Observaton': Write one resource type",
            id="unknown-resource-type",
        ),
        pytest.param(
            "  resource: Conditon\n  concept: hb\n",
            9,
            "resource",
            "ResearchSubject. Did you mean 'Condition'?",
            id="misspelt-resource-type",
        ),
        pytest.param(
            "  resource: [Observation, Procdure]\n  concept: hb\n",
            9,
            "resource[1]",
            "'Procdure': Not a resource type the criteria language knows: Observation, "
            "Condition, Procedure, MedicationStatement, MedicationRequest, "
            "MedicationAdministration, AllergyIntolerance, ResearchSubject. Did you mean "
            "'Procedure'?",
            id="misspelt-resource-type-in-a-list",
        ),
        pytest.param(
            "  resource: Observation\n  concept: Hemoglobin\n",
            10,
            "concept",
            "concept id",
            id="concept-id-pattern",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  select: newest\n",
            11,
            "select",
            "'newest' is not one of: latest, any, all, min, max, count",
            id="select-enum",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  status: [finale]\n",
            11,
            "status[0]",
            "(did you mean 'final'?)",
            id="status-enum",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  where: ['[?(@.a ==']\n",
            11,
            "where[0]",
            "cannot read the jsonpath",
            id="bad-jsonpath",
        ),
        pytest.param(
            "  patient: {age: {min: 70, max: 60}}\n",
            9,
            "patient.age.max",
            "age max 60 is below age min 70",
            id="age-bounds",
        ),
        pytest.param(
            "  patient: {age: {min: 18, max: '65'}}\n",
            9,
            "patient.age.max",
            "expected a whole number, found the text '65'",
            id="age-type",
        ),
        pytest.param(
            "  patient: {}\n",
            9,
            "patient",
            "give at least one of: age, gender",
            id="patient-empty",
        ),
        pytest.param(
            "  manual: {id: consent}\n",
            9,
            "manual.question",
            "'question' is missing",
            id="manual-question-missing",
        ),
        pytest.param(
            "  resource: Observation\n  concept: hb\n  manual: {id: a, question: b}\n",
            11,
            "manual",
            "exactly one of all, any, not, resource, patient, manual; found resource and manual",
            id="two-operators",
        ),
        pytest.param(
            "  resources: Observation\n",
            9,
            "resources",
            "needs one of all, any, not, resource, patient, manual; found 'resources' "
            "(did you mean 'resource'?)",
            id="no-operator",
        ),
        pytest.param(
            "  not: 3\n",
            9,
            "not",
            "an expression is a mapping",
            id="not-a-mapping",
        ),
        pytest.param(
            "  all: []\n",
            9,
            "all",
            "the list is empty",
            id="empty-all",
        ),
        pytest.param(
            "  all:\n    - resource: Observation\n      concept: hb\n      within: P1Q\n",
            12,
            "within",
            "ISO 8601 duration",
            id="nested-error",
        ),
    ],
)
def test_bad_expression_names_file_line_criterion_and_field(
    tmp_path: Path, expression: str, line: int, field: str, message: str
) -> None:
    indented = textwrap.indent(expression, "    ")
    path = write(tmp_path, HEADER + indented)
    with pytest.raises(CriteriaError) as raised:
        load_criteria(path)
    error = raised.value
    assert error.location.file == str(path)
    assert error.location.line == line
    assert error.location.criterion == "inclusion-1"
    assert error.location.field == field
    assert message in error.message
    text = str(error)
    assert text.startswith(f"{path}:{line}:")
    assert "criterion inclusion-1" in text
    assert f"field {field}" in text


@pytest.mark.parametrize(
    ("document", "line", "criterion", "field", "message"),
    [
        pytest.param(
            "trial: {id: X, title: Y}\ncriteria:\n"
            "  - {id: a, kind: inclusion, text: t, expression: {patient: {gender: [male]}}}\n"
            "  - {id: a, kind: inclusion, text: t, expression: {patient: {gender: [male]}}}\n",
            4,
            "a",
            "id",
            "duplicate criterion id 'a' (first used on line 3)",
            id="duplicate-criterion-id",
        ),
        pytest.param(
            "trial: {id: X, title: Y}\ncriteria:\n"
            "  - {id: a, kind: inclusion, text: t, expression: {manual: {id: m, question: q}}}\n"
            "  - {id: b, kind: inclusion, text: t, expression: {manual: {id: m, question: r}}}\n",
            4,
            "b",
            "manual.id",
            "duplicate manual id 'm' (first used on line 3)",
            id="duplicate-manual-id",
        ),
        pytest.param(
            "trial: {id: X, title: Y}\ncriteria:\n"
            "  - {id: a, kind: inclusion, text: t, expression: {resource: Condition, "
            "concept: c, within: screening, timing: onset}}\n",
            3,
            "a",
            "within",
            "unknown window 'screening'; this file defines none",
            id="no-windows-section",
        ),
        pytest.param(
            "trial: {id: X, title: Y}\ncriteria:\n"
            "  - id: Inclusion_1\n    kind: inclusion\n    text: t\n"
            "    expression: {patient: {gender: [male]}}\n",
            3,
            "Inclusion_1",
            "id",
            "Use lower-case letters",
            id="criterion-id-pattern",
        ),
        pytest.param(
            "trial: {id: X, title: Y}\ncriteria:\n"
            "  - id: a\n    kind: inclusio\n    text: t\n"
            "    expression: {patient: {gender: [male]}}\n",
            4,
            "a",
            "kind",
            "'inclusio' is not one of: inclusion, exclusion (did you mean 'inclusion'?)",
            id="kind-enum",
        ),
        pytest.param(
            "trial: {id: X, title: Y}\ncriteria:\n"
            "  - id: a\n    kind: inclusion\n    expression: {patient: {gender: [male]}}\n",
            3,
            "a",
            "text",
            "'text' is missing",
            id="text-missing",
        ),
        pytest.param(
            "trial: {id: X, title: Y}\ncriteria:\n"
            "  - id: a\n    kind: inclusion\n    text: t\n    expression:\n"
            "      resource: Observation\n      value: > 1.5 x ULN\n",
            8,
            "a",
            "value",
            "quote a value that starts with '>'",
            id="yaml-syntax-folded-scalar",
        ),
    ],
)
def test_bad_file_names_file_line_criterion_and_field(
    tmp_path: Path, document: str, line: int, criterion: str, field: str, message: str
) -> None:
    path = write(tmp_path, document)
    with pytest.raises(CriteriaError) as raised:
        load_criteria(path)
    error = raised.value
    assert (error.location.line, error.location.criterion, error.location.field) == (
        line,
        criterion,
        field,
    )
    assert message in error.message
    assert str(error).startswith(f"{path}:{line}:")


@pytest.mark.parametrize(
    ("document", "line", "field", "message"),
    [
        ("trial: {id: X}\ncriteria: []\n", 1, "trial.title", "'title' is missing"),
        # a title of whitespace alone (U+2028, a no-break space) is no FHIR string
        ('trial: {id: X, title: "\\u2028\\xa0 "}\ncriteria: []\n', 1, "trial.title",
         "holds no text (only whitespace)"),
        ("trial: {id: X, title: Y}\n", 1, "criteria", "'criteria' is missing"),
        ("trial: {id: X, title: Y}\ncriteria: []\n", 2, "criteria", "the list is empty"),
        ("trial: {id: X, title: Y}\ncriteria: []\nextra: 1\n", 3, "extra", "unknown key 'extra'"),
        ("trial: {id: X, title: Y}\nwindows:\n  ever: {within: P1D}\ncriteria: []\n",
         3, "windows.ever", "'ever' is reserved"),
        ("trial: {id: X, title: Y}\nwindows:\n  Screening: {within: P1D}\ncriteria: []\n",
         3, "windows.Screening", "'Screening' cannot be a name here: A window name is lower-case"),
        ("trial: {id: X, title: Y}\nwindows:\n  screening: {within: 28 days}\ncriteria: []\n",
         3, "windows.screening.within", "ISO 8601 duration"),
        ("trial: {id: X, title: Y}\nwindows:\n  screening: {within: 28 days}\ncriteria: []\n",
         3, "windows.screening.within", "(did you mean 'P28D'?)"),
        ("trial: {id: X, title: Y}\nwindows:\n  screening: {within: P0D}\ncriteria: []\n",
         3, "windows.screening.within", "'P0D' is a window of no length"),
        ("trial: {id: X, title: Y}\nmappings: ../mappings\ncriteria: []\n",
         2, "mappings", "expected a list"),
        ("trial:\n  id: X\n  title: Y\n\tversion: 1\n", 4, "version", "indent with spaces"),
        ("trial: {id: X, title: Y}\ntrial: {id: Z, title: Y}\n", 2, "trial",
         "YAML: duplicate key 'trial' (while constructing a mapping, line 1)"),
        ("- trial\n", 1, None, "a criteria file is a mapping"),
    ],
)  # fmt: skip
def test_bad_file_outside_criteria(
    tmp_path: Path, document: str, line: int, field: str | None, message: str
) -> None:
    path = write(tmp_path, document)
    with pytest.raises(TrialsieveError) as raised:
        load_criteria(path)
    errors = raised.value.errors if isinstance(raised.value, ErrorCollection) else [raised.value]
    assert any(
        error.location.line == line and error.location.field == field and message in error.message
        for error in errors
    ), str(raised.value)
    assert all(isinstance(error, CriteriaError) for error in errors)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "criteria file not found"), ("", "is empty"), ("# only a comment\n", "is empty")],
)
def test_missing_or_empty_file(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "trial.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CriteriaError, match=message) as raised:
        load_criteria(path)
    assert raised.value.location.file == str(path)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CriteriaError, match="found a folder"):
        load_criteria(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "trial.yaml"
    path.write_bytes(b"trial:\n  title: caf\xe9\n")
    with pytest.raises(CriteriaError, match="not UTF-8") as raised:
        load_criteria(path)
    assert raised.value.location.line == 2


def test_all_problems_are_reported_together_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        trial: {id: X, title: Y}
        criteria:
          - id: a
            kind: inclusion
            text: t
            expression:
              all:
                - resource: Observation
                  concept: hb
                  value: "< 2 g/LL"
                - resource: Observation
                  concept: hb
                  within: nowhere
          - id: b
            kind: exclusio
            text: t
            expression: {patient: {gender: [male]}}
          - id: a
            kind: exclusion
            text: t
            expression: {manual: {id: x, question: y}}
        """,
    )
    with pytest.raises(ErrorCollection) as raised:
        load_criteria(path)
    collection = raised.value
    assert [error.location.line for error in collection.errors] == [10, 13, 15, 18]
    assert [error.location.criterion for error in collection.errors] == ["a", "a", "b", "a"]
    assert "4 problems" in collection.message
    assert str(collection).count(str(path)) == 4


def test_five_hundred_lines_load_quickly(tmp_path: Path) -> None:
    criterion = """\
  - id: exclusion-{number}
    kind: exclusion
    text: Criterion {number}
    expression:
      any:
        - resource: Observation
          concept: hemoglobin
          within: screening
          value: "< {number}.5 g/L"
        - resource: MedicationStatement
          concept: anti-cd20
          within: P3M
        - manual:
            id: question-{number}
            question: Is it so?
"""
    header = "trial: {id: X, title: Y}\nwindows:\n  screening: {within: P28D}\ncriteria:\n"
    body = "".join(criterion.format(number=number) for number in range(34))
    path = write(tmp_path, header + body)
    assert len((header + body).splitlines()) >= 500
    load_criteria(path)  # warm up: schema, UCUM parser
    started = time.perf_counter()
    loaded = load_criteria(path)
    elapsed = time.perf_counter() - started
    assert len(loaded.criteria) == 34
    assert elapsed < 0.5, f"{elapsed:.3f} s"  # about 0.05 s on a laptop; generous for CI


def test_a_list_of_value_tests_loads_as_any_value_test(tmp_path: Path) -> None:
    from engine.criteria.model import AnswerTest, AnyValueTest, ReferenceLimitTest

    path = tmp_path / "trial.yaml"
    path.write_text(
        "trial: {id: NCT1, title: T}\n"
        "criteria:\n"
        "  - id: exclusion-1\n"
        "    kind: exclusion\n"
        "    text: HCV RNA above the limit\n"
        "    expression:\n"
        "      resource: Observation\n"
        "      concept: hcv-rna\n"
        '      value: ["> 1 x ULN", "is positive"]\n'
    )
    atom = load_criteria(path).criteria[0].expression
    assert isinstance(atom, ResourceAtom)
    assert isinstance(atom.value, AnyValueTest)
    assert isinstance(atom.value.tests[0], ReferenceLimitTest)
    assert isinstance(atom.value.tests[1], AnswerTest)
    assert atom.selection == "latest"


def test_a_bad_item_in_a_value_list_is_named(tmp_path: Path) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(
        "trial: {id: NCT1, title: T}\n"
        "criteria:\n"
        "  - id: exclusion-1\n"
        "    kind: exclusion\n"
        "    text: HCV RNA above the limit\n"
        "    expression:\n"
        "      resource: Observation\n"
        "      concept: hcv-rna\n"
        '      value: ["> 1 x ULN", "is Positive"]\n'
    )
    with pytest.raises(TrialsieveError) as caught:
        load_criteria(path)
    message = str(caught.value)
    assert "trial.yaml:9" in message
    assert "is Positive" in message


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        (
            '{per_unit: ["=> 30 mg/g", ">= 3 mg/mmol"]}',
            "value.per_unit[0]",
            "cannot read '=> 30 mg/g': comparator '=>' is not known; write '>='",
        ),
        ('{between: ["25 mg/g"]}', "value.between", "give at least 2 items"),
        (
            '{between: ["25 mg/g", "75 mg/g", "80 mg/g"]}',
            "value.between",
            "give at most 2 items, found 3",
        ),
        (
            '{between: ["nan mg/g", "75 mg/g"]}',
            "value.between[0]",
            "'nan mg/g': Not a quantity: write a number and a UCUM unit",
        ),
    ],
)
def test_a_bad_range_or_per_unit_test_is_named_not_the_other_kind(
    tmp_path: Path, value: str, field: str, message: str
) -> None:
    """`value:` may be a test, a list, {between: ...} or {per_unit: ...}: a mistake inside
    one of the two mappings is named where it is, not reported as the other kind's missing
    key ("'per_unit' is missing", "unknown key 'between'"), as it was."""
    path = tmp_path / "trial.yaml"
    path.write_text(
        "trial: {id: NCT1, title: T}\n"
        "criteria:\n"
        "  - id: inclusion-1\n"
        "    kind: inclusion\n"
        "    text: Albuminuria\n"
        "    expression:\n"
        "      resource: Observation\n"
        "      concept: uacr\n"
        f"      value: {value}\n"
    )
    with pytest.raises(CriteriaError) as caught:
        load_criteria(path)
    error = caught.value
    assert (error.location.line, error.location.field) == (9, field), str(error)
    assert message in error.message
    assert "is missing" not in str(error) and "unknown key" not in str(error)


@pytest.mark.parametrize(
    ("written", "suggested"),
    [
        ("gm/dl", "'g/dL', gram per deciliter"),
        ("gm/dL", "'g/dL', gram per deciliter"),
        ("GM/DL", "'g/dL', gram per deciliter"),
        ("mgdl", "'mg/dL', milligram per deciliter"),
        ("mls/min", "'mL/min', milliliter per minute"),
        ("mL/min/1.73 m2", "'mL/min/{1.73_m2}', milliliter per minute per 1.73 square meter"),
        # common spellings that are not UCUM are respelled before any spelling-alike, which
        # could be a unit a thousand times larger ('mcg/mL' is nearest 'mg/mL')
        ("mcg/mL", "'ug/mL', microgram per milliliter"),
        ("IU/L", "'[IU]/L', international unit per liter"),
        ("mg/hr", "'mg/h', milligram per hour"),
    ],
)
def test_a_unit_that_is_not_ucum_gets_a_common_ucum_unit_suggested(
    tmp_path: Path, written: str, suggested: str
) -> None:
    """The suggestion is UCUM's common unit nearest by spelling (rapidfuzz), named in words so
    that a reader sees when it is another magnitude."""
    expression = f'  resource: Observation\n  concept: hb\n  value: "< 10 {written}"\n'
    path = write(tmp_path, HEADER + textwrap.indent(expression, "    "))
    with pytest.raises(CriteriaError) as raised:
        load_criteria(path)
    assert raised.value.location.field == "value"
    assert f"unit '{written}' is not UCUM" in raised.value.message
    assert f"(did you mean {suggested}?)" in raised.value.message


def test_a_unit_far_from_every_common_one_gets_no_suggestion(tmp_path: Path) -> None:
    expression = '  resource: Observation\n  concept: hb\n  value: "< 10 xyz"\n'
    path = write(tmp_path, HEADER + textwrap.indent(expression, "    "))
    with pytest.raises(CriteriaError) as raised:
        load_criteria(path)
    assert raised.value.message.endswith("unit 'xyz' is not UCUM")


@pytest.mark.parametrize("unit", ["mg/dl", "g/dl", "ug/dl", "mmol/l"])
def test_a_lower_case_litre_is_ucum(tmp_path: Path, unit: str) -> None:
    """UCUM has `l` and `L` for the litre: `mg/dl` is valid as written (ucumvert's grammar)."""
    expression = f'  resource: Observation\n  concept: hb\n  value: "< 10 {unit}"\n'
    path = write(tmp_path, HEADER + textwrap.indent(expression, "    "))
    atom = load_criteria(path).criteria[0].expression
    assert isinstance(atom, ResourceAtom) and isinstance(atom.value, QuantityTest)
    assert atom.value.unit == unit


SHARED_FRAGMENTS = """\
trial: {id: NCT00000001, title: A test trial}
x-haemoglobin: &haemoglobin {resource: Observation, concept: hb, within: P28D}
x-notes: [anything, {at: all}]
criteria:
  - id: inclusion-1
    kind: inclusion
    text: Haemoglobin below 100 g/L
    expression:
      <<: *haemoglobin
      value: "< 100 g/L"
  - id: inclusion-2
    kind: inclusion
    text: Haemoglobin in the last year
    expression:
      <<: *haemoglobin
      within: P1Y
"""


def test_top_level_keys_starting_with_x_are_ignored_and_hold_shared_fragments(
    tmp_path: Path,
) -> None:
    loaded = load_criteria(write(tmp_path, SHARED_FRAGMENTS))
    first, second = (criterion.expression for criterion in loaded.criteria)
    assert isinstance(first, ResourceAtom) and isinstance(second, ResourceAtom)
    assert first.concept == second.concept == "hb"
    assert first.window.duration is not None and first.window.duration.text == "P28D"
    assert isinstance(first.value, QuantityTest)
    assert second.window.duration is not None and second.window.duration.text == "P1Y"


def test_another_unknown_top_level_key_says_x_keys_are_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, SHARED_FRAGMENTS.replace("x-notes:", "notes:"))
    with pytest.raises(CriteriaError) as raised:
        load_criteria(path)
    assert raised.value.location.field == "notes"
    assert raised.value.message == (
        "unknown key 'notes'; allowed: criteria, mappings, trial, version, windows, and keys "
        "starting with 'x-' (ignored)"
    )


@pytest.mark.parametrize(
    ("text", "readable"),
    [
        ("P4W", "4 weeks"),
        ("P1W", "1 week"),
        ("P28D", "28 days"),
        ("P1D", "1 day"),
        ("P3M", "3 months"),
        ("P1Y", "1 year"),
        ("P1Y6M", "1 year 6 months"),
        ("P2W3D", "2 weeks 3 days"),
    ],
)
def test_a_duration_reads_as_a_clinician_writes_it(text: str, readable: str) -> None:
    """Explanations say 'for 4 weeks', never 'P28D' or '28 days, 0:00:00'."""
    assert parse_iso_duration(text).readable == readable
