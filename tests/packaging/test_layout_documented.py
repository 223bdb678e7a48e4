"""The layout the docs describe is the layout of the code: docs/architecture.md names every
folder and top-level module of `engine/` and every test folder; the README's folder table
names every folder of `engine/` and of `tests/`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
TRIAL_TESTS = re.compile(r"nct\d{8}")
"""Per-trial test folders: the docs name their pattern, `tests/<nct id>/`."""


def engine_folders() -> list[str]:
    return sorted(
        path.name for path in (ROOT / "engine").iterdir() if (path / "__init__.py").exists()
    )


def engine_modules() -> list[str]:
    return sorted(
        path.name for path in (ROOT / "engine").glob("*.py") if path.name != "__init__.py"
    )


def folders_of_tests() -> list[str]:
    return sorted(
        path.name
        for path in (ROOT / "tests").iterdir()
        if path.is_dir() and any(path.glob("test_*.py")) and not TRIAL_TESTS.fullmatch(path.name)
    )


def readme_row(first_cell: str) -> str:
    (row,) = [line for line in README.splitlines() if line.startswith(f"| `{first_cell}` |")]
    return row


def test_architecture_names_every_engine_folder_and_module() -> None:
    assert engine_folders() and engine_modules()
    missing = [
        f"engine/{name}"
        for name in [*engine_folders(), *engine_modules()]
        if f"engine/{name}" not in ARCHITECTURE
    ]
    assert not missing, f"docs/architecture.md does not say what these own: {missing}"


def test_architecture_names_every_test_folder() -> None:
    missing = [
        f"tests/{name}/" for name in folders_of_tests() if f"tests/{name}/" not in ARCHITECTURE
    ]
    assert not missing, f"docs/architecture.md does not list these test folders: {missing}"


def test_readme_folder_table_names_every_engine_and_test_folder() -> None:
    engine_row = readme_row("engine/")
    missing = [name for name in engine_folders() if f"`{name}/`" not in engine_row]
    assert not missing, f"README.md's engine/ row misses {missing}"
    tests_row = readme_row("tests/")
    missing = [name for name in folders_of_tests() if f"`{name}/`" not in tests_row]
    assert not missing, f"README.md's tests/ row misses {missing}"
