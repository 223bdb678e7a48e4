"""How long the command line takes to start (not a test: run it by hand).

    .venv/bin/python benchmarks/startup.py [RUNS]

Runs, each RUNS times (default 9) as a fresh process, `trialsieve --help` and one
`trialsieve evaluate` of a shipped Bundle (examples/patients/itp-relapsed-candidate.json,
output to a temporary file), and prints the median, fastest and slowest wall time of each,
then the heavy libraries each one imports. The target for `--help` is under 0.3 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIALSIEVE = Path(sys.executable).with_name("trialsieve")
RUNS = 9
HEAVY = ("fastapi", "pyarrow", "dask", "distributed", "httpx", "jwt", "fhir", "uvicorn")
"""Libraries a command should import only when it uses them."""

_IMPORTED = """
import sys
wanted = set(sys.argv[1].split(","))
sys.argv = ["trialsieve", *sys.argv[2:]]
from engine.cli import app
try:
    app()
except SystemExit:
    pass
heavy = {name.split(".")[0] for name in sys.modules} & wanted
print(",".join(sorted(heavy)), file=sys.stderr)
"""


def wall_times(command: list[str], runs: int) -> list[float]:
    """The wall time of each of `runs` runs of `command` (each must exit 0)."""
    times = []
    for _run in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def heavy_imports(arguments: list[str]) -> str:
    """The heavy libraries (`HEAVY`) a run of `trialsieve ARGUMENTS` imports."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED, ",".join(HEAVY), *arguments],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else RUNS
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "result.json"
        evaluate = [
            "evaluate",
            "criteria/NCT05315778.yaml",
            "--bundle",
            "examples/patients/itp-relapsed-candidate.json",
            "--as-of",
            "2026-11-01",
            "--output",
            str(output),
        ]
        cases = {"trialsieve --help": ["--help"], "trialsieve evaluate (one Bundle)": evaluate}
        print(f"wall time of a fresh process, {runs} runs each ({TRIALSIEVE})")
        for label, arguments in cases.items():
            times = wall_times([str(TRIALSIEVE), *arguments], runs)
            print(
                f"{label:34} median {statistics.median(times):.3f} s "
                f"(fastest {min(times):.3f} s, slowest {max(times):.3f} s)"
            )
        for label, arguments in cases.items():
            imported = heavy_imports(arguments) or "none of " + ", ".join(HEAVY)
            print(f"{label:34} imports: {imported}")


if __name__ == "__main__":
    main()
