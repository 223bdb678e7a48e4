"""Whole-patient status for NCT05315778: the baseline and a few variants of it.

ineligible (something fails) > potential-candidate (data missing) > candidate (only manual
review left) > eligible (everything clear, manual items attested).
"""

from __future__ import annotations

import pytest
from baseline import BASELINE, FAVOURABLE, evaluate, variant
from builders import SNOMED, bundle, condition, observation
from cases import short_id

from engine.evaluate import CompiledCriteria, CriterionVerdict, PatientEvaluation, SubjectStatus

MANUAL_ONLY = {
    "inclusion-1",  # relapse / refractoriness
    "inclusion-3",
    "inclusion-5",
    "exclusion-4",
    "exclusion-6",
    "exclusion-8",  # dyspnea grade
    "exclusion-11",
    "exclusion-12",
    "exclusion-13",
    "exclusion-15",
    "exclusion-16",
}
"""The criteria the baseline leaves to manual review: everything else is clear."""


def verdicts(evaluation: PatientEvaluation, verdict: CriterionVerdict) -> set[str]:
    return {short_id(result.id) for result in evaluation.results_with(verdict)}


def test_the_favourable_answers_cover_every_manual_item(trial: CompiledCriteria) -> None:
    assert set(FAVOURABLE) == trial.manual_ids


def test_baseline_is_a_candidate_with_only_manual_review_left(trial: CompiledCriteria) -> None:
    evaluation = evaluate(trial, BASELINE)
    assert evaluation.status is SubjectStatus.CANDIDATE
    assert verdicts(evaluation, CriterionVerdict.MANUAL_REVIEW) == MANUAL_ONLY
    assert len(verdicts(evaluation, CriterionVerdict.CLEAR)) == 21 - len(MANUAL_ONLY)
    assert evaluation.data_problems == ()


def test_baseline_with_every_manual_item_attested_is_eligible(trial: CompiledCriteria) -> None:
    evaluation = evaluate(trial, BASELINE, FAVOURABLE)
    assert evaluation.status is SubjectStatus.ELIGIBLE
    assert len(evaluation.results_with(CriterionVerdict.CLEAR)) == 21


@pytest.mark.parametrize("bundle_type", ["collection", "transaction"])
def test_the_bundle_type_does_not_change_the_result(
    trial: CompiledCriteria, bundle_type: str
) -> None:
    evaluation = evaluate(trial, BASELINE, FAVOURABLE, bundle_type=bundle_type)
    assert evaluation.status is SubjectStatus.ELIGIBLE
    assert bundle(*BASELINE, bundle_type=bundle_type)["type"] == bundle_type


def test_one_unfavourable_answer_makes_the_patient_ineligible(trial: CompiledCriteria) -> None:
    answers = {**FAVOURABLE, "informed-consent": False}
    evaluation = evaluate(trial, BASELINE, answers)
    assert evaluation.status is SubjectStatus.INELIGIBLE
    assert verdicts(evaluation, CriterionVerdict.FAILS) == {"inclusion-5"}


def test_missing_screening_labs_make_a_potential_candidate(trial: CompiledCriteria) -> None:
    evaluation = evaluate(trial, variant(remove=("creatinine", "ecog")), FAVOURABLE)
    assert evaluation.status is SubjectStatus.POTENTIAL_CANDIDATE
    assert verdicts(evaluation, CriterionVerdict.MISSING_DATA) == {"inclusion-4", "exclusion-8"}


def test_missing_data_without_attestations_is_still_a_potential_candidate(
    trial: CompiledCriteria,
) -> None:
    evaluation = evaluate(trial, variant(remove=("pregnancy-test",)))
    assert evaluation.status is SubjectStatus.POTENTIAL_CANDIDATE
    assert verdicts(evaluation, CriterionVerdict.MISSING_DATA) == {"exclusion-12"}


def test_a_failing_criterion_wins_over_missing_data(trial: CompiledCriteria) -> None:
    myocardial_infarction = condition(SNOMED, "22298006", "2015-04-02", "resolved", id="mi")
    evaluation = evaluate(
        trial, variant(add=(myocardial_infarction,), remove=("creatinine",)), FAVOURABLE
    )
    assert evaluation.status is SubjectStatus.INELIGIBLE
    assert verdicts(evaluation, CriterionVerdict.FAILS) == {"exclusion-2"}
    assert verdicts(evaluation, CriterionVerdict.MISSING_DATA) == {"exclusion-8"}


def test_abnormal_screening_labs_fail_several_criteria(trial: CompiledCriteria) -> None:
    low_hb = observation("718-7", 85, "g/L", id="hb-low")
    high_alt = observation("1742-6", 250, "U/L", reference_range=(7, 40), id="alt-high")
    long_pt = observation("5902-2", 19, "s", reference_range=(11, 13.5), id="pt-long")
    resources = variant(add=(low_hb, high_alt, long_pt), remove=("hb", "alt", "pt"))
    evaluation = evaluate(trial, resources, FAVOURABLE)
    assert evaluation.status is SubjectStatus.INELIGIBLE
    assert verdicts(evaluation, CriterionVerdict.FAILS) == {
        "exclusion-7",
        "exclusion-8",
        "exclusion-9",
    }
