"""Every exception class trialsieve defines is in the tree of `engine/errors.py`'s docstring.

The tree there is the one list of what trialsieve raises on purpose: classes defined in
`engine.errors` deriving from `TrialsieveError`, plus the few defined elsewhere on purpose
(named with their module: `ApiError`, and the private signals caught where they are raised).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import engine
import engine.errors
from engine.errors import TrialsieveError

ROOTS = ("TrialsieveError", "Exception")
_BRANCH = re.compile(r"^(?P<indent>[\s|]*)\+-- (?P<name>\w+)")
_ELSEWHERE = re.compile(r"\b(?P<name>\w+)\s+\((?P<file>engine/[\w/]+\.py)\)")


def _tree() -> dict[str, str]:
    """Each class in the docstring's trees, with the class written above it (its parent)."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (engine.errors.__doc__ or "").splitlines():
        if line.strip() in ROOTS:
            stack = [(len(line) - len(line.lstrip()), line.strip())]
            continue
        branch = _BRANCH.match(line)
        if branch is None or not stack:
            continue
        column = len(branch["indent"]) + len("+-- ")
        while len(stack) > 1 and stack[-1][0] >= column:
            stack.pop()
        parents[branch["name"]] = stack[-1][1]
        stack.append((column, branch["name"]))
    return parents


def _defined_elsewhere() -> dict[str, str]:
    """Classes the docstring names with the file they are defined in."""
    text = engine.errors.__doc__ or ""
    return {match["name"]: match["file"] for match in _ELSEWHERE.finditer(text)}


def _exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in a module of the `engine` package."""
    found: list[type[BaseException]] = []
    for module_info in pkgutil.walk_packages(engine.__path__, "engine."):
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def _file_of(cls: type) -> str:
    root = Path(engine.__file__).parent.parent
    return Path(inspect.getfile(cls)).relative_to(root).as_posix()


def test_the_walk_finds_the_classes_it_checks() -> None:
    names = {cls.__name__ for cls in _exception_classes()}
    assert {"TrialsieveError", "ServerError", "DateProblem", "ApiError"} <= names


def test_every_exception_class_is_in_the_tree_or_named_with_its_module() -> None:
    tree, elsewhere = _tree(), _defined_elsewhere()
    unlisted = []
    for cls in _exception_classes():
        if cls.__module__ == "engine.errors":
            if cls is not TrialsieveError and cls.__name__ not in tree:
                unlisted.append(f"{cls.__name__} (engine.errors) is missing from the tree")
            if not issubclass(cls, TrialsieveError):
                unlisted.append(f"{cls.__name__} (engine.errors) is not a TrialsieveError")
        elif elsewhere.get(cls.__name__) != _file_of(cls):
            unlisted.append(
                f"{cls.__name__} is defined in {_file_of(cls)}: define it in engine/errors.py, "
                "or name it with its module in the docstring there"
            )
    assert not unlisted, "\n".join(unlisted)


def test_every_class_in_the_tree_exists_under_the_parent_it_is_drawn_under() -> None:
    elsewhere = _defined_elsewhere()
    defined = {cls.__name__: cls for cls in _exception_classes()}
    for name, parent in _tree().items():
        assert name in defined, f"the tree lists {name}, which no engine module defines"
        cls = defined[name]
        if name not in elsewhere:
            assert cls.__module__ == "engine.errors", f"{name} is not defined in engine.errors"
        assert parent in {base.__name__ for base in cls.__bases__}, f"{name} is not a {parent}"


def test_date_problems_are_trialsieve_errors_and_api_errors_are_drawn_beside_them() -> None:
    tree = _tree()
    assert tree["DateProblem"] == "TrialsieveError" and tree["ApiError"] == "Exception"
