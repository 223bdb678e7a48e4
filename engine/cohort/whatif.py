"""What-if attrition: the funnel of a finished cohort run recomputed with criteria switched off.

    what_if_funnel(out, without=["exclusion-4", "inclusion-3"])

Reads the run's stored per-patient, per-criterion outcomes (`cohort.parquet`, the same values
as `cohort.csv`) and the criteria's kinds and order (`attrition.csv`); evaluates nothing, so
it answers in well under a second for 10^5-10^6 patients (column-wise with pyarrow). A
criterion switched off excludes nobody: the patients it was the first to exclude move on to
the next criteria. A patient the pre-filter settled on a criterion switched off moves on
too, past criteria that were not evaluated for them: the funnel counts how many of those
remain at the end (`WhatIfFunnel.remaining_not_evaluated`), whose staying is unknown. Step 0
(`deceased`, kind `vital-status`: patients who died on or before the as-of day, cohort.csv's
`deceased` column `yes`) is no criterion and cannot be switched off.

The files are checked against each other and against the run's `summary.json` before any
funnel is drawn from them: the table's patients and statuses are the summary's, its columns
are the criteria of `attrition.csv`, and the funnel without switches is the stored one. A
damaged, truncated or foreign file is refused, naming it and what is wrong.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from engine.cohort.run_folder import check_finished, reading
from engine.errors import CohortError, Location

ATTRITION_COLUMNS = (
    "step",
    "criterion",
    "kind",
    "remaining_before",
    "lost",
    "remaining",
    "unknown_missing_of_remaining",
    "manual_of_remaining",
    "not_evaluated_of_remaining",
    "fails_overall",
)
"""The header of attrition.csv (written by `engine.cohort.outputs`)."""
DECEASED = "deceased"
"""cohort.csv's column (after `status`), the summary's member and attrition's step 0."""
NOT_EVALUATED = "not_evaluated"
"""cohort.csv's value of a criterion the pre-filter settled the patient without."""
VITAL_STATUS_KIND = "vital-status"
"""attrition.csv's kind of step 0 (no criterion: a patient who died is no candidate)."""
_KINDS = ("inclusion", "exclusion")


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
    """The funnel with criteria switched off, and the run's own count left at the end.

    `remaining_not_evaluated`: of the patients remaining after every criterion, those with a
    criterion still on that was not evaluated for them (`not_evaluated`: the pre-filter of a
    run without `--full` settled them on a criterion now switched off, and evaluated only what
    their diagnoses, procedures and demographics answer). Whether they remain is unknown: the
    funnel counts them as passing what was not evaluated. None in a `--full` run, nor with
    nothing switched off (a settled patient fails the criterion that settled them)."""

    patients: int
    steps: tuple[FunnelStep, ...]
    remaining_in_the_run: int
    remaining_not_evaluated: int = 0

    @property
    def remaining(self) -> int:
        return self.steps[-1].remaining if self.steps else self.patients


@dataclass(frozen=True)
class _StoredStep:
    """A row of attrition.csv: what the run found for one criterion."""

    criterion: str
    kind: str
    lost: int


def what_if_funnel(out: str | Path, without: Sequence[str] = ()) -> WhatIfFunnel:
    """The attrition funnel of the cohort run in `out` with the `without` criteria switched off.

    Raises CohortError when `out` holds no finished run (or one that has not finished:
    `engine.cohort.run_folder.check_finished`), when one of its files is unreadable
    or disagrees with the others (naming it), or naming a criterion id the run does not
    have (with the ids it has).
    """
    folder = Path(out)
    with reading(folder):  # refused while a run writes the folder; none starts meanwhile
        check_finished(folder)
        return _funnel(folder, without)


def _funnel(folder: Path, without: Sequence[str]) -> WhatIfFunnel:
    """`what_if_funnel` of a folder no run writes meanwhile."""
    import pyarrow  # type: ignore[import-untyped]
    import pyarrow.compute as compute  # type: ignore[import-untyped]

    attrition_path = folder / "attrition.csv"
    table_path = folder / "cohort.parquet"
    summary_path = folder / "summary.json"
    if not all(path.is_file() for path in (attrition_path, table_path, summary_path)):
        raise CohortError(
            "no finished cohort run here (attrition.csv, cohort.parquet and summary.json are "
            "written at the end of `trialsieve cohort`)",
            Location(file=str(folder)),
        )
    patients, statuses = _read_summary(summary_path)
    stored_deceased, stored = _read_attrition(attrition_path, patients)
    kinds = {step.criterion: step.kind for step in stored}
    named = {criterion: _criteria_named(criterion, list(kinds)) for criterion in without}
    unknown = [criterion for criterion, found in named.items() if len(found) != 1]
    if unknown:
        raise CohortError(
            f"no criterion {', '.join(unknown)} in this run (a criterion's id, or its "
            f"inclusion-N / exclusion-N); its criteria: {', '.join(kinds)}",
            Location(file=str(attrition_path)),
        )
    without = [found[0] for found in named.values()]
    with_deceased = stored_deceased is not None
    table = _read_table(table_path, list(kinds), patients, statuses, with_deceased)
    steps: list[FunnelStep] = []
    if with_deceased:
        dead = compute.equal(compute.cast(table.column(DECEASED), "string"), "yes")
        deceased = compute.sum(dead).as_py() or 0
        if deceased != stored_deceased:
            raise _not_this_run(
                table_path,
                f"{deceased} patients who died in it and {stored_deceased} in attrition.csv",
            )
        steps.append(FunnelStep(DECEASED, VITAL_STATUS_KIND, False, patients, deceased))
        alive: Any = compute.invert(dead)
    else:  # a run written before the column was
        deceased = 0
        alive = pyarrow.repeat(True, patients)
    # `alive`: the patients nothing so far excludes
    remaining_in_the_run = patients - deceased
    alive_in_the_run = alive
    switched_off = set(without)
    # the patients with a criterion still on that was not evaluated for them (so far)
    not_evaluated = pyarrow.repeat(False, patients)
    for step in stored:
        failing = "not_met" if step.kind == "inclusion" else "met"
        outcomes = compute.cast(table.column(step.criterion), "string")
        fails = compute.equal(outcomes, failing)
        lost_in_the_run = compute.sum(compute.and_(alive_in_the_run, fails)).as_py() or 0
        if lost_in_the_run != step.lost:
            raise _not_this_run(
                table_path,
                f"{step.criterion} loses {lost_in_the_run} patients in it and "
                f"{step.lost} in attrition.csv",
            )
        remaining_in_the_run -= lost_in_the_run
        alive_in_the_run = compute.and_(alive_in_the_run, compute.invert(fails))
        before = compute.sum(alive).as_py() or 0
        if step.criterion in switched_off:
            steps.append(FunnelStep(step.criterion, step.kind, True, before, 0))
            continue
        lost = compute.sum(compute.and_(alive, fails)).as_py() or 0
        steps.append(FunnelStep(step.criterion, step.kind, False, before, lost))
        alive = compute.and_(alive, compute.invert(fails))
        not_evaluated = compute.or_(not_evaluated, compute.equal(outcomes, NOT_EVALUATED))
    undecided = compute.sum(compute.and_(alive, not_evaluated)).as_py() or 0
    return WhatIfFunnel(patients, tuple(steps), remaining_in_the_run, undecided)


@dataclass(frozen=True)
class CountChange:
    """A count that differs between two runs of one folder (`count_changes`): the patients of
    a status (`what` "status"), or the patients a criterion's funnel step loses ("step"; the
    deceased step 0 too). None: the status or criterion is not in that run."""

    what: str
    name: str
    before: int | None
    after: int | None


def count_changes(
    before_statuses: Mapping[str, int],
    before_funnel: WhatIfFunnel,
    after_statuses: Mapping[str, int],
    after_funnel: WhatIfFunnel,
) -> list[CountChange]:
    """What moved from one run to the next (a `--watch` re-run after a save): the statuses
    whose patient counts differ, then the funnel steps whose losses differ, in the later
    run's order (a criterion the edit removed last). Nothing when nothing moved. A step's
    loss depends on the criteria before it (protocol order): an edit of one criterion may
    move the steps after it too."""
    changes = [
        CountChange("status", status, before_statuses.get(status), after_statuses.get(status))
        for status in _in_order(after_statuses, before_statuses)
        if before_statuses.get(status) != after_statuses.get(status)
    ]
    lost_before = {step.criterion: step.lost for step in before_funnel.steps}
    lost_after = {step.criterion: step.lost for step in after_funnel.steps}
    changes += [
        CountChange("step", criterion, lost_before.get(criterion), lost_after.get(criterion))
        for criterion in _in_order(lost_after, lost_before)
        if lost_before.get(criterion) != lost_after.get(criterion)
    ]
    return changes


def _in_order(later: Mapping[str, int], earlier: Mapping[str, int]) -> list[str]:
    """The keys of `later`, then those only `earlier` has."""
    return [*later, *(key for key in earlier if key not in later)]


def _criteria_named(name: str, criteria: list[str]) -> list[str]:
    """The criteria `name` names: its id, or its number (`exclusion-4` for
    `exclusion-4-sglt2-inhibitor`, as the docs and each trial's page call criteria)."""
    if name in criteria:
        return [name]
    return [criterion for criterion in criteria if criterion.startswith(f"{name}-")]


def _not_this_run(path: Path, why: str, line: int | None = None) -> CohortError:
    return CohortError(
        f"not a cohort output of this run ({why})", Location(file=str(path), line=line)
    )


def _read_summary(path: Path) -> tuple[int, dict[str, int]]:
    """The run's patient count and its count per status, from summary.json."""
    try:
        summary = orjson.loads(path.read_bytes())
    except OSError as error:
        raise CohortError(
            f"cannot read the file: {error.strerror}", Location(file=str(path))
        ) from None
    except orjson.JSONDecodeError as error:
        raise _not_this_run(path, f"not JSON: {error}") from None
    patients = summary.get("patients") if isinstance(summary, dict) else None
    statuses = summary.get("statuses") if isinstance(summary, dict) else None
    if (
        not _is_count(patients)
        or not isinstance(statuses, dict)
        or not all(_is_count(count) for count in statuses.values())
        or sum(statuses.values()) != patients
    ):
        raise _not_this_run(path, "no patient count and counts per status that add up to it")
    return patients, statuses


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_attrition(path: Path, patients: int) -> tuple[int | None, list[_StoredStep]]:
    """attrition.csv's step 0 (the patients who died; None for a run written before it was)
    and its criteria, kinds and losses, checked to be a funnel of `patients`."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CohortError(
            f"cannot read the file: {error.strerror}", Location(file=str(path))
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise _not_this_run(path, "the file is not UTF-8 text", line) from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise _not_this_run(path, "the file is empty")
    if tuple(rows[0]) != ATTRITION_COLUMNS:
        raise _not_this_run(
            path, f"its first line is not the header {','.join(ATTRITION_COLUMNS)}", 1
        )
    deceased: int | None = None
    remaining = patients
    first = 2  # the line of the first criterion
    if len(rows) > 1 and rows[1][:1] == ["0"]:
        step_0 = _stored_step(rows[1], 0, remaining, (VITAL_STATUS_KIND,))
        if isinstance(step_0, str) or step_0.criterion != DECEASED:
            why = step_0 if isinstance(step_0, str) else f"step 0 is not {DECEASED}"
            raise _not_this_run(path, why, 2)
        deceased = step_0.lost
        remaining -= deceased
        first = 3
    if len(rows) < first:
        raise _not_this_run(path, "no criteria")
    steps: list[_StoredStep] = []
    for line, row in enumerate(rows[first - 1 :], start=first):
        step = _stored_step(row, len(steps) + 1, remaining)
        if isinstance(step, str):
            raise _not_this_run(path, step, line)
        if step.criterion in (earlier.criterion for earlier in steps):
            raise _not_this_run(path, f"{step.criterion} is listed twice", line)
        steps.append(step)
        remaining -= step.lost
    return deceased, steps


def _stored_step(
    row: list[str], number: int, remaining: int, kinds: tuple[str, ...] = _KINDS
) -> _StoredStep | str:
    """The row as a step of the funnel with `remaining` patients before it, or what is wrong
    with it (`kinds`: those the step may have)."""
    if len(row) != len(ATTRITION_COLUMNS):
        return f"{len(row)} columns, not {len(ATTRITION_COLUMNS)}"
    cells = dict(zip(ATTRITION_COLUMNS, row, strict=True))
    counts = ("step", "remaining_before", "lost", "remaining")
    if not all(cells[name].isdigit() for name in counts):
        return "a step or a count that is not a whole number"
    step, before, lost, after = (int(cells[name]) for name in counts)
    if step != number:
        return f"step {step} where {number} comes"
    if not cells["criterion"] or cells["kind"] not in kinds:
        return f"a criterion without its id, or a kind other than {' or '.join(kinds)}"
    if before != remaining or after != before - lost or lost > before:
        return (
            f"{before} patients remain before {cells['criterion']} and {after} after it losing "
            f"{lost}, where the steps before it leave {remaining}"
        )
    return _StoredStep(cells["criterion"], cells["kind"], lost)


def _read_table(
    path: Path,
    criteria: list[str],
    patients: int,
    statuses: dict[str, int],
    with_deceased: bool,
) -> Any:
    """cohort.parquet's status, deceased (`with_deceased`) and criterion columns (a pyarrow
    Table), checked to be those of the run: its columns are the patient, the status, the
    deceased column and `criteria` in order, and its rows the summary's patients and
    statuses."""
    import pyarrow
    import pyarrow.compute as compute
    import pyarrow.parquet as parquet  # type: ignore[import-untyped]

    leading = ["status", DECEASED] if with_deceased else ["status"]
    try:
        with parquet.ParquetFile(path) as table_file:
            names = table_file.schema_arrow.names
            if names != ["patient", *leading, *criteria]:
                raise _not_this_run(path, _columns_differ(names, [*leading[1:], *criteria]))
            table = table_file.read(columns=[*leading, *criteria])
    except (OSError, pyarrow.ArrowException) as error:
        raise _not_this_run(path, f"not a readable Parquet table: {error}") from None
    for name in table.column_names:
        kind = table.schema.field(name).type
        if not (pyarrow.types.is_string(kind) or _is_text_dictionary(kind)):
            raise _not_this_run(path, f"its column {name} is {kind}, not text")
    if table.num_rows != patients:
        raise _not_this_run(path, f"{table.num_rows} patients; summary.json counts {patients}")
    counted = compute.value_counts(compute.cast(table.column("status"), "string"))
    found = {str(item["values"]): int(item["counts"]) for item in counted.to_pylist()}
    if found != {status: count for status, count in statuses.items() if count}:
        raise _not_this_run(path, "its patients' statuses are not those summary.json counts")
    return table


def _is_text_dictionary(kind: Any) -> bool:
    import pyarrow

    return bool(pyarrow.types.is_dictionary(kind) and pyarrow.types.is_string(kind.value_type))


def _columns_differ(names: list[str], criteria: list[str]) -> str:
    """How the table's columns differ from patient, status and the run's criteria."""
    missing = [criterion for criterion in criteria if criterion not in names]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"no column for {', '.join(missing[:3])}{more} of attrition.csv's criteria"
    extra = [name for name in names if name not in ("patient", "status", *criteria)]
    if extra:
        return f"columns {', '.join(extra)} that attrition.csv does not list"
    return f"its columns are not patient, status and attrition.csv's criteria in order: {names}"
