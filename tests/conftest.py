"""Shared fixtures: the real NCT05315778 criteria, compiled once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from engine.evaluate import CompiledCriteria
from engine.trial import load_trial

ROOT = Path(__file__).resolve().parent.parent

# Property tests check correctness, not speed: a first call that builds the UCUM registry or
# compiles a schema must not fail a test on a busy machine (speed is for benchmarks/).
settings.register_profile("trialsieve", deadline=None)
settings.load_profile("trialsieve")


@pytest.fixture(scope="session")
def trial() -> CompiledCriteria:
    return load_trial(ROOT / "criteria" / "NCT05315778.yaml")
