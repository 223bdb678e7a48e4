"""The compiled-criteria cache on disk (engine/compiled_cache.py): a hit gives criteria that
evaluate exactly as freshly compiled ones; any change to the criteria, a mapping or a ValueSet
file compiles again; criteria that do not load are never cached; `off` turns it off."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

import engine.criteria.loader
import engine.trial
from engine import compiled_cache
from engine.compiled_cache import CACHE_VARIABLE, load_trial_cached
from engine.criteria.model import CriteriaFile
from engine.errors import CriteriaError, TrialsieveError
from engine.evaluate import CompiledCriteria
from engine.normalise import Terminology, load_terminology, units
from engine.screening import screen_patient
from engine.sources import BundleFileSource
from engine.trial import _compile_loaded, _load_and_compile, load_trial

ROOT = Path(__file__).resolve().parent.parent
SNOMED = "http://snomed.info/sct"


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("compiled-*.pickle"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_VARIABLE, str(folder))
    monkeypatch.setattr(compiled_cache, "_in_process", {})
    monkeypatch.setattr(compiled_cache, "_terminologies", {})
    return folder


def fresh_load(path: Path) -> CompiledCriteria:
    """What a new process gets: nothing in memory, only what is on disk."""
    compiled_cache._in_process.clear()
    compiled_cache._terminologies.clear()
    return load_trial(path)


def outputs(criteria: CompiledCriteria) -> list[bytes]:
    """Every shipped example patient's ResearchSubject and DetectedIssue."""
    results = []
    for patient in BundleFileSource(ROOT / "examples" / "patients"):
        screening = screen_patient(criteria, patient, dt.date(2026, 11, 1))
        subject = screening.research_subject("ResearchStudy/x")
        results.append(orjson.dumps([subject, screening.detected_issue()]))
    return results


@pytest.mark.parametrize("trial", ["NCT05315778", "NCT03036150"])
def test_a_cached_trial_evaluates_as_a_compiled_one(cache: Path, trial: str) -> None:
    path = ROOT / "criteria" / f"{trial}.yaml"
    compiled = fresh_load(path)
    assert len(entries(cache)) == 1
    cached = fresh_load(path)
    assert cached is not compiled  # read back from disk
    assert load_trial(path) is cached  # the same object within a process
    assert outputs(cached) == outputs(_load_and_compile(path))


def copy_trial(target: Path, trial: str = "NCT05315778") -> Path:
    shutil.copytree(ROOT / "mappings", target / "mappings")
    (target / "criteria").mkdir()
    shutil.copy(ROOT / "criteria" / f"{trial}.yaml", target / "criteria")
    return target / "criteria" / f"{trial}.yaml"


def test_a_changed_mapping_or_criteria_file_compiles_again(cache: Path, tmp_path: Path) -> None:
    path = copy_trial(tmp_path / "trial")
    first = fresh_load(path)
    calls, again = _counting_loads(path)
    assert calls == [] and again.criteria[0].id == first.criteria[0].id
    assert len(entries(cache)) == 1
    mapping = tmp_path / "trial" / "mappings" / "conditions.yaml"
    mapping.write_text(mapping.read_text() + "\n# edited\n")
    calls, _ = _counting_loads(path)
    assert calls == [path]
    assert len(entries(cache)) == 1  # the entry of these criteria bytes, written anew
    assert _counting_loads(path)[0] == []
    path.write_text(path.read_text().replace("title:", "title: Edited", 1))
    assert fresh_load(path).trial.title.startswith("Edited")
    assert len(entries(cache)) == 2


CRITERIA = """\
trial: {id: NCT00000001, title: A test trial}
version: 2
mappings: [mappings.yaml]
criteria:
  - id: inclusion-1-diabetes
    kind: inclusion
    text: Diabetes
    expression: {resource: Condition, concept: diabetes}
"""
MAPPINGS = """\
systems:
  snomed: {uri: http://snomed.info/sct}
concepts:
  diabetes:
    display: Diabetes mellitus
    value_set: diabetes.valueset.json
"""


def listing(*codes: str) -> str:
    concepts = [{"code": code} for code in codes]
    compose = {"include": [{"system": SNOMED, "concept": concepts}]}
    return json.dumps({"resourceType": "ValueSet", "status": "active", "compose": compose})


def test_a_changed_value_set_file_compiles_again(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "criteria.yaml"
    path.write_text(CRITERIA)
    (tmp_path / "mappings.yaml").write_text(MAPPINGS)
    value_set = tmp_path / "diabetes.valueset.json"
    value_set.write_text(listing("44054006"))
    assert fresh_load(path).terminology.concepts_of_coding(SNOMED, "44054006")
    assert fresh_load(path).terminology.concepts_of_coding(SNOMED, "44054006")
    value_set.write_text(listing("46635009"))
    reloaded = fresh_load(path)
    assert not reloaded.terminology.concepts_of_coding(SNOMED, "44054006")
    assert reloaded.terminology.concepts_of_coding(SNOMED, "46635009")
    value_set.write_text(listing("73211009"))  # also within one process
    assert load_trial(path).terminology.concepts_of_coding(SNOMED, "73211009")


FOLDER_CRITERIA = CRITERIA.replace("[mappings.yaml]", "[maps]")
SECOND_MAPPING_FILE = """\
concepts:
  obesity:
    display: Obesity
    codes: {snomed: ["414916001"]}
"""


def test_a_mapping_file_added_to_or_removed_from_a_folder_compiles_again(
    cache: Path, tmp_path: Path
) -> None:
    """The entry records a mappings folder's listing: a file added or removed is seen, in a
    new process (the entry on disk) and within one (the entry in memory)."""
    path = tmp_path / "criteria.yaml"
    path.write_text(FOLDER_CRITERIA)
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "a.yaml").write_text(MAPPINGS)
    (tmp_path / "maps" / "diabetes.valueset.json").write_text(listing("44054006"))
    assert not fresh_load(path).terminology.has_concept("obesity")
    calls, _ = _counting_loads(path)
    assert calls == []
    added = tmp_path / "maps" / "b.yaml"
    added.write_text(SECOND_MAPPING_FILE)
    calls, compiled = _counting_loads(path)
    assert calls == [path] and compiled.terminology.has_concept("obesity")
    assert _counting_loads(path)[0] == []
    added.unlink()
    calls, compiled = _counting_loads(path)
    assert calls == [path] and not compiled.terminology.has_concept("obesity")
    added.write_text(SECOND_MAPPING_FILE)  # within one process
    assert load_trial(path).terminology.has_concept("obesity")
    added.unlink()
    assert not load_trial(path).terminology.has_concept("obesity")
    assert len(entries(cache)) == 1


def test_a_mapping_folder_removed_after_caching_is_reported(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "criteria.yaml"
    path.write_text(FOLDER_CRITERIA)
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "a.yaml").write_text(MAPPINGS)
    (tmp_path / "maps" / "diabetes.valueset.json").write_text(listing("44054006"))
    fresh_load(path)
    shutil.rmtree(tmp_path / "maps")
    with pytest.raises(TrialsieveError, match=r"maps"):
        fresh_load(path)


def test_edited_criteria_over_unchanged_mappings_take_the_cached_terminology(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy_trial(tmp_path / "trial")
    loads: list[object] = []

    def counted(paths: list[str]) -> Terminology:
        loads.append(paths)
        return load_terminology(paths)

    monkeypatch.setattr(engine.trial, "load_terminology", counted)
    first = fresh_load(path)
    assert len(loads) == 1 and len(list(cache.glob("terminology-*.pickle"))) == 1
    path.write_text(path.read_text().replace("title:", "title: Edited", 1))
    edited = fresh_load(path)  # compiled again, over the terminology read back
    assert len(loads) == 1 and edited.trial.title.startswith("Edited")
    with monkeypatch.context() as uncached:
        uncached.setenv(CACHE_VARIABLE, "off")
        assert outputs(edited) == outputs(_load_and_compile(path))
    assert first.terminology is not edited.terminology  # read back from disk
    before = len(loads)
    mapping = tmp_path / "trial" / "mappings" / "conditions.yaml"
    mapping.write_text(mapping.read_text() + "\n# edited\n")
    fresh_load(path)
    assert len(loads) == before + 1  # other mapping bytes: loaded again


def test_a_cached_terminology_counts_its_value_set_files_for_the_compiled_entry(
    cache: Path, tmp_path: Path
) -> None:
    """Criteria compiled over a terminology from the cache record its ValueSet files, so a
    changed ValueSet file still makes their entry stale."""
    path = tmp_path / "criteria.yaml"
    path.write_text(CRITERIA)
    (tmp_path / "mappings.yaml").write_text(MAPPINGS)
    value_set = tmp_path / "diabetes.valueset.json"
    value_set.write_text(listing("44054006"))
    fresh_load(path)
    path.write_text(CRITERIA.replace("A test trial", "An edited trial"))
    assert fresh_load(path).terminology.concepts_of_coding(SNOMED, "44054006")
    value_set.write_text(listing("46635009"))
    reloaded = fresh_load(path)
    assert not reloaded.terminology.concepts_of_coding(SNOMED, "44054006")
    assert reloaded.terminology.concepts_of_coding(SNOMED, "46635009")


def test_criteria_that_do_not_load_are_not_cached(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "criteria.yaml"
    path.write_text(CRITERIA.replace("mappings.yaml", "missing.yaml"))
    for _attempt in range(2):
        with pytest.raises(TrialsieveError, match=r"missing\.yaml"):
            fresh_load(path)
    assert entries(cache) == []


def test_a_damaged_entry_is_compiled_again(cache: Path) -> None:
    path = ROOT / "criteria" / "NCT05315778.yaml"
    fresh_load(path)
    (entry,) = entries(cache)
    entry.write_bytes(b"not a pickle")
    assert fresh_load(path).trial.id == "NCT05315778"
    assert entry.read_bytes() != b"not a pickle"


def test_an_entry_with_a_block_a_crash_left_unwritten_is_compiled_again(cache: Path) -> None:
    """Entries are written without an fsync, after their SHA-256: one whose data a machine
    crash left with a block of zeros (its length unchanged) is never unpickled."""
    path = ROOT / "criteria" / "NCT05315778.yaml"
    fresh_load(path)
    (entry,) = entries(cache)
    data = entry.read_bytes()
    holed = data[:100] + bytes(4096) + data[4196:]
    entry.write_bytes(holed)
    assert fresh_load(path).trial.id == "NCT05315778"
    assert entry.read_bytes() != holed  # compiled again and written anew, whole
    assert compiled_cache._unpickle_sealed(entry)["loaded"]


def test_an_entry_is_the_loaded_file_compiled_without_parsing_its_jsonpaths_again(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry keeps the loaded criteria file and the jsonpath expressions parsed: a hit
    compiles it (no YAML read, no jsonpath-ng parser built), to criteria that evaluate as
    freshly compiled ones."""
    import engine.evaluate.compile as compile_module

    path = ROOT / "criteria" / "NCT05315778.yaml"  # its `where:` filters are jsonpaths
    compiled = fresh_load(path)
    monkeypatch.setattr(compile_module, "_PARSED_PATHS", {})

    def no_parse(expression: str) -> object:
        raise AssertionError(f"{expression} parsed again")

    monkeypatch.setattr(compile_module, "parse_jsonpath", no_parse)
    monkeypatch.setattr(engine.criteria.loader, "load_criteria", no_parse)
    cached = fresh_load(path)
    assert cached is not compiled and compile_module._PARSED_PATHS
    assert outputs(cached) == outputs(compiled)


def test_a_process_that_switches_folders_leaves_the_entries_in_the_new_one(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What this process holds was read from (or written to) one folder: loading the same
    trial with the cache pointed at another folder leaves its entries there too, for the next
    process (a flaky CI failure: a test's own folder, then the session's, in one worker)."""
    path = ROOT / "criteria" / "NCT05315778.yaml"
    load_trial(path)
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv(CACHE_VARIABLE, str(elsewhere))
    load_trial(path)
    assert len(entries(elsewhere)) == 1
    assert len(list(elsewhere.glob(f"{compiled_cache._TERMINOLOGY_PREFIX}*.pickle"))) == 1
    calls, _ = _counting_loads(path)  # as a new process: the entry read from the new folder
    assert calls == []


def test_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_VARIABLE, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls: list[Path] = []

    def compile_trial(path: str | Path) -> CompiledCriteria:
        calls.append(Path(path))
        return _load_and_compile(path)

    load_trial_cached(ROOT / "criteria" / "NCT05315778.yaml", compile_trial, _compile_loaded)
    load_trial_cached(ROOT / "criteria" / "NCT05315778.yaml", compile_trial, _compile_loaded)
    assert len(calls) == 2 and not any(tmp_path.iterdir())


def test_unit_conversions_travel_through_the_shared_file(cache: Path) -> None:
    units.convert(1.0, "mg/dL", "g/L")
    compiled_cache.save_conversions()
    known = units.known_conversions()
    stored = next(cache.glob("conversions-*.pickle"))
    assert stored.is_file()
    units._conversion_cache.clear()
    try:
        assert compiled_cache.load_conversions() >= 1
        assert units.known_conversions().keys() >= {("mg/dL", "g/L", None)}
        assert units.convert(1.0, "mg/dL", "g/L") == pytest.approx(0.01)
    finally:
        units.add_known_conversions(known)


@pytest.mark.parametrize("prefix", ["conversions-", "shapes-"])
def test_shared_files_of_older_versions_are_removed_as_a_new_one_is_written(
    cache: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversions and validated shapes are one file per trialsieve version: writing
    the current version's file keeps the newest `_KEPT_VERSIONS` and removes older ones (a
    cache left by earlier versions does not grow without end), other files untouched."""
    cache.mkdir(mode=0o700)
    older = []
    for age in range(6):
        path = cache / f"{prefix}{age:032x}.pickle"
        path.write_bytes(pickle.dumps({} if prefix == "conversions-" else set()))
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
        older.append(path)
    other = cache / "compiled-old.pickle"
    other.write_bytes(b"")
    os.utime(other, (1, 1))
    if prefix == "conversions-":
        monkeypatch.setattr(compiled_cache, "_conversions_seen", 0)
        units.convert(1.0, "mg/dL", "g/L")
        compiled_cache.save_conversions()
    else:
        compiled_cache.save_validated_shapes({("a shape",)})
    kept = sorted(cache.glob(f"{prefix}*.pickle"))
    current = cache / f"{prefix}{compiled_cache.code_digest().hex()[:32]}.pickle"
    assert current in kept and len(kept) == compiled_cache._KEPT_VERSIONS
    assert set(kept) == {current, *older[: compiled_cache._KEPT_VERSIONS - 1]}
    assert other.exists()


def test_conversions_met_compiling_serve_a_new_process_compiling_an_edit(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DAPA-CKD's eGFR formula reads creatinine in mg/dL, its concept is in umol/L: compiling
    converts units. Those conversions go to the shared file, so a new process compiling the
    edited trial (a re-run after an edit, as a command) builds no unit registry."""
    path = copy_trial(tmp_path / "trial", "NCT03036150")
    monkeypatch.setattr(units, "_conversion_cache", {})
    monkeypatch.setattr(compiled_cache, "_conversions_seen", 0)
    fresh_load(path)
    compiled = units.known_conversions()
    assert ("umol/L", "mg/dL", 113.12) in compiled
    monkeypatch.setattr(units, "_conversion_cache", {})  # a new process
    monkeypatch.setattr(compiled_cache, "_conversions_seen", 0)
    assert compiled_cache.load_conversions() >= len(compiled)

    def no_registry(*arguments: object) -> None:
        raise AssertionError(f"a unit registry was needed for {arguments}")

    monkeypatch.setattr(units, "_build_linear_map", no_registry)
    path.write_text(path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert fresh_load(path).trial.id == "NCT03036150"


def _counting_loads(path: Path) -> tuple[list[Path], CompiledCriteria]:
    """Load `path` through the cache from scratch; the paths it had to compile."""
    calls: list[Path] = []

    def compile_trial(criteria: str | Path) -> CompiledCriteria:
        calls.append(Path(criteria))
        return _load_and_compile(criteria)

    compiled_cache._in_process.clear()
    return calls, load_trial_cached(path, compile_trial, _compile_loaded)


def test_the_folder_is_created_for_its_owner_only(cache: Path) -> None:
    fresh_load(ROOT / "criteria" / "NCT05315778.yaml")
    assert cache.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("where", ["file", "folder"])
def test_an_entry_others_could_have_written_is_never_unpickled(
    cache: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Unpickling runs code: a group- or world-writable entry (or folder) is not read, the
    trial compiles as without a cache, and a warning names the file."""
    path = ROOT / "criteria" / "NCT05315778.yaml"
    fresh_load(path)
    (entry,) = entries(cache)
    target = entry if where == "file" else cache
    target.chmod(target.stat().st_mode | 0o022)
    calls, compiled = _counting_loads(path)
    assert calls == [path] and compiled.trial.id == "NCT05315778"
    assert "writable by group or others" in caplog.text


def test_an_entry_of_another_user_or_a_link_is_never_unpickled(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = ROOT / "criteria" / "NCT05315778.yaml"
    fresh_load(path)
    (entry,) = entries(cache)
    with monkeypatch.context() as patched:
        patched.setattr(compiled_cache.os, "getuid", lambda: entry.stat().st_uid + 1)
        calls, _ = _counting_loads(path)
    assert calls == [path] and "belongs to another user" in caplog.text
    elsewhere = cache.parent / "planted.pickle"
    shutil.copy(entry, elsewhere)
    entry.unlink()
    entry.symlink_to(elsewhere)
    calls, _ = _counting_loads(path)
    assert calls == [path] and "is a symbolic link" in caplog.text


def test_the_key_s_library_versions_are_read_as_importlib_metadata_reads_them() -> None:
    """`code_digest` reads each version from the metadata's header lines alone: the same
    version as `importlib.metadata.version`, for every distribution installed here."""
    names = {found.metadata["Name"] for found in importlib.metadata.distributions()}
    assert len(names) > 10
    for name in sorted(names):
        assert compiled_cache._version_of(name) == importlib.metadata.version(name), name
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        compiled_cache._version_of("no-such-distribution-anywhere")


def test_the_engine_s_source_files_are_every_source_file_of_the_package() -> None:
    """`code_digest` hashes the files `_engine_source_files` lists (without entering the
    `__pycache__` folders): every .py/.json/.yaml/.lark file under `engine`, sorted."""
    root = compiled_cache._ENGINE_ROOT
    globbed = sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.suffix in {".py", ".json", ".yaml", ".lark"} and path.is_file()
    )
    listed = compiled_cache._engine_source_files()
    assert listed == globbed and "compiled_cache.py" in listed and "cohort/runner.py" in listed


def test_resource_types_are_remembered_by_the_criteria_file_s_content(
    cache: Path, tmp_path: Path
) -> None:
    """The hint a cohort run's pass 1 starts with: by the criteria file as it reads (an edit
    forgets it), the last 64 files kept."""
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("trial: {}\n")
    assert compiled_cache.remembered_resource_types(criteria) is None
    compiled_cache.remember_resource_types(criteria, frozenset({"Observation", "Condition"}))
    assert compiled_cache.remembered_resource_types(criteria) == {"Observation", "Condition"}
    written = (cache / "resource-types.json").stat().st_ino
    compiled_cache.remember_resource_types(criteria, frozenset({"Condition", "Observation"}))
    assert (cache / "resource-types.json").stat().st_ino == written  # remembered: not rewritten
    criteria.write_text("trial: {id: x}\n")
    assert compiled_cache.remembered_resource_types(criteria) is None
    for number in range(70):
        other = tmp_path / f"other-{number}.yaml"
        other.write_text(f"trial: {{id: t{number}}}\n")
        compiled_cache.remember_resource_types(other, frozenset({f"Type{number}"}))
    assert compiled_cache.remembered_resource_types(tmp_path / "other-69.yaml") == {"Type69"}
    assert compiled_cache.remembered_resource_types(tmp_path / "other-5.yaml") is None
    assert len(orjson.loads((cache / "resource-types.json").read_bytes())) == 64
    assert compiled_cache.remembered_resource_types(tmp_path / "absent.yaml") is None


@pytest.mark.parametrize(
    "damage", [b"", b"not json", b"[1, 2]", b'{"%s": "Observation"}', b'{"%s": [1]}']
)
def test_a_damaged_or_untrusted_resource_types_file_is_ignored(
    cache: Path, tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("trial: {}\n")
    compiled_cache.remember_resource_types(criteria, frozenset({"Observation"}))
    path = cache / "resource-types.json"
    (key,) = orjson.loads(path.read_bytes())
    path.write_bytes(damage.replace(b"%s", key.encode()))
    assert compiled_cache.remembered_resource_types(criteria) is None
    compiled_cache.remember_resource_types(criteria, frozenset({"Condition"}))  # mends it
    assert compiled_cache.remembered_resource_types(criteria) == {"Condition"}
    path.chmod(path.stat().st_mode | 0o022)
    assert compiled_cache.remembered_resource_types(criteria) is None
    assert "writable by group or others" in caplog.text


def _as_in_a_new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in memory: no compiled entry or terminology held, no criteria file loaded or
    read (only what the cache folder holds)."""
    monkeypatch.setattr(compiled_cache, "_in_process", {})
    monkeypatch.setattr(compiled_cache, "_terminologies", {})
    monkeypatch.setattr(engine.trial, "_compiled", {})
    monkeypatch.setattr(engine.criteria.loader, "_loaded", {})
    monkeypatch.setattr(engine.criteria.loader, "_readings", {})


def _rereadings(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each edit the loader met from here on was read alone (True) or made it read
    the whole file (False)."""
    met: list[bool] = []
    reread = engine.criteria.loader._reread_criterion

    def recorded(*arguments: Any) -> Any:
        document = reread(*arguments)
        met.append(document is not None)
        return document

    monkeypatch.setattr(engine.criteria.loader, "_reread_criterion", recorded)
    return met


def _read_whole(path: Path) -> CriteriaFile:
    loader = engine.criteria.loader
    return loader._Checker(loader._read_document(str(path), path.read_bytes())).run()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _readings_kept(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{compiled_cache._READING_PREFIX}*.pickle"))


PLATELET_EDIT = ('value: "< 100 10*9/L"', 'value: "< 80 10*9/L"')


def test_a_new_process_reads_an_edited_criterion_alone_from_the_reading_kept(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy_trial(tmp_path / "trial")
    _as_in_a_new_process(monkeypatch)
    first = load_trial(path)
    assert len(_readings_kept(cache)) == 1
    _edit(path, *PLATELET_EDIT)
    _as_in_a_new_process(monkeypatch)
    met = _rereadings(monkeypatch)
    edited = load_trial(path)
    assert met == [True]
    assert edited.source == _read_whole(path) != first.source
    assert outputs(edited) == outputs(_compile_loaded(_read_whole(path)))
    assert len(_readings_kept(cache)) == 1  # the edited file's reading, kept in its place
    _edit(path, *reversed(PLATELET_EDIT))
    _as_in_a_new_process(monkeypatch)
    met = _rereadings(monkeypatch)
    assert load_trial(path).source == first.source
    assert met == []  # the first version's compiled entry: nothing read at all


@pytest.mark.parametrize("kept", ["damaged", "foreign", "another file", "untrusted"])
def test_a_reading_kept_that_is_damaged_foreign_or_does_not_fit_reads_the_file_whole(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: str
) -> None:
    path = copy_trial(tmp_path / "trial")
    _as_in_a_new_process(monkeypatch)
    load_trial(path)
    [reading] = _readings_kept(cache)
    if kept == "damaged":
        data = bytearray(reading.read_bytes())
        data[-20:] = bytes(20)
        reading.write_bytes(bytes(data))
    elif kept == "foreign":
        compiled_cache.store_reading(path, {"lines": ["criteria:"], "tree": None})
    elif kept == "another file":
        other = ROOT / "criteria" / "NCT03036150.yaml"
        _as_in_a_new_process(monkeypatch)
        engine.criteria.loader.load_criteria(other)
        compiled_cache.store_reading(path, engine.criteria.loader.last_reading(other))
    else:
        reading.chmod(0o664)
    _edit(path, *PLATELET_EDIT)
    _as_in_a_new_process(monkeypatch)
    met = _rereadings(monkeypatch)
    edited = load_trial(path)
    assert met == ([False] if kept == "another file" else [])
    assert edited.source == _read_whole(path)
    if kept != "untrusted":  # the file read whole: its reading kept for the next edit
        _edit(path, *reversed(PLATELET_EDIT))
        _as_in_a_new_process(monkeypatch)
        met = _rereadings(monkeypatch)
        _load_and_compile(path)
        assert met == [True]


def test_a_process_keeps_the_reading_it_holds_over_the_one_kept(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy_trial(tmp_path / "trial")
    other = ROOT / "criteria" / "NCT03036150.yaml"
    _as_in_a_new_process(monkeypatch)
    engine.criteria.loader.load_criteria(other)
    foreign = engine.criteria.loader.last_reading(other)
    load_trial(path)
    held = engine.criteria.loader.last_reading(path)
    assert held is not None
    compiled_cache.store_reading(path, foreign)
    assert not engine.criteria.loader.take_reading(path, foreign)
    _edit(path, *PLATELET_EDIT)
    met = _rereadings(monkeypatch)
    compiled_cache._in_process.clear()
    assert load_trial(path).source == _read_whole(path)
    assert met == [True]  # read alone from the reading held, not from the other file's


def test_a_relative_path_once_the_working_folder_is_removed_is_a_file_not_found(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reading kept for a relative path is keyed by the working folder: a folder removed
    meanwhile makes no traceback, the loader says the file is not found."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    _as_in_a_new_process(monkeypatch)
    with pytest.raises(CriteriaError, match="criteria file not found"):
        load_trial("criteria/NCT05315778.yaml")


def test_the_code_digest_covers_the_libraries_that_read_the_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another msgspec, orjson, simdjson, Hyperscan, StringZilla or pyarrow may read lines
    otherwise (nesting limits, what is JSON): a cohort's stored outcomes and manifest, keyed
    by the code digest, are then not reused."""
    from engine import compiled_cache

    before = compiled_cache.code_digest.__wrapped__()
    for library in ("msgspec", "orjson", "pysimdjson", "hyperscan", "stringzilla", "pyarrow"):
        real = compiled_cache._version_of

        def other(distribution: str, library: str = library, real: Any = real) -> str:
            return "0.0.0-other" if distribution == library else str(real(distribution))

        monkeypatch.setattr(compiled_cache, "_version_of", other)
        assert compiled_cache.code_digest.__wrapped__() != before, library
        monkeypatch.setattr(compiled_cache, "_version_of", real)
