"""`lint_paths`: criteria and mapping files checked on their own and against each other."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.criteria.loader import load_criteria
from engine.errors import CriteriaError, LintWarning, MappingError, TrialsieveError
from engine.lint import format_problems, has_errors, lint_paths
from engine.normalise.loader import load_terminology

MAPPINGS = """\
systems:
  loinc: http://loinc.org
concepts:
  hemoglobin:
    display: Hemoglobin
    codes: {loinc: ["718-7"]}
    unit: g/L
  alt:
    display: Alanine aminotransferase
    codes: {loinc: ["1742-6"]}
    unit: U/L
    reference_range: {high: 40}
  ecog:
    display: ECOG performance status
    codes: {loinc: ["89247-1"]}
  positive:
    display: Positive
    codes: {loinc: ["LA6576-8"]}
"""

CRITERIA_HEADER = """\
# yaml-language-server: $schema=criteria.schema.json
trial: {id: NCT00000001, title: A test trial}
mappings: [../mappings]
windows:
  screening: {within: P28D}
criteria:
  - id: exclusion-1
    kind: exclusion
    text: something
    expression:
      all:
        - resource: Observation
          concept: hemoglobin
          within: screening
          value: "< 100 g/L"
"""
# Further atoms appended to CRITERIA_HEADER start on line 16, in column 11.


def project(tmp_path: Path, extra_atoms: str = "", mappings: str = MAPPINGS) -> Path:
    """A criteria/ and mappings/ folder pair; returns the criteria file."""
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "lab.yaml").write_text(mappings, encoding="utf-8")
    (tmp_path / "criteria").mkdir()
    (tmp_path / "criteria" / "criteria.schema.json").write_text("{}", encoding="utf-8")
    criteria = tmp_path / "criteria" / "trial.yaml"
    atoms = textwrap.indent(textwrap.dedent(extra_atoms), " " * 8)
    criteria.write_text(CRITERIA_HEADER + atoms, encoding="utf-8")
    return criteria


def lint(tmp_path: Path) -> list[TrialsieveError]:
    return lint_paths([tmp_path / "criteria", tmp_path / "mappings"])


def test_consistent_files_have_no_problems(tmp_path: Path) -> None:
    project(
        tmp_path,
        """\
        - resource: Observation
          concept: alt
          value: "> 1.5 x ULN"
        - resource: Observation
          concept: ecog
          value: "<= 2"
        - resource: Observation
          concept: hemoglobin
          value: "is positive"
        - resource: Observation
          concept: hemoglobin
          value: "> 1 kg/m3"
        """,
    )
    problems = lint(tmp_path)
    assert problems == []
    assert not has_errors(problems)
    assert format_problems(problems) == "0 errors, 0 warnings"


@pytest.mark.parametrize(
    ("atoms", "line", "field", "message", "kind"),
    [
        pytest.param(
            "- resource: Observation\n  concept: hemoglobn\n",
            16,
            "concept",
            "unknown concept 'hemoglobn' (did you mean 'hemoglobin'?)",
            CriteriaError,
            id="unknown-concept",
        ),
        pytest.param(
            '- resource: Observation\n  concept: hemoglobin\n  value: "is negative"\n',
            16,
            "value",
            "unknown concept 'negative'",
            CriteriaError,
            id="unknown-answer-concept",
        ),
        pytest.param(
            '- resource: Observation\n  concept: hemoglobin\n  value: "< 5 mmol/L"\n',
            16,
            "value",
            "mmol/L does not convert to hemoglobin's unit g/L",
            CriteriaError,
            id="unit-not-convertible",
        ),
        pytest.param(
            '- resource: Observation\n  concept: ecog\n  value: "< 5 g/L"\n',
            16,
            "value",
            "concept 'ecog' has none in the mappings",
            CriteriaError,
            id="concept-without-unit",
        ),
        pytest.param(
            '- resource: Observation\n  concept: hemoglobin\n  value: "< 100"\n',
            16,
            "value",
            "has no unit; it is compared in hemoglobin's unit g/L",
            LintWarning,
            id="test-without-unit",
        ),
        pytest.param(
            '- resource: Observation\n  concept: alt\n  value: "< 0.5 x LLN"\n',
            16,
            "value",
            "concept 'alt' has no default reference low (LLN)",
            LintWarning,
            id="no-default-range",
        ),
        pytest.param(
            "- resource: Observation\n  concept: hemoglobin\n"
            '  value: [">= 100 g/L", "<= 150 g/L"]\n',
            16,
            "value",
            "is an OR (a result passes if any test passes), so a lower bound OR an upper bound; "
            "for a range write value: {between: [low, high]}",
            LintWarning,
            id="list-that-looks-like-a-range",
        ),
        pytest.param(
            "- resource: Observation\n  concept: hemoglobin\n"
            '  value: {between: ["10 g/dL", "5 mmol/L"]}\n',
            16,
            "value",
            "mmol/L does not convert to hemoglobin's unit g/L",
            CriteriaError,
            id="range-bound-not-convertible",
        ),
    ],
)
def test_cross_check_problems_point_at_the_criterion(
    tmp_path: Path,
    atoms: str,
    line: int,
    field: str,
    message: str,
    kind: type[TrialsieveError],
) -> None:
    criteria = project(tmp_path, atoms)
    problems = lint(tmp_path)
    assert len(problems) == 1, format_problems(problems)
    (problem,) = problems
    assert type(problem) is kind
    assert message in problem.message
    assert (problem.location.file, problem.location.line) == (str(criteria), line)
    assert (problem.location.criterion, problem.location.field) == ("exclusion-1", field)
    assert has_errors(problems) is (kind is CriteriaError)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            '">= 100 g/dL"',
            "'>= 100 g/dL' is 1000 g/L, outside hemoglobin's plausible range 0-260 g/L",
        ),
        ('"< 300"', "'< 300' is 300 g/L, outside hemoglobin's plausible range 0-260 g/L"),
        ('{between: ["50 g/L", "30 g/dL"]}', "'30 g/dL' is 300 g/L, outside"),
    ],
    ids=["g/dL for g/L", "no unit", "a range's bound"],
)
def test_a_threshold_outside_the_plausible_range_is_a_warning(
    tmp_path: Path, value: str, shown: str
) -> None:
    """A threshold no plausible result can be on the other side of (a haemoglobin of
    ">= 100 g/dL" for 100 g/L: 1000 g/L, beyond the analysers' 0-26 g/dL) gives every patient
    the same answer: lint warns, naming the converted number and the range."""
    mappings = MAPPINGS.replace(
        "    unit: g/L\n", "    unit: g/L\n    plausible_range: {low: 0, high: 260}\n", 1
    )
    atom = f"- resource: Observation\n  concept: hemoglobin\n  value: {value}\n"
    project(tmp_path, atom, mappings=mappings)
    problems = [problem for problem in lint(tmp_path) if shown in problem.message]
    assert len(problems) == 1, format_problems(lint(tmp_path))
    assert type(problems[0]) is LintWarning
    assert problems[0].location.field == "value"
    project_ok = tmp_path / "fine"
    project_ok.mkdir()
    project(
        project_ok,
        '- resource: Observation\n  concept: hemoglobin\n  value: ">= 100 g/L"\n',
        mappings=mappings,
    )
    assert lint(project_ok) == []


def test_every_problem_is_reported(tmp_path: Path) -> None:
    project(
        tmp_path,
        """\
        - resource: Observation
          concept: nothing
        - resource: Observation
          concept: hemoglobin
          value: "is nothing-either"
        """,
    )
    problems = lint(tmp_path)
    assert [problem.location.line for problem in problems] == [16, 18]
    report = format_problems(problems)
    assert report.count("error: ") == 2
    assert report.endswith("2 errors, 0 warnings")


def test_criteria_load_errors_are_reported_not_raised(tmp_path: Path) -> None:
    project(tmp_path, "- resource: Observation\n  concept: hemoglobin\n  within: nowhere\n")
    (problem,) = lint(tmp_path)
    assert isinstance(problem, CriteriaError)
    assert "unknown window 'nowhere'" in problem.message


def test_mapping_errors_are_reported(tmp_path: Path) -> None:
    project(tmp_path, mappings=MAPPINGS + "  broken: {display: X, unknown_key: 1}\n")
    problems = lint(tmp_path)
    assert problems, "the broken mapping file must be reported"
    assert any("lab.yaml" in str(problem) for problem in problems)
    assert has_errors(problems)


def test_a_dose_equivalent_pair_is_checked_by_lint(tmp_path: Path) -> None:
    """The pair of equivalent doses (`{drug_mg: 0.75, reference_mg: 5}`) passes; half a pair
    is reported with the mapping file's line and field."""
    good = "  dexamethasone:\n    display: D\n    dose_equivalents:\n"
    good += "      prednisone: {drug_mg: 0.75, reference_mg: 5}\n"
    project(tmp_path, mappings=MAPPINGS + good)
    assert not has_errors(lint(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    project(broken, mappings=MAPPINGS + good.replace(", reference_mg: 5", ""))
    problems = [problem for problem in lint(broken) if "lab.yaml" in str(problem)]
    assert len(problems) == 1 and has_errors(problems), problems
    assert "'reference_mg' is a required property" in problems[0].message
    assert problems[0].location.field == "concepts.dexamethasone.dose_equivalents.prednisone"


def test_missing_mapping_folder_points_at_mappings_line(tmp_path: Path) -> None:
    criteria = project(tmp_path)
    criteria.write_text(CRITERIA_HEADER.replace("[../mappings]", "[../mapings]"), encoding="utf-8")
    problems = lint_paths([criteria])
    (problem,) = problems
    assert (problem.location.line, problem.location.field) == (3, "mappings")
    assert "mapping file or folder not found" in problem.message


def test_unused_window_is_a_warning(tmp_path: Path) -> None:
    criteria = project(tmp_path)
    criteria.write_text(
        CRITERIA_HEADER.replace("  screening: {within: P28D}\n", "  screening: {within: P28D}\n"
                                "  baseline: {within: P1Y}\n"),
        encoding="utf-8",
    )  # fmt: skip
    (problem,) = lint(tmp_path)
    assert isinstance(problem, LintWarning)
    assert (problem.location.line, problem.location.field) == (6, "windows.baseline")
    assert format_problems([problem]).startswith("warning: ")


def test_paths_that_are_not_yaml_or_do_not_exist(tmp_path: Path) -> None:
    project(tmp_path)
    schema = tmp_path / "criteria" / "criteria.schema.json"
    problems = lint_paths([schema, tmp_path / "nowhere"])
    assert [type(problem) for problem in problems] == [LintWarning, TrialsieveError]
    assert "not a YAML file" in problems[0].message
    assert "no such file or folder" in problems[1].message


def test_a_mistyped_loinc_code_is_an_error_at_its_line(tmp_path: Path) -> None:
    mappings = MAPPINGS.replace(
        'codes: {loinc: ["718-7"]}', 'codes: {loinc: ["718-7", "753-3"]}'
    ) + textwrap.dedent(
        """\
        local_codes:
          - system: http://loinc.org
            codes:
              "1742-5": alt
        """
    )
    project(tmp_path, mappings=mappings)
    problems = lint(tmp_path)
    assert has_errors(problems)
    messages = [str(problem) for problem in problems]
    assert any(
        "lab.yaml:6:" in message
        and "concepts.hemoglobin.codes.loinc[1]" in message
        and "753-4 would be valid" in message
        for message in messages
    ), messages
    assert any("local_codes[0].codes.1742-5" in message for message in messages), messages
    assert len(problems) == 2, messages


def test_loinc_answer_codes_are_checked_for_shape_only(tmp_path: Path) -> None:
    project(tmp_path)  # MAPPINGS holds the answer code LA6576-8
    assert lint(tmp_path) == []


def test_a_concept_ranged_per_result_is_not_warned_about(tmp_path: Path) -> None:
    """`reference_range: per-result` says there is no default on purpose (the range is the
    assay's own): a ULN test on it is expected to need each result's referenceRange."""
    mappings = MAPPINGS.replace(
        "  ecog:\n",
        '  prothrombin-time:\n    display: Prothrombin time\n    codes: {loinc: ["5902-2"]}\n'
        "    unit: s\n    reference_range: per-result\n  ecog:\n",
    )
    project(
        tmp_path,
        """\
        - resource: Observation
          concept: prothrombin-time
          value: "> 20% above ULN"
        """,
        mappings=mappings,
    )
    assert lint(tmp_path) == []
    terminology = load_terminology(tmp_path / "mappings")
    concept = terminology.concept("prothrombin-time")
    assert concept.reference_range_per_result
    assert (concept.reference_low, concept.reference_high) == (None, None)


def test_per_result_is_the_only_word_a_reference_range_takes(tmp_path: Path) -> None:
    mappings = MAPPINGS.replace("reference_range: {high: 40}", "reference_range: per-test")
    project(tmp_path, mappings=mappings)
    problems = lint(tmp_path)
    assert has_errors(problems)
    assert "reference_range" in format_problems(problems)


def test_a_mapping_error_is_reported_once_with_the_default_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trialsieve lint` in a project folder reads mappings/ as found (`mappings/lab.yaml`)
    and again through the criteria's `mappings: [../mappings]` (an absolute path): one file,
    one error, counted once."""
    project(tmp_path, mappings=MAPPINGS.replace("{high: 40}", "{low: 400, high: 40}"))
    monkeypatch.chdir(tmp_path)
    (problem,) = lint_paths([Path("criteria"), Path("mappings")])
    assert isinstance(problem, MappingError)
    assert problem.location.file == str(Path("mappings") / "lab.yaml")
    result = CliRunner().invoke(app, ["lint"])
    assert result.exit_code == 2
    assert result.stderr.count("reference_range low 400 is above high 40") == 1, result.stderr
    assert result.stderr.endswith("1 error, 0 warnings\n")


@pytest.mark.parametrize("text", ["", "# to be written\n"])
def test_an_empty_mapping_file_is_an_error_as_when_criteria_load_it(
    tmp_path: Path, text: str
) -> None:
    criteria = project(tmp_path)
    (tmp_path / "mappings" / "more.yaml").write_text(text, encoding="utf-8")
    (problem,) = lint(tmp_path)
    assert isinstance(problem, MappingError)
    assert problem.message.startswith("the file is empty")
    with pytest.raises(MappingError, match="the file is empty"):
        load_terminology(load_criteria(criteria).mapping_paths)
    for arguments in (["lint", str(criteria)], ["evaluate", str(criteria), "--bundle", "x"]):
        assert CliRunner().invoke(app, arguments).exit_code == 2, arguments


@pytest.mark.parametrize("folder", ["criteria", "mappings"])
def test_a_file_that_is_not_utf8_is_reported_at_its_line(tmp_path: Path, folder: str) -> None:
    """As the loaders report it (`evaluate`): the line, not a byte position."""
    project(tmp_path)
    path = tmp_path / folder / ("trial.yaml" if folder == "criteria" else "lab.yaml")
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].rstrip(b"\n") + b" # caf\xe9\n"
    path.write_bytes(b"".join(lines))
    (problem,) = lint(tmp_path)
    assert (str(problem.location.file), problem.message) == (
        str(path),
        "the file is not UTF-8 text",
    )
    assert problem.location.line == 3


def test_lint_suggests_a_ucum_unit_for_gm_per_dl(tmp_path: Path) -> None:
    project(tmp_path, '- resource: Observation\n  concept: hemoglobin\n  value: "< 10 gm/dl"\n')
    problems = lint(tmp_path)
    assert has_errors(problems)
    [problem] = problems
    assert problem.location.field == "value" and problem.location.line == 18
    assert "unit 'gm/dl' is not UCUM (did you mean 'g/dL', gram per deciliter?)" in str(problem)


def test_lint_accepts_and_ignores_top_level_x_keys(tmp_path: Path) -> None:
    criteria = project(tmp_path)
    text = criteria.read_text(encoding="utf-8").replace(
        "criteria:\n",
        "x-haemoglobin: &haemoglobin {resource: Observation, concept: hemoglobin}\ncriteria:\n",
        1,
    )
    text += '        - <<: *haemoglobin\n          value: "< 12 g/dL"\n'
    criteria.write_text(text, encoding="utf-8")
    assert lint(tmp_path) == []
    result = CliRunner().invoke(app, ["lint", str(criteria), str(tmp_path / "mappings")])
    assert result.exit_code == 0, result.output
