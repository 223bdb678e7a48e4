"""Every criterion of NCT03036150 (DAPA-CKD), hand-written patients per case (ckd_cases.py).

Each case is the baseline patient plus or minus a few resources (and attestations); the test
checks the verdict of the criterion under test only, and where the case says so, that the
reason names what decided and that the evidence cites the deciding resources.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from ckd_baseline import BASELINE, FAVOURABLE, evaluate, variant
from ckd_builders import bundle
from ckd_cases import CASES, Case, Role, short_id
from fhir.resources.R4B.bundle import Bundle
from ruamel.yaml import YAML

from engine.criteria.model import CriterionKind
from engine.evaluate import CompiledCriteria, CriterionResult, CriterionVerdict, SubjectStatus
from engine.trial import load_trial

CRITERIA_FILE = Path(__file__).resolve().parents[2] / "criteria" / "NCT03036150.yaml"
EXPECTED_BY_ROLE = {Role.MEETS: CriterionVerdict.CLEAR, Role.FAILS: CriterionVerdict.FAILS}


@pytest.fixture(scope="module")
def dapa_ckd() -> CompiledCriteria:
    return load_trial(CRITERIA_FILE)


def result_of(case: Case, trial: CompiledCriteria) -> CriterionResult:
    resources = variant(add=case.add, remove=case.remove, replace_patient=case.patient)
    evaluation = evaluate(trial, resources, case.answers)
    matching = [result for result in evaluation.results if short_id(result.id) == case.criterion]
    assert len(matching) == 1, f"no single criterion {case.criterion} in the criteria file"
    return matching[0]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_criterion_verdict(case: Case, dapa_ckd: CompiledCriteria) -> None:
    result = result_of(case, dapa_ckd)
    outcome = result.outcome
    assert result.verdict is case.expected, (
        f"{result.id}: expected {case.expected}, got {result.verdict}: {outcome.reason}"
    )
    for text in case.reason:
        assert text in outcome.reason, f"{text!r} not in the reason: {outcome.reason}"
    for reference in case.evidence:
        assert reference in outcome.evidence, f"{reference} not in {outcome.evidence}"


def test_the_baseline_is_a_candidate_and_eligible_once_attested(
    dapa_ckd: CompiledCriteria,
) -> None:
    assert evaluate(dapa_ckd, BASELINE, {}).status is SubjectStatus.CANDIDATE
    assert evaluate(dapa_ckd, BASELINE, FAVOURABLE).status is SubjectStatus.ELIGIBLE


# ------------------------------------------------------------------------ the table itself


def criteria_ids_in_file() -> list[tuple[str, str]]:
    """(id, kind) of every criterion, read from the YAML text (not from the engine)."""
    document = YAML(typ="safe").load(CRITERIA_FILE.read_text(encoding="utf-8"))
    return [(criterion["id"], criterion["kind"]) for criterion in document["criteria"]]


def test_the_file_has_5_inclusion_and_7_exclusion_criteria(dapa_ckd: CompiledCriteria) -> None:
    assert Counter(kind for _, kind in criteria_ids_in_file()) == {"inclusion": 5, "exclusion": 7}
    compiled = Counter(criterion.kind for criterion in dapa_ckd.criteria)
    assert compiled == {CriterionKind.INCLUSION: 5, CriterionKind.EXCLUSION: 7}


def test_the_criterion_texts_are_the_registry_text_verbatim() -> None:
    seed = Path("/work/shared/seeds/NCT03036150.txt")
    if not seed.exists():
        pytest.skip("the registry text is not on this machine")
    lines = [line[2:].strip() for line in seed.read_text(encoding="utf-8").splitlines()]
    document = YAML(typ="safe").load(CRITERIA_FILE.read_text(encoding="utf-8"))
    for criterion in document["criteria"]:
        assert " ".join(criterion["text"].split()) in lines, criterion["id"]


def test_every_criterion_has_a_meets_a_fails_and_a_silent_case() -> None:
    roles: dict[str, set[Role]] = {}
    for case in CASES:
        roles.setdefault(case.criterion, set()).add(case.role)
    in_file = [short_id(criterion_id) for criterion_id, _ in criteria_ids_in_file()]
    lacking = {
        c: sorted(set(Role) - roles.get(c, set())) for c in in_file if roles.get(c) != set(Role)
    }
    assert not lacking, f"criteria without all three cases: {lacking}"
    assert sorted(set(roles) - set(in_file)) == []


def test_cases_are_consistent() -> None:
    ids = Counter(case.id for case in CASES)
    assert [case_id for case_id, count in ids.items() if count > 1] == []
    for case in CASES:
        if case.role in EXPECTED_BY_ROLE:
            assert case.expected is EXPECTED_BY_ROLE[case.role], case.id


def test_the_patients_are_valid_fhir() -> None:
    Bundle.model_validate(bundle(*BASELINE))
    for case in CASES:
        Bundle.model_validate(bundle(*variant(case.add, case.remove, case.patient)))
