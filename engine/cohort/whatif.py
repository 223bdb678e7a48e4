"""What-if attrition: the funnel of a finished cohort run recomputed with criteria switched off.

    what_if_funnel(out, without=["exclusion-4", "inclusion-3"])

Reads the run's stored per-patient, per-criterion outcomes (`cohort.parquet`, the same values
as `cohort.csv`) and the criteria's kinds and order (`attrition.csv`); evaluates nothing, so
it answers in well under a second for 10^5-10^6 patients (column-wise with pyarrow). A
criterion switched off excludes nobody: the patients it was the first to exclude move on to
the next criteria. Step 0 (`deceased`, kind `vital-status`: patients who died on or before the
as-of day, cohort.csv's `deceased` column `yes`) is no criterion and cannot be switched off.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import CohortError, Location


@dataclass(frozen=True)
class FunnelStep:
    """One criterion's row of the funnel."""

    criterion: str
    kind: str
    switched_off: bool
    remaining_before: int
    lost: int

    @property
    def remaining(self) -> int:
        return self.remaining_before - self.lost


@dataclass(frozen=True)
class WhatIfFunnel:
    """The funnel with criteria switched off, and the run's own count left at the end."""

    patients: int
    steps: tuple[FunnelStep, ...]
    remaining_in_the_run: int

    @property
    def remaining(self) -> int:
        return self.steps[-1].remaining if self.steps else self.patients


def what_if_funnel(out: str | Path, without: Sequence[str] = ()) -> WhatIfFunnel:
    """The attrition funnel of the cohort run in `out` with the `without` criteria switched off.

    Raises CohortError when `out` holds no finished run, or naming a criterion id the run
    does not have (with the ids it has).
    """
    import pyarrow  # type: ignore[import-untyped]
    import pyarrow.compute as compute  # type: ignore[import-untyped]
    import pyarrow.parquet as parquet  # type: ignore[import-untyped]

    from engine.cohort.outputs import DECEASED, VITAL_STATUS_KIND

    folder = Path(out)
    attrition_path = folder / "attrition.csv"
    table_path = folder / "cohort.parquet"
    if not attrition_path.is_file() or not table_path.is_file():
        raise CohortError(
            "no finished cohort run here (attrition.csv and cohort.parquet are written at the "
            "end of `trialsieve cohort`)",
            Location(file=str(folder)),
        )
    with open(attrition_path, encoding="utf-8", newline="") as handle:
        kinds = {
            row["criterion"]: row["kind"]
            for row in csv.DictReader(handle)
            if row["kind"] != VITAL_STATUS_KIND
        }
    unknown = [criterion for criterion in without if criterion not in kinds]
    if unknown:
        raise CohortError(
            f"no criterion {', '.join(unknown)} in this run; its criteria: {', '.join(kinds)}",
            Location(file=str(attrition_path)),
        )
    table = parquet.read_table(table_path)
    patients = table.num_rows
    steps: list[FunnelStep] = []
    if DECEASED in table.column_names:
        dead = compute.equal(compute.cast(table.column(DECEASED), "string"), "yes")
        deceased = compute.sum(dead).as_py() or 0
        steps.append(FunnelStep(DECEASED, VITAL_STATUS_KIND, False, patients, deceased))
        alive: Any = compute.invert(dead)
    else:  # a run written before the column was
        deceased = 0
        alive = pyarrow.repeat(True, patients)
    # `alive`: the patients nothing so far excludes
    remaining_in_the_run = patients - deceased
    alive_in_the_run = alive
    switched_off = set(without)
    for criterion, kind in kinds.items():
        failing = "not_met" if kind == "inclusion" else "met"
        fails = compute.equal(compute.cast(table.column(criterion), "string"), failing)
        lost_in_the_run = compute.and_(alive_in_the_run, fails)
        remaining_in_the_run -= compute.sum(lost_in_the_run).as_py() or 0
        alive_in_the_run = compute.and_(alive_in_the_run, compute.invert(fails))
        before = compute.sum(alive).as_py() or 0
        if criterion in switched_off:
            steps.append(FunnelStep(criterion, kind, True, before, 0))
            continue
        lost = compute.sum(compute.and_(alive, fails)).as_py() or 0
        steps.append(FunnelStep(criterion, kind, False, before, lost))
        alive = compute.and_(alive, compute.invert(fails))
    return WhatIfFunnel(patients, tuple(steps), remaining_in_the_run)
