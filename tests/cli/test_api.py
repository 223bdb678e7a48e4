"""The public Python API: `engine.__all__` is pinned, every name resolves, `import engine` stays
cheap, and docs/api.md's examples run (a doctest)."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
from fresh_interpreter import run_python

import engine

ROOT = Path(__file__).resolve().parents[2]


def test_the_public_names_are_pinned() -> None:
    assert sorted(engine.__all__) == [
        "BundleInput",
        "NdjsonInput",
        "PatientResources",
        "Screening",
        "TrialsieveError",
        "__version__",
        "load_trial",
        "read_bundle_file",
        "run_cohort",
        "screen_patient",
    ]


@pytest.mark.parametrize("name", engine.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(engine, name) is not None
    assert name in dir(engine)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'screen'"):
        engine.screen  # noqa: B018


def test_importing_engine_imports_nothing_else() -> None:
    listed = run_python("import sys, engine; print(' '.join(sorted(sys.modules)))").stdout.split()
    assert [name for name in listed if name.startswith("engine")] == [
        "engine",
        "engine.lazy_exports",
    ]


def test_the_api_page_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    failed, attempted = doctest.testfile(
        str(ROOT / "docs" / "api.md"),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
        verbose=False,
    )
    assert attempted >= 10
    assert failed == 0
