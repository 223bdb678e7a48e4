"""Benchmark: what a cohort run pays per line it leaves unparsed, by resource type.

    .venv/bin/python benchmarks/line_screen.py [--data DIR] [--criteria FILE] [--lines N]
                                               [--repeat N]

For each NDJSON file of the export (the first `--lines` lines, default 20,000), prints the CPU
microseconds per line, best of `--repeat` (default 5) passes, of:

- `orjson`: parsing the line (what a line costs before its record is even built);
- `screen`: `LineScreen.screen_lines`, the line screen of pass 2 (Observation, Condition,
  Procedure, MedicationRequest, -Administration and -Statement lines: the types it may skip,
  less those the criteria read without a concept), over each patient's consecutive lines as
  pass 2 screens a run of pass 1 (with its bookkeeping: labels for duplicates, the newest
  day's line), and the share of lines it skips (given the export's Medications as a run's
  shared resources: a medication line referring to one is screened through its code);
- `settled`: `_screened_label`, the check of a settled patient's line.

Both search each run's text once first, as pass 2 does (`line_validator`: simdjson validates
the lines only of a run that is not `plain_json`).

Each line is checked against the patient its own patient field names, as pass 2 does (a
line naming none, such as a Patient or a Medication, is left out). The loop and a call
around each check are included (about 0.2 µs; for `screen`, a reader per run). On a machine
others use, compare figures of runs made in the same minute only (docs/cohort-performance.md,
Lines left unparsed: measurements).
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from shared_data import require, synthea

from engine.cohort.line_screen import LineScreen, _OneLine, line_validator
from engine.cohort.ndjson_partitions import _screened_label
from engine.sources.ndjson import DEFAULT_PATIENT_FIELDS, PATIENT_FIELDS, ndjson_files
from engine.trial import load_trial

CHECKOUT = Path(__file__).resolve().parents[1]


def _own_reference(resource: Any) -> str | None:
    """`Patient/<id>` as the line's first patient field names it (None: it names none)."""
    if type(resource) is not dict:
        return None
    name = resource.get("resourceType")
    fields = PATIENT_FIELDS.get(name, DEFAULT_PATIENT_FIELDS) if type(name) is str else ()
    holder = resource.get(fields[0]) if fields else None
    reference = holder.get("reference") if type(holder) is dict else None
    return reference if type(reference) is str else None


def _shared_medications(data: Path) -> dict[str, bytes]:
    """The export's Medications by `Medication/<id>`, as pass 1 keeps shared resources."""
    shared: dict[str, bytes] = {}
    for path in ndjson_files(data):
        if path.name.endswith(".gz") or path.name.split(".", 1)[0] != "Medication":
            continue
        with open(path, "rb") as handle:
            for text in handle:
                resource = orjson.loads(text)
                if type(resource) is dict and type(resource.get("id")) is str:
                    shared.setdefault(f"Medication/{resource['id']}", text.rstrip(b"\n"))
    return shared


def _best(
    check: Callable[[bytes, str], object], lines: list[tuple[bytes, str]], repeat: int
) -> float:
    """CPU microseconds per line of `check(text, own reference)`, best of `repeat` passes
    (the cyclic garbage collector paused, as a cohort worker pauses it)."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeat):
            started = time.process_time()
            for text, own in lines:
                check(text, own)
            best = min(best, time.process_time() - started)
    finally:
        gc.enable()
    return best / len(lines) * 1e6


class _Reader(_OneLine):
    """What pass 2's reader of a patient's lines notes of those the screen skips
    (`ScreenedLines`, as the screen's reader of one line notes it); a line left to parsing
    is only counted, and a repeat is not reported."""

    parsed = 0

    def parse_unscreened(self, position: int, text: bytes) -> None:
        self.parsed += 1

    def repeated(self, position: int, label: str, earlier: int, check: str) -> None:
        return None


Run = tuple[str, bytes, list[bytes]]
"""One patient's consecutive lines: their own reference, their text, the lines."""


def _runs(lines: list[tuple[bytes, str]]) -> list[Run]:
    """The lines as runs of one patient's consecutive lines, as pass 1 routes them."""
    runs: list[Run] = []
    for own, run in itertools.groupby(lines, key=lambda line: line[1]):
        texts = [text + b"\n" for text, _own in run]
        runs.append((own, b"".join(texts), texts))
    return runs


def _screen_runs(
    screen: LineScreen, runs: list[Run], shared: Mapping[str, bytes], relied: list[str]
) -> int:
    """Screen each run as pass 2 does (its text searched once by `line_validator`); how many
    lines it skips."""
    skipped = 0
    for own, chunk, texts in runs:
        reader = _Reader(own, line_validator((chunk,)), shared, relied)
        screen.screen_lines(reader, enumerate(texts), True)
        skipped += len(reader.seen)
    return skipped


def _settled_runs(runs: list[Run]) -> None:
    """Check each line of each run as a settled patient's (`_screened_label`), as pass 2 does."""
    for own, chunk, texts in runs:
        validate = line_validator((chunk,))
        for text in texts:
            _screened_label(validate, text, own)


def _best_runs(check: Callable[[], object], count: int, repeat: int) -> float:
    """CPU microseconds per line of `check()` over `count` lines, best of `repeat` passes (the
    cyclic garbage collector paused)."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeat):
            started = time.process_time()
            check()
            best = min(best, time.process_time() - started)
    finally:
        gc.enable()
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=synthea("ndjson"))
    parser.add_argument("--criteria", type=Path, default=CHECKOUT / "criteria/NCT03036150.yaml")
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    require(arguments.data)
    screen = LineScreen.from_criteria(load_trial(arguments.criteria))
    shared = _shared_medications(arguments.data)
    relied: list[str] = []
    print(f"criteria   {arguments.criteria.name}; screened types {', '.join(sorted(screen.types))}")
    print(
        f"{'file':34} {'lines':>7} {'bytes':>6}  {'orjson':>7} {'screen':>7} {'skips':>5}  "
        f"{'settled':>7}   (CPU µs per line, best of {arguments.repeat})"
    )
    for path in ndjson_files(arguments.data):
        if path.name.endswith(".gz"):
            continue
        lines: list[tuple[bytes, str]] = []
        with open(path, "rb") as handle:
            for text in handle:
                text = text.rstrip(b"\n")
                try:
                    own = _own_reference(orjson.loads(text))
                except orjson.JSONDecodeError:
                    own = None
                if own is not None:
                    lines.append((text, own))
                if len(lines) >= arguments.lines:
                    break
        if not lines:
            continue
        count = len(lines)
        size = sum(len(text) for text, _own in lines) // count
        repeat = arguments.repeat
        parse = _best(lambda text, _own: orjson.loads(text), lines, repeat)
        runs = _runs(lines)
        if path.name.split(".", 1)[0] in screen.types:
            skips = _screen_runs(screen, runs, shared, relied)
            cost = _best_runs(
                functools.partial(_screen_runs, screen, runs, shared, relied), count, repeat
            )
            screened = f"{cost:7.2f} {skips / count:5.0%}"
        else:
            screened = f"{'':7} {'':5}"
        settled = _best_runs(functools.partial(_settled_runs, runs), count, repeat)
        print(f"{path.name:34} {count:7,} {size:6,}  {parse:7.2f} {screened}  {settled:7.2f}")


if __name__ == "__main__":
    main()
