"""Atoms with the same jsonpath filter share one compiled path, and a patient's evaluation runs
it once per resource (`EvaluationContext.path_matches`): each atom still reads the answer its
own way (`where` keeps what it finds, `where_not` drops it)."""

from __future__ import annotations

from pathlib import Path

from language_support import condition, evaluate, write_trial

from engine.evaluate.nodes import AnyNode, ResourceNode
from engine.evaluate.outcome import Truth
from engine.trial import load_trial

CRITERIA = """\
- id: kept
  kind: inclusion
  text: t
  expression:
    resource: Condition
    concept: myocardial-infarction
    where: ["$[?($.severity.text == 'severe')]"]
- id: dropped
  kind: inclusion
  text: t
  expression:
    any:
      - resource: Condition
        concept: myocardial-infarction
        where_not: ["$[?($.severity.text == 'severe')]"]
      - resource: Condition
        concept: myocardial-infarction
        where: ["$[?($.severity.text == 'severe')]"]
        where_not: ["$[?($.severity.text == 'severe')]"]
- id: other
  kind: inclusion
  text: t
  expression:
    resource: Condition
    concept: myocardial-infarction
    where: ["$[?($.severity.text == 'mild')]"]
"""


def test_the_same_expression_is_compiled_once(tmp_path: Path) -> None:
    kept, dropped, _other = load_trial(write_trial(tmp_path, CRITERIA)).criteria
    assert isinstance(kept.root, ResourceNode) and isinstance(dropped.root, AnyNode)
    first, second = dropped.root.operands
    assert isinstance(first, ResourceNode) and isinstance(second, ResourceNode)
    assert kept.root.filters[0] is first.exclusions[0] is second.filters[0]


def test_each_atom_reads_the_shared_answer_its_own_way(tmp_path: Path) -> None:
    path = write_trial(tmp_path, CRITERIA)
    severe = condition("22298006", "2025-01-01", severity={"text": "severe"})
    kept, dropped, other = evaluate(path, severe)
    assert kept.truth is Truth.MET
    assert dropped.truth is Truth.NOT_MET
    assert other.truth is Truth.NOT_MET
    mild = condition("22298006", "2025-01-01", severity={"text": "mild"})
    kept, dropped, other = evaluate(path, mild)
    assert kept.truth is Truth.NOT_MET
    assert dropped.truth is Truth.MET
    assert other.truth is Truth.MET
