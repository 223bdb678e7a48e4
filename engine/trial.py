"""Load a trial: read its criteria file, the mappings it names, and compile — once per run."""

from __future__ import annotations

from pathlib import Path

from engine.criteria.loader import load_criteria
from engine.evaluate.compile import CompiledCriteria, compile_criteria
from engine.normalise import load_terminology


def load_trial(criteria_path: str | Path) -> CompiledCriteria:
    """Load and compile a criteria file with the mappings it refers to."""
    criteria = load_criteria(criteria_path)
    terminology = load_terminology(list(criteria.mapping_paths))
    return compile_criteria(criteria, terminology)
