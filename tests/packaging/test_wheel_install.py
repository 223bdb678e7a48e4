"""The built wheel works on its own: installed into a fresh virtual environment outside the
checkout, `trialsieve lint` passes on the repository's criteria and mappings and `trialsieve
evaluate` produces the golden output of a shipped example, from a working directory outside the
checkout.

Offline and fast: the wheel is built without build isolation (setuptools and wheel come from
the dev extra), the virtual environment has no pip, and its dependencies are the project
environment's installed distributions, but only those the wheel declares (its `Requires-Dist`,
followed transitively), exposed through a folder of links: an import the metadata does not
declare fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from engine.schemas import CRITERIA_SCHEMA, MAPPINGS_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "expected"
EXAMPLE = ROOT / "examples" / "patients" / "itp-relapsed-candidate.json"
BUILD_INPUTS = ("pyproject.toml", "README.md", "engine", "criteria", "mappings")


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, (
        f"{command} exited {completed.returncode}\n{completed.stdout}\n{completed.stderr}"
    )
    return completed.stdout


def copy_sources(tmp_path: Path) -> Path:
    """A copy of what a build reads (a build writes `build/` and `*.egg-info` next to the
    sources, and tests run in parallel worktrees); symbolic links are copied as links."""
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        origin = ROOT / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(origin, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(origin, source / name)
    return source


def build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources, offline."""
    source = copy_sources(tmp_path)
    wheelhouse = tmp_path / "wheelhouse"
    run(
        *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"),
        *("--no-index", "--wheel-dir", wheelhouse, source),
        cwd=tmp_path,
    )
    (wheel,) = wheelhouse.glob("trialsieve-*.whl")
    return wheel


def declared_distributions(wheel: Path) -> set[str]:
    """The distributions the wheel needs: its Requires-Dist without extras, followed through
    the installed distributions' own requirements (with the extras asked for)."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [entry for entry in archive.namelist() if entry.endswith(".dist-info/METADATA")]
        text = archive.read(name).decode()
    prefix = "Requires-Dist: "
    pending = [
        (Requirement(line.removeprefix(prefix)), "")
        for line in text.splitlines()
        if line.startswith(prefix)
    ]
    visited: set[tuple[str, str]] = set()
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        key = canonicalize_name(requirement.name)
        for chosen in ["", *sorted(requirement.extras)]:
            if (key, chosen) not in visited:
                visited.add((key, chosen))
                requires = metadata.distribution(key).requires or []
                pending.extend((Requirement(spec), chosen) for spec in requires)
    return {key for key, _extra in visited}


def distribution_entries(name: str) -> Iterator[Path]:
    """The top-level files and folders of an installed distribution, in its site-packages."""
    distribution = metadata.distribution(name)
    root = Path(str(distribution.locate_file("")))
    seen: set[str] = set()
    for file in distribution.files or []:
        top = file.parts[0]
        if top in seen or top in ("..", "__pycache__") or top.endswith(".pth"):
            continue
        seen.add(top)
        if (root / top).exists():
            yield root / top


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding the wheel; returns its bin folder."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp_path)
    environment = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", environment, cwd=tmp_path)
    python = environment / "bin" / "python"
    run(
        *(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps"),
        *("--no-index", wheel),
        cwd=tmp_path,
    )
    dependencies = tmp_path / "dependencies"
    dependencies.mkdir()
    for name in sorted(declared_distributions(wheel)):
        for entry in distribution_entries(name):
            link = dependencies / entry.name
            if not link.exists():
                link.symlink_to(entry, target_is_directory=entry.is_dir())
    site_packages = run(
        python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
    ).strip()
    (Path(site_packages) / "trialsieve-dependencies.pth").write_text(f"{dependencies}\n")
    return environment / "bin"


def clean_environment() -> dict[str, str]:
    """This process's environment without anything that would put the checkout on the path."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    }


def test_engine_and_its_schemas_come_from_the_environment(installed: Path, tmp_path: Path) -> None:
    shown = run(
        installed / "python",
        "-c",
        "import engine, engine.schemas as s; print(engine.__file__);"
        "print(s.schema_resource(s.CRITERIA_SCHEMA), s.schema_resource(s.MAPPINGS_SCHEMA))",
        cwd=tmp_path,
        env=clean_environment(),
    ).split()
    environment = installed.parent.resolve()
    for file in shown:
        path = Path(file)
        assert path.is_file() and not path.is_symlink(), file
        assert path.resolve().is_relative_to(environment), f"{file} is outside {environment}"


def test_wheel_ships_every_file_of_the_package(installed: Path) -> None:
    environment = installed.parent
    (site_packages,) = environment.glob("lib/python*/site-packages")
    shipped = {
        path.relative_to(site_packages / "engine")
        for path in (site_packages / "engine").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    sources = {
        path.relative_to(ROOT / "engine")
        for path in (ROOT / "engine").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert sources - shipped == set(), "files of engine/ missing from the wheel"


def test_lint_of_the_repository_criteria(installed: Path, tmp_path: Path) -> None:
    output = run(
        *(installed / "trialsieve", "lint", ROOT / "criteria", ROOT / "mappings"),
        cwd=tmp_path,
        env=clean_environment(),
    )
    assert output.startswith("ok: ")


def test_evaluation_of_a_shipped_example_equals_its_golden_output(
    installed: Path, tmp_path: Path
) -> None:
    result = tmp_path / "result.json"
    run(
        *(installed / "trialsieve", "evaluate", ROOT / "criteria" / "NCT05315778.yaml"),
        *("--bundle", EXAMPLE, "--as-of", "2026-11-01"),
        *("--attestations", ROOT / "examples" / "attestations.yaml", "--output", result),
        cwd=tmp_path,
        env=clean_environment(),
    )
    assert result.read_bytes() == (GOLDEN / f"{EXAMPLE.stem}.json").read_bytes()


def test_sdist_carries_the_schemas_as_files(tmp_path: Path) -> None:
    """A source distribution (what `python -m build` makes its wheel from) holds the schemas'
    content, not links into a repository it does not contain."""
    source = copy_sources(tmp_path)
    built = run(
        sys.executable,
        "-c",
        "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))",
        tmp_path / "dist",
        cwd=source,
    ).splitlines()[-1]
    with tarfile.open(tmp_path / "dist" / built) as archive:
        for folder, name in (("criteria", CRITERIA_SCHEMA), ("mappings", MAPPINGS_SCHEMA)):
            (member,) = [
                entry for entry in archive if entry.name.endswith(f"/engine/schemas/{name}")
            ]
            assert member.isfile(), f"{member.name} is not a regular file"
            content = archive.extractfile(member)
            assert content is not None
            assert content.read() == (ROOT / folder / name).read_bytes()
