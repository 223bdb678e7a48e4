"""Benchmark: evaluate both shipped trials over the Synthea set, excluding file reading.

    .venv/bin/python benchmarks/evaluate.py [--data DIR] [--criteria FILE ...] [--repeat N]
                                            [--as-of YYYY-MM-DD]

Without --criteria: NCT05315778 (ITP) and NCT03036150 (DAPA-CKD), one after the other.

Reads every patient Bundle first (not timed), then times, per patient and on one core:
record building + evaluation (the hot path), and separately the report (ResearchSubject +
DetectedIssue + transaction Bundle) and its validation with the fhir.resources models.
Prints patients per second and milliseconds per patient (median, p95, max).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

from engine.evaluate import evaluate_patient
from engine.record import build_record
from engine.report import transaction_bundle, validate_bundle
from engine.sources import PatientResources, read_bundle_file
from engine.trial import load_trial

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import synthea

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = synthea("bundles")


def _load(data: Path) -> list[PatientResources]:
    files = [
        path
        for path in sorted(data.rglob("*.json"))
        if not path.name.startswith(("hospitalInformation", "practitionerInformation"))
    ]
    return [read_bundle_file(path) for path in files]


def _summary(label: str, seconds: list[float]) -> str:
    milliseconds = sorted(value * 1000 for value in seconds)
    p95 = milliseconds[int(0.95 * (len(milliseconds) - 1))]
    total = sum(seconds)
    return (
        f"{label:<34} {len(seconds) / total:9.1f} patients/s"
        f"   median {statistics.median(milliseconds):7.2f} ms"
        f"   p95 {p95:7.2f} ms   max {milliseconds[-1]:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--criteria", type=Path, action="append", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--as-of", default="2026-11-01")
    arguments = parser.parse_args()
    as_of = dt.date.fromisoformat(arguments.as_of)
    criteria_files = arguments.criteria or [
        ROOT / "criteria" / "NCT05315778.yaml",
        ROOT / "criteria" / "NCT03036150.yaml",
    ]
    started = time.perf_counter()
    patients = _load(arguments.data)
    read_seconds = time.perf_counter() - started
    if not patients:
        parser.error(f"no patient Bundles in {arguments.data} (give --data DIR)")
    resources = sum(len(patient.resources) for patient in patients)
    print(f"data: {arguments.data} ({len(patients)} patients, {resources} resources)")
    print(f"file reading (not timed below): {read_seconds:.2f} s")
    for criteria_file in criteria_files:
        _benchmark(criteria_file, patients, as_of, arguments.repeat)


def _benchmark(
    criteria_file: Path, patients: list[PatientResources], as_of: dt.date, repeat: int
) -> None:
    started = time.perf_counter()
    trial = load_trial(criteria_file)
    compile_seconds = time.perf_counter() - started
    print(
        f"\n{trial.trial.id} ({criteria_file.name}): load + compile {compile_seconds * 1000:.0f} ms"
    )

    record_seconds: list[float] = []
    evaluate_seconds: list[float] = []
    hot_seconds: list[float] = []
    report_seconds: list[float] = []
    statuses: dict[str, int] = {}
    for round_number in range(repeat):
        for patient in patients:
            first = time.perf_counter()
            record = build_record(patient, trial.terminology)
            second = time.perf_counter()
            evaluation = evaluate_patient(trial, record, as_of)
            third = time.perf_counter()
            bundle = transaction_bundle(evaluation)
            validate_bundle(bundle)
            fourth = time.perf_counter()
            if round_number == 0:  # the first round warms caches (units, concept lookups)
                statuses[evaluation.status.value] = statuses.get(evaluation.status.value, 0) + 1
                continue
            record_seconds.append(second - first)
            evaluate_seconds.append(third - second)
            hot_seconds.append(third - first)
            report_seconds.append(fourth - third)
    print(_summary("record build", record_seconds))
    print(_summary("evaluation", evaluate_seconds))
    print(_summary("record + evaluation (hot path)", hot_seconds))
    print(_summary("report + R4B validation", report_seconds))
    print("statuses:", ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())))


if __name__ == "__main__":
    main()
