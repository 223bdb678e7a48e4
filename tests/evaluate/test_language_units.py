"""Issue 9 items 2 and 3: units that UCUM would silently mix up.

HbA1c in mmol/mol (IFCC) is not a tenth of HbA1c in % (NGSP): the concept declares the
IFCC-NGSP master equation, NGSP % = 0.09148 x IFCC mmol/mol + 2.152 (Hoelzel W et al.,
Clin Chem 2004;50(1):166-174), or the result is unusable. An eGFR per 1.73 m2 of body surface
area (`mL/min/{1.73_m2}`) is not a clearance in `mL/min`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from language_support import MAPPINGS, atom_trial, evaluate, observation

from engine.errors import TrialsieveError, UnitError
from engine.evaluate.outcome import Truth
from engine.lint import LintWarning, lint_paths
from engine.normalise import convert
from engine.trial import load_trial

HBA1C = 'resource: Observation\nconcept: hba1c\nvalue: ">= 6.5 %"\n'
HBA1C_WITH_EQUATION = MAPPINGS.replace(
    '    unit: "%"\n',
    '    unit: "%"\n'
    "    conversions:\n"
    "      - from: mmol/mol\n"
    "        factor: 0.09148\n"
    "        offset: 2.152\n"
    "        source: IFCC-NGSP master equation (Hoelzel et al., Clin Chem 2004;50:166-174)\n",
)


def test_ucum_no_longer_scales_a_molar_ratio_into_percent() -> None:
    with pytest.raises(UnitError, match="ratios, but of different kinds"):
        convert(53.0, "mmol/mol", "%")
    assert convert(0.45, "L/L", "%") == pytest.approx(45.0)  # a volume fraction still is


def test_hba1c_in_mmol_per_mol_without_a_declared_conversion_is_unusable(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, HBA1C)
    [outcome] = evaluate(path, observation("4548-4", 53, "mmol/mol", "2025-07-01"))
    assert outcome.truth is Truth.UNKNOWN
    assert "cannot be converted to %" in outcome.reason


def test_hba1c_in_mmol_per_mol_is_read_by_the_master_equation(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, HBA1C, HBA1C_WITH_EQUATION)
    [outcome] = evaluate(path, observation("4548-4", 53, "mmol/mol", "2025-07-01"))
    assert outcome.truth is Truth.MET  # 53 mmol/mol = 7.0 %, not 5.3 %
    assert "7.0 %" in outcome.reason  # converted: the digits that decide, not 7.00044
    [outcome] = evaluate(path, observation("4548-4", 42, "mmol/mol", "2025-07-01"))
    assert outcome.truth is Truth.NOT_MET  # 42 mmol/mol = 5.99 %


def test_a_threshold_in_mmol_per_mol_on_a_percent_concept_is_a_load_error(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, 'resource: Observation\nconcept: hba1c\nvalue: ">= 48 mmol/mol"\n')
    with pytest.raises(TrialsieveError, match="different kinds"):
        load_trial(path)


def test_an_egfr_threshold_in_ml_per_min_is_a_load_error(tmp_path: Path) -> None:
    path = atom_trial(tmp_path, 'resource: Observation\nconcept: egfr\nvalue: ">= 25 mL/min"\n')
    with pytest.raises(TrialsieveError, match=r"annotation in a denominator"):
        load_trial(path)


def test_lint_rejects_incommensurable_thresholds(tmp_path: Path) -> None:
    atom_trial(tmp_path, 'resource: Observation\nconcept: egfr\nvalue: ">= 25 mL/min"\n')
    problems = lint_paths([tmp_path / "trial.yaml"])
    errors = [problem for problem in problems if not isinstance(problem, LintWarning)]
    assert len(errors) == 1
    assert "mL/min does not convert to egfr's unit mL/min/{1.73_m2}" in errors[0].message


def test_an_egfr_stored_in_ml_per_min_is_unusable_with_the_reason(tmp_path: Path) -> None:
    path = atom_trial(
        tmp_path, 'resource: Observation\nconcept: egfr\nvalue: ">= 25 mL/min/{1.73_m2}"\n'
    )
    [outcome] = evaluate(path, observation("98979-8", 40, "mL/min", "2025-07-01"))
    assert outcome.truth is Truth.UNKNOWN
    assert "different quantities" in outcome.reason
    [outcome] = evaluate(path, observation("98979-8", 40, "mL/min/{1.73_m2}", "2025-07-01"))
    assert outcome.truth is Truth.MET


def test_counting_annotations_in_a_numerator_still_convert() -> None:
    assert convert(250.0, "{cells}/uL", "10*9/L") == pytest.approx(0.25)


def test_the_shipped_hba1c_concept_declares_the_master_equation() -> None:
    from engine.normalise import load_terminology, measure

    mappings = Path(__file__).resolve().parents[2] / "mappings"
    terminology = load_terminology([mappings])
    concept = terminology.concept("hba1c")
    result = measure(observation("59261-8", 53, "mmol/mol", "2025-07-01"), concept, terminology)
    assert getattr(result, "value", None) == pytest.approx(7.0, abs=0.01)
    assert "Hoelzel" in concept.conversions[0].source
