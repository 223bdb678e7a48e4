"""`trialsieve attrition OUT --without ...`: the funnel from stored outcomes, criteria off."""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as parquet  # type: ignore[import-untyped]
import pytest
from cohort_examples import AS_OF, ROOT
from typer.testing import CliRunner

from engine.cli import app
from engine.cohort import BundleInput, CohortSummary, run_cohort
from engine.cohort.whatif import (
    CountChange,
    FunnelStep,
    WhatIfFunnel,
    count_changes,
    what_if_funnel,
)
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


def test_patients_settled_on_a_criterion_switched_off_are_counted_as_unknown(
    one_worker: CohortSummary, full_run: CohortSummary
) -> None:
    """Without `--full`, the pre-filter settles patients on inclusion-1 (no relapsed ITP) and
    evaluates for them only what their diagnoses, procedures and demographics answer: with
    inclusion-1 switched off they pass the other criteria as not evaluated, so the funnel
    counts them among the remaining, and says how many of those are unknown. The truth (the
    `--full` run's funnel, every criterion evaluated for everyone) lies between the
    remaining less the unknown and the remaining; the reviewer's case counted 18 remaining
    where 17 remain, and said nothing."""
    assert what_if_funnel(one_worker.out_dir).remaining_not_evaluated == 0
    settling = "inclusion-1-relapsed-refractory-itp"
    funnel = what_if_funnel(one_worker.out_dir, [settling])
    patients = _rows(one_worker.out_dir / "cohort.csv")
    kinds = {
        row["criterion"]: row["kind"]
        for row in _rows(one_worker.out_dir / "attrition.csv")
        if row["kind"] != "vital-status" and row["criterion"] != settling
    }

    def remains(patient: dict[str, str]) -> bool:
        return patient["deceased"] != "yes" and all(
            patient[criterion] != ("not_met" if kind == "inclusion" else "met")
            for criterion, kind in kinds.items()
        )

    remaining = [patient for patient in patients if remains(patient)]
    unknown = [p for p in remaining if any(p[c] == "not_evaluated" for c in kinds)]
    assert funnel.remaining == len(remaining)
    assert funnel.remaining_not_evaluated == len(unknown) > 0
    truth = what_if_funnel(full_run.out_dir, [settling])
    assert truth.remaining_not_evaluated == 0
    assert funnel.remaining - funnel.remaining_not_evaluated <= truth.remaining
    assert truth.remaining <= funnel.remaining
    said = CliRunner().invoke(app, ["attrition", str(one_worker.out_dir), "--without", settling])
    assert said.exit_code == 0, said.output
    assert f"of them, {len(unknown)} unknown: the run's pre-filter settled them" in " ".join(
        said.output.split()
    )
    full = CliRunner().invoke(app, ["attrition", str(full_run.out_dir), "--without", settling])
    assert "unknown" not in full.output


def test_an_unknown_criterion_or_folder_is_refused(full_run: CohortSummary, tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="no criterion exclusion-99"):
        what_if_funnel(full_run.out_dir, ["exclusion-99"])
    with pytest.raises(CohortError, match="no finished cohort run"):
        what_if_funnel(tmp_path)


def test_a_criterion_may_be_named_by_its_number(full_run: CohortSummary) -> None:
    """`--without exclusion-4 --without inclusion-3`, as docs/cohort.md and this module's
    docstring write it, was refused ("no criterion exclusion-4 in this run"): the number
    names the one criterion whose id it begins (exclusion-1 is not exclusion-10-...)."""
    by_number = what_if_funnel(full_run.out_dir, ["exclusion-1", "inclusion-2"])
    by_id = what_if_funnel(full_run.out_dir, ["exclusion-1-secondary-itp", "inclusion-2-age-18-65"])
    assert by_number == by_id
    off = [step.criterion for step in by_number.steps if step.switched_off]
    assert off == ["inclusion-2-age-18-65", "exclusion-1-secondary-itp"]
    with pytest.raises(CohortError, match="no criterion exclusion"):
        what_if_funnel(full_run.out_dir, ["exclusion"])  # a prefix of many names none


def test_the_command_prints_the_funnel(full_run: CohortSummary) -> None:
    criterion = _rows(full_run.out_dir / "attrition.csv")[1]["criterion"]  # (0: deceased)
    result = CliRunner().invoke(app, ["attrition", str(full_run.out_dir), "--without", criterion])
    assert result.exit_code == 0, result.output
    assert "(switched off)" in result.output and "remaining after every criterion" in result.output
    refused = CliRunner().invoke(app, ["attrition", str(full_run.out_dir), "--without", "x-1"])
    assert refused.exit_code == 2


@pytest.mark.parametrize("width", [30, 44, 60, 80, 100])
def test_the_command_never_cuts_a_criterion_s_id(full_run: CohortSummary, width: int) -> None:
    """A terminal wide enough for the table's narrowest form gets the table, an id folded onto
    more lines (the criterion column's pieces, read down, spell it; at 100 columns every id
    of NCT05315778 stands on one line); a narrower one gets a line per step, an id folded
    as text is. Nothing is cut short."""
    ids = [row["criterion"] for row in _rows(full_run.out_dir / "attrition.csv")]
    environment = {"COLUMNS": str(width)}
    result = CliRunner().invoke(app, ["attrition", str(full_run.out_dir)], env=environment)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert max(map(len, result.output.splitlines())) <= width
    if width <= 60:
        assert "│" not in result.output
        joined = result.output.replace("\n", "")
        # (a line may break at the space before the kind)
        assert all(re.search(rf"\b{re.escape(criterion)} ?\(", joined) for criterion in ids)
        return
    cells = [line.split("│")[2].strip() for line in result.output.splitlines() if "│" in line]
    assert "".join(cells) == "".join(ids)
    if width == 100:
        assert cells == ids


@pytest.fixture(scope="module")
def other_trial_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cohort run of the other trial (NCT03036150) over its examples."""
    out = tmp_path_factory.mktemp("other-trial")
    criteria = ROOT / "criteria" / "NCT03036150.yaml"
    run_cohort(criteria, BundleInput(ROOT / "examples" / "ckd"), out, AS_OF, workers=1)
    return out


def _cut_table(out: Path, _other: Path) -> None:
    table = out / "cohort.parquet"
    table.write_bytes(table.read_bytes()[:3000])


def _other_trial_s_table(out: Path, other: Path) -> None:
    shutil.copyfile(other / "cohort.parquet", out / "cohort.parquet")


def _table_less_a_patient(out: Path, _other: Path) -> None:
    table = parquet.read_table(out / "cohort.parquet")
    parquet.write_table(table.slice(1), out / "cohort.parquet")


def _attrition_not_utf8(out: Path, _other: Path) -> None:
    (out / "attrition.csv").write_bytes(b"\xff\xfe" + (out / "attrition.csv").read_bytes())


def _attrition_garbage(out: Path, _other: Path) -> None:
    (out / "attrition.csv").write_text("garbage,,,\n", encoding="utf-8")


def _attrition_empty(out: Path, _other: Path) -> None:
    (out / "attrition.csv").write_bytes(b"")


def _attrition_of_another_funnel(out: Path, _other: Path) -> None:
    """The first criterion that loses patients loses one fewer, the counts kept consistent."""
    lines = (out / "attrition.csv").read_text(encoding="utf-8").splitlines()
    rows = [line.split(",") for line in lines[1:]]
    first = next(index for index, row in enumerate(rows) if int(row[4]) > 0)
    rows[first][4] = str(int(rows[first][4]) - 1)
    for row in rows[first:]:
        row[5] = str(int(row[5]) + 1)
    for row in rows[first + 1 :]:
        row[3] = str(int(row[3]) + 1)
    text = "\n".join([lines[0], *(",".join(row) for row in rows)]) + "\n"
    (out / "attrition.csv").write_text(text, encoding="utf-8")


def _summary_not_json(out: Path, _other: Path) -> None:
    (out / "summary.json").write_text("{", encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(
            _cut_table,
            r"cohort\.parquet: not a cohort output of this run \(not a readable Parquet",
            id="truncated-table",
        ),
        pytest.param(
            _other_trial_s_table,
            r"cohort\.parquet: .* \(no column for inclusion-1-relapsed",
            id="other-trial-table",
        ),
        pytest.param(
            _table_less_a_patient,
            r"cohort\.parquet: .* \(\d+ patients; summary\.json counts",
            id="table-less-a-patient",
        ),
        pytest.param(
            _attrition_not_utf8,
            r"attrition\.csv:1: .* \(the file is not UTF-8 text\)",
            id="attrition-not-utf8",
        ),
        pytest.param(
            _attrition_garbage,
            r"attrition\.csv:1: .* \(its first line is not the header step,",
            id="attrition-garbage",
        ),
        pytest.param(
            _attrition_empty, r"attrition\.csv: .* \(the file is empty\)", id="attrition-empty"
        ),
        pytest.param(
            _attrition_of_another_funnel,
            r"cohort\.parquet: .* \(\S+ loses \d+ patients in it and",
            id="attrition-of-another-funnel",
        ),
        pytest.param(
            _summary_not_json,
            r"summary\.json: not a cohort output of this run \(not JSON",
            id="summary-not-json",
        ),
    ],
)
def test_a_damaged_or_foreign_file_is_refused_naming_it(
    full_run: CohortSummary,
    other_trial_run: Path,
    tmp_path: Path,
    damage: Callable[[Path, Path], None],
    message: str,
) -> None:
    """Each file the funnel is drawn from is checked against the others and the summary: a
    damaged one is named, exit 2, never a traceback or a wrong funnel."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("attrition.csv", "cohort.parquet", "summary.json"):
        shutil.copyfile(full_run.out_dir / name, out / name)
    what_if_funnel(out)  # the copy is whole
    damage(out, other_trial_run)
    with pytest.raises(CohortError, match=message):
        what_if_funnel(out)
    result = CliRunner().invoke(app, ["attrition", str(out)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith(f"error: {out}"), result.output


def test_a_folder_without_its_summary_holds_no_finished_run(
    full_run: CohortSummary, tmp_path: Path
) -> None:
    for name in ("attrition.csv", "cohort.parquet"):
        shutil.copyfile(full_run.out_dir / name, tmp_path / name)
    with pytest.raises(CohortError, match="no finished cohort run"):
        what_if_funnel(tmp_path)


def _funnel(*steps: tuple[str, int]) -> WhatIfFunnel:
    """A funnel of 100 patients losing `lost` at each `(criterion, lost)` step."""
    remaining, built = 100, []
    for criterion, lost in steps:
        built.append(FunnelStep(criterion, "inclusion", False, remaining, lost))
        remaining -= lost
    return WhatIfFunnel(100, tuple(built), remaining)


def test_count_changes_lists_the_statuses_and_steps_that_moved_in_the_later_run_s_order() -> None:
    before = _funnel(("deceased", 0), ("inclusion-1-age", 10), ("exclusion-1-a", 5))
    after = _funnel(("deceased", 0), ("inclusion-1-age", 40), ("exclusion-1-a", 3))
    statuses_before = {"ineligible": 15, "potential-candidate": 85, "eligible": 0}
    statuses_after = {"ineligible": 43, "potential-candidate": 57, "eligible": 0}
    assert count_changes(statuses_before, before, statuses_after, after) == [
        CountChange("status", "ineligible", 15, 43),
        CountChange("status", "potential-candidate", 85, 57),
        CountChange("step", "inclusion-1-age", 10, 40),
        CountChange("step", "exclusion-1-a", 5, 3),
    ]


def test_count_changes_names_criteria_one_run_lacks_and_nothing_when_nothing_moved() -> None:
    before = _funnel(("deceased", 1), ("inclusion-1-age", 10), ("exclusion-1-a", 0))
    after = _funnel(("deceased", 1), ("inclusion-2-sex", 0), ("inclusion-1-age", 10))
    statuses = {"ineligible": 11, "potential-candidate": 89}
    assert count_changes(statuses, before, statuses, after) == [
        CountChange("step", "inclusion-2-sex", None, 0),
        CountChange("step", "exclusion-1-a", 0, None),
    ]
    assert count_changes(statuses, before, dict(statuses), before) == []
