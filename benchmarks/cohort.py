"""Benchmark: cohort runs over the Synthea NDJSON export, against a parse-only floor and DuckDB.

    .venv/bin/python benchmarks/cohort.py [--data DIR] [--scale K] [--workers N]
                                          [--engine local --engine dask] [--as-of YYYY-MM-DD]
                                          [--criteria FILE ...] [--dask-workers N ...]
                                          [--no-duckdb] [--repeat N]

`--scale K` first clones every patient K times with fresh ids (Patient ids and the ids of
their resources get a suffix; shared Medication/Organization/... resources are kept once)
into a temporary folder. For each engine (default: local, then dask) and each mode (the
default, where the pre-filter settles patients without an ITP diagnosis from their preview,
and `--full`, every patient evaluated in full; `--mode` picks one) prints the time,
patients/s, MB/s of NDJSON (the whole export, although a run skips the types nothing reads)
and peak memory: this process, and the largest worker (local: the largest child process;
dask: the largest of the workers' own peaks, which each task reports with its outcome).
Then the floor, one
process parsing every line with orjson, and a reference query in DuckDB over the same files:
every patient, whether they have a primary ITP Condition, and their latest haemoglobin.
`--repeat N` runs every configuration and the floor N times, interleaved, and shows the best
of each with the range: on a shared machine speed drifts by tens of percent between runs.
Every run is a fresh process, as a `trialsieve cohort` command is (nothing imported, started
or built by an earlier run is reused: Dask's cluster and distributed itself included; the
time is `summary.json`'s, which leaves out the interpreter's start and trialsieve's imports
for both engines, and takes in the Dask cluster's start, its import of distributed
included: the cluster's host is forked when the run starts), and also shows its CPU
seconds: the run's process, every process it started (first-pass and local workers, the
Dask cluster's host and the workers it forks) and their children. On
a machine others use, CPU seconds drift much less than times do; the load average (1 min) is
printed for each round.
The engine's bytecode is compiled first (`shared_data.compile_bytecode`), as installing
trialsieve does: where PYTHONDONTWRITEBYTECODE is set, a checkout's new processes (Dask's
forkserver, where one is used) would otherwise compile every engine module they import, 0.1
CPU s each.

Every run is done for each `--criteria` file (default: both shipped trials, NCT05315778,
where the pre-filter settles everyone in the Synthea set, and NCT03036150, DAPA-CKD, whose
first criteria are labs, so nobody is settled early). Each line shows `x floor` (the floor's
time over the run's: 1.0 or more is at or under the single-process parse-all floor) and
`x duckdb` (DuckDB's time over the run's). The Dask engine runs with a LocalCluster of as
many workers as the local engine has processes (`--workers`, default every core) and of
twice as many (2 and 4 on a 2-core machine: no gain is expected beyond the core count; on
several machines each worker node adds its cores, and the first pass, which runs in the
command's process, stays the serial part); `--dask-workers N` (repeatable) picks the sizes.
Each Dask configuration is compared with the local engine per mode: time (best over best)
and CPU seconds (least over least), each with the median and range of the per-round ratios
(the rounds are interleaved, so a round's two runs saw about the same load) and against the
goal of at most 1.2x (`DASK_GOAL`; met or not: on a machine others load, the CPU ratio is the
one to trust).
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson

from engine.cohort import CohortSummary, NdjsonInput, run_cohort
from engine.sources import ndjson_files, patient_reference
from engine.sources.ndjson import SHARED_TYPES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import compile_bytecode, cpu_seconds_of_this_process_tree, require, synthea

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = synthea("ndjson")
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

ITP_CODES = ("32273002", "2897005", "28505005", "13172003", "128091003", "441511006", "D69.3")
"""mappings/conditions.yaml, primary-itp: SNOMED CT, ICD-10-CM and WHO ICD-10 codes."""
HEMOGLOBIN_CODES = ("718-7", "30313-1", "20509-6", "30350-3", "30352-9", "55782-7", "59260-0")
"""mappings/observations.yaml, hemoglobin: LOINC codes."""


def clone(source: Path, target: Path, copies: int) -> None:
    """Write `copies` copies of every patient (fresh ids) and the shared resources once."""
    files = ndjson_files(source)
    shared_ids: set[bytes] = set()
    shared_lines: dict[Path, list[bytes]] = {file: [] for file in files}
    patient_lines: dict[Path, list[bytes]] = {file: [] for file in files}
    for file in files:
        for line in file.read_bytes().splitlines(keepends=True):
            parsed = orjson.loads(line)
            if parsed["resourceType"] in SHARED_TYPES and patient_reference(parsed) is None:
                shared_ids.add(parsed["id"].encode())
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


def _run_once(
    trial: Path,
    data: Path,
    out: Path,
    as_of: dt.date,
    engine: str,
    workers: int | None,
    full: bool,
) -> tuple[CohortSummary, float]:
    """One cohort run in this (fresh) process: its summary and its CPU seconds."""
    shutil.rmtree(out, ignore_errors=True)
    before = cpu_seconds_of_this_process_tree()
    summary = run_cohort(
        trial, NdjsonInput(data), out, as_of, engine=engine, workers=workers, full=full
    )
    return summary, cpu_seconds_of_this_process_tree() - before


def run_in_a_fresh_process(
    trial: Path,
    data: Path,
    out: Path,
    as_of: dt.date,
    engine: str,
    workers: int | None,
    full: bool,
) -> tuple[CohortSummary, float]:
    """`_run_once` in a new process (spawned: it starts as a `trialsieve cohort` does)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_run_once, trial, data, out, as_of, engine, workers, full).result()


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


def interpreter_probe(repeat: int = 3) -> float:
    """Seconds (best of `repeat`) of a fixed pure-Python loop shaped like a run's per-line
    bookkeeping (dict look-ups, string building and comparing, 10^6 turns). The floor times
    orjson's C; a run is partly Python, so its ratio to the floor depends on how fast this
    machine runs each: print both to compare machines."""
    keys = [f"Observation/{number:08d}" for number in range(1000)]
    verdicts = dict.fromkeys(keys[::2], True)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        seen: dict[str, int] = {}
        newest = ""
        for turn in range(1_000_000):
            key = keys[turn % 1000]
            if verdicts.get(key) is None:
                label = "Observation/" + key[12:]
                seen.setdefault(label, turn)
                if label > newest:
                    newest = label
        best = min(best, time.perf_counter() - started)
    return best


def duckdb_reference(folder: Path, threads: int) -> tuple[float, int, int, int]:
    """The DuckDB query: seconds, rows, patients with ITP, bytes of the files it reads."""
    import duckdb

    def files_of(resource_type: str) -> list[str]:
        return [
            str(file) for file in ndjson_files(folder) if file.name.split(".")[0] == resource_type
        ]

    def read(resource_type: str, columns: str) -> str:
        return (
            f"read_json({files_of(resource_type)!r}, format='newline_delimited', "
            f"columns={{{columns}}})"
        )

    reference = "'subject': 'STRUCT(reference VARCHAR)'"
    code = "'code': 'STRUCT(coding STRUCT(system VARCHAR, code VARCHAR)[])'"
    query = f"""
        WITH itp AS (
            SELECT DISTINCT substr(subject.reference, 9) AS patient
            FROM {read("Condition", f"{reference}, {code}")}
            WHERE len(list_filter(code.coding, lambda c: c.code IN {ITP_CODES})) > 0
        ), hemoglobin AS (
            SELECT substr(subject.reference, 9) AS patient,
                   arg_max(valueQuantity.value, effectiveDateTime) AS value,
                   max(effectiveDateTime) AS measured
            FROM {
        read(
            "Observation",
            f"{reference}, {code}, 'effectiveDateTime': 'VARCHAR', "
            "'valueQuantity': 'STRUCT(value DOUBLE, unit VARCHAR)'",
        )
    }
            WHERE len(list_filter(code.coding, lambda c: c.system = 'http://loinc.org'
                                               AND c.code IN {HEMOGLOBIN_CODES})) > 0
            GROUP BY 1
        )
        SELECT p.id, itp.patient IS NOT NULL AS has_itp, hemoglobin.value, hemoglobin.measured
        FROM {read("Patient", "'id': 'VARCHAR'")} AS p
        LEFT JOIN itp ON itp.patient = p.id
        LEFT JOIN hemoglobin ON hemoglobin.patient = p.id
        ORDER BY p.id
    """
    connection = duckdb.connect()
    connection.execute(f"SET threads = {threads}")
    started = time.perf_counter()
    rows = connection.execute(query).fetchall()
    seconds = time.perf_counter() - started
    connection.close()
    size = sum(
        Path(file).stat().st_size
        for resource_type in ("Condition", "Observation", "Patient")
        for file in files_of(resource_type)
    )
    return seconds, len(rows), sum(1 for row in rows if row[1]), size


def _spread(seconds: list[float]) -> str:
    """The range of the rounds' times, when there were several (the best is shown)."""
    if len(seconds) < 2:
        return ""
    return f"  [best of {len(seconds)}; {min(seconds):.2f}-{max(seconds):.2f} s]"


DASK_GOAL = 1.2
"""The Dask engine's goal against the local engine, in time and in CPU seconds (at most)."""


def _ratios(
    seconds: list[float], local: list[float], cpu: list[float], local_cpu: list[float]
) -> str:
    """A configuration against the local engine: best time over best time, least CPU over
    least (and their difference: the engine's own cost, fixed per run), each with the median
    and range of the rounds' own ratios when there were several (the rounds are interleaved:
    a round's two runs saw about the same load), and whether each is within `DASK_GOAL`."""
    time_ratio = min(seconds) / min(local)
    cpu_ratio = min(cpu) / min(local_cpu)
    extra = min(cpu) - min(local_cpu)
    verdicts = [
        f"{name} {'met' if ratio <= DASK_GOAL else 'not met'}"
        for name, ratio in (("time", time_ratio), ("CPU", cpu_ratio))
    ]
    return (
        f"{time_ratio:5.2f}x time{_per_round(seconds, local)}, {cpu_ratio:5.2f}x CPU seconds "
        f"({extra:+.2f} s){_per_round(cpu, local_cpu)}; goal at most {DASK_GOAL}x: "
        + ", ".join(verdicts)
    )


def _per_round(mine: list[float], theirs: list[float]) -> str:
    """The median and range of the rounds' own ratios, when there were several rounds."""
    if len(mine) < 2:
        return ""
    rounds = [one / other for one, other in zip(mine, theirs, strict=True)]
    return (
        f" (per round: median {statistics.median(rounds):.2f}x, "
        f"{min(rounds):.2f}-{max(rounds):.2f}x)"
    )


def _megabytes(maxrss: int) -> float:
    return maxrss / 1e6 if sys.platform == "darwin" else maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--criteria", type=Path, action="append")
    parser.add_argument("--dask-workers", type=int, action="append")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--engine", action="append", choices=("local", "dask"))
    parser.add_argument("--as-of", default="2026-11-01")
    parser.add_argument("--mode", action="append", choices=("prefilter", "full"))
    parser.add_argument("--no-duckdb", action="store_true")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every run and of the floor, interleaved; the best of each is shown "
        "(a shared machine's speed drifts between runs)",
    )
    arguments = parser.parse_args()
    as_of = dt.date.fromisoformat(arguments.as_of)
    engines = arguments.engine or ["local", "dask"]
    modes = arguments.mode or ["prefilter", "full"]
    trials = arguments.criteria or [
        ROOT / "criteria" / "NCT05315778.yaml",
        ROOT / "criteria" / "NCT03036150.yaml",
    ]
    cores = arguments.workers or os.cpu_count() or 1
    runs: list[tuple[str, int | None]] = []
    for engine in engines:
        if engine == "dask":
            runs += [("dask", size) for size in arguments.dask_workers or [cores, 2 * cores]]
        else:
            runs.append((engine, arguments.workers))

    with tempfile.TemporaryDirectory(prefix="trialsieve-cohort-benchmark-") as scratch:
        data = arguments.data
        require(data)
        print(compile_bytecode())
        if arguments.scale > 1:
            started = time.perf_counter()
            data = Path(scratch) / "export"
            clone(arguments.data, data, arguments.scale)
            print(f"cloned x{arguments.scale} in {time.perf_counter() - started:.1f} s -> {data}")
        summaries: dict[tuple[str, str, str], CohortSummary] = {}
        spreads: dict[tuple[str, str, str], list[float]] = {}
        cpu: dict[tuple[str, str, str], list[float]] = {}
        floors: list[float] = []
        loads: list[float] = []
        for _round in range(arguments.repeat):
            loads.append(os.getloadavg()[0])
            for trial in trials:
                for engine, workers in runs:
                    for mode in modes:
                        name = engine if engine == "local" else f"{engine}/{workers}w"
                        key = (trial.stem, name, mode)
                        out = Path(scratch) / f"out-{trial.stem}-{name.replace('/', '-')}-{mode}"
                        summary, cpu_seconds = run_in_a_fresh_process(
                            trial, data, out, as_of, engine, workers, mode == "full"
                        )
                        spreads.setdefault(key, []).append(summary.seconds)
                        cpu.setdefault(key, []).append(cpu_seconds)
                        best = summaries.get(key)
                        if best is None or summary.seconds < best.seconds:
                            summaries[key] = summary
            floor_seconds, size, lines = parse_floor(data)
            floors.append(floor_seconds)
        loads.append(os.getloadavg()[0])
        floor_seconds = min(floors)
        duck = None if arguments.no_duckdb else duckdb_reference(data, arguments.workers or 2)

    megabytes = size / 1e6
    floor_rate = megabytes / floor_seconds
    patients = next(iter(summaries.values())).patients if summaries else 0
    print(f"input          {megabytes:8.1f} MB, {lines:,} lines, {patients:,} patients")
    print(
        f"machine        {os.cpu_count()} cores; load average (1 min) at each round's start "
        f"and at the end: {', '.join(f'{load:.1f}' for load in loads)}"
    )
    print(
        f"parse floor    {floor_seconds:7.2f} s  {floor_rate:23.1f} MB/s  (orjson, 1 process)"
        + _spread(floors)
    )
    probe = interpreter_probe()
    print(
        f"python probe   {probe:7.2f} s  (a fixed pure-Python loop, best of 3: a run is partly "
        f"Python, the floor C; the floor / probe, {floor_seconds / probe:.2f}, says how "
        "this machine weighs them)"
    )
    if duck is not None:
        duck_seconds, rows, with_itp, read_size = duck
        print(
            f"duckdb         {duck_seconds:7.2f} s  {megabytes / duck_seconds:23.1f} MB/s  "
            f"({rows:,} patients, {with_itp} with ITP; reads Patient, Condition, Observation: "
            f"{read_size / 1e6:.0f} MB, {read_size / 1e6 / duck_seconds:.1f} MB/s of those)"
        )
    for trial in trials:
        of_trial = {key: value for key, value in summaries.items() if key[0] == trial.stem}
        if not of_trial:
            continue
        settled = max(summary.settled_by_prefilter for summary in of_trial.values())
        print(f"{trial.stem}: the pre-filter settles {settled:,} of {patients:,} patients")
        for (_trial, name, mode), summary in of_trial.items():
            worker = summary.worker_peak_memory
            worker_text = "n/a" if worker is None else f"{worker / 1e6:.0f} MB"
            duck_text = "" if duck is None else f"  {duck[0] / summary.seconds:5.2f}x duckdb"
            print(
                f"  {name + ' ' + mode:18} {summary.seconds:7.2f} s  "
                f"{summary.patients_per_second:6.0f} patients/s  "
                f"{floor_seconds / summary.seconds:5.2f}x floor{duck_text}  "
                f"peak {summary.peak_memory / 1e6:.0f} MB main, {worker_text} largest worker, "
                f"{min(cpu[(_trial, name, mode)]):.1f} CPU s"
                + _spread(spreads[(_trial, name, mode)])
            )
        for mode in modes:
            local = of_trial.get((trial.stem, "local", mode))
            for _trial, name, other_mode in of_trial:
                if local is not None and name.startswith("dask") and other_mode == mode:
                    print(
                        f"  {name} / local ({mode}) "
                        + _ratios(
                            spreads[(_trial, name, mode)],
                            spreads[(_trial, "local", mode)],
                            cpu[(_trial, name, mode)],
                            cpu[(_trial, "local", mode)],
                        )
                    )
    if any(engine == "dask" for engine, _size in runs):
        print(
            f"dask scaling   {os.cpu_count()} cores here: a LocalCluster of more workers than "
            "cores only shares the same cores (no gain expected). On several machines each "
            "worker node adds its cores to the evaluation (pass 2); pass 1, which splits the "
            "export in the command's process and its local workers, stays the serial part, and "
            "without a shared filesystem each partition travels to its worker over the network."
        )
    own = _megabytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(f"this process   {own:7.0f} MB peak (benchmark included)")


if __name__ == "__main__":
    main()
