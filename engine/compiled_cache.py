"""Compiled criteria cached on disk: a trial compiles once per content, not once per process.

Loading a trial reads its criteria file and mappings with a YAML parser that keeps line
numbers (about half a second) and builds the unit conversions its computed values declare
with the UCUM unit registry (ucumvert on pint, a second or more to build). Every
`trialsieve evaluate`, every cohort run and every spawned worker paid that again. The cache
keeps the loaded criteria file (`CriteriaFile`, the model the YAML is read into: pickled,
0.3-0.5 ms, where the compiled criteria, closures and terminology included, took cloudpickle
7-9 ms to write and 7 ms to read) in one file per content; a hit compiles it over the
terminology of its mappings (itself cached, below): 0.4-1.2 ms, with the unit conversions
and the parsed jsonpath expressions the entry restores (no unit registry, no jsonpath-ng
parser). A hit in a new process: NCT05315778 9.5-9.8 ms of CPU, DAPA-CKD 8.6-8.8 (10.3-10.8
and 8.7-9.2 with the compiled criteria cloudpickled). The entries:

- the key is a SHA-256 over this cache's format, the Python, cloudpickle, pint and ucumvert
  versions, every source file of the `engine` package (so an edited trialsieve never reads
  another version's entries), the working folder when the criteria path is relative, the path
  as given, the criteria file's bytes and the `TRIALSIEVE_TERMINOLOGY_SERVER` variable: no
  YAML is parsed to find an entry (parsing the criteria file for its `mappings:` cost a pure-
  Python YAML parse per run, and a second one whenever the trial then compiled);
- an entry records the files its compiled criteria were read from besides the criteria file:
  the mapping files (the `mappings:` entries as the loader expands them, a folder into its
  *.yaml files, sorted) and the ValueSet files (and cached expansions) the mappings read,
  each with its SHA-256. A changed file, or a folder whose listing changed (a mapping file
  added or removed), makes the entry stale: the trial compiles again and the entry is
  written anew;
- an entry is written without an fsync, after its SHA-256 (`_sealed`): one a machine crash
  cut short or left with a block of zeros does not match it and is compiled again;
- criteria that do not load (a `CriteriaError`, a `MappingError`) are never cached: the
  loader raises them every time, naming the file and line;
- beside the compiled criteria, every unit conversion known in the process after compiling
  (`engine.normalise.units.known_conversions`) is kept and restored on a hit, so a cached
  trial needs no unit registry for them (at most 64 entries are kept, the oldest removed).
  Conversions met later, in the data, and those met compiling are kept in one
  shared file, `conversions-<key>.pickle` (key: the versions and sources above), which
  `save_conversions` updates (a cohort run after each partition, a `trialsieve` command
  when it ends) and `load_conversions` restores (so a new process compiling an edited
  trial, or evaluating data in the units an earlier one met, needs no unit registry either;
  the files of the last 4 versions written are kept, older ones removed as a new one is
  written);
- the output shapes a cohort validated with the R4B models (`engine.report.validate.
  OutputShapes`) are kept the same way (`shapes-<key>.pickle`, key: the same versions and
  sources, fhir.resources and pydantic included): a later run validates only new shapes
  (the last 4 versions' files kept, as for the conversions);
- the resource types each criteria file's compiled criteria read (`remember_resource_types`,
  one JSON file, `resource-types.json`, for the last 64 criteria files): a cohort run's pass
  1 starts with them (`remembered_resource_types`, keyed by the criteria file alone: no
  digest of the sources, no entry unpickled) and checks them against the compiled criteria,
  so a hint no longer right costs a second pass 1, never a different result;
- the last reading of each criteria file compiled (`store_reading`, `reading-<key>.pickle`,
  key: the versions and sources above, ruamel.yaml's version, the working folder when the
  path is relative and the path as given, not the file's bytes; the last 64 kept): a new
  process compiling an edit of one criterion takes it (`stored_reading`) and reads the
  edited criterion alone (`engine.criteria.loader`), not the whole file (NCT05315778: 45-52
  instead of 74-82 ms of CPU to load the criteria). A reading that no longer fits the file
  (another edit, an older file) only makes the file read whole.

The folder is `$TRIALSIEVE_CACHE_DIR`, else `$XDG_CACHE_HOME/trialsieve`, else
`~/.cache/trialsieve`; `TRIALSIEVE_CACHE_DIR=off` turns the cache off. Entries are pickles,
and unpickling runs code: the folder is created readable by its owner only, and a file is
read only when it and its folder belong to the user running trialsieve and neither is
writable by group or others (nor is the file a symbolic link); anything else is ignored
with a warning (the trial compiles as without a cache). Entries are written
atomically; one that cannot be read or written is ignored (the trial is compiled as without a
cache): the cache only ever saves time, it never changes a result.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import pickle
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from engine.atomic_write import write_atomically
from engine.criteria.model import CriteriaFile
from engine.evaluate import CompiledCriteria
from engine.evaluate.compile import parsed_jsonpaths, remember_jsonpaths
from engine.normalise import Terminology, units
from engine.normalise.loader import mapping_files
from engine.normalise.value_sets import TERMINOLOGY_SERVER_VARIABLE, note_reads, recording_reads

CACHE_VARIABLE = "TRIALSIEVE_CACHE_DIR"
"""The environment variable naming the cache folder (`off`: no cache)."""
_FORMAT = b"trialsieve-compiled-cache-3"
_ENTRY_PREFIX = "compiled-"
_CONVERSIONS_PREFIX = "conversions-"
_ENGINE_ROOT = Path(__file__).resolve().parent
_log = logging.getLogger(__name__)


class UntrustedCacheFile(OSError):
    """A cache file someone other than this user could have written: never unpickled."""


def _read_trusted(path: Path) -> bytes:
    """The bytes of a cache file this user alone can have written.

    Raises FileNotFoundError when it is absent, UntrustedCacheFile when it or its folder
    belongs to another user, is writable by group or others, or the file is a link.
    """
    user = os.getuid() if hasattr(os, "getuid") else None
    for checked in (path.parent, path):
        status = checked.lstat()
        if checked is path and stat.S_ISLNK(status.st_mode):
            raise UntrustedCacheFile(f"{path} is a symbolic link")
        if user is not None and status.st_uid != user:
            raise UntrustedCacheFile(f"{checked} belongs to another user (uid {status.st_uid})")
        if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UntrustedCacheFile(f"{checked} is writable by group or others")
    return path.read_bytes()


def _trusted_bytes(path: Path) -> bytes:
    """`_read_trusted`, warning when it refuses the file."""
    try:
        return _read_trusted(path)
    except UntrustedCacheFile as error:
        _log.warning("trialsieve cache: not reading %s", error)
        raise


def _unpickle(path: Path) -> Any:
    """Unpickle a cache file, only if `_read_trusted` allows it (warning when it does not)."""
    return pickle.loads(_trusted_bytes(path))


def _unpickle_sealed(path: Path) -> Any:
    """`_unpickle` of a file written `_sealed`: ValueError when its SHA-256 does not match
    (a write a machine crash cut short or left with a block of zeros)."""
    data = _trusted_bytes(path)
    digest_end = len(_SEAL) + hashlib.sha256().digest_size
    if (
        not data.startswith(_SEAL)
        or hashlib.sha256(data[digest_end:]).digest() != data[len(_SEAL) : digest_end]
    ):
        raise ValueError("not whole (its SHA-256 does not match)")
    return pickle.loads(data[digest_end:])


def _sealed(data: bytes) -> bytes:
    """`data` after a header and its SHA-256 (`_unpickle_sealed` checks them), so that the
    file can be written without an fsync: one a crash damaged is never unpickled."""
    return _SEAL + hashlib.sha256(data).digest() + data


_SEAL = b"trialsieve-sealed-1\0"


def _make_folder(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def cache_folder() -> Path | None:
    """The cache folder, or None when the cache is off."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured is not None:
        return None if configured.strip().lower() in {"", "off", "0", "no"} else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trialsieve"


_DISTRIBUTIONS = (
    "cloudpickle",
    "pint",
    "ucumvert",
    "fhir.resources",
    "pydantic",
    # what reads and checks the input: which lines parse, how deep, which numbers
    "orjson",
    "msgspec",
    "pysimdjson",
    "hyperscan",
    "stringzilla",
    "pyarrow",
)
"""The libraries whose versions `code_digest` covers: what a pickle, a conversion, a
validated shape or a cohort run's stored outcomes depend on besides trialsieve's code."""


@functools.cache
def code_digest() -> bytes:
    """SHA-256 over the cache format, the library versions a pickle depends on and every
    source file of the `engine` package (computed once per process)."""
    digest = hashlib.sha256(_FORMAT)
    digest.update(sys.version.encode())
    for distribution in _DISTRIBUTIONS:
        try:
            digest.update(f"{distribution}={_version_of(distribution)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{distribution}=absent".encode())
    for name in _engine_source_files():
        digest.update(name.encode() + b"\0")
        digest.update((_ENGINE_ROOT / name).read_bytes())
    return digest.digest()


_SOURCE_SUFFIXES = frozenset({".py", ".json", ".yaml", ".lark"})


def _engine_source_files() -> list[str]:
    """The `engine` package's source files (their paths in it, sorted), found without
    entering the `__pycache__` folders (a glob of every path visits their ~120 compiled
    files too and stats each file: 2.5 against 0.6 ms before each fresh run's pass 1)."""
    found: list[str] = []
    folders = [""]
    while folders:
        folder = folders.pop()
        with os.scandir(_ENGINE_ROOT / folder) as entries:
            for entry in entries:
                path = f"{folder}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        folders.append(path + "/")
                elif entry.is_file() and os.path.splitext(entry.name)[1] in _SOURCE_SUFFIXES:
                    found.append(path)
    return sorted(found)


def _version_of(distribution: str) -> str:
    """`importlib.metadata.version(distribution)`, read from the metadata's header lines
    (core metadata: `Version:` is a header, before the first blank line) without parsing the
    whole file as an e-mail, as `version` does (pydantic's holds its whole changelog): the
    versions of `code_digest` in about 1 ms of CPU instead of 12, before every fresh run's
    pass 1. Raises PackageNotFoundError as `version` does."""
    found = importlib.metadata.distribution(distribution)
    header = (found.read_text("METADATA") or "").split("\n\n", 1)[0]
    for line in header.splitlines():
        if line.startswith("Version:"):
            return line.removeprefix("Version:").strip()
    return found.version  # no METADATA (an egg's PKG-INFO), or no Version header in it


def load_trial_cached(
    criteria_path: str | Path,
    compile_trial: Callable[[str | Path], CompiledCriteria],
    compile_loaded: Callable[[CriteriaFile], CompiledCriteria],
) -> CompiledCriteria:
    """The compiled criteria of `criteria_path`: from the cache when an entry matches (its
    loaded criteria file compiled, `compile_loaded`), else `compile_trial(criteria_path)`,
    then stored (see the module docstring)."""
    folder = cache_folder()
    key = _entry_key(criteria_path) if folder is not None else None
    if folder is None or key is None:
        return compile_trial(criteria_path)
    held = _in_process_key(folder, key)
    cached = _current_entry(folder, key, held, compile_loaded)
    if cached is not None:
        return cached[0]
    with recording_reads() as value_set_files:
        compiled = compile_trial(criteria_path)
    read = _mapping_files_of(compiled.source.mapping_paths)
    if read is None:
        return compiled  # a mapping file vanished meanwhile: nothing to record
    read += [(str(path), _file_digest(path)) for path in value_set_files]
    _write_entry(folder / f"{_ENTRY_PREFIX}{key}.pickle", compiled, read)
    _remember_entry(held, (compiled, read))
    # the conversions compiling met (a formula's input unit against its concept's) go to the
    # shared file too: a new process compiling an edit of these criteria then needs no unit
    # registry (ucumvert on pint: 0.7 s of CPU to build)
    save_conversions()
    return compiled


def _current_entry(
    folder: Path,
    key: str,
    held: str,
    compile_loaded: Callable[[CriteriaFile], CompiledCriteria],
) -> tuple[CompiledCriteria, list[tuple[str, bytes | None]]] | None:
    """The entry of `key`, this process's (held as `held`, `_in_process_key`) or read from
    `folder` (and compiled), when the files it was read from are unchanged; else None."""
    known = _in_process.get(held)
    if known is not None and _unchanged(known[1]):
        return known
    stored = _read_entry(folder / f"{_ENTRY_PREFIX}{key}.pickle")
    if stored is None:
        return None
    loaded, files_read = stored
    cached = (compile_loaded(loaded), files_read)
    _remember_entry(held, cached)
    return cached


def _in_process_key(folder: Path, key: str) -> str:
    """The key of an entry this process holds: the folder's and the entry's. What this process
    holds from one folder is never taken for another's, so a process whose cache folder changes
    (`CACHE_VARIABLE` set anew) still leaves its entries in the new one for the next process."""
    return f"{folder}\0{key}"


def _remember_entry(
    key: str, entry: tuple[CompiledCriteria, list[tuple[str, bytes | None]]]
) -> None:
    if len(_in_process) >= _IN_PROCESS_LIMIT:
        _in_process.clear()
    _in_process[key] = entry


_IN_PROCESS_LIMIT = 64
_in_process: dict[str, tuple[CompiledCriteria, list[tuple[str, bytes | None]]]] = {}
"""Entries this process read or wrote (the same object for the same content, as without a
cache), with the files they were read from (`_unchanged`), by folder and key
(`_in_process_key`)."""

_LISTING = "listing\0"
"""Prefix of a recorded mapping folder's entry: its digest is that of its listing."""


def _mapping_files_of(mapping_paths: Sequence[str]) -> list[tuple[str, bytes | None]] | None:
    """The mapping files `mapping_paths` name, with their SHA-256, and before them each path
    with the digest of what the loader expands it to (a folder whose listing changes makes
    an entry stale); None when one cannot be read now."""
    read: list[tuple[str, bytes | None]] = []
    files: list[str] = []
    for given in mapping_paths:
        problems: list[Any] = []
        expanded = list(mapping_files([given], problems))
        if problems:
            return None
        read.append((_LISTING + given, _listing_digest(expanded)))
        files += expanded
    for path in files:
        digest = _file_digest(Path(path))
        if digest is None:
            return None
        read.append((path, digest))
    return read


def _listing_digest(files: list[str]) -> bytes:
    return hashlib.sha256("\0".join(files).encode()).digest()


def _unchanged(files_read: list[tuple[str, bytes | None]]) -> bool:
    """Whether the files (and mapping folders' listings) an entry was read from are as
    they were."""
    for path, digest in files_read:
        if path.startswith(_LISTING):
            problems: list[Any] = []
            expanded = list(mapping_files([path[len(_LISTING) :]], problems))
            if problems or _listing_digest(expanded) != digest:
                return False
        elif _file_digest(Path(path)) != digest:
            return False
    return True


def _entry_key(criteria_path: str | Path) -> str | None:
    """The entry's key, or None when the criteria file cannot be read (compiling then
    reports why). No YAML is parsed: the files the entry was compiled from besides the
    criteria file are recorded in the entry (`_unchanged`)."""
    return _criteria_file_key(criteria_path, code_digest())


def _criteria_file_key(criteria_path: str | Path, prefix: bytes) -> str | None:
    """SHA-256 over `prefix`, the working folder when the path is relative, the path as
    given, the criteria file's bytes and `TRIALSIEVE_TERMINOLOGY_SERVER`; None when the file
    cannot be read."""
    text_path = str(criteria_path)
    try:
        raw = Path(text_path).read_bytes()
    except OSError:
        return None
    digest = hashlib.sha256(prefix)
    digest.update(b"" if os.path.isabs(text_path) else os.getcwd().encode())
    digest.update(b"\0" + text_path.encode() + b"\0" + raw)
    digest.update(os.environ.get(TERMINOLOGY_SERVER_VARIABLE, "").encode())
    return digest.hexdigest()


_READING_PREFIX = "reading-"


def stored_reading(criteria_path: str | Path) -> object | None:
    """The reading of the criteria file at `criteria_path` (as given) an earlier process
    kept (`store_reading`), or None: none kept, the cache off, or the file damaged or
    untrusted (never unpickled then)."""
    entry = _reading_entry(criteria_path)
    if entry is None:
        return None
    try:
        reading: object = _unpickle_sealed(entry)
    except FileNotFoundError:
        return None
    except Exception as error:  # damaged, foreign or untrusted: the file is read whole
        _log.debug("criteria reading cache: ignoring %s (%s)", entry, error)
        return None
    return reading


def store_reading(criteria_path: str | Path, reading: object) -> None:
    """Keep `reading` (`engine.criteria.loader.last_reading`) for the next process compiling
    the criteria file at `criteria_path` (written without an fsync, sealed; the last 64
    kept); a cache that cannot be written is left as it is."""
    entry = _reading_entry(criteria_path)
    if entry is None:
        return
    try:
        _make_folder(entry.parent)
        write_atomically(entry, _sealed(pickle.dumps(reading)), durable=False)
        _prune(entry.parent, _READING_PREFIX)
    except Exception as error:  # a cache that cannot be written only costs time
        _log.debug("criteria reading cache: cannot write %s (%s)", entry, error)


def _reading_entry(criteria_path: str | Path) -> Path | None:
    """Where the reading of `criteria_path` is kept: by this trialsieve's sources and
    versions, ruamel.yaml's (the tree's pickle is its classes'), the working folder when the
    path is relative and the path as given; None when the cache is off."""
    folder = cache_folder()
    if folder is None:
        return None
    text_path = str(criteria_path)
    digest = hashlib.sha256(_reading_key_prefix())
    digest.update(b"\0" + (b"" if os.path.isabs(text_path) else os.getcwd().encode()))
    digest.update(b"\0" + text_path.encode())
    return folder / f"{_READING_PREFIX}{digest.hexdigest()}.pickle"


@functools.cache
def _reading_key_prefix() -> bytes:
    """What every reading's key starts with: this cache's format, `code_digest` and
    ruamel.yaml's version (read once per process, not at each load and store)."""
    try:
        ruamel_version = _version_of("ruamel.yaml")
    except importlib.metadata.PackageNotFoundError:
        ruamel_version = "absent"
    return _FORMAT + b"\0reading\0" + code_digest() + ruamel_version.encode()


_RESOURCE_TYPES_FILE = "resource-types.json"
_RESOURCE_TYPES_KEY = _FORMAT + b"\0resource-types"
_KEPT_RESOURCE_TYPES = 64
"""The resource types file keeps those of the criteria files last remembered, at most this
many."""


def remembered_resource_types(criteria_path: str | Path) -> frozenset[str] | None:
    """The resource types (`CompiledCriteria.resource_types`) remembered for this criteria
    file, as it now reads, by any trialsieve version (`remember_resource_types`); None when
    none are, or the cache is off or unreadable. A hint for what the compiled criteria will
    say (a cohort run starts splitting its input with it while they load, and checks it
    against them), read without computing `code_digest` or unpickling an entry: neither a
    changed mapping file nor another version of trialsieve is checked."""
    place = _resource_types_place(criteria_path)
    if place is None:
        return None
    folder, key = place
    found = _remembered_types(folder).get(key)
    if type(found) is not list or not all(type(name) is str for name in found):
        return None
    return frozenset(found)


def remember_resource_types(criteria_path: str | Path, resource_types: frozenset[str]) -> None:
    """Remember the resource types compiled from this criteria file as it now reads (the
    file keeps those of the last 64 files remembered; it is written only when they are not
    remembered already); a cache that cannot be written is left as it is."""
    place = _resource_types_place(criteria_path)
    if place is None:
        return
    folder, key = place
    remembered = _remembered_types(folder)
    listed = sorted(resource_types)
    if remembered.get(key) == listed:
        return
    remembered.pop(key, None)  # moved to the end: the last remembered
    remembered[key] = listed
    kept = dict(list(remembered.items())[-_KEPT_RESOURCE_TYPES:])
    try:
        _make_folder(folder)
        write_atomically(folder / _RESOURCE_TYPES_FILE, orjson.dumps(kept))
    except OSError as error:  # a cache that cannot be written only costs time
        _log.debug("compiled criteria cache: cannot write %s (%s)", _RESOURCE_TYPES_FILE, error)


def _resource_types_place(criteria_path: str | Path) -> tuple[Path, str] | None:
    """The cache folder and this criteria file's key in the resource types file; None when
    the cache is off or the criteria file cannot be read."""
    folder = cache_folder()
    key = None if folder is None else _criteria_file_key(criteria_path, _RESOURCE_TYPES_KEY)
    return None if folder is None or key is None else (folder, key)


def _remembered_types(folder: Path) -> dict[str, Any]:
    """The resource types file's contents; empty when it is absent, untrusted or damaged."""
    path = folder / _RESOURCE_TYPES_FILE
    try:
        remembered = orjson.loads(_read_trusted(path))
    except FileNotFoundError:
        return {}
    except UntrustedCacheFile as error:
        _log.warning("trialsieve cache: not reading %s", error)
        return {}
    except (OSError, orjson.JSONDecodeError) as error:
        _log.debug("compiled criteria cache: ignoring %s (%s)", path, error)
        return {}
    return remembered if type(remembered) is dict else {}


def _file_digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


def _read_entry(entry: Path) -> tuple[CriteriaFile, list[tuple[str, bytes | None]]] | None:
    try:
        stored = _unpickle_sealed(entry)
        loaded = stored["loaded"]
        jsonpaths: dict[str, Any] = stored["jsonpaths"]
        files_read: list[tuple[str, bytes | None]] = stored["files_read"]
        conversions: dict[Any, Any] = stored["conversions"]
    except FileNotFoundError:
        return None
    except Exception as error:  # an entry from an interrupted or foreign write: compile again
        _log.debug("compiled criteria cache: ignoring %s (%s)", entry, error)
        return None
    if not isinstance(loaded, CriteriaFile):
        return None
    if not _unchanged(files_read):
        return None  # a mapping or ValueSet file changed since: compile again
    units.add_known_conversions(conversions)  # before compiling: no unit registry
    remember_jsonpaths(jsonpaths)  # nor jsonpath-ng's parser (its tables, 5 ms)
    return loaded, files_read


def _write_entry(
    entry: Path, compiled: CompiledCriteria, files_read: list[tuple[str, bytes | None]]
) -> None:
    try:
        stored = {
            "loaded": compiled.source,
            "jsonpaths": parsed_jsonpaths(),
            "files_read": files_read,
            "conversions": units.known_conversions(),
        }
        _make_folder(entry.parent)
        # no fsync (a wait for the disk, 5-15 ms of a re-run's wall time on a shared disk):
        # an entry a machine crash damaged does not match its SHA-256 and is compiled again
        write_atomically(entry, _sealed(pickle.dumps(stored)), durable=False)
        _prune(entry.parent)
    except Exception as error:  # a cache that cannot be written only costs time
        _log.debug("compiled criteria cache: cannot write %s (%s)", entry, error)


_KEPT_ENTRIES = 64
"""The cache keeps the entries last written, at most this many."""
_KEPT_VERSIONS = 4
"""The shared files (conversions, validated shapes) are one per trialsieve version (their
key is `code_digest`): the cache keeps those of the versions last written, at most this many."""


def _prune(folder: Path, prefix: str = _ENTRY_PREFIX, kept: int = _KEPT_ENTRIES) -> None:
    """Remove the oldest files `prefix*.pickle` beyond `kept` (by modification time)."""
    entries = []
    for path in folder.glob(f"{prefix}*.pickle"):
        try:
            entries.append((path.stat().st_mtime, path))
        except OSError:
            continue  # removed meanwhile
    entries.sort(reverse=True)
    for _time, path in entries[kept:]:
        path.unlink(missing_ok=True)


def _conversions_path() -> Path | None:
    folder = cache_folder()
    if folder is None:
        return None
    return folder / f"{_CONVERSIONS_PREFIX}{code_digest().hex()[:32]}.pickle"


def load_conversions() -> int:
    """Restore the unit conversions earlier runs met (the shared file); how many."""
    path = _conversions_path()
    if path is None:
        return 0
    try:
        conversions = _unpickle(path)
    except FileNotFoundError:
        return 0
    except Exception as error:
        _log.debug("unit conversion cache: ignoring %s (%s)", path, error)
        return 0
    if not isinstance(conversions, dict):
        return 0
    global _conversions_seen
    units.add_known_conversions(conversions)
    _conversions_seen = len(units.known_conversions())
    return len(conversions)


_conversions_seen = 0
"""How many conversions this process knew when it last read or wrote the shared file."""


@functools.cache
def restore_conversions() -> None:
    """`load_conversions`, once per process: what loading criteria (`engine.trial`) and
    `lint` (which compiles anew) do before they compile, so that no unit registry is built
    for a pair of units an earlier run worked out."""
    load_conversions()


def save_conversions() -> None:
    """Add this process's unit conversions to the shared file when it lacks some."""
    global _conversions_seen
    path = _conversions_path()
    known = units.known_conversions()
    if path is None or len(known) == _conversions_seen:
        return
    _conversions_seen = len(known)
    try:
        stored = _unpickle(path)
    except UntrustedCacheFile:
        return  # not ours to extend: leave it as it is
    except Exception:
        stored = {}
    if not isinstance(stored, dict):
        stored = {}
    if known.keys() <= stored.keys():
        return
    stored.update(known)
    try:
        _make_folder(path.parent)
        write_atomically(path, pickle.dumps(stored))
        _prune(path.parent, _CONVERSIONS_PREFIX, _KEPT_VERSIONS)
    except Exception as error:
        _log.debug("unit conversion cache: cannot write %s (%s)", path, error)


_SHAPES_PREFIX = "shapes-"


def _shapes_path() -> Path | None:
    folder = cache_folder()
    if folder is None:
        return None
    return folder / f"{_SHAPES_PREFIX}{code_digest().hex()[:32]}.pickle"


def validated_shapes() -> set[Any]:
    """The output shapes earlier runs validated with the R4B models (`OutputShapes`), under
    this trialsieve and these models' versions (the file's key, as for the conversions)."""
    path = _shapes_path()
    if path is None:
        return set()
    try:
        shapes = _unpickle(path)
    except FileNotFoundError:
        return set()
    except Exception as error:
        _log.debug("validated shapes cache: ignoring %s (%s)", path, error)
        return set()
    return shapes if isinstance(shapes, set) else set()


def save_validated_shapes(shapes: frozenset[Any] | set[Any]) -> None:
    """Add `shapes` to the shared file when it lacks some (written atomically)."""
    path = _shapes_path()
    if path is None:
        return
    stored = validated_shapes()
    if shapes <= stored:
        return
    try:
        _make_folder(path.parent)
        write_atomically(path, pickle.dumps(stored | set(shapes)))
        _prune(path.parent, _SHAPES_PREFIX, _KEPT_VERSIONS)
    except Exception as error:
        _log.debug("validated shapes cache: cannot write %s (%s)", path, error)


_TERMINOLOGY_PREFIX = "terminology-"
_terminologies: dict[str, tuple[Terminology, list[tuple[str, bytes | None]]]] = {}
"""Terminologies this process read or loaded through the cache, by folder and entry key
(`_in_process_key`), with the ValueSet files they read (the same object for the same files,
as `load_terminology`)."""


def load_terminology_cached(
    mapping_paths: Sequence[str], load: Callable[[list[str]], Terminology]
) -> Terminology:
    """The terminology of `mapping_paths`: from the cache when an entry for the same mapping
    files (paths, folder listings, bytes) holds one whose ValueSet files are unchanged, else
    `load(mapping_paths)`, then stored as `terminology-<key>.pickle`.

    Criteria that compile again (edited) mostly use unchanged mappings: a new process then
    unpickles the terminology (2 ms) instead of parsing every mapping file with the YAML
    parser that keeps line numbers (0.2-0.3 s of CPU). The ValueSet files a cached
    terminology read are noted as read (`note_reads`), so a compiled-criteria entry written
    around it records them as if they had been read.
    """
    folder = cache_folder()
    read = _mapping_files_of(mapping_paths) if folder is not None else None
    if folder is None or read is None:
        return load(list(mapping_paths))
    digest = hashlib.sha256(code_digest())
    digest.update(os.environ.get(TERMINOLOGY_SERVER_VARIABLE, "").encode())
    digest.update(pickle.dumps(read))
    key = digest.hexdigest()
    held = _in_process_key(folder, key)
    known = _terminologies.get(held)
    if known is None or not _unchanged(known[1]):
        known = _read_terminology(folder / f"{_TERMINOLOGY_PREFIX}{key}.pickle")
    if known is None:
        with recording_reads() as value_set_files:
            terminology = load(list(mapping_paths))
        known = terminology, [(str(path), _file_digest(path)) for path in value_set_files]
        _write_terminology(folder / f"{_TERMINOLOGY_PREFIX}{key}.pickle", known)
    else:
        note_reads(Path(path) for path, _digest in known[1])
    if len(_terminologies) >= _IN_PROCESS_LIMIT:
        _terminologies.clear()
    _terminologies[held] = known
    return known[0]


def _read_terminology(
    entry: Path,
) -> tuple[Terminology, list[tuple[str, bytes | None]]] | None:
    try:
        terminology, value_set_files = _unpickle(entry)
    except FileNotFoundError:
        return None
    except Exception as error:  # an entry from an interrupted or foreign write: load again
        _log.debug("terminology cache: ignoring %s (%s)", entry, error)
        return None
    if not isinstance(terminology, Terminology) or not _unchanged(value_set_files):
        return None
    return terminology, value_set_files


def _write_terminology(
    entry: Path, stored: tuple[Terminology, list[tuple[str, bytes | None]]]
) -> None:
    try:
        _make_folder(entry.parent)
        write_atomically(entry, pickle.dumps(stored))
        _prune(entry.parent, _TERMINOLOGY_PREFIX)
    except Exception as error:  # a cache that cannot be written only costs time
        _log.debug("terminology cache: cannot write %s (%s)", entry, error)
