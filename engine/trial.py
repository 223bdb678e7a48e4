"""Load a trial: read its criteria file, the mappings it names, and compile — once per run."""

from __future__ import annotations

from pathlib import Path

from engine.compiled_cache import (
    load_terminology_cached,
    load_trial_cached,
    restore_conversions,
    store_reading,
    stored_reading,
)
from engine.criteria.model import CriteriaFile
from engine.evaluate.compile import CompiledCriteria, compile_criteria
from engine.normalise import Terminology, load_terminology

_COMPILED_LIMIT = 64
_compiled: dict[tuple[int, int], tuple[CriteriaFile, Terminology, CompiledCriteria]] = {}
"""Compiled trials, by the identity of their criteria and terminology (kept alive here).

The loaders return the same objects for unchanged files, so an unchanged trial is compiled
once per process."""


def load_trial(criteria_path: str | Path) -> CompiledCriteria:
    """Load and compile a criteria file with the mappings it refers to.

    Compiled criteria are cached on disk by content (`engine.compiled_cache`): an unchanged
    trial loads in milliseconds in a new process. The unit conversions earlier runs met are
    restored too.
    """
    restore_conversions()
    return load_trial_cached(criteria_path, _load_and_compile, _compile_loaded)


def _load_and_compile(criteria_path: str | Path) -> CompiledCriteria:
    # The criteria loader (and jsonschema, 0.07 s of CPU to import) only where criteria
    # compile: a trial found in the cache needs neither.
    from engine.criteria.loader import load_criteria

    before = _take_kept_reading(criteria_path)
    criteria = load_criteria(criteria_path)
    _keep_reading(criteria_path, before)
    return _compile_loaded(criteria)


def _take_kept_reading(criteria_path: str | Path) -> object | None:
    """The reading of the criteria file this process holds, taken from the cache when it
    holds none (`engine.compiled_cache.stored_reading`): an edit of one criterion is then read
    alone. None when there is none, or the working folder a relative path needs is gone (the
    loader then says the file is not found)."""
    from engine.criteria.loader import last_reading, take_reading

    try:
        if last_reading(criteria_path) is None:
            kept = stored_reading(criteria_path)
            if kept is not None:
                take_reading(criteria_path, kept)
        return last_reading(criteria_path)
    except OSError:
        return None


def _keep_reading(criteria_path: str | Path, before: object | None) -> None:
    """Keep the reading loading the criteria file left, when it is a new one, for the next
    process (`engine.compiled_cache.store_reading`)."""
    from engine.criteria.loader import last_reading

    try:
        reading = last_reading(criteria_path)
        if reading is not None and reading is not before:
            store_reading(criteria_path, reading)
    except OSError:  # the working folder removed meanwhile: nothing kept
        return


def _compile_loaded(criteria: CriteriaFile) -> CompiledCriteria:
    """Compile a loaded criteria file over the terminology of its mappings (cached)."""
    terminology = load_terminology_cached(criteria.mapping_paths, load_terminology)
    key = (id(criteria), id(terminology))
    known = _compiled.get(key)
    if known is not None and known[0] is criteria and known[1] is terminology:
        return known[2]
    compiled = compile_criteria(criteria, terminology)
    if len(_compiled) >= _COMPILED_LIMIT:
        _compiled.clear()
    _compiled[key] = (criteria, terminology, compiled)
    return compiled
