"""What a command leaves for the next one, and how it exits: the unit conversions it worked
out are cached (the next `evaluate` builds no unit registry), and the interpreter's exit does
not walk the whole heap with the cyclic collector. Speed itself is measured by
benchmarks/startup.py, not here."""

from __future__ import annotations

import os
from pathlib import Path

from fresh_interpreter import run_python, run_trialsieve

ROOT = Path(__file__).resolve().parents[2]
PATIENT = ROOT / "examples" / "patients" / "itp-abnormal-screening-labs.json"
"""A shipped patient whose labs are in units other than their concepts' (haemoglobin in g/dL,
creatinine in mg/dL): evaluating them converts units."""
REGISTRY_MODULE = "engine.normalise.unit_registry"


def run_in_a_new_process(cache: Path, *arguments: str) -> tuple[int, set[str]]:
    """`trialsieve ARGUMENTS` with the cache folder `cache`: its exit code and the modules
    it imported."""
    code, _output, modules = run_trialsieve(
        *arguments, environment={**os.environ, "TRIALSIEVE_CACHE_DIR": str(cache)}
    )
    return code, modules


def evaluate_in_a_new_process(cache: Path, output: Path) -> tuple[int, set[str]]:
    """`trialsieve evaluate` of PATIENT as of 2026-11-01 into `output`."""
    return run_in_a_new_process(
        cache,
        "evaluate",
        str(ROOT / "criteria" / "NCT05315778.yaml"),
        "--bundle",
        str(PATIENT),
        "--as-of",
        "2026-11-01",
        "--output",
        str(output),
    )


def test_the_unit_conversions_a_command_worked_out_spare_the_next_its_registry(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    first_code, first = evaluate_in_a_new_process(cache, tmp_path / "first.json")
    second_code, second = evaluate_in_a_new_process(cache, tmp_path / "second.json")
    assert (first_code, second_code) == (0, 0)
    assert REGISTRY_MODULE in first  # the patient's units needed the registry once
    assert REGISTRY_MODULE not in second
    assert (tmp_path / "first.json").read_bytes() == (tmp_path / "second.json").read_bytes()


def test_lint_checks_units_with_the_conversions_earlier_runs_worked_out(tmp_path: Path) -> None:
    """DAPA-CKD's eGFR reads creatinine in mg/dL, its concept's unit is umol/L: lint checks
    that pair by compiling the criteria anew; the second lint finds it known."""
    cache = tmp_path / "cache"
    criteria = str(ROOT / "criteria" / "NCT03036150.yaml")
    first_code, first = run_in_a_new_process(cache, "lint", criteria)
    second_code, second = run_in_a_new_process(cache, "lint", criteria)
    assert (first_code, second_code) == (0, 0)
    assert REGISTRY_MODULE in first
    assert REGISTRY_MODULE not in second


def test_a_command_exits_with_everything_left_frozen_for_the_collector() -> None:
    """The exit handler the command registers runs before this one, registered first (exit
    handlers run last registered first): by then the collector is off and what is left is
    frozen, so the interpreter's shutdown does not walk it."""
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print(gc.isenabled(), gc.get_freeze_count() > 0))\n"
        "sys.argv = ['trialsieve', 'version']\n"
        "from engine.cli import app\n"
        "try:\n"
        "    app()\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    done = run_python(code, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False True"
