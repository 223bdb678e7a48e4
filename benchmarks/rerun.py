"""Benchmark: a cohort re-run after editing one criterion, against the first run; what-if.

    .venv/bin/python benchmarks/rerun.py [--data DIR] [--scale K] [--workers N]
                                         [--criteria FILE ...] [--mode prefilter|full]
                                         [--repeat N] [--cli]

For each criteria file (default: both shipped trials) and mode (default: the pre-filter's
and `--full`), each round copies the criteria and mappings into a temporary folder, runs the
cohort into a fresh `--out` (the first run), edits one criterion (a lab threshold:
NCT05315778 exclusion-7, haemoglobin < 100 -> < 120 g/L; NCT03036150 inclusion-3, eGFR <= 75
-> <= 60; each round and mode one more, 121, 122, ... and 61, 62, ...: every re-run compiles
criteria no earlier run compiled, as after a user's edit, never a compiled-cache hit) and
runs again into the same `--out` (the re-run: only that criterion is evaluated,
engine.cohort.rerun), then asks the what-if funnel with two criteria switched
off (`what_if_funnel`, what `trialsieve attrition OUT --without ...` prints). Prints wall
time and CPU time (this process and its worker processes) of each, the ratio first / re-run,
and checks that the re-run wrote the files a fresh run of the edited criteria writes (the
first run of the next round, or one more run when `--repeat 1`).

In-process by default, as `benchmarks/cohort.py` (the unit registry and the terminology are
built once per process, so later rounds do not pay them); `--cli` runs each step as a
`trialsieve` command in a new process instead (what a user waits for, Python start-up and
imports included). `--scale K` clones the export K times first (`benchmarks/cohort.py`).
`--repeat N` interleaves N rounds and shows the best with the range.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cohort import DEFAULT_DATA, ROOT, clone
from shared_data import compile_bytecode, require

from engine.cohort import NdjsonInput, run_cohort
from engine.cohort.whatif import what_if_funnel

EDITS = {
    "NCT05315778": ('value: "< 100 g/L"', 'value: "< {} g/L"', 120),
    "NCT03036150": ('"75 mL/min/{1.73_m2}"]', '"{} mL/min/{{1.73_m2}}"]', 60),
}
"""One lab threshold per trial: (text in the criteria file, its edited form, the first edited
value; each later edit one more, so that no re-run finds its criteria compiled already)."""
SWITCHED_OFF = {
    "NCT05315778": ("exclusion-4-uncontrolled-infection-or-disorder", "inclusion-3-venous-access"),
    "NCT03036150": ("inclusion-4-albuminuria", "exclusion-2-immunosuppressive-therapy"),
}
COMPARED = (
    "subjects.ndjson",
    "issues.ndjson",
    "cohort.csv",
    "cohort.parquet",
    "attrition.csv",
    "attrition.html",
    "data_availability.csv",
    "errors.ndjson",
    "study.json",
)


@dataclass
class Timing:
    """Wall and CPU seconds of one step (CPU: this process and its finished children)."""

    wall: float
    cpu: float


@dataclass
class Figures:
    first: list[Timing] = field(default_factory=list)
    rerun: list[Timing] = field(default_factory=list)
    what_if: list[Timing] = field(default_factory=list)
    evaluated: int | None = None
    patients: int = 0


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(step: Callable[[], object]) -> tuple[Timing, object]:
    wall, cpu = time.perf_counter(), _cpu()
    result = step()
    return Timing(time.perf_counter() - wall, _cpu() - cpu), result


def edited_text(original: str, trial_name: str, number: int) -> str:
    """The criteria text with the trial's threshold edited for the `number`th time."""
    old, new, first_value = EDITS[trial_name]
    edited = original.replace(old, new.format(first_value + number), 1)
    assert edited != original, f"{old!r} not found in the {trial_name} criteria"
    return edited


def _same_files(one: Path, other: Path) -> list[str]:
    return [name for name in COMPARED if (one / name).read_bytes() != (other / name).read_bytes()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--criteria", type=Path, action="append")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--as-of", default="2026-11-01")
    parser.add_argument("--mode", action="append", choices=("prefilter", "full"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cli", action="store_true", help="each step a new trialsieve process")
    arguments = parser.parse_args()
    as_of = dt.date.fromisoformat(arguments.as_of)
    modes = arguments.mode or ["prefilter", "full"]
    trials = arguments.criteria or [
        ROOT / "criteria" / "NCT05315778.yaml",
        ROOT / "criteria" / "NCT03036150.yaml",
    ]
    workers = arguments.workers or os.cpu_count() or 1
    trialsieve = Path(sys.executable).parent / "trialsieve"

    with tempfile.TemporaryDirectory(prefix="trialsieve-rerun-benchmark-") as scratch_name:
        scratch = Path(scratch_name)
        data = arguments.data
        require(data)
        print(compile_bytecode())
        if arguments.scale > 1:
            data = scratch / "export"
            clone(arguments.data, data, arguments.scale)
        shutil.copytree(ROOT / "mappings", scratch / "mappings")
        (scratch / "criteria").mkdir()
        figures: dict[tuple[str, str], Figures] = {}
        rounds = arguments.repeat + 1  # each round after the first checks the one before
        mismatches: list[str] = []
        for round_number in range(rounds):
            last = round_number == rounds - 1
            for trial in trials:
                original = trial.read_text(encoding="utf-8")
                criteria = scratch / "criteria" / trial.name
                for mode_number, mode in enumerate(modes):
                    found = figures.setdefault((trial.stem, mode), Figures())
                    out = scratch / f"out-{trial.stem}-{mode}-{round_number}"
                    full = mode == "full"

                    def run(folder: Path, full: bool = full, criteria: Path = criteria) -> object:
                        if arguments.cli:
                            command = [str(trialsieve), "cohort", str(criteria), "--ndjson"]
                            command += [str(data), "--out", str(folder), "--as-of", str(as_of)]
                            command += ["--workers", str(workers), "--quiet"]
                            command += ["--full"] if full else []
                            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                            return None
                        return run_cohort(
                            criteria, NdjsonInput(data), folder, as_of, workers=workers, full=full
                        )

                    edited = edited_text(
                        original, trial.stem, round_number * len(modes) + mode_number
                    )
                    if round_number > 0:  # a fresh run of the earlier round's edit: compare
                        earlier = (round_number - 1) * len(modes) + mode_number
                        criteria.write_text(
                            edited_text(original, trial.stem, earlier), encoding="utf-8"
                        )
                        previous = scratch / f"out-{trial.stem}-{mode}-{round_number - 1}"
                        fresh = scratch / f"fresh-{trial.stem}-{mode}"
                        shutil.rmtree(fresh, ignore_errors=True)
                        run(fresh)
                        different = _same_files(previous, fresh)
                        if different:
                            mismatches.append(f"{trial.stem} {mode}: {', '.join(different)}")
                        shutil.rmtree(previous, ignore_errors=True)
                        shutil.rmtree(fresh, ignore_errors=True)
                    if last and round_number > 0:
                        continue
                    criteria.write_text(original, encoding="utf-8")
                    timing, summary = timed(partial(run, out))
                    found.first.append(timing)
                    criteria.write_text(edited, encoding="utf-8")
                    timing, summary = timed(partial(run, out))
                    found.rerun.append(timing)
                    if summary is not None:
                        found.evaluated = getattr(summary, "criteria_evaluated", None)
                        found.patients = getattr(summary, "patients", 0)
                    without = SWITCHED_OFF[trial.stem]
                    timing, _funnel = timed(partial(what_if_funnel, out, without))
                    found.what_if.append(timing)

    print(f"input {data} (x{arguments.scale}), {workers} workers, as of {as_of}")
    print("  (wall / CPU seconds; CPU: this process and its worker processes)")
    for (trial_name, mode), found in figures.items():
        if not found.first:
            continue
        first = min(found.first, key=lambda timing: timing.wall)
        rerun = min(found.rerun, key=lambda timing: timing.wall)
        what_if = min(found.what_if, key=lambda timing: timing.wall)
        first_cpu = min(timing.cpu for timing in found.first)
        rerun_cpu = min(timing.cpu for timing in found.rerun)
        old, new, first_value = EDITS[trial_name]
        print(f"{trial_name} {mode} (edited: {old} -> {new.format(first_value)}, ...)")
        print(f"  first run {first.wall:6.2f} s / {first_cpu:6.2f} s CPU" + _spread(found.first))
        evaluated = (
            ""
            if found.evaluated is None
            else f"  ({found.evaluated:,} outcomes evaluated, {found.patients:,} patients)"
        )
        print(
            f"  re-run    {rerun.wall:6.2f} s / {rerun_cpu:6.2f} s CPU"
            + _spread(found.rerun)
            + evaluated
        )
        print("  re-run CPU by round " + ", ".join(f"{timing.cpu:.3f}" for timing in found.rerun))
        print(
            f"  first / re-run {first.wall / rerun.wall:5.1f}x wall, "
            f"{first_cpu / rerun_cpu:5.1f}x CPU"
        )
        print(f"  what-if funnel ({', '.join(SWITCHED_OFF[trial_name])} off) {what_if.wall:.3f} s")
    print(
        "re-runs equal fresh runs of the edited criteria: "
        + ("yes" if not mismatches else "NO: " + "; ".join(mismatches))
    )


def _spread(timings: list[Timing]) -> str:
    if len(timings) < 2:
        return ""
    walls = [timing.wall for timing in timings]
    return f"  [best of {len(walls)}; {min(walls):.2f}-{max(walls):.2f} s]"


if __name__ == "__main__":
    main()
