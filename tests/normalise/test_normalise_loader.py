"""Loading mapping files: good files load; every kind of bad file names file, line and field."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from normalise_support import SYSTEMS, WriteMapping

from engine.errors import ErrorCollection, MappingError, TrialsieveError
from engine.normalise import load_terminology


def load_errors(*paths: Path) -> list[TrialsieveError]:
    """Load and return the errors raised (one MappingError or an ErrorCollection)."""
    with pytest.raises((MappingError, ErrorCollection)) as raised:
        load_terminology(list(paths))
    error = raised.value
    return list(error.errors) if isinstance(error, ErrorCollection) else [error]


def only_error(*paths: Path) -> MappingError:
    errors = load_errors(*paths)
    assert len(errors) == 1, [str(error) for error in errors]
    assert isinstance(errors[0], MappingError)
    return errors[0]


def test_good_files_load_with_source_locations(write_mapping: WriteMapping) -> None:
    systems = write_mapping(SYSTEMS, "a-systems.yaml")
    concepts = write_mapping(
        """\
        # yaml-language-server: $schema=mappings.schema.json
        concepts:
          hemoglobin:
            display: Hemoglobin
            unit: g/L
            reference_range: {low: 120, high: 175}
            codes:
              loinc:
                - 718-7   # Hemoglobin [Mass/volume] in Blood
          platelets:
            display: Platelets
            unit: 10*9/L
            codes: {loinc: [777-3]}
        """,
        "b-concepts.yaml",
    )
    terminology = load_terminology([systems, concepts])
    hemoglobin = terminology.concept("hemoglobin")
    assert hemoglobin.unit == "g/L"
    assert (hemoglobin.reference_low, hemoglobin.reference_high) == (120.0, 175.0)
    assert hemoglobin.source.file == str(concepts)
    assert hemoglobin.source.line == 3
    assert hemoglobin.codes == {"http://loinc.org": frozenset({"718-7"})}
    assert terminology.concept_ids() == frozenset({"hemoglobin", "platelets"})
    assert terminology.has_concept("platelets")
    assert not terminology.has_concept("platelet")
    with pytest.raises(KeyError):
        terminology.concept("platelet")


def test_folder_loads_every_yaml_file(write_mapping: WriteMapping) -> None:
    write_mapping(SYSTEMS, "systems.yaml")
    write_mapping("concepts:\n  a:\n    display: A\n    codes: {loinc: [1-8]}\n", "one.yaml")
    path = write_mapping("concepts:\n  b:\n    display: B\n    include: [a]\n", "two.yaml")
    terminology = load_terminology([path.parent])
    assert terminology.concepts_of_coding("http://loinc.org", "1-8") == {"a", "b"}


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n\n"])
def test_an_empty_file_is_an_error(write_mapping: WriteMapping, text: str) -> None:
    """A mapping file emptied by mistake would drop its codes without a word (and a
    diagnosis no concept maps reads as absent); an empty section list, `{}`, still loads."""
    error = only_error(write_mapping(text))
    assert error.message.startswith("the file is empty")
    assert load_terminology([write_mapping("{}\n", "none.yaml")]).concept_ids() == frozenset()


def test_a_file_that_is_not_utf8_names_its_line(write_mapping: WriteMapping) -> None:
    path = write_mapping("systems:\n  loinc: http://loinc.org\n")
    path.write_bytes(path.read_bytes() + b"concepts: {a: {display: caf\xe9}}\n")
    error = only_error(path)
    assert (error.message, error.location.line) == ("the file is not UTF-8 text", 3)


def test_missing_file(tmp_path: Path) -> None:
    error = only_error(tmp_path / "absent.yaml")
    assert "not found" in error.message
    assert error.location.file == str(tmp_path / "absent.yaml")


def test_yaml_syntax_error_names_line(write_mapping: WriteMapping) -> None:
    path = write_mapping("concepts:\n  a:\n    display: [unclosed\n")
    error = only_error(path)
    assert "not valid YAML" in error.message
    assert error.location.file == str(path)
    assert error.location.line is not None


def test_duplicate_yaml_key_names_line(write_mapping: WriteMapping) -> None:
    """Named as a criteria file names it: the key and where its mapping began, without the
    value's repr (ruamel's message held the second concept whole)."""
    path = write_mapping("concepts:\n  a:\n    display: A\n  a:\n    display: B\n")
    error = only_error(path)
    assert error.message == (
        "not valid YAML: duplicate key 'a' (while constructing a mapping, line 2)"
    )
    assert error.location.line == 4


def test_a_tab_in_the_indentation_says_to_indent_with_spaces(write_mapping: WriteMapping) -> None:
    path = write_mapping("concepts:\n  a:\n\tdisplay: A\n")
    error = only_error(path)
    assert error.message.endswith("; indent with spaces, not tabs"), error.message
    assert error.location.line == 3


def test_unknown_field_names_line_and_field(write_mapping: WriteMapping) -> None:
    path = write_mapping(
        """\
        concepts:
          hemoglobin:
            display: Hemoglobin
            unti: g/L
        """
    )
    error = only_error(path)
    assert "unknown field 'unti'" in error.message
    assert (error.location.line, error.location.column) == (4, 5)
    assert error.location.field == "concepts.hemoglobin.unti"
    assert str(error).startswith(f"{path}:4:5, field concepts.hemoglobin.unti: ")


def test_missing_display(write_mapping: WriteMapping) -> None:
    path = write_mapping("concepts:\n  a:\n    codes: {loinc: [1-8]}\n")
    error = only_error(path)
    assert "'display' is a required property" in error.message
    assert error.location.line == 2
    assert error.location.field == "concepts.a"


def test_bad_concept_id(write_mapping: WriteMapping) -> None:
    path = write_mapping("concepts:\n  Hemoglobin_X:\n    display: A\n")
    error = only_error(path)
    assert "invalid name 'Hemoglobin_X'" in error.message
    assert error.location.line == 2
    assert error.location.field == "concepts.Hemoglobin_X"


def test_float_code_must_be_quoted(write_mapping: WriteMapping) -> None:
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping("concepts:\n  a:\n    display: A\n    codes: {icd10cm: [250.00]}\n")
    error = only_error(path.parent)
    assert "write it in quotes" in error.message
    assert error.location.field == "concepts.a.codes.icd10cm[0]"
    assert error.location.line == 4


def test_leading_zero_code_is_refused(write_mapping: WriteMapping) -> None:
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping(
        "concepts:\n  a:\n    display: A\n    codes:\n      snomed:\n        - 0123\n"
    )
    error = only_error(path.parent)
    assert "leading zeros" in error.message
    assert error.location.line == 6
    assert error.location.field == "concepts.a.codes.snomed[0]"


def test_unknown_system_alias(write_mapping: WriteMapping) -> None:
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping("concepts:\n  a:\n    display: A\n    codes: {lonic: [1-8]}\n")
    error = only_error(path.parent)
    assert "unknown system alias 'lonic'" in error.message
    assert error.location.file == str(path)
    assert error.location.line == 4
    assert error.location.field == "concepts.a.codes.lonic"


def test_full_uri_needs_no_alias(write_mapping: WriteMapping) -> None:
    path = write_mapping(
        'concepts:\n  a:\n    display: A\n    codes: {"http://example.org/codes": [X1]}\n'
    )
    terminology = load_terminology([path])
    assert terminology.concepts_of_coding("http://example.org/codes", "X1") == {"a"}


def test_system_alias_defined_differently(write_mapping: WriteMapping) -> None:
    first = write_mapping("systems:\n  lab: http://one.example\n", "a.yaml")
    second = write_mapping("systems:\n  lab: http://two.example\n", "b.yaml")
    error = only_error(first, second)
    assert "defined differently" in error.message
    assert str(first) in error.message
    assert error.location.file == str(second)


@pytest.mark.parametrize(
    "second",
    [
        "  snomed: http://loinc.org\n",  # a copied line
        "  lab:\n    uri: http://lab.example\n    equivalents: [http://loinc.org]\n",
    ],
)
def test_a_uri_two_system_aliases_name_is_an_error(
    write_mapping: WriteMapping, second: str
) -> None:
    """One URI named by two system aliases defined otherwise: SNOMED CT codes were checked
    as LOINC codes ("'10828004' is not a LOINC code", one error a code), or an equivalent
    sent another system's data elsewhere; now one error at the second alias, naming both."""
    path = write_mapping(
        "systems:\n  loinc:\n    uri: http://loinc.org\n    equivalents: [urn:oid:1]\n" + second
    )
    error = only_error(path)
    assert error.location.line == 5
    assert "names http://loinc.org, which system alias 'loinc' names too" in error.message


def test_two_aliases_of_one_system_defined_alike_are_allowed(write_mapping: WriteMapping) -> None:
    path = write_mapping("systems:\n  loinc: http://loinc.org\n  lab: http://loinc.org\n")
    terminology = load_terminology([path])
    assert terminology.system_uri("lab") == terminology.system_uri("loinc") == "http://loinc.org"


def test_concept_defined_twice_names_both_places(write_mapping: WriteMapping) -> None:
    first = write_mapping("concepts:\n  a:\n    display: A\n", "a.yaml")
    second = write_mapping("\n\nconcepts:\n  a:\n    display: A again\n", "b.yaml")
    error = only_error(first, second)
    assert "already defined" in error.message
    assert f"{first}:2:3" in error.message
    assert (error.location.file, error.location.line) == (str(second), 4)


def test_include_of_unknown_concept(write_mapping: WriteMapping) -> None:
    path = write_mapping("concepts:\n  a:\n    display: A\n    include: [b]\n")
    error = only_error(path)
    assert "unknown concept 'b'" in error.message
    assert error.location.field == "concepts.a.include[0]"
    assert error.location.line == 2


def test_include_cycle(write_mapping: WriteMapping) -> None:
    path = write_mapping(
        """\
        concepts:
          a: {display: A, include: [b]}
          b: {display: B, include: [c]}
          c: {display: C, include: [a]}
        """
    )
    error = only_error(path)
    assert "include cycle: a -> b -> c -> a" in error.message
    assert error.location.line == 2


def test_ranges_need_icd_system(write_mapping: WriteMapping) -> None:
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping("concepts:\n  a:\n    display: A\n    ranges: {snomed: [C00-C97]}\n")
    error = only_error(path.parent)
    assert "ICD-style system" in error.message
    assert error.location.field == "concepts.a.ranges.snomed"


def test_empty_range(write_mapping: WriteMapping) -> None:
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping("concepts:\n  a:\n    display: A\n    ranges: {icd10cm: [C97-C00]}\n")
    error = only_error(path.parent)
    assert "is empty" in error.message
    assert error.location.field == "concepts.a.ranges.icd10cm[0]"


def test_malformed_range(write_mapping: WriteMapping) -> None:
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping("concepts:\n  a:\n    display: A\n    ranges: {icd10cm: [C00 to C97]}\n")
    error = only_error(path.parent)
    assert "does not match" in error.message
    assert error.location.field == "concepts.a.ranges.icd10cm[0]"


def test_unit_must_be_ucum(write_mapping: WriteMapping) -> None:
    path = write_mapping("concepts:\n  a:\n    display: A\n    unit: g/LL\n")
    error = only_error(path)
    assert "'g/LL' is not valid UCUM" in error.message
    assert (error.location.line, error.location.field) == (4, "concepts.a.unit")


def test_reference_range_low_above_high(write_mapping: WriteMapping) -> None:
    path = write_mapping(
        "concepts:\n  a:\n    display: A\n    unit: g/L\n    reference_range: {low: 9, high: 1}\n"
    )
    error = only_error(path)
    assert "above high" in error.message
    assert error.location.field == "concepts.a.reference_range"


@pytest.mark.parametrize(
    ("text", "field", "line", "message"),
    [
        (
            "systems:\n  lab:\n    uri: 5\n    icd: true\n",
            "systems.lab.uri",
            3,
            "5 is not of type 'string'",
        ),
        (
            "concepts:\n  a:\n    display: A\n    unit: g/L\n"
            "    reference_range: {low: abc, high: 1}\n",
            "concepts.a.reference_range.low",
            5,
            "'abc' is not of type 'number'",
        ),
    ],
)
def test_a_field_of_several_forms_names_what_is_wrong_inside_the_form_written(
    write_mapping: WriteMapping, text: str, field: str, line: int, message: str
) -> None:
    """A system (a URI, or {uri, equivalents, icd}) or a range ({low, high}, or
    `per-result`) written as a mapping with a bad value inside is named at that value, not
    "{'uri': 5, ...} is not valid under any of the given schemas" at the mapping, as it was."""
    error = only_error(write_mapping(text))
    assert error.location.field == field
    assert error.location.line == line
    assert error.message == message
    assert "not valid under any" not in str(error)


def test_dose_equivalents_are_read_exactly_as_the_pair_of_doses_or_a_factor(
    write_mapping: WriteMapping,
) -> None:
    """`{drug_mg: 0.75, reference_mg: 5}` is the cited table's own pair (dexamethasone 0.75 mg
    = prednisone 5 mg): its factor is exactly 20/3, never a rounded 6.667; a factor written
    as a number is the decimal written (1.25 = 5/4)."""
    path = write_mapping(
        """\
        concepts:
          dexamethasone:
            display: Dexamethasone
            dose_equivalents: {prednisone: {drug_mg: 0.75, reference_mg: 5}}
          betamethasone:
            display: Betamethasone
            dose_equivalents: {prednisone: {drug_mg: 0.6, reference_mg: 5}}
          methylprednisolone:
            display: Methylprednisolone
            dose_equivalents: {prednisone: 1.25}
        """
    )
    terminology = load_terminology([path])
    dexamethasone = terminology.concept("dexamethasone").dose_equivalents["prednisone"]
    assert dexamethasone.factor == Fraction(20, 3)
    assert Fraction(3, 4) * dexamethasone.factor == 5
    assert dexamethasone.text("dexamethasone", "prednisone") == (
        "dexamethasone 0.75 mg = prednisone 5 mg"
    )
    betamethasone = terminology.concept("betamethasone").dose_equivalents["prednisone"]
    assert Fraction(3, 5) * betamethasone.factor == 5
    assert terminology.concept("methylprednisolone").dose_equivalents["prednisone"].factor == (
        Fraction(5, 4)
    )


@pytest.mark.parametrize(
    ("written", "message", "field"),
    [
        ("{drug_mg: 0.75}", "'reference_mg' is a required property", ""),
        ("{drug_mg: 0, reference_mg: 5}", "less than or equal to the minimum of 0", ".drug_mg"),
        ("{drug_mg: 0.75, reference_mg: 5, note: x}", "unknown field 'note'", ".note"),
        ("{drug_mg: '0.75', reference_mg: 5}", "is not of type 'number'", ".drug_mg"),
        ("-1", "less than or equal to the minimum of 0", ""),
        ("'6.667'", "is not of type 'number', 'object'", ""),
    ],
)
def test_a_bad_dose_equivalent_names_line_and_field(
    write_mapping: WriteMapping, written: str, message: str, field: str
) -> None:
    path = write_mapping(
        f"concepts:\n  dexamethasone:\n    display: D\n"
        f"    dose_equivalents:\n      prednisone: {written}\n"
    )
    error = only_error(path)
    assert message in error.message
    assert error.location.line == 5
    assert error.location.field == f"concepts.dexamethasone.dose_equivalents.prednisone{field}"


def test_reference_range_needs_unit(write_mapping: WriteMapping) -> None:
    path = write_mapping("concepts:\n  a:\n    display: A\n    reference_range: {high: 1}\n")
    assert "needs a `unit`" in only_error(path).message


def test_bad_value_path(write_mapping: WriteMapping) -> None:
    path = write_mapping("concepts:\n  a:\n    display: A\n    value_path: 'component[?('\n")
    error = only_error(path)
    assert "not a valid jsonpath" in error.message
    assert error.location.field == "concepts.a.value_path"


def test_unit_alias_target_must_be_ucum(write_mapping: WriteMapping) -> None:
    path = write_mapping('unit_aliases:\n  "mg/dl": mg/dl\n  "x": not a unit\n')
    error = only_error(path)
    assert "not valid UCUM" in error.message
    assert (error.location.line, error.location.field) == (3, "unit_aliases.x")


def test_unit_alias_conflict_across_files(write_mapping: WriteMapping) -> None:
    first = write_mapping('unit_aliases:\n  "K/uL": 10*3/uL\n', "a.yaml")
    second = write_mapping('unit_aliases:\n  "K/uL": 10*6/uL\n', "b.yaml")
    error = only_error(first, second)
    assert "already maps to '10*3/uL'" in error.message


def test_local_code_to_unknown_concept(write_mapping: WriteMapping) -> None:
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping(
        """\
        concepts:
          hemoglobin: {display: Hemoglobin}
        local_codes:
          - system: local-lab
            codes:
              HGB: hemoglobin
              PLT: platelets
        """
    )
    error = only_error(path.parent)
    assert "unknown concept 'platelets'" in error.message
    assert (error.location.line, error.location.field) == (7, "local_codes[0].codes.PLT")


def test_a_local_code_mapped_twice_to_other_concepts_is_an_error(
    write_mapping: WriteMapping,
) -> None:
    """A site file mapping HGB to platelets over a shared file's HGB: hemoglobin loaded with
    HGB in both concepts (a haemoglobin result counted as a platelet count too); now an error
    at the second naming the first. The same mapping twice, or a list, stays allowed."""
    write_mapping(SYSTEMS, "systems.yaml")
    write_mapping(
        "concepts:\n  hemoglobin: {display: Hemoglobin}\n  platelets: {display: Platelets}\n"
        "local_codes:\n  - system: local-lab\n    codes:\n      HGB: hemoglobin\n"
        "      BOTH: [hemoglobin, platelets]\n",
        "shared.yaml",
    )
    site = write_mapping(
        "local_codes:\n  - system: local-lab\n    codes:\n      BOTH: [platelets, hemoglobin]\n"
        "      HGB: platelets\n",
        "site.yaml",
    )
    error = only_error(site.parent)
    assert (error.location.file, error.location.line) == (str(site), 5)
    assert error.message.startswith(
        "local code 'HGB' of http://hospital.example.org/lab is mapped again, to platelets; "
    )
    assert "shared.yaml:7:12, field local_codes[0].codes.HGB maps it to hemoglobin" in (
        error.message
    )


def test_top_level_must_be_a_mapping(write_mapping: WriteMapping) -> None:
    path = write_mapping("- just\n- a list\n")
    assert "must be a YAML mapping" in only_error(path).message


def test_several_problems_are_all_reported(write_mapping: WriteMapping) -> None:
    path = write_mapping(
        """\
        concepts:
          a:
            display: A
            unit: g/LL
          b:
            display: B
            include: [nope]
        """
    )
    errors = load_errors(path)
    assert len(errors) == 2
    messages = " | ".join(str(error) for error in errors)
    assert "g/LL" in messages and "nope" in messages
    assert all(str(path) in str(error) for error in errors)


def test_schema_file_is_valid_json_schema() -> None:
    from jsonschema import Draft202012Validator

    from engine.schemas import MAPPINGS_SCHEMA, load_schema

    Draft202012Validator.check_schema(load_schema(MAPPINGS_SCHEMA))


def test_part_of_extends_a_concept_and_names_unknown_targets(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.yaml").write_text(
        "systems: {loinc: http://loinc.org, site: http://site.example.org/codes}\n"
        "concepts:\n"
        "  lvef: {display: LVEF, codes: {loinc: [10230-1]}, unit: '%'}\n"
        "  site-lvef: {display: Site LVEF, part_of: [lvef], codes: {site: [EF]}}\n"
    )
    terminology = load_terminology([good])
    assert "lvef" in terminology.concepts_of_coding("http://site.example.org/codes", "EF")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "b.yaml").write_text(
        "systems: {site: http://site.example.org/codes}\n"
        "concepts:\n"
        "  site-lvef: {display: Site LVEF, part_of: [lvfe], codes: {site: [EF]}}\n"
    )
    with pytest.raises(TrialsieveError) as caught:
        load_terminology([bad])
    assert "b.yaml:3" in str(caught.value)
    assert "lvfe" in str(caught.value)


def test_unit_alias_with_several_readings(write_mapping: WriteMapping) -> None:
    path = write_mapping('unit_aliases:\n  "IU/L": ["[IU]/L", U/L]\n  "K/uL": 10*3/uL\n')
    terminology = load_terminology([path])
    assert terminology.unit_readings("IU/L") == ("[IU]/L", "U/L")
    assert terminology.unit_alias("IU/L") == "[IU]/L"
    assert terminology.unit_readings_ignoring_case("iu/l") == ("[IU]/L", "U/L")
    assert terminology.unit_readings("K/uL") == ("10*3/uL",)
    bad = write_mapping('unit_aliases:\n  "IU/L": ["[IU]/L", not a unit]\n', "bad.yaml")
    error = only_error(bad)
    assert "'not a unit' is not valid UCUM" in error.message
    assert error.location.field == "unit_aliases.IU/L"


def test_an_unknown_concept_a_mapping_names_is_offered_the_ids_like_it(
    write_mapping: WriteMapping,
) -> None:
    """`include`, `part_of` and `local_codes` naming a misspelt concept: the error offers the
    ids like it, as the criteria's unknown concepts do (`terminology.did_you_mean`)."""
    write_mapping(SYSTEMS, "systems.yaml")
    path = write_mapping(
        """\
        concepts:
          hemoglobin: {display: Hemoglobin}
          platelets: {display: Platelets}
          anaemia-labs: {display: Anaemia labs, include: [haemoglobin]}
        local_codes:
          - system: local-lab
            codes:
              PLT: platelet
        """
    )
    with pytest.raises(TrialsieveError) as caught:
        load_terminology([path.parent])
    text = str(caught.value)
    assert "include refers to unknown concept 'haemoglobin' (did you mean 'hemoglobin'?)" in text
    assert "maps to unknown concept 'platelet' (did you mean 'platelets'?)" in text
