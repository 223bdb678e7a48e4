"""Every module of the engine imports, and the examples in its docstrings hold (doctest).

Run here rather than with pytest's --doctest-modules, which would also collect the test
folders' same-named conftest.py files as modules.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import engine

MODULES = sorted(
    module.name for module in pkgutil.walk_packages(engine.__path__, prefix=f"{engine.__name__}.")
)


@pytest.mark.parametrize("name", ["engine", *MODULES])
def test_module_imports_and_its_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


def test_the_engine_has_examples() -> None:
    examples = sum(
        len(test.examples)
        for name in MODULES
        for test in doctest.DocTestFinder().find(importlib.import_module(name))
    )
    assert examples >= 10
