"""The process-wide UCUM unit registry (ucumvert on pint), built when this module is imported.

Building it takes about half a second, so nothing imports this module until a unit must be
converted (`engine.normalise.units`). A cohort run that will convert units imports it before
it forks worker processes (a Dask LocalCluster's forkserver preloads it), so that the workers
share one registry instead of each building its own. Python's import lock makes the first
import thread-safe.
"""

from __future__ import annotations

from typing import Any

from ucumvert import PintUcumRegistry

REGISTRY: Any = PintUcumRegistry()
