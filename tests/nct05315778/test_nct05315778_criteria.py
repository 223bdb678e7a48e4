"""Every criterion of NCT05315778, one hand-written patient per case (see cases.py).

Each case is the baseline patient plus or minus a few resources (and attestations); the test
checks the verdict of the criterion under test only, and where the case says so, that the
reason names what decided and that the evidence cites the deciding resources.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from baseline import BASELINE, evaluate, variant
from builders import bundle
from cases import CASES, Case, Role, short_id
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError
from ruamel.yaml import YAML

from engine.criteria.model import CriterionKind
from engine.evaluate import CompiledCriteria, CriterionResult, CriterionVerdict

CRITERIA_FILE = Path(__file__).resolve().parents[2] / "criteria" / "NCT05315778.yaml"
DELIBERATELY_INVALID = {"hb-no-zone"}
"""Resources the cases break on purpose (a dateTime with a time but no time zone)."""
EXPECTED_BY_ROLE = {Role.MEETS: CriterionVerdict.CLEAR, Role.FAILS: CriterionVerdict.FAILS}


def result_of(case: Case, trial: CompiledCriteria) -> CriterionResult:
    resources = variant(add=case.add, remove=case.remove, replace_patient=case.patient)
    evaluation = evaluate(trial, resources, case.answers)
    matching = [result for result in evaluation.results if short_id(result.id) == case.criterion]
    assert len(matching) == 1, f"no single criterion {case.criterion} in the criteria file"
    return matching[0]


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_criterion_verdict(case: Case, trial: CompiledCriteria) -> None:
    result = result_of(case, trial)
    outcome = result.outcome
    assert result.verdict is case.expected, (
        f"{result.id}: expected {case.expected}, got {result.verdict}: {outcome.reason}"
    )
    for text in case.reason:
        assert text in outcome.reason, f"{text!r} not in the reason: {outcome.reason}"
    for reference in case.evidence:
        assert reference in outcome.evidence, f"{reference} not in {outcome.evidence}"


# ------------------------------------------------------------------------ the table itself


def criteria_ids_in_file() -> list[tuple[str, str]]:
    """(id, kind) of every criterion, read from the YAML text (not from the engine)."""
    document = YAML(typ="safe").load(CRITERIA_FILE.read_text(encoding="utf-8"))
    return [(criterion["id"], criterion["kind"]) for criterion in document["criteria"]]


def test_the_file_has_5_inclusion_and_16_exclusion_criteria(trial: CompiledCriteria) -> None:
    kinds = Counter(kind for _, kind in criteria_ids_in_file())
    assert kinds == {"inclusion": 5, "exclusion": 16}
    compiled = Counter(criterion.kind for criterion in trial.criteria)
    assert compiled == {CriterionKind.INCLUSION: 5, CriterionKind.EXCLUSION: 16}


def test_criterion_ids_are_numbered_in_protocol_order() -> None:
    for kind in ("inclusion", "exclusion"):
        numbers = [
            int(short_id(criterion_id).rsplit("-", 1)[1])
            for criterion_id, criterion_kind in criteria_ids_in_file()
            if criterion_kind == kind
        ]
        assert numbers == list(range(1, len(numbers) + 1)), f"{kind} ids: {numbers}"


def test_every_criterion_has_a_meets_a_fails_and_a_silent_case() -> None:
    roles: dict[str, set[Role]] = {}
    for case in CASES:
        roles.setdefault(case.criterion, set()).add(case.role)
    in_file = [short_id(criterion_id) for criterion_id, _ in criteria_ids_in_file()]
    lacking = {
        criterion: sorted(set(Role) - roles.get(criterion, set()))
        for criterion in in_file
        if roles.get(criterion, set()) != set(Role)
    }
    assert not lacking, f"criteria without all three cases: {lacking}"
    unknown = sorted(set(roles) - set(in_file))
    assert not unknown, f"cases for criteria the file does not have: {unknown}"


def test_cases_are_consistent() -> None:
    ids = Counter(case.id for case in CASES)
    assert [case_id for case_id, count in ids.items() if count > 1] == []
    for case in CASES:
        if case.role in EXPECTED_BY_ROLE:
            assert case.expected is EXPECTED_BY_ROLE[case.role], case.id


def test_the_patients_are_valid_fhir_but_for_the_deliberately_broken_resources() -> None:
    Bundle.model_validate(bundle(*BASELINE))
    invalid: set[str] = set()
    for case in CASES:
        patient = case.patient or BASELINE[0]
        for resources in ((patient,), *((patient, resource) for resource in case.add)):
            try:
                Bundle.model_validate(bundle(*resources))
            except ValidationError:
                invalid.add(resources[-1]["id"])
    assert invalid == DELIBERATELY_INVALID


def test_criterion_names_write_itp_as_haematologists_do(trial: CompiledCriteria) -> None:
    """The summary names each criterion by its label, else its id in words: the id's 'itp'
    read 'I1 Relapsed refractory itp' and 'E1 Secondary itp'."""
    from engine.report.explanation import criterion_labels

    labels = criterion_labels(trial)
    assert labels[0] == "I1 Relapsed or refractory primary ITP"
    assert "E1 Secondary ITP" in labels
    assert not [label for label in labels if " itp" in label]
