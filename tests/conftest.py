"""Shared fixtures: the real NCT05315778 criteria, compiled once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.evaluate import CompiledCriteria
from engine.trial import load_trial

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def trial() -> CompiledCriteria:
    return load_trial(ROOT / "criteria" / "NCT05315778.yaml")
