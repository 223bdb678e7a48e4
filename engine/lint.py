"""`trialsieve lint`: check criteria files and mapping files, and that they fit together.

Criteria files are the YAML files with a top-level `criteria:` (or `trial:`) key; every other
YAML file is a mapping file. Each criteria file is loaded (schema and semantic checks), its
`mappings:` are loaded, and every concept it uses is looked up there: atom concepts, answer
concepts (`is positive`), units of quantity tests (convertible to the concept's unit),
default reference ranges for ULN / LLN tests. All problems are returned, none is raised.

Problems that make evaluation fail or give wrong answers are errors; problems that only make
some answers unknown (no default reference range) or look unintended (an unused window) are
`LintWarning`s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from engine.compiled_cache import restore_conversions
from engine.criteria.loader import load_criteria
from engine.criteria.model import (
    AnswerTest,
    AnyValueTest,
    CriteriaFile,
    Criterion,
    PerUnitTest,
    QuantityTest,
    RangeTest,
    ReferenceLimitTest,
    ResourceAtom,
    SingleValueTest,
    SourcePosition,
    ValueTest,
    iter_atoms,
)
from engine.criteria.values import format_value_test
from engine.errors import (
    CriteriaError,
    ErrorCollection,
    LintWarning,
    Location,
    MappingError,
    TrialsieveError,
    UnitError,
)
from engine.evaluate.compile import compile_criteria
from engine.normalise import Concept, Terminology, convert, load_terminology
from engine.normalise import loader as mapping_loader
from engine.normalise.loinc import LOINC_URI, loinc_code_problem
from engine.normalise.yaml_reading import load_round_trip

YAML_SUFFIXES = (".yaml", ".yml")
_CRITERIA_MARKER = re.compile(r"^(?:criteria|trial)[ \t]*:", re.MULTILINE)
_MAPPINGS_LINE = re.compile(r"^mappings[ \t]*:")
_UNITLESS = re.compile(r"^(?:1|\{[^{}]*\}(?:\.\{[^{}]*\})*)$")


def lint_paths(paths: Sequence[str | Path]) -> list[TrialsieveError]:
    """Every problem in the criteria and mapping files at `paths` (files or folders).

    Criteria compile anew (never from the cache of compiled criteria), but the unit
    conversions earlier runs worked out are restored first (`restore_conversions`, as
    loading criteria does), so checking a unit against its concept's builds no unit registry
    for a pair they know (0.55 s of a 1.1 s lint); the answers are the same, failures
    included.
    """
    restore_conversions()
    problems: list[TrialsieveError] = []
    criteria_files: list[str] = []
    mapping_files: list[str] = []
    for path in paths:
        _discover(str(path), criteria_files, mapping_files, problems)
    terminologies = _TerminologyCache(problems)
    if mapping_files:
        terminologies.load(tuple(mapping_files))
    for criteria_path in criteria_files:
        try:
            criteria_file = load_criteria(criteria_path)
        except TrialsieveError as error:
            problems.extend(_flatten(error))
            continue
        problems.extend(_check_criteria_file(criteria_file, terminologies))
    return _unique(problems)


def has_errors(problems: Sequence[TrialsieveError]) -> bool:
    """True if any problem is an error (not just a warning): lint should fail."""
    return any(not isinstance(problem, LintWarning) for problem in problems)


def format_problems(problems: Sequence[TrialsieveError]) -> str:
    """One `error:` / `warning:` paragraph per problem, then a count."""
    lines = [
        f"{'warning' if isinstance(problem, LintWarning) else 'error'}: {problem}"
        for problem in problems
    ]
    warnings = sum(isinstance(problem, LintWarning) for problem in problems)
    errors = len(problems) - warnings
    lines.append(f"{_count(errors, 'error')}, {_count(warnings, 'warning')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- discovery


def _discover(
    path: str,
    criteria_files: list[str],
    mapping_files: list[str],
    problems: list[TrialsieveError],
) -> None:
    if os.path.isdir(path):
        for folder, subfolders, files in os.walk(path):
            # `tests/` beside criteria holds criteria test cases (`trialsieve test`), not criteria
            subfolders[:] = sorted(
                name for name in subfolders if not name.startswith(".") and name != "tests"
            )
            for name in sorted(files):
                if name.endswith(YAML_SUFFIXES):
                    _classify(os.path.join(folder, name), criteria_files, mapping_files, problems)
    elif os.path.isfile(path):
        if path.endswith(YAML_SUFFIXES):
            _classify(path, criteria_files, mapping_files, problems)
        else:
            problems.append(LintWarning("not a YAML file; skipped", Location(file=path)))
    else:
        problems.append(TrialsieveError("no such file or folder", Location(file=path)))


def _classify(
    path: str,
    criteria_files: list[str],
    mapping_files: list[str],
    problems: list[TrialsieveError],
) -> None:
    """A criteria file or a mapping file: the loader that reads it reports what is wrong
    with it (not UTF-8, empty), as when a command reads it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        problems.append(
            TrialsieveError(f"cannot read the file: {error.strerror}", Location(file=path))
        )
        return
    if _CRITERIA_MARKER.search(raw.decode("utf-8-sig", errors="replace")):
        criteria_files.append(path)
    else:
        mapping_files.append(path)


class _TerminologyCache:
    """Loads each distinct set of mapping files once; loading errors go to `problems` once.

    Each mapping file of a set that loads is also checked for mistyped LOINC codes, once.
    """

    def __init__(self, problems: list[TrialsieveError]) -> None:
        self.problems = problems
        self.loaded: dict[tuple[str, ...], Terminology | None] = {}
        self.code_checked: set[str] = set()

    def load(self, mapping_paths: tuple[str, ...]) -> Terminology | None:
        # By the files read, whatever the paths: the files of a folder a criteria file names
        # (`/abs/mappings`) and those found in it (`mappings/a.yaml`, ...) load once.
        not_found: list[TrialsieveError] = []
        files = list(mapping_loader.mapping_files(mapping_paths, not_found))
        key = tuple(sorted(_normalised(path) for path in (mapping_paths if not_found else files)))
        if key not in self.loaded:
            try:
                self.loaded[key] = load_terminology(tuple(mapping_paths))
            except TrialsieveError as error:
                self.problems.extend(_flatten(error))
                self.loaded[key] = None
            terminology = self.loaded[key]
            if terminology is not None:
                for mapping_file in files:
                    checked = _normalised(mapping_file)
                    if checked not in self.code_checked:
                        self.code_checked.add(checked)
                        self.problems.extend(_loinc_problems(mapping_file, terminology))
        return self.loaded[key]


# --------------------------------------------------------------------------- LOINC codes


def _loinc_problems(path: str, terminology: Terminology) -> list[TrialsieveError]:
    """A MappingError for every LOINC code in the file that fails the mod 10 check digit.

    Read: `concepts.*.codes.<loinc>` lists, `concepts.*.answers.<loinc>` keys and the codes
    of `local_codes` entries whose system is LOINC (by alias, URI or equivalent URI).
    """
    # The loader has read this file without error already, so the parse succeeds.
    root = load_round_trip("\n".join(_read_lines(path)), lambda: None)
    if not isinstance(root, CommentedMap):
        return []

    def is_loinc(reference: object) -> bool:
        uri = terminology.system_uri(str(reference))
        return terminology.canonical_system(uri) == LOINC_URI

    found: list[tuple[str, tuple[int, int], str]] = []
    for concept_id, node in (root.get("concepts") or {}).items():
        if not isinstance(node, CommentedMap):
            continue
        codes = node.get("codes")
        if isinstance(codes, CommentedMap):
            for reference, values in codes.items():
                if is_loinc(reference) and isinstance(values, CommentedSeq):
                    for index, value in enumerate(values):
                        field = f"concepts.{concept_id}.codes.{reference}[{index}]"
                        found.append((str(value), values.lc.item(index), field))
        answers = node.get("answers")
        if isinstance(answers, CommentedMap):
            for reference, table in answers.items():
                if is_loinc(reference) and isinstance(table, CommentedMap):
                    for code in table:
                        field = f"concepts.{concept_id}.answers.{reference}.{code}"
                        found.append((str(code), table.lc.key(code), field))
    for index, entry in enumerate(root.get("local_codes") or ()):
        if isinstance(entry, CommentedMap) and is_loinc(entry.get("system")):
            table = entry.get("codes")
            if isinstance(table, CommentedMap):
                for code in table:
                    field = f"local_codes[{index}].codes.{code}"
                    found.append((str(code), table.lc.key(code), field))
    problems: list[TrialsieveError] = []
    for code, (line, column), field in found:
        problem = loinc_code_problem(code)
        if problem is not None:
            location = Location(file=path, line=int(line) + 1, column=int(column) + 1, field=field)
            problems.append(MappingError(problem, location))
    return problems


# --------------------------------------------------------------------------- cross-checks


def _check_criteria_file(
    criteria_file: CriteriaFile, terminologies: _TerminologyCache
) -> list[TrialsieveError]:
    problems: list[TrialsieveError] = []
    problems.extend(_unused_windows(criteria_file))
    missing = [path for path in criteria_file.mapping_paths if not os.path.exists(path)]
    mappings_location = _mappings_location(criteria_file.path)
    if missing:
        problems.append(
            CriteriaError(
                f"mapping file or folder not found: {', '.join(missing)} "
                "(mappings: paths are relative to the criteria file)",
                mappings_location,
            )
        )
        return problems
    uses_concepts = any(
        _concepts_used(atom) for criterion in criteria_file.criteria for atom in _atoms(criterion)
    )
    if not criteria_file.mapping_paths:
        if uses_concepts:
            problems.append(
                CriteriaError(
                    "the criteria use concepts but the file names no mappings: "
                    "(add e.g. mappings: [../mappings])",
                    Location(file=criteria_file.path, line=1),
                )
            )
        return problems
    terminology = terminologies.load(criteria_file.mapping_paths)
    if terminology is None:
        return problems  # the mapping errors are reported already
    mappings = ", ".join(_display_path(path) for path in criteria_file.mapping_paths)
    for criterion in criteria_file.criteria:
        for atom in _atoms(criterion):
            problems.extend(_check_atom(atom, criterion, terminology, mappings))
    if not has_errors(problems):
        # What only compiling finds (a formula whose unit or input concepts do not fit the
        # mappings, a dose equivalence table no concept defines), with the same locations.
        try:
            compile_criteria(criteria_file, terminology)
        except TrialsieveError as error:
            problems.extend(
                problem
                for problem in _flatten(error)
                if (problem.location.field or "").startswith(("computed", "use"))
            )
    return problems


def _check_atom(
    atom: ResourceAtom, criterion: Criterion, terminology: Terminology, mappings: str
) -> Iterator[TrialsieveError]:
    for concept_id, field in _concepts_used(atom):
        if not terminology.has_concept(concept_id):
            hint = terminology.unknown_concept_hint(concept_id)
            yield CriteriaError(
                f"unknown concept '{concept_id}'{hint}; it is not defined in {mappings}",
                _location(atom.position, criterion, field),
            )
    if atom.concept is None or not terminology.has_concept(atom.concept):
        return
    concept = terminology.concept(atom.concept)
    location = _location(atom.position, criterion, "value")
    if isinstance(atom.value, AnyValueTest) and _looks_like_a_range(atom.value):
        yield LintWarning(
            f"value: [{', '.join(repr(test.text) for test in atom.value.tests)}] is an OR "
            "(a result passes if any test passes), so a lower bound OR an upper bound; for a "
            "range write value: {between: [low, high]}",
            location,
        )
    for test in _single_tests(atom.value):
        if isinstance(test, QuantityTest):
            yield from _check_quantity(test, concept, location)
        elif isinstance(test, ReferenceLimitTest):
            yield from _check_reference_limit(test, concept, location)


def _single_tests(test: ValueTest | None) -> tuple[SingleValueTest, ...]:
    """The single tests of a value test, a range counting as its two bounds."""
    if test is None:
        return ()
    tests = test.tests if isinstance(test, AnyValueTest | PerUnitTest) else (test,)
    return tuple(
        bound
        for one in tests
        for bound in ((one.low, one.high) if isinstance(one, RangeTest) else (one,))
    )


def _looks_like_a_range(test: AnyValueTest) -> bool:
    """A list holding a lower bound (`>`, `>=`) and an upper bound (`<`, `<=`)."""
    sides = {
        str(one.comparator)[0]
        for one in test.tests
        if isinstance(one, QuantityTest | ReferenceLimitTest) and str(one.comparator) in _BOUNDS
    }
    return sides == {"<", ">"}


_BOUNDS = frozenset({"<", "<=", ">", ">="})


def _check_quantity(
    test: QuantityTest, concept: Concept, location: Location
) -> Iterator[TrialsieveError]:
    concept_unitless = concept.unit is None or _UNITLESS.match(concept.unit) is not None
    if test.unit is None:
        if not concept_unitless:
            yield LintWarning(
                f"'{test.text}' has no unit; it is compared in {concept.id}'s unit {concept.unit}"
                f" (write '{format_value_test(test)} {concept.unit}' to say so)",
                location,
            )
        yield from _check_plausible(test, test.value, concept, location)
        return
    if concept.unit is None:
        yield CriteriaError(
            f"'{test.text}' has a unit but concept '{concept.id}' has none in the mappings; "
            "give the concept a unit",
            location,
        )
        return
    try:
        threshold = convert(test.value, test.unit, concept.unit, concept.molar_mass)
    except UnitError as error:
        yield CriteriaError(
            f"'{test.text}': {test.unit} does not convert to {concept.id}'s unit "
            f"{concept.unit}: {error.message}",
            location,
        )
        return
    yield from _check_plausible(test, threshold, concept, location)


def _check_plausible(
    test: QuantityTest, threshold: float, concept: Concept, location: Location
) -> Iterator[TrialsieveError]:
    """A threshold outside the concept's plausible range (the mappings' `plausible_range`,
    beyond which a result is a data error) gives every result the engine accepts the same
    answer: almost always a unit slip (`>= 100 g/dL` for a haemoglobin of 100 g/L)."""
    low, high = concept.plausible_low, concept.plausible_high
    if (low is None or threshold >= low) and (high is None or threshold <= high):
        return
    unit = f" {concept.unit}" if concept.unit else ""
    shown = f"{threshold:g}{unit}"
    limits = f"{'' if low is None else f'{low:g}'}-{'' if high is None else f'{high:g}'}{unit}"
    yield LintWarning(
        f"'{test.text}' is {shown}, outside {concept.id}'s plausible range {limits} (its "
        "plausible_range in the mappings): every result the engine accepts gives the test "
        "the same answer; check the number and its unit",
        location,
    )


def _check_reference_limit(
    test: ReferenceLimitTest, concept: Concept, location: Location
) -> Iterator[TrialsieveError]:
    default = concept.reference_high if test.limit == "high" else concept.reference_low
    if default is None and not concept.reference_range_per_result:
        side = "high (ULN)" if test.limit == "high" else "low (LLN)"
        yield LintWarning(
            f"'{test.text}': concept '{concept.id}' has no default reference {side} in the "
            "mappings; results without their own referenceRange will be unknown (if the "
            "range depends on the assay, say so: `reference_range: per-result`)",
            location,
        )


def _concepts_used(atom: ResourceAtom) -> list[tuple[str, str]]:
    """(concept id, field) pairs an atom refers to."""
    used: list[tuple[str, str]] = []
    if atom.concept is not None:
        used.append((atom.concept, "concept"))
    for test in _single_tests(atom.value):
        if isinstance(test, AnswerTest):
            used.append((test.answer_concept, "value"))
    return used


def _atoms(criterion: Criterion) -> Iterator[ResourceAtom]:
    return (atom for atom in iter_atoms(criterion.expression) if isinstance(atom, ResourceAtom))


def _unused_windows(criteria_file: CriteriaFile) -> Iterator[TrialsieveError]:
    used = {
        atom.window.name
        for criterion in criteria_file.criteria
        for atom in _atoms(criterion)
        if atom.window.name is not None
    }
    unused = [name for name in criteria_file.windows if name not in used]
    if not unused:
        return
    lines = _read_lines(criteria_file.path)
    for name in unused:
        key_line = re.compile(rf"^[ \t]+{re.escape(name)}[ \t]*:")
        line = next((number for number, text in enumerate(lines, 1) if key_line.match(text)), None)
        yield LintWarning(
            f"window '{name}' is defined but no criterion uses it",
            Location(file=criteria_file.path, line=line, field=f"windows.{name}"),
        )


# --------------------------------------------------------------------------- helpers


def _location(position: SourcePosition | None, criterion: Criterion, field: str) -> Location:
    if position is None:
        return Location(criterion=criterion.id, field=field)
    return Location(
        position.file, position.line, position.column, criterion=criterion.id, field=field
    )


def _display_path(path: str) -> str:
    """`path` relative to the working folder when it lies below it, else as it is."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def _mappings_location(path: str) -> Location:
    for number, line in enumerate(_read_lines(path), start=1):
        if _MAPPINGS_LINE.match(line):
            return Location(file=path, line=number, column=1, field="mappings")
    return Location(file=path, field="mappings")


def _flatten(error: TrialsieveError) -> list[TrialsieveError]:
    if isinstance(error, ErrorCollection) and error.errors:
        return [leaf for inner in error.errors for leaf in _flatten(inner)]
    return [error]


def _normalised(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _unique(problems: list[TrialsieveError]) -> list[TrialsieveError]:
    """Each problem once, the first way it was found: a file found in a folder given
    (`mappings/a.yaml`) and read again through a criteria file's `mappings:`
    (`/abs/mappings/a.yaml`) is the same file."""
    seen: set[tuple[str, str, Location]] = set()
    unique: list[TrialsieveError] = []
    for problem in problems:
        location = problem.location
        if location.file is not None:
            location = replace(location, file=_normalised(location.file))
        key = (type(problem).__name__, problem.message, location)
        if key not in seen:
            seen.add(key)
            unique.append(problem)
    return unique


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
