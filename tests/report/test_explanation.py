"""Explanations in clinical language (engine.report.explanation), on the shipped examples.

The texts a haematologist or a screening coordinator reads: the drug with dose, status and
dates; a result with readable units, reference range and date; what was looked for when
nothing was found (window in dates, status, filters); what would settle an unknown.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.attestations import Attestation
from engine.criteria.model import ResourceAtom, Window
from engine.evaluate import CompiledCriteria, CriterionVerdict, PatientEvaluation, evaluate_patient
from engine.evaluate.outcome import Cited, Outcome
from engine.evaluate.patient import SubjectStatus
from engine.normalise import measure
from engine.record import build_record
from engine.report.explanation import (
    STATUS_TEXT,
    CriterionExplanation,
    PatientExplanation,
    Step,
    criterion_lines,
    describe_filters,
    explain,
    explanation_text,
    readable_unit,
)
from engine.report.resources import detected_issue
from engine.sources import PatientResources, parse_bundle, read_bundle_file
from engine.trial import load_trial

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "patients"
AS_OF = dt.date(2026, 11, 1)


def _evaluate(trial: CompiledCriteria, name: str) -> PatientEvaluation:
    record = build_record(read_bundle_file(EXAMPLES / f"{name}.json"), trial.terminology)
    return evaluate_patient(trial, record, AS_OF)


def _criterion(explanation: PatientExplanation, number: str) -> CriterionExplanation:
    return next(c for c in explanation.criteria if c.number == number)


def _leaves(step: Step) -> list[Step]:
    return [step] if not step.children else [x for c in step.children for x in _leaves(c)]


@pytest.mark.parametrize(
    ("ucum", "shown"),
    [
        ("10*9/L", "x10^9/L"),
        ("10*12/L", "x10^12/L"),
        ("x10*9/L", "x10^9/L"),  # a recorded unit that writes the sign itself: one x
        ("x 10*9/L", "x10^9/L"),
        ("×10*9/L", "x10^9/L"),
        ("[IU]/mL", "IU/mL"),
        ("mg/dL", "mg/dL"),
        ("umol/L", "µmol/L"),
        ("ug/L", "µg/L"),
        ("{INR}", ""),
        ("mL/min/{1.73_m2}", "mL/min/1.73 m2"),
        ("mg/g{creat}", "mg/g"),  # LOINC's UACR unit: the annotation labels the g
        ("mg/mmol{creat}", "mg/mmol"),
        ("10*3{cells}/uL", "x10^3/µL"),
        ("1", ""),
        ("%", "%"),
        (None, ""),
    ],
)
def test_units_read_as_people_write_them(ucum: str | None, shown: str) -> None:
    assert readable_unit(ucum) == shown


def test_a_drug_is_named_with_dose_status_and_date(trial: CompiledCriteria) -> None:
    explanation = explain(_evaluate(trial, "itp-refractory-on-aspirin"))
    thrombosis = _criterion(explanation, "E2")
    assert thrombosis.verdict is CriterionVerdict.FAILS
    assert thrombosis.outcome_text == "present: excludes"
    assert "Aspirin 81 mg" in thrombosis.summary
    assert "81 mg orally once daily" in thrombosis.summary
    assert "order active" in thrombosis.summary
    assert "2025-02-14" in thrombosis.summary
    assert [f.reference.split("/")[0] for f in thrombosis.findings] == ["MedicationRequest"]
    assert thrombosis.protocol_text.startswith("Patients with a known history")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dispenseRequest", [{"validityPeriod": {"start": "2025-02-14"}}]),
        ("dispenseRequest", "not an object"),
        ("dosageInstruction", {"text": "81 mg orally once daily"}),
        ("dosageInstruction", "81 mg orally once daily"),
    ],
)
def test_a_drug_order_of_another_shape_is_described_without_its_part(
    trial: CompiledCriteria, field: str, value: object
) -> None:
    """A MedicationRequest whose dispenseRequest or dosageInstruction is not the JSON type
    FHIR gives it is still described (that part left out), never a crash (found by the
    line screen's property test: a list for dispenseRequest raised AttributeError)."""
    data = read_bundle_file(EXAMPLES / "itp-refractory-on-aspirin.json")
    resources = [dict(resource) for resource in data.resources]
    for resource in resources:
        if resource["resourceType"] == "MedicationRequest":
            resource[field] = value
    record = build_record(dataclasses.replace(data, resources=resources), trial.terminology)
    thrombosis = _criterion(explain(evaluate_patient(trial, record, AS_OF)), "E2")
    assert "Aspirin 81 mg" in thrombosis.summary
    assert "order active" in thrombosis.summary


def test_a_result_has_readable_units_range_and_date(trial: CompiledCriteria) -> None:
    text = explanation_text(explain(_evaluate(trial, "itp-refractory-on-aspirin")), width=400)
    assert "Absolute neutrophil count 3.2 x10^9/L on 2026-10-20" in text
    assert "(reference range 1.8-6.3 x10^9/L)" in text
    assert "not < 1.5 x10^9/L" in text
    assert "3 x ULN = 120 U/L" in text
    assert "10*9" not in text


@pytest.mark.parametrize(
    ("reference_range", "shown"),
    [
        # the result's own lower limit, and the default upper limit the ULN test used
        (
            [{"low": {"value": 7, "unit": "U/L"}}],
            "(lower limit 7 U/L, default upper limit 55 U/L; 3 x ULN = 165 U/L)",
        ),
        ([{"high": {"value": 40, "unit": "U/L"}}], "(upper limit 40 U/L; 3 x ULN = 120 U/L)"),
        ([], "(default reference range 7-55 U/L; 3 x ULN = 165 U/L)"),
    ],
)
def test_a_result_shows_the_upper_limit_its_uln_test_compared_with(
    trial: CompiledCriteria, reference_range: list[dict[str, object]], shown: str
) -> None:
    """Exclusion 7's "ALT > 3 x ULN" on a result whose range gives only a lower limit is
    compared with the default upper limit (`reference_limit`, limit by limit); the words
    beside the result say that limit and 3 times it, not only the lower limit (they fell back
    to the defaults only for a result with no limit at all)."""
    data = read_bundle_file(EXAMPLES / "itp-refractory-on-aspirin.json")
    resources = [dict(resource) for resource in data.resources]
    for resource in resources:
        if resource["resourceType"] == "Observation" and "1742-6" in str(resource["code"]):
            resource["referenceRange"] = reference_range
    record = build_record(dataclasses.replace(data, resources=resources), trial.terminology)
    text = explanation_text(explain(evaluate_patient(trial, record, AS_OF)), width=400)
    assert f"Alanine aminotransferase (ALT) 22 U/L on 2026-10-20 {shown}" in text


def test_a_count_recorded_in_x10_9_per_litre_reads_as_written(trial: CompiledCriteria) -> None:
    """A platelet count a laboratory sends as `x10*9/L` is one unit with the one the criteria
    compare in: shown once, `11 x10^9/L`, not `11 xx10^9/L (= 11 x10^9/L)`."""
    text = explanation_text(explain(_evaluate(trial, "itp-refractory-local-codes")), width=400)
    assert "Platelet count 11 x10^9/L on 2026-10-26" in text
    assert "Absolute neutrophil count 2.9 x10^9/L on 2026-10-26" in text
    assert "xx10" not in text


def test_a_creatinine_is_named_as_creatinine_whichever_default_limit_applies(
    trial: CompiledCriteria,
) -> None:
    """Exclusion 8 reads creatinine through concepts that differ only in their default upper
    limit; the evidence named the concept, 'Creatinine, with the adult female default upper
    limit 58 µmol/L', which reads as if 58 were the limit."""
    text = explanation_text(explain(_evaluate(trial, "itp-refractory-local-codes")), width=400)
    assert "- Creatinine (serum/plasma/blood) 58 µmol/L on 2026-10-26" in text
    assert "default upper limit 58" not in text


def test_missing_data_names_a_code_of_the_concept_a_concept_includes(
    trial: CompiledCriteria,
) -> None:
    """Exclusion 8's creatinine concepts list no code of their own (they include
    `creatinine`): the missing data named no code to look for, as every other test does."""
    explanation = explain(_evaluate(trial, "itp-relapsed-missing-labs"))
    organ_function = _criterion(explanation, "E8")
    assert "Needs Creatinine (serum/plasma/blood) result (LOINC 2160-0) dated" in (
        organ_function.summary
    )


def test_a_converted_result_shows_the_digits_that_decide(trial: CompiledCriteria) -> None:
    """A creatinine of 0.8 mg/dL was '(= 70.72 µmol/L)': four digits from a result given to
    one. Converted, it shows the digits that decide, as the reasons do; an INR only respelt
    keeps its two decimals."""
    text = explanation_text(explain(_evaluate(trial, "itp-abnormal-screening-labs")), width=400)
    assert "Creatinine (serum/plasma/blood) 0.8 mg/dL (= 70.7 µmol/L) on 2026-10-22" in text
    assert "Haemoglobin 8.5 g/dL (= 85 g/L) on 2026-10-22" in text
    local = explanation_text(explain(_evaluate(trial, "itp-refractory-local-codes")), width=400)
    assert "(INR) 0.95 INR on 2026-10-26" in local
    # a unit only respelt: the number as recorded, no "(= ...)" repeating it
    assert "Alanine aminotransferase (ALT) 18 IU/L on 2026-10-26" in local
    assert "Prothrombin time (PT) 11.2 sec on 2026-10-26" in local
    assert "(= 18 U/L)" not in local and "(= 0.95)" not in local


def test_nothing_found_says_what_was_looked_for(trial: CompiledCriteria) -> None:
    explanation = explain(_evaluate(trial, "itp-refractory-on-aspirin"))
    allergy = _criterion(explanation, "E14")
    assert allergy.step is not None
    leaves = _leaves(allergy.step)
    assert leaves[0].label == "High-criticality drug allergy"
    assert leaves[0].filters == (
        "only where category includes medication",
        "only where criticality is high",
    )
    assert leaves[1].filters[1] == "only where reaction has severity severe"
    assert "allergy or intolerance at any date up to 2026-11-01" in leaves[0].looked_for
    venous = _leaves(_criterion(explanation, "E2").step or leaves[0])[1]
    assert venous.says == "none active on 2026-11-01"
    text = explanation_text(explanation)
    for internal in ("combination", "AllergyIntolerance: none", "is not (", "gender male is"):
        assert internal not in text


def test_an_unknown_says_what_data_would_settle_it(trial: CompiledCriteria) -> None:
    explanation = explain(_evaluate(trial, "itp-relapsed-missing-labs"))
    missing = explanation.with_verdict(CriterionVerdict.MISSING_DATA)
    assert missing
    for criterion in missing:
        assert criterion.to_settle, criterion.id
        assert criterion.summary.startswith("Needs ")
    organs = _criterion(explanation, "E8")
    assert (
        "Alanine aminotransferase (ALT) result (LOINC 1742-6) dated 2026-10-04 to 2026-11-01"
        " (screening window)" in organs.to_settle
    ), organs.to_settle
    manual = explanation.with_verdict(CriterionVerdict.MANUAL_REVIEW)
    assert all(c.questions for c in manual)
    assert explanation.open_questions


def test_the_text_header_names_status_as_of_and_newest_data(trial: CompiledCriteria) -> None:
    text = explanation_text(explain(_evaluate(trial, "itp-relapsed-candidate")))
    lines = text.splitlines()
    assert lines[0].startswith("NCT05315778: ")
    assert "candidate" in lines[1]
    assert lines[2].startswith("As of 2026-11-01; newest data in the record 2026-")
    assert max(len(line) for line in lines) <= 100


def test_a_lowest_result_test_reads_as_a_sentence(trial: CompiledCriteria) -> None:
    """ "lowest < 100" / "lowest not < 100" read as a clipped note (haematology QA, session
    14): the step says "the lowest is (not) < 100", the result itself cited below it."""
    text = explanation_text(explain(_evaluate(trial, "itp-relapsed-candidate")))
    assert "on record: the lowest is < 100" in text, text
    assert ": lowest " not in text


def test_every_status_is_said_in_words_not_repeated_as_its_code() -> None:
    # The header, the CDS card and the report page show the code and then these words:
    # "eligible (eligible)" told a coordinator nothing.
    assert set(STATUS_TEXT) == set(SubjectStatus)
    for status, words in STATUS_TEXT.items():
        assert words != status.value and words.startswith(("eligible", "not", "may")), status


def test_criteria_left_out_by_a_prefilter_say_so(trial: CompiledCriteria) -> None:
    evaluation = _evaluate(trial, "itp-too-old")
    shortened = dataclasses.replace(
        evaluation,
        results=evaluation.results[:2],
        not_evaluated=tuple(result.criterion for result in evaluation.results[2:]),
    )
    explanation = explain(shortened)
    assert len(explanation.criteria) == len(evaluation.results)
    left_out = explanation.criteria[2]
    assert left_out.verdict is None
    assert left_out.outcome_text == "not evaluated"


def test_where_filters_without_a_simple_reading_are_shown_as_written() -> None:
    atom = ResourceAtom(
        resource_types=("Observation",),
        concept=None,
        window=Window(None),
        where=("component[0].code",),
        where_not=("$..extension[?(@.url =~ 'x')]",),
    )
    assert describe_filters(atom) == (
        "only where `component[0].code` matches",
        "not where `$..extension[?(@.url =~ 'x')]` matches",
    )


def test_a_filter_with_two_tests_on_one_field_reads_in_words() -> None:
    """Exclusion 8's SpO2 filter for FiO2 written as a fraction read 'valueQuantity.value >
    0.21 && @.valueQuantity.value <= 1' in the explanation: jsonpath in a clinician's text."""
    atom = ResourceAtom(
        resource_types=("Observation",),
        concept=None,
        window=Window(None),
        where_not=(
            "component[?(@.valueQuantity.value > 0.21 && @.valueQuantity.value <= 1)]"
            ".code.coding[?(@.code == '3150-0')]",
        ),
    )
    assert describe_filters(atom) == (
        "not where component has valueQuantity.value > 0.21 and <= 1 and code.coding code 3150-0",
    )


def test_units_inside_an_evaluator_sentence_read_readably() -> None:
    from engine.report.explanation import readable_units_in

    assert readable_units_in("33.45 mL/min/{1.73_m2} (Observation/a-1.2); 3.2 10*9/L") == (
        "33.45 mL/min/1.73 m2 (Observation/a-1.2); 3.2 x10^9/L"
    )


_SENTENCE_PIECES = st.sampled_from(
    [
        *(" ", "  ", "\t", "\n", ".", "(", ")", ";", ",", "{", "}", "[", "]", "10*", "-", "_"),
        *("/", "mL", "min", "{1.73_m2}", "10*9/L", "[IU]", "umol/L", "a", "Observation/a-1.2"),
    ]
)


@given(st.lists(_SENTENCE_PIECES, max_size=16).map("".join))
def test_units_are_made_readable_word_by_word_as_in_the_whole_sentence(text: str) -> None:
    """`readable_units_in` runs its expression only over the words holding a unit's mark:
    what it gives is what the expression gives over the whole sentence."""
    from engine.report.explanation import _UCUM_IN_TEXT, readable_unit, readable_units_in

    whole = _UCUM_IN_TEXT.sub(lambda match: readable_unit(match.group(0)) or "", text)
    assert readable_units_in(text) == whole


def _all_steps(step: Step) -> list[Step]:
    return [step, *(x for child in step.children for x in _all_steps(child))]


def test_an_unanswered_item_of_a_decided_combination_is_not_needed(
    trial: CompiledCriteria,
) -> None:
    """First-line therapy is on record, so "given outside this record?" is moot: the tree must
    not show its question as open (it reads as if the record lacked the treatment)."""
    explanation = explain(_evaluate(trial, "itp-relapsed-candidate"))
    itp = _criterion(explanation, "I1")
    assert itp.step is not None
    steps = {step.label: step for step in _all_steps(itp.step)}
    first_line = steps[
        "Received first-line therapy (glucocorticoids, IVIG or anti-D immunoglobulin)"
    ]
    assert first_line.combination == "any of"
    outside = steps["First-line therapy given outside this record (investigator)"]
    assert outside.needed is False
    # an unknown operand of an undecided combination stays needed, with its question
    second_line = steps["Second-line therapy given outside this record (investigator)"]
    assert second_line.needed is True
    assert second_line.question in itp.questions
    assert outside.question not in itp.questions
    text = explanation_text(explanation, width=400)
    assert (
        "[not needed] First-line therapy given outside this record (investigator): unanswered, "
        "not needed (the other items already decide)"
    ) in text
    assert "The record shows no glucocorticoid or immunoglobulin treatment" not in text
    assert "did the patient receive them (or undergo splenectomy)" in text


def test_a_criterion_over_a_type_not_exported_says_why_not_needs(trial: CompiledCriteria) -> None:
    """Issue 12: an atom over a type the source could not provide (a Bulk export left
    MedicationStatement out) is explained with that reason, in the explanation text
    (`evaluate --explain`) and the DetectedIssue, not as data the record lacks ("Needs ...",
    "no result ...")."""
    narrowed = dataclasses.replace(trial, unavailable_types=frozenset({"MedicationStatement"}))
    evaluation = _evaluate(narrowed, "itp-relapsed-candidate")
    explanation = explain(evaluation)
    e2 = _criterion(explanation, "E2")
    assert e2.verdict is CriterionVerdict.MISSING_DATA
    reason = "MedicationStatement not exported by the server"
    assert e2.summary == (
        f"Unknown: Currently using an anticoagulant or antiplatelet drug: {reason}"
    )
    assert e2.to_settle == (
        f"Anticoagulant or antiplatelet drug medication in use on 2026-11-01: {reason}",
    )
    text = explanation_text(explanation, width=1000)
    assert f"[unknown] Currently using an anticoagulant or antiplatelet drug: {reason}" in text
    assert "drug: no result in use on" not in text
    (evidence,) = [
        entry["code"][0]["text"]
        for entry in detected_issue(evaluation)["evidence"]
        if entry["code"][0]["coding"][0]["code"] == "exclusion-2-thrombosis-or-antithrombotics"
    ]
    assert evidence.endswith(f"unknown: data missing. {e2.summary}")
    # the same patient with every type: the record lacks nothing there, the exclusion is clear
    assert _criterion(explain(_evaluate(trial, "itp-relapsed-candidate")), "E2").verdict is (
        CriterionVerdict.CLEAR
    )


EGFR_TRIAL = """
trial: {id: NCT00000001, title: Computed eGFR}
mappings: [MAPPINGS]
criteria:
  - id: inclusion-1-egfr
    kind: inclusion
    text: eGFR >= 25
    expression:
      resource: Observation
      concept: egfr-ckd-epi
      within: P14D
      value: ">= 25 mL/min/{1.73_m2}"
      computed: {formula: egfr-ckd-epi-2021-creatinine}
"""


def test_a_computed_value_whose_inputs_were_not_exported_says_why(tmp_path: Path) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(EGFR_TRIAL.replace("MAPPINGS", str(EXAMPLES.parents[1] / "mappings")))
    trial = dataclasses.replace(load_trial(path), unavailable_types=frozenset({"Observation"}))
    patient = {"resourceType": "Patient", "id": "p", "gender": "male", "birthDate": "1966-05-01"}
    source = PatientResources("p", [patient], [None], "test")
    evaluation = evaluate_patient(trial, build_record(source, trial.terminology), AS_OF)
    (i1,) = explain(evaluation).criteria
    reason = "Observation not exported by the server"
    assert i1.summary.startswith("Unknown: ") and reason in i1.summary, i1.summary
    assert "Needs" not in i1.summary and "no creatinine" not in i1.summary


def _examples_evaluated(criteria_file: str) -> tuple[CompiledCriteria, list[PatientEvaluation]]:
    """A shipped trial, and every shipped example Bundle evaluated against it on two days."""
    trial = load_trial(EXAMPLES.parents[1] / "criteria" / criteria_file)
    bundles = sorted(EXAMPLES.parent.glob("**/*.json"))
    days = (AS_OF, AS_OF + dt.timedelta(days=400))
    return trial, [
        evaluate_patient(trial, build_record(read_bundle_file(path), trial.terminology), day)
        for day in days
        for path in bundles
    ]


@pytest.mark.parametrize("criteria_file", ["NCT05315778.yaml", "NCT03036150.yaml"])
def test_explanations_kept_for_outcomes_citing_nothing_equal_fresh_ones(
    criteria_file: str,
) -> None:
    """Explanations of outcomes that cite nothing are kept and reused for every patient with
    an equal outcome ("none on record ever" reads the same for everyone): explained one after
    the other (each reusing what the previous ones left), every patient's explanation is the
    one built afresh, so the key holds everything the text depends on."""
    from engine.report import explanation as module

    _trial, evaluations = _examples_evaluated(criteria_file)
    module._uncited_criteria.clear()
    module._uncited_combinations.clear()
    reused = [explain(evaluation) for evaluation in evaluations]
    assert module._uncited_criteria  # most criteria cite nothing for most patients
    for evaluation, kept in zip(evaluations, reused, strict=True):
        module._uncited_criteria.clear()
        module._uncited_combinations.clear()
        assert explain(evaluation) == kept


@pytest.mark.parametrize("criteria_file", ["NCT05315778.yaml", "NCT03036150.yaml"])
def test_report_parts_equal_those_of_full_explanations(criteria_file: str) -> None:
    """A cohort's report parts (`report_of`: only the deciding steps built, parts of outcomes
    citing nothing kept and reused) are those of each criterion's full explanation built
    afresh, for every shipped example on two days."""
    from engine.report import explanation as module
    from engine.report import resources
    from engine.report.resources import criterion_report, report_of

    trial, evaluations = _examples_evaluated(criteria_file)
    resources._uncited_parts.clear()
    resources._parts_by_outcome.entries.clear()
    resources._recent_parts.clear()
    reports = [report_of(evaluation) for evaluation in evaluations]
    assert resources._uncited_parts and resources._parts_by_outcome.entries
    verdicts = set()
    for evaluation, report in zip(evaluations, reports, strict=True):
        module._uncited_criteria.clear()
        module._uncited_combinations.clear()
        module._uncited_steps.clear()
        module._queries.clear()
        fresh = tuple(
            criterion_report(result, module.explain_criterion(result, day, trial.terminology))
            for result, day in ((r, evaluation.as_of) for r in evaluation.results)
        )
        assert report.parts == fresh
        verdicts |= {part.verdict for part in fresh}
    assert len(verdicts) >= 3  # clear, fails and unknown summaries compared


def _without_measurements(outcome: Outcome) -> Outcome:
    """The outcome tree with every cited resource's `measured` value dropped."""
    return dataclasses.replace(
        outcome,
        cited=tuple(dataclasses.replace(cited, measured=None) for cited in outcome.cited),
        children=tuple(map(_without_measurements, outcome.children)),
    )


def _measured_citations(outcome: Outcome) -> list[Cited]:
    found = [cited for cited in outcome.cited if cited.measured is not None]
    return found + [x for child in outcome.children for x in _measured_citations(child)]


@pytest.mark.parametrize("criteria_file", ["NCT05315778.yaml", "NCT03036150.yaml"])
def test_values_read_by_evaluation_explain_as_values_read_again(criteria_file: str) -> None:
    """A cited Observation carries the value its atom read (`Cited.measured`), which the
    explanation says instead of reading it again: for every shipped example on two days,
    each carried value is `measure` of the resource for that concept and terminology, and
    every explanation equals the one made with no value carried (each read again)."""
    from engine.report import explanation as module

    _trial, evaluations = _examples_evaluated(criteria_file)
    carried = 0
    for evaluation in evaluations:
        for result in evaluation.results:
            for cited in _measured_citations(result.outcome):
                assert cited.measured is not None
                concept, terminology, value = cited.measured
                assert value == measure(cited.resource, concept, terminology)
                carried += 1
        module._uncited_criteria.clear()
        module._uncited_combinations.clear()
        module._uncited_steps.clear()
        with_values = explain(evaluation)
        stripped = dataclasses.replace(
            evaluation,
            results=tuple(
                dataclasses.replace(result, outcome=_without_measurements(result.outcome))
                for result in evaluation.results
            ),
        )
        module._uncited_criteria.clear()
        module._uncited_combinations.clear()
        module._uncited_steps.clear()
        assert explain(stripped) == with_values
    assert carried >= 5  # platelet counts, creatinine, eGFR inputs...


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["1980-02-29", "1980-03-01", "2000-12-31T10:00:00Z", "1975", "x" * 12])
            | st.text(max_size=12),
            st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2030, 12, 31)),
        ),
        max_size=12,
    )
)
def test_ages_kept_by_birth_date_and_day_read_as_made_anew(
    births: list[tuple[str, dt.date]],
) -> None:
    """A Patient's age in words is kept by birth date text and day (`_birth_texts`): one
    after the other, each reads as made anew for its own birth date and day."""
    from engine.report import explanation as module

    module._birth_texts.clear()
    for birth, day in births + births:
        assert module._patient_text({"birthDate": birth}, day) == module._birth_text(birth, day)
    assert module._patient_text({}, AS_OF) == "date of birth not recorded"


def _with_platelets(trial: CompiledCriteria, **value: object) -> PatientExplanation:
    """The relapsed candidate with her platelet count's value replaced by `value`."""
    bundle = orjson.loads((EXAMPLES / "itp-relapsed-candidate.json").read_bytes())
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation" and resource["code"]["coding"][0]["code"] == (
            "777-3"
        ):
            resource.pop("valueQuantity")
            resource.update(value)
    source = parse_bundle(orjson.dumps(bundle), origin="platelets.json")
    return explain(evaluate_patient(trial, build_record(source, trial.terminology), AS_OF))


def test_a_count_in_another_unit_is_written_without_exponents(trial: CompiledCriteria) -> None:
    """Haematology QA session 14, 11: "1.8e+04 /mm3" read as a typo to a clinician."""
    explanation = _with_platelets(
        trial,
        valueQuantity={
            "value": 18000,
            "unit": "/mm3",
            "system": "http://unitsofmeasure.org",
            "code": "/mm3",
        },
    )
    text = explanation_text(explanation, width=400)
    assert "Platelet count 18000 /mm3 (= 18 x10^9/L) on 2026-10-20" in text
    assert "e+0" not in text


def test_a_bare_number_says_it_lacks_a_unit_and_the_preferred_code_settles_it(
    trial: CompiledCriteria,
) -> None:
    """'18' is a number without a unit (not "neither a known answer nor a plain number");
    "to settle" names the code the mapping lists first, LOINC 777-3 (platelets in blood),
    not the smallest, 13056-7 (platelets in plasma)."""
    itp = _criterion(_with_platelets(trial, valueString="18"), "I1")
    assert itp.verdict is CriterionVerdict.MISSING_DATA
    text = "\n".join(criterion_lines(itp))
    assert "valueString '18' is a number without a unit; platelets needs a unit" in text
    assert "a usable Platelet count result (LOINC 777-3) at any date" in " ".join(itp.to_settle)
    assert "13056-7" not in text


def test_a_branch_for_another_gender_does_not_apply(trial: CompiledCriteria) -> None:
    """Exclusion 8 tests creatinine against each sex's (and age band's) default limit under a
    gender (and age) test; for
    a woman the male branch is shown as not applicable, without a male-limit creatinine line,
    and every patient test has a label (it printed "[yes] : female")."""
    explanation = explain(_evaluate(trial, "itp-relapsed-candidate"))
    organs = _criterion(explanation, "E8")
    text = "\n".join(line.strip() for line in criterion_lines(organs))
    assert (
        "[not applicable] Creatinine above 1.5 x ULN (the result's own range, else the male "
        "default): does not apply (gender female: not male)"
    ) in " ".join(text.split())
    assert "[yes] Recorded gender female: female" in text
    assert "[yes] :" not in text
    assert organs.step is not None
    moot = [step for step in _all_steps(organs.step) if step.moot]
    # the woman-from-60 branch's gender and creatinine, the man-under-60 branch's age and
    # creatinine, the man-from-60 and other-gender branches' creatinine
    assert len(moot) == 6 and all(not step.needed for step in moot)
    record = build_record(
        read_bundle_file(EXAMPLES / "itp-relapsed-candidate.json"), trial.terminology
    )
    answered = {
        "dyspnea-ctcae-grade-1-or-higher": Attestation(
            "dyspnea-ctcae-grade-1-or-higher", False, "Dr. Test", AS_OF
        )
    }
    clear = _criterion(explain(evaluate_patient(trial, record, AS_OF, answered)), "E8")
    assert clear.verdict is CriterionVerdict.CLEAR
    assert "else the female default" in clear.summary
    assert "else the male default" not in clear.summary
    assert "Recorded gender male" not in clear.summary


def test_pregnancy_evidence_counts_whatever_the_gender_and_names_the_other_cause(
    trial: CompiledCriteria,
) -> None:
    """Haematology QA session 14, finding 2: Patient.gender is administrative; a positive hCG
    in a patient recorded male counts, and the explanation says that without a pregnancy it
    may come from an hCG-secreting tumour (exclusion 5's concern), guessing neither."""
    bundle = orjson.loads((EXAMPLES / "itp-relapsed-candidate.json").read_bytes())
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["gender"] = "male"
        elif resource["resourceType"] == "Observation" and resource["code"]["coding"][0][
            "code"
        ] in ("2106-3", "2118-8"):
            resource["code"]["coding"][0]["code"] = "21198-7"
            resource.pop("valueCodeableConcept", None)
            resource["valueQuantity"] = {"value": 1200, "unit": "mIU/mL"}
    source = parse_bundle(orjson.dumps(bundle), origin="male-hcg.json")
    explanation = explain(evaluate_patient(trial, build_record(source, trial.terminology), AS_OF))
    pregnancy = _criterion(explanation, "E12")
    assert pregnancy.verdict is CriterionVerdict.FAILS
    text = " ".join(" ".join(criterion_lines(pregnancy)).split())
    assert "[yes] Pregnant or breastfeeding (record, whatever the recorded gender)" in text
    assert (
        "a positive hCG may come from an hCG-secreting tumour, a malignancy: see exclusion 5"
        in (text)
    )
    assert "1200 mIU/mL (= 1200 IU/L)" in text
