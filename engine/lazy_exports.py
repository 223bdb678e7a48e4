"""A package's exports imported on first use (PEP 562), so that importing the package is cheap.

    __getattr__, __dir__ = lazy_exports(__name__, {"FhirServerSink": "engine.sinks.fhir_server"})

with the same names imported under `if TYPE_CHECKING:` for the type checker. A command that
reads a Bundle file then never loads the HTTP client a FHIR server source needs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module `__getattr__` and `__dir__` of `package`, whose names live in `homes`
    (name -> the module defining it); a name is imported from there once, then kept."""

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return __getattr__, __dir__
