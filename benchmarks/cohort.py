"""Benchmark: a cohort run over the Synthea NDJSON export, against the orjson parse-only floor.

    .venv/bin/python benchmarks/cohort.py [--data DIR] [--scale K] [--workers N]
                                          [--engine local] [--as-of YYYY-MM-DD]

`--scale K` first clones every patient K times with fresh ids (Patient ids and the ids of
their resources get a suffix; shared Medication/Organization/... resources are kept once)
into a temporary folder. Prints patients/s and MB/s of NDJSON for the cohort run, peak
memory (maxrss of this process and of its largest worker), and the parse-only floor: one
process parsing every line of the same files with orjson.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import resource
import tempfile
import time
from pathlib import Path

import orjson

from engine.cohort import NdjsonInput, run_cohort
from engine.sources import ndjson_files, patient_reference
from engine.sources.ndjson import SHARED_TYPES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea-exafluence" / "ndjson"
)
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def clone(source: Path, target: Path, copies: int) -> None:
    """Write `copies` copies of every patient (fresh ids) and the shared resources once."""
    files = ndjson_files(source)
    shared_ids: set[bytes] = set()
    shared_lines: dict[Path, list[bytes]] = {file: [] for file in files}
    patient_lines: dict[Path, list[bytes]] = {file: [] for file in files}
    for file in files:
        for line in file.read_bytes().splitlines(keepends=True):
            resource = orjson.loads(line)
            if resource["resourceType"] in SHARED_TYPES and patient_reference(resource) is None:
                shared_ids.add(resource["id"].encode())
                shared_lines[file].append(line)
            else:
                patient_lines[file].append(line)
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        with open(target / file.name, "wb") as output:
            output.writelines(shared_lines[file])
            data = b"".join(patient_lines[file])
            for copy in range(copies):
                suffix = b"-c%d" % copy

                def fresh(match: re.Match[bytes], suffix: bytes = suffix) -> bytes:
                    found = match.group(0)
                    return found if found in shared_ids else found + suffix

                output.write(_UUID.sub(fresh, data))


def parse_floor(folder: Path) -> tuple[float, int, int]:
    """Seconds to parse every line with orjson in one process, bytes, lines."""
    started = time.perf_counter()
    size = lines = 0
    for file in ndjson_files(folder):
        with open(file, "rb") as handle:
            for line in handle:
                size += len(line)
                if line.strip():
                    orjson.loads(line)
                    lines += 1
    return time.perf_counter() - started, size, lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--criteria", type=Path, default=ROOT / "criteria" / "NCT05315778.yaml")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--engine", default="local")
    parser.add_argument("--as-of", default="2026-11-01")
    arguments = parser.parse_args()
    as_of = dt.date.fromisoformat(arguments.as_of)

    with tempfile.TemporaryDirectory(prefix="trialsieve-cohort-benchmark-") as scratch:
        data = arguments.data
        if arguments.scale > 1:
            started = time.perf_counter()
            data = Path(scratch) / "export"
            clone(arguments.data, data, arguments.scale)
            print(f"cloned x{arguments.scale} in {time.perf_counter() - started:.1f} s -> {data}")
        summary = run_cohort(
            arguments.criteria,
            NdjsonInput(data),
            Path(scratch) / "out",
            as_of,
            engine=arguments.engine,
            workers=arguments.workers,
        )
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        floor_seconds, size, lines = parse_floor(data)

    megabytes = size / 1e6
    cohort_rate = megabytes / summary.seconds
    floor_rate = megabytes / floor_seconds
    print(f"input          {megabytes:8.1f} MB, {lines:,} lines, {summary.patients:,} patients")
    print(
        f"cohort ({arguments.engine}) {summary.seconds:7.2f} s  {summary.patients_per_second:8.0f} "
        f"patients/s  {cohort_rate:6.1f} MB/s  (statuses {summary.statuses})"
    )
    print(f"parse floor    {floor_seconds:7.2f} s  {floor_rate:23.1f} MB/s  (orjson, 1 process)")
    print(f"cohort / floor {cohort_rate / floor_rate:7.0%}")
    print(f"peak memory    {own:7.0f} MB this process, {workers:.0f} MB largest worker")


if __name__ == "__main__":
    main()
