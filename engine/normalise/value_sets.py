"""Concept codes from FHIR ValueSet resources (`value_set:` on a mapping concept).

Sites keep value sets as FHIR R4 ValueSet resources (JSON). A concept may take its codes from
one, read in this order:

1. the ValueSet's own `expansion.contains` (nested `contains` too), when it has one;
2. else its `compose`, when every `include` / `exclude` lists its `concept`s: the included
   codes minus the excluded ones (FHIR R4 ValueSet, 4.9.5 "Value Set Composition");
3. else (a `filter` such as `is-a`, a whole code system, another `valueSet`) an expansion by
   a terminology server: the expansion cached beside the file (`<name>.expansion.json`,
   keyed by a hash of the compose, so that runs are reproducible offline and the cache can be
   committed with the mappings), else the FHIR `$expand` operation of the server named by
   the `TRIALSIEVE_TERMINOLOGY_SERVER` environment variable (its result is then cached);
4. else a `MappingError` saying that neither an expansion nor a server is available.

Codes are returned by code-system URI; inactive or abstract entries of an expansion are left
out (they are not codes a record holds).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.atomic_write import write_atomically
from engine.errors import Location, MappingError

TERMINOLOGY_SERVER_VARIABLE = "TRIALSIEVE_TERMINOLOGY_SERVER"
"""The environment variable naming a FHIR terminology server's base URL (for `$expand`)."""

EXPANSION_SUFFIX = ".expansion.json"
FHIR_JSON = "application/fhir+json"
_TIMEOUT_SECONDS = 30.0


_reading = threading.local()


@contextmanager
def recording_reads() -> Iterator[list[Path]]:
    """Collect the files `value_set_codes` reads in this thread (ValueSet files and cached
    expansions), so that a cache of loaded mappings can tell when one of them changed. An
    enclosing recording gets them too."""
    previous = getattr(_reading, "paths", None)
    paths: list[Path] = []
    _reading.paths = paths
    try:
        yield paths
    finally:
        _reading.paths = previous
        if previous is not None:
            previous.extend(paths)


def note_reads(paths: Iterable[Path]) -> None:
    """Count `paths` as read by the recording under way (a cache serving what they gave)."""
    for path in paths:
        _note_read(path)


def _note_read(path: Path) -> None:
    paths = getattr(_reading, "paths", None)
    if paths is not None:
        paths.append(path)


def value_set_codes(
    path: Path, where: Location, environment: Mapping[str, str] | None = None
) -> dict[str, frozenset[str]]:
    """The codes of the ValueSet in `path`, by code-system URI.

    `where` locates the `value_set:` entry (for errors); `environment` defaults to
    `os.environ` (its `TRIALSIEVE_TERMINOLOGY_SERVER`). Raises MappingError.
    """
    _note_read(path)
    _note_read(cache_path(path))
    value_set = _read_value_set(path, where)
    expansion = value_set.get("expansion")
    if isinstance(expansion, dict) and "contains" in expansion:
        return _expansion_codes(expansion, path, where)
    compose = value_set.get("compose")
    if not isinstance(compose, dict) or not isinstance(compose.get("include"), list):
        raise MappingError(f"ValueSet {path.name} has neither an expansion nor a compose", where)
    enumerated = _enumerated(compose)
    if enumerated is not None:
        return enumerated
    return _expanded_by_server(value_set, compose, path, where, environment or os.environ)


def _read_value_set(path: Path, where: Location) -> dict[str, Any]:
    try:
        value_set = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"ValueSet file {path} not found", where) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MappingError(f"ValueSet file {path} cannot be read as JSON: {error}", where) from None
    if not isinstance(value_set, dict) or value_set.get("resourceType") != "ValueSet":
        found = value_set.get("resourceType") if isinstance(value_set, dict) else "no resource"
        raise MappingError(f"{path.name} holds {found}, not a FHIR ValueSet", where)
    return value_set


def _expansion_codes(
    expansion: dict[str, Any], path: Path, where: Location
) -> dict[str, frozenset[str]]:
    total = expansion.get("total")
    entries = list(_contains(expansion.get("contains") or []))
    if isinstance(total, int) and total > len(entries):
        raise MappingError(
            f"the expansion of {path.name} holds {len(entries)} of its {total} codes "
            "(a paged expansion); expand it whole",
            where,
        )
    codes: dict[str, set[str]] = {}
    for entry in entries:
        system, code = entry.get("system"), entry.get("code")
        if entry.get("inactive") is True or entry.get("abstract") is True:
            continue
        if isinstance(system, str) and isinstance(code, str) and code:
            codes.setdefault(system, set()).add(code)
    return {system: frozenset(found) for system, found in codes.items()}


def _contains(entries: list[Any]) -> Iterator[dict[str, Any]]:
    for entry in entries:
        if isinstance(entry, dict):
            yield entry
            yield from _contains(entry.get("contains") or [])


def _enumerated(compose: dict[str, Any]) -> dict[str, frozenset[str]] | None:
    """Included minus excluded codes when every part lists its concepts, else None."""
    sections: list[tuple[bool, dict[str, Any]]] = [
        (True, part) for part in compose.get("include") or [] if isinstance(part, dict)
    ] + [(False, part) for part in compose.get("exclude") or [] if isinstance(part, dict)]
    included: dict[str, set[str]] = {}
    excluded: dict[str, set[str]] = {}
    for is_include, part in sections:
        system = part.get("system")
        concepts = part.get("concept")
        if part.get("filter") or part.get("valueSet") or not isinstance(concepts, list):
            return None
        if not isinstance(system, str):
            return None
        target = included if is_include else excluded
        for concept in concepts:
            code = concept.get("code") if isinstance(concept, dict) else None
            if isinstance(code, str) and code:
                target.setdefault(system, set()).add(code)
    return {
        system: frozenset(codes - excluded.get(system, set())) for system, codes in included.items()
    }


def compose_key(compose: dict[str, Any]) -> str:
    """A hash of a compose (canonical JSON): a cached expansion is valid for it only."""
    canonical = json.dumps(compose, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def cache_path(path: Path) -> Path:
    """Where the expansion of the ValueSet in `path` is cached: `<name>.expansion.json`."""
    return path.with_name(path.stem + EXPANSION_SUFFIX)


def _expanded_by_server(
    value_set: dict[str, Any],
    compose: dict[str, Any],
    path: Path,
    where: Location,
    environment: Mapping[str, str],
) -> dict[str, frozenset[str]]:
    key = compose_key(compose)
    cached = cache_path(path)
    if cached.is_file():
        try:
            record = json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MappingError(
                f"cached expansion {cached} cannot be read: {error}", where
            ) from None
        if isinstance(record, dict) and record.get("compose_sha256") == key:
            expanded = record.get("valueSet")
            if isinstance(expanded, dict) and isinstance(expanded.get("expansion"), dict):
                return _expansion_codes(expanded["expansion"], path, where)
    server = environment.get(TERMINOLOGY_SERVER_VARIABLE, "").strip().rstrip("/")
    if not server:
        raise MappingError(
            f"ValueSet {path.name} needs a terminology server (its compose has a filter such "
            "as is-a, a whole code system or another value set) and none is available: no "
            f"expansion in the file, no cached expansion ({cached.name}) for this compose, "
            f"and {TERMINOLOGY_SERVER_VARIABLE} is not set",
            where,
        )
    expanded = _expand(server, value_set, path, where)
    codes = _expansion_codes(expanded["expansion"], path, where)
    record = {
        "compose_sha256": key,
        "server": server,
        "expanded": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "valueSet": expanded,
    }
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    write_atomically(cached, text.encode("utf-8"))
    return codes


def _expand(server: str, value_set: dict[str, Any], path: Path, where: Location) -> dict[str, Any]:
    """POST [server]/ValueSet/$expand with the ValueSet (FHIR R4 ValueSet $expand)."""
    import httpx

    url = f"{server}/ValueSet/$expand"
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "valueSet", "resource": value_set}],
    }
    try:
        response = httpx.post(
            url,
            json=body,
            headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON},
            timeout=_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as error:
        raise MappingError(
            f"expanding {path.name}: {url} cannot be reached: {error}", where
        ) from None
    if response.status_code != 200:
        detail = _diagnostics(response)
        raise MappingError(
            f"expanding {path.name}: {url} answered {response.status_code}{detail}", where
        )
    try:
        expanded = response.json()
    except ValueError:
        raise MappingError(
            f"expanding {path.name}: {url} answered something not JSON", where
        ) from None
    if (
        not isinstance(expanded, dict)
        or expanded.get("resourceType") != "ValueSet"
        or not isinstance(expanded.get("expansion"), dict)
    ):
        raise MappingError(f"expanding {path.name}: {url} answered no expanded ValueSet", where)
    return expanded


def _diagnostics(response: Any) -> str:
    try:
        outcome = response.json()
    except ValueError:
        return ""
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    if isinstance(issues, list) and issues and isinstance(issues[0], dict):
        text = issues[0].get("diagnostics")
        if isinstance(text, str):
            return f": {text[:300]}"
    return ""
