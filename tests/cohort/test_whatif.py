"""`trialsieve attrition OUT --without ...`: the funnel from stored outcomes, criteria off."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.cohort import CohortSummary
from engine.cohort.whatif import what_if_funnel
from engine.errors import CohortError


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _funnel_by_hand(out: Path, without: set[str]) -> list[tuple[int, int]]:
    """(remaining before, lost) per criterion, patient by patient from cohort.csv."""
    stored = _rows(out / "attrition.csv")
    kinds = {row["criterion"]: row["kind"] for row in stored if row["kind"] != "vital-status"}
    patients = _rows(out / "cohort.csv")
    alive = [patient["deceased"] != "yes" for patient in patients]
    steps = [(len(patients), len(patients) - sum(alive))]  # step 0: deceased
    for criterion, kind in kinds.items():
        failing = "not_met" if kind == "inclusion" else "met"
        before = sum(alive)
        lost = 0
        if criterion not in without:
            for index, patient in enumerate(patients):
                if alive[index] and patient[criterion] == failing:
                    alive[index] = False
                    lost += 1
        steps.append((before, lost))
    return steps


def test_without_switches_the_funnel_is_the_run_s(full_run: CohortSummary) -> None:
    funnel = what_if_funnel(full_run.out_dir)
    stored = _rows(full_run.out_dir / "attrition.csv")
    assert [(s.criterion, s.remaining_before, s.lost) for s in funnel.steps] == [
        (row["criterion"], int(row["remaining_before"]), int(row["lost"])) for row in stored
    ]
    assert funnel.remaining == funnel.remaining_in_the_run == int(stored[-1]["remaining"])


def test_switched_off_criteria_exclude_nobody(full_run: CohortSummary) -> None:
    stored = _rows(full_run.out_dir / "attrition.csv")
    losing = [row["criterion"] for row in stored if int(row["lost"]) > 0]
    assert losing, "the examples should exclude someone"
    without = set(losing[:2])
    funnel = what_if_funnel(full_run.out_dir, sorted(without))
    assert [(s.remaining_before, s.lost) for s in funnel.steps] == _funnel_by_hand(
        full_run.out_dir, without
    )
    assert funnel.remaining > funnel.remaining_in_the_run
    assert all(s.switched_off == (s.criterion in without) for s in funnel.steps)


def test_an_unknown_criterion_or_folder_is_refused(full_run: CohortSummary, tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="no criterion exclusion-99"):
        what_if_funnel(full_run.out_dir, ["exclusion-99"])
    with pytest.raises(CohortError, match="no finished cohort run"):
        what_if_funnel(tmp_path)


def test_the_command_prints_the_funnel(full_run: CohortSummary) -> None:
    criterion = _rows(full_run.out_dir / "attrition.csv")[1]["criterion"]  # (0: deceased)
    result = CliRunner().invoke(app, ["attrition", str(full_run.out_dir), "--without", criterion])
    assert result.exit_code == 0, result.output
    assert "(switched off)" in result.output and "remaining after every criterion" in result.output
    refused = CliRunner().invoke(app, ["attrition", str(full_run.out_dir), "--without", "x-1"])
    assert refused.exit_code == 2
