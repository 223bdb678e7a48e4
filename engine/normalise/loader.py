"""Load mapping files (YAML) into a `Terminology`, validating as strictly as a linter.

Every file is validated against `mappings/mappings.schema.json`; then across files:
system aliases and concept ids are defined once, `include` names existing concepts
without cycles, ranges are used only with ICD-style systems, units are UCUM, jsonpath
expressions compile. All problems are collected and raised together, each naming the
file, line, column and field.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from engine.errors import ErrorCollection, Location, MappingError, TrialsieveError
from engine.normalise.terminology import (
    PER_RESULT,
    CodeRange,
    Concept,
    DoseEquivalent,
    Terminology,
    UnitConversion,
    did_you_mean,
    exact_decimal,
    normalise_code,
    normalise_text,
)
from engine.normalise.units import is_valid_ucum
from engine.normalise.value_sets import note_reads, recording_reads, value_set_codes
from engine.normalise.yaml_reading import load_round_trip, plain_yaml_problem
from engine.schemas import MAPPINGS_SCHEMA, load_schema

__all__ = ["load_terminology"]

PathElement = str | int


@cache
def _schema_validator() -> Any:
    from jsonschema import Draft202012Validator

    # The schema ships inside the package (engine/schemas/); tests/normalise/test_normalise_loader
    # checks it against the metaschema, so loading does not pay for that check on every run.
    return Draft202012Validator(load_schema(MAPPINGS_SCHEMA))


@dataclass
class _File:
    """One parsed mapping file and a way to locate any node in it."""

    path: str
    root: CommentedMap

    def location(self, *elements: PathElement, at_key: bool = False) -> Location:
        line, column = _position(self.root, elements, at_key)
        return Location(file=self.path, line=line + 1, column=column + 1, field=_field(elements))


@dataclass
class _SystemDefinition:
    uri: str
    icd: bool
    equivalents: tuple[str, ...]
    location: Location


@dataclass
class _Collected:
    errors: list[TrialsieveError] = field(default_factory=list)
    aliases: dict[str, _SystemDefinition] = field(default_factory=dict)
    concept_nodes: dict[str, tuple[_File, CommentedMap]] = field(default_factory=dict)
    unit_aliases: dict[str, tuple[tuple[str, ...], Location]] = field(default_factory=dict)

    def error(self, message: str, location: Location) -> None:
        self.errors.append(MappingError(message, location))


def load_terminology(paths: Sequence[str | Path]) -> Terminology:
    """Load mapping files and folders (every *.yaml in a folder, sorted) into a Terminology.

    Raises MappingError, or ErrorCollection when there are several problems; each names
    the file, line, column and field.
    """
    errors: list[TrialsieveError] = []
    found = list(mapping_files(paths, errors))
    if errors:  # go again, to report every problem in the order the files and folders come
        errors = []
        return _load(((path, None) for path in mapping_files(paths, errors)), errors)
    contents = [(path, _read_bytes(path)) for path in found]
    key = tuple((path, raw) for path, raw in contents if raw is not None)
    if len(key) < len(contents):
        return _load(contents, errors)
    known = _loaded.get(key)
    if known is not None and _unchanged(known[1]):
        note_reads(path for path, _raw in known[1])
        return known[0]
    with recording_reads() as value_set_files:
        loaded = _load(contents, errors)
    if len(_loaded) >= _LOADED_LIMIT:
        _loaded.clear()
    _loaded[key] = (loaded, tuple((path, _read_bytes(str(path))) for path in value_set_files))
    return loaded


def _unchanged(files: tuple[tuple[Path, bytes | None], ...]) -> bool:
    """Whether the ValueSet files (and cached expansions) a terminology read are as they were."""
    return all(_read_bytes(str(path)) == raw for path, raw in files)


_LOADED_LIMIT = 64
_loaded: dict[
    tuple[tuple[str, bytes], ...], tuple[Terminology, tuple[tuple[Path, bytes | None], ...]]
] = {}
"""Terminologies loaded in this process, by the path and content of every mapping file, with
the content of the ValueSet files they read (a changed ValueSet file loads them again)."""


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None  # reported when the file is parsed


def _load(
    contents: Iterable[tuple[str, bytes | None]], errors: list[TrialsieveError]
) -> Terminology:
    files: list[_File] = []
    for path, raw in contents:
        parsed = _parse_file(path, raw, errors)
        if parsed is not None:
            files.append(parsed)
    _raise_if_any(errors)

    collected = _Collected()
    for mapping_file in files:
        _collect_systems(mapping_file, collected)
    for mapping_file in files:
        _collect_concepts_and_units(mapping_file, collected)
    _raise_if_any(collected.errors)

    systems = _SystemTable(collected.aliases)
    concepts: dict[str, Concept] = {}
    with recording_reads() as value_set_files:  # (an enclosing recording gets them too)
        for concept_id, (mapping_file, node) in collected.concept_nodes.items():
            concept = _build_concept(concept_id, mapping_file, node, systems, collected)
            if concept is not None:
                concepts[concept_id] = concept
    defined = frozenset(collected.concept_nodes)
    concepts = _add_part_of(concepts, collected)
    _check_includes(concepts, defined, collected)
    local_codes = _collect_local_codes(files, systems, defined, collected)
    _raise_if_any(collected.errors)

    return Terminology(
        concepts=concepts,
        system_equivalents=systems.equivalents,
        icd_systems=systems.icd_uris,
        local_codes=local_codes,
        unit_aliases={alias: target for alias, (target, _) in collected.unit_aliases.items()},
        system_aliases={alias: definition.uri for alias, definition in collected.aliases.items()},
        files_read=value_set_files,
    )


def _raise_if_any(errors: list[TrialsieveError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ErrorCollection(f"{len(errors)} problems in the mapping files", errors=list(errors))


# ---------------------------------------------------------------------- files and parsing


def mapping_files(paths: Sequence[str | Path], errors: list[TrialsieveError]) -> Iterator[str]:
    """The mapping files `paths` name, folders expanded (their *.yaml, sorted); problems go
    to `errors`."""
    if isinstance(paths, str | Path):
        paths = [paths]
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                errors.append(
                    MappingError("folder holds no *.yaml mapping file", Location(str(path)))
                )
            yield from (str(file) for file in found)
        elif path.is_file():
            yield str(path)
        else:
            errors.append(MappingError("mapping file or folder not found", Location(str(path))))


def _parse_file(path: str, raw: bytes | None, errors: list[TrialsieveError]) -> _File | None:
    try:
        data = _read_yaml(path, raw)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = plain_yaml_problem(error)
        errors.append(MappingError(f"not valid YAML: {problem}", Location(path, line, column)))
        return None
    except UnicodeDecodeError:
        line = _first_line_not_utf8(path, raw)
        errors.append(MappingError("the file is not UTF-8 text", Location(path, line)))
        return None
    except OSError as error:
        errors.append(MappingError(f"cannot read mapping file: {error}", Location(path)))
        return None
    if data is None:
        errors.append(MappingError(EMPTY_FILE, Location(path)))
        return None
    if not isinstance(data, CommentedMap):
        errors.append(
            MappingError(
                "a mapping file must be a YAML mapping (systems:, concepts:, ...)",
                Location(path, 1, 1),
            )
        )
        return None
    mapping_file = _File(path, data)
    schema_errors = sorted(
        _schema_validator().iter_errors(data), key=lambda error: _position(data, error.path)
    )
    for schema_error in schema_errors:
        errors.append(_schema_error(mapping_file, schema_error))
    return None if schema_errors else mapping_file


EMPTY_FILE = (
    "the file is empty: a mapping file holds at least one of systems:, concepts:, "
    "local_codes:, unit_aliases:"
)
"""The problem with a mapping file of blank lines and comments only (lint's too)."""


def _first_line_not_utf8(path: str, raw: bytes | None) -> int | None:
    """The line of the first byte of the file that is not UTF-8."""
    try:
        content = raw if raw is not None else Path(path).read_bytes()
        content.decode("utf-8")
    except UnicodeDecodeError as error:
        return content[: error.start].count(b"\n") + 1
    except OSError:
        return None
    return None


def _read_yaml(path: str, raw: bytes | None) -> Any:
    """The round-trip YAML tree of the file's content `raw` (as `open` decodes it in text mode).

    Any problem is raised by ruamel reading the file itself, as if there were no fast path.
    """

    def read_from_file() -> Any:
        with open(path, encoding="utf-8") as handle:
            return YAML(typ="rt").load(handle)

    if raw is None:
        return read_from_file()
    try:
        text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8").read()
    except UnicodeDecodeError:
        return read_from_file()
    return load_round_trip(text, read_from_file)


def _schema_error(mapping_file: _File, error: Any) -> MappingError:
    meant = _meant_form(error)
    if meant is not None:
        return _schema_error(mapping_file, meant)
    elements: list[PathElement] = list(error.absolute_path)
    container = _node_at(mapping_file.root, elements)
    message = error.message
    at_key = False
    if error.validator == "additionalProperties" and isinstance(container, Mapping):
        allowed = set(error.schema.get("properties", {}))
        extra = [key for key in container if key not in allowed]
        if extra:
            elements.append(str(extra[0]))
            at_key = True
            known = ", ".join(sorted(allowed))
            message = f"unknown field {extra[0]!r}" + (f" (allowed: {known})" if known else "")
    elif (
        isinstance(container, Mapping)
        and isinstance(error.instance, str)
        and (error.instance in container and error.validator == "pattern")
    ):
        # a propertyNames violation: point at the offending key
        elements.append(error.instance)
        at_key = True
        message = f"invalid name {error.instance!r}: must match {error.validator_value}"
    return MappingError(message, mapping_file.location(*elements, at_key=at_key))


def _meant_form(error: Any) -> Any:
    """For a field of several forms (`oneOf` / `anyOf`: a system as a URI or as {uri, ...}, a
    range as {low, high} or `per-result`) none of which fits: the first error of the forms
    whose keys the value has (their errors lie inside it), which names the field at fault
    (`reference_range.low: 'abc' is not of type 'number'`) instead of "{...} is not valid
    under any of the given schemas"; None when no form is meant so."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return None
    meant = {
        sub_error.relative_schema_path[0] for sub_error in error.context if sub_error.relative_path
    }
    inside = [
        sub_error for sub_error in error.context if sub_error.relative_schema_path[0] in meant
    ]
    return min(inside, key=lambda sub_error: len(sub_error.relative_path), default=None)


def _node_at(root: Any, elements: Sequence[PathElement]) -> Any:
    node = root
    for element in elements:
        try:
            node = node[element]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _position(root: Any, elements: Sequence[PathElement], at_key: bool = False) -> tuple[int, int]:
    """Zero-based (line, column) of the node at `elements`: a key's for collections or `at_key`."""
    node = root
    line, column = getattr(getattr(root, "lc", None), "line", 0), 0
    for index, element in enumerate(elements):
        last = index == len(elements) - 1
        try:
            if isinstance(node, CommentedMap) and element in node:
                child = node[element]
                use_key = at_key or not last or isinstance(child, CommentedMap | CommentedSeq)
                line, column = node.lc.key(element) if use_key else node.lc.value(element)
                node = child
            elif isinstance(node, CommentedSeq) and isinstance(element, int):
                line, column = node.lc.item(element)
                node = node[element]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return int(line or 0), int(column or 0)


def _field(elements: Sequence[PathElement]) -> str | None:
    text = ""
    for element in elements:
        text += f"[{element}]" if isinstance(element, int) else (f".{element}" if text else element)
    return text or None


# ---------------------------------------------------------------------- systems


def _collect_systems(mapping_file: _File, collected: _Collected) -> None:
    systems = mapping_file.root.get("systems") or {}
    for alias, value in systems.items():
        location = mapping_file.location("systems", alias)
        if isinstance(value, Mapping):
            definition = _SystemDefinition(
                uri=str(value["uri"]),
                icd=bool(value.get("icd", False)),
                equivalents=tuple(str(item) for item in value.get("equivalents", ())),
                location=location,
            )
        else:
            definition = _SystemDefinition(str(value), False, (), location)
        previous = collected.aliases.get(alias)
        if previous is not None:
            if (previous.uri, previous.icd, previous.equivalents) != (
                definition.uri,
                definition.icd,
                definition.equivalents,
            ):
                collected.error(
                    f"system alias {alias!r} is defined differently at {previous.location}",
                    location,
                )
            continue
        for uri in (definition.uri, *definition.equivalents):
            other = next(
                (
                    (name, known)
                    for name, known in collected.aliases.items()
                    if uri in (known.uri, *known.equivalents)
                    and (known.uri, known.icd, known.equivalents)
                    != (definition.uri, definition.icd, definition.equivalents)
                ),
                None,
            )
            if other is not None:  # one URI, two systems: codes would be read as the other's
                collected.error(
                    f"system alias {alias!r} names {uri}, which system alias {other[0]!r} "
                    f"names too, defined otherwise at {other[1].location}: a code system's "
                    "URI belongs to one system (a copied line?)",
                    location,
                )
                break
        collected.aliases[alias] = definition


class _SystemTable:
    """Resolves aliases and equivalent URIs to canonical system URIs."""

    def __init__(self, aliases: Mapping[str, _SystemDefinition]) -> None:
        self.aliases = {alias: definition.uri for alias, definition in aliases.items()}
        self.equivalents: dict[str, str] = {}
        self.icd_uris: set[str] = set()
        for definition in aliases.values():
            for equivalent in definition.equivalents:
                self.equivalents[equivalent] = definition.uri
            if definition.icd:
                self.icd_uris.add(definition.uri)

    def resolve(self, reference: str) -> str | None:
        """The canonical URI of an alias or URI; None for an unknown alias."""
        if reference in self.aliases:
            return self.aliases[reference]
        if ":" in reference:
            return self.equivalents.get(reference, reference)
        return None

    def known(self) -> str:
        return ", ".join(sorted(self.aliases)) or "none"


def _resolve_system(
    reference: str, systems: _SystemTable, location: Location, collected: _Collected
) -> str | None:
    uri = systems.resolve(reference)
    if uri is None:
        collected.error(
            f"unknown system alias {reference!r} (known: {systems.known()}; or write the full URI)",
            location,
        )
    return uri


# ---------------------------------------------------------------------- concepts


def _collect_concepts_and_units(mapping_file: _File, collected: _Collected) -> None:
    for concept_id, node in (mapping_file.root.get("concepts") or {}).items():
        previous = collected.concept_nodes.get(concept_id)
        if previous is not None:
            previous_file, _ = previous
            collected.error(
                f"concept {concept_id!r} is already defined at "
                f"{previous_file.location('concepts', concept_id)}",
                mapping_file.location("concepts", concept_id),
            )
            continue
        collected.concept_nodes[concept_id] = (mapping_file, node)
    for alias, target in (mapping_file.root.get("unit_aliases") or {}).items():
        location = mapping_file.location("unit_aliases", alias)
        alias_text = str(alias)
        # one UCUM unit, or a list of readings: the first that converts to the unit of the
        # concept measured is meant (`engine.normalise.units.ucum_unit`)
        readings = tuple(map(str, target)) if isinstance(target, list) else (str(target),)
        wrong = [reading for reading in readings if not is_valid_ucum(reading)]
        if wrong or not readings:
            shown = repr(wrong[0]) if wrong else "an empty list"
            collected.error(f"unit alias target {shown} is not valid UCUM", location)
            continue
        previous_alias = collected.unit_aliases.get(alias_text)
        if previous_alias is not None and previous_alias[0] != readings:
            collected.error(
                f"unit alias {alias_text!r} already maps to {_readings_text(previous_alias[0])} "
                f"at {previous_alias[1]}",
                location,
            )
            continue
        collected.unit_aliases[alias_text] = (readings, location)


def _readings_text(readings: tuple[str, ...]) -> str:
    """An alias's target as the mapping file writes it: `'10*9/L'` or `['[IU]/L', 'U/L']`."""
    return repr(readings[0]) if len(readings) == 1 else repr(list(readings))


def _build_concept(
    concept_id: str,
    mapping_file: _File,
    node: CommentedMap,
    systems: _SystemTable,
    collected: _Collected,
) -> Concept | None:
    here = ("concepts", concept_id)
    errors_before = len(collected.errors)
    icd_uris = systems.icd_uris

    codes: dict[str, frozenset[str]] = {}
    first_codes: dict[str, str] = {}
    for reference, values in (node.get("codes") or {}).items():
        uri = _resolve_system(
            reference, systems, mapping_file.location(*here, "codes", reference), collected
        )
        if uri is not None:
            read = _read_codes(mapping_file, (*here, "codes", reference), values, collected)
            codes[uri] = codes.get(uri, frozenset()) | frozenset(read)
            if read:
                first_codes.setdefault(uri, read[0])

    value_set = node.get("value_set")
    if value_set is not None:
        location = mapping_file.location(*here, "value_set")
        value_set_path = Path(mapping_file.path).parent / str(value_set)
        try:
            from_value_set = value_set_codes(value_set_path, location)
        except MappingError as error:
            collected.errors.append(error)
            from_value_set = {}
        for system, found in from_value_set.items():
            uri = systems.resolve(system) or system
            codes[uri] = codes.get(uri, frozenset()) | found

    prefixes: dict[str, tuple[str, ...]] = {}
    for reference, values in (node.get("prefixes") or {}).items():
        uri = _resolve_system(
            reference, systems, mapping_file.location(*here, "prefixes", reference), collected
        )
        if uri is not None:
            read = _read_codes(mapping_file, (*here, "prefixes", reference), values, collected)
            prefixes[uri] = prefixes.get(uri, ()) + tuple(read)

    ranges: dict[str, tuple[CodeRange, ...]] = {}
    for reference, values in (node.get("ranges") or {}).items():
        location = mapping_file.location(*here, "ranges", reference)
        uri = _resolve_system(reference, systems, location, collected)
        if uri is None:
            continue
        if uri not in icd_uris:
            collected.error(
                f"ranges need an ICD-style system; mark {reference!r} with `icd: true` in systems",
                location,
            )
            continue
        parsed: list[CodeRange] = []
        for index, text in enumerate(values):
            range_low, range_high = (normalise_code(part, True) for part in str(text).split("-"))
            if range_low[: len(range_high)] > range_high[: len(range_low)]:
                collected.error(
                    f"range {text!r} is empty: {range_low} comes after {range_high}",
                    mapping_file.location(*here, "ranges", reference, index),
                )
                continue
            parsed.append(CodeRange(low=range_low, high=range_high, text=str(text)))
        ranges[uri] = ranges.get(uri, ()) + tuple(parsed)

    answers: dict[str, dict[str, float]] = {}
    for reference, table in (node.get("answers") or {}).items():
        uri = _resolve_system(
            reference, systems, mapping_file.location(*here, "answers", reference), collected
        )
        if uri is not None:
            answers.setdefault(uri, {}).update(
                {str(code): float(number) for code, number in table.items()}
            )

    unit = node.get("unit")
    if unit is not None and not is_valid_ucum(str(unit)):
        collected.error(f"unit {unit!r} is not valid UCUM", mapping_file.location(*here, "unit"))

    reference_range = node.get("reference_range") or {}
    per_result = reference_range == PER_RESULT
    if per_result:
        reference_range = {}
    low = reference_range.get("low")
    high = reference_range.get("high")
    if low is not None and high is not None and float(low) > float(high):
        collected.error(
            f"reference_range low {low} is above high {high}",
            mapping_file.location(*here, "reference_range"),
        )
    if reference_range and unit is None:
        collected.error(
            "reference_range needs a `unit` to be stated in",
            mapping_file.location(*here, "reference_range"),
        )

    plausible_range = node.get("plausible_range") or {}
    plausible_low = plausible_range.get("low")
    plausible_high = plausible_range.get("high")
    if (
        plausible_low is not None
        and plausible_high is not None
        and float(plausible_low) >= float(plausible_high)
    ):
        collected.error(
            f"plausible_range low {plausible_low} is not below high {plausible_high}",
            mapping_file.location(*here, "plausible_range"),
        )
    if plausible_range and unit is None:
        collected.error(
            "plausible_range needs a `unit` to be stated in",
            mapping_file.location(*here, "plausible_range"),
        )

    value_path = node.get("value_path")
    if value_path is not None:
        problem = _jsonpath_problem(str(value_path))
        if problem is not None:
            collected.error(
                f"value_path {value_path!r} is not a valid jsonpath: {problem}",
                mapping_file.location(*here, "value_path"),
            )

    conversions: list[UnitConversion] = []
    for index, item in enumerate(node.get("conversions") or ()):
        from_unit = str(item["from"])
        where = mapping_file.location(*here, "conversions", index, "from")
        if not is_valid_ucum(from_unit):
            collected.error(f"unit {from_unit!r} is not valid UCUM", where)
        elif unit is None:
            collected.error("conversions need the concept's `unit` to convert into", where)
        elif from_unit == str(unit) or any(c.from_unit == from_unit for c in conversions):
            collected.error(f"a second conversion from {from_unit!r}", where)
        else:
            conversions.append(
                UnitConversion(
                    from_unit,
                    float(item["factor"]),
                    float(item.get("offset", 0.0)),
                    str(item["source"]),
                )
            )

    molar_mass = node.get("molar_mass")
    if len(collected.errors) > errors_before:
        return None
    return Concept(
        id=concept_id,
        display=str(node["display"]),
        description=str(node["description"]) if "description" in node else None,
        unit=str(unit) if unit is not None else None,
        reference_low=float(low) if low is not None else None,
        reference_high=float(high) if high is not None else None,
        reference_range_per_result=per_result,
        molar_mass=float(molar_mass) if molar_mass is not None else None,
        value_path=str(value_path) if value_path is not None else None,
        source=mapping_file.location(*here),
        codes=codes,
        first_codes=first_codes,
        prefixes=prefixes,
        ranges=ranges,
        includes=tuple(str(item) for item in node.get("include") or ()),
        answers=answers,
        texts=frozenset(normalise_text(str(text)) for text in node.get("text") or ()),
        plausible_low=float(plausible_low) if plausible_low is not None else None,
        plausible_high=float(plausible_high) if plausible_high is not None else None,
        dose_equivalents={
            str(table): _dose_equivalent(equivalent)
            for table, equivalent in (node.get("dose_equivalents") or {}).items()
        },
        conversions=tuple(conversions),
    )


def _dose_equivalent(written: Any) -> DoseEquivalent:
    """A `dose_equivalents` entry (the schema checked its shape): the pair of equivalent
    doses `{drug_mg: 0.75, reference_mg: 5}`, or a factor (mg of the reference drug per mg
    of this drug), each read as the decimal it is written as."""
    if isinstance(written, Mapping):
        return DoseEquivalent(
            exact_decimal(written["drug_mg"]), exact_decimal(written["reference_mg"])
        )
    return DoseEquivalent(Fraction(1), exact_decimal(written))


def _read_codes(
    mapping_file: _File,
    elements: tuple[PathElement, ...],
    values: Sequence[Any],
    collected: _Collected,
) -> list[str]:
    codes: list[str] = []
    for index, value in enumerate(values):
        if isinstance(value, float):
            collected.error(
                f"code {value} is a number, not a code: write it in quotes",
                mapping_file.location(*elements, index),
            )
            continue
        width = getattr(value, "_width", None)
        if isinstance(value, int) and width is not None and width > len(str(value)):
            collected.error(
                f"code {value} was written with leading zeros, which YAML drops: quote it",
                mapping_file.location(*elements, index),
            )
            continue
        codes.append(str(value))
    return codes


def _jsonpath_problem(expression: str) -> str | None:
    from engine.normalise.values import compiled_jsonpath

    try:
        compiled_jsonpath(expression)
    except Exception as error:  # jsonpath-ng raises several exception classes
        return str(error) or type(error).__name__
    return None


def _add_part_of(concepts: dict[str, Concept], collected: _Collected) -> dict[str, Concept]:
    """`part_of: [lvef]` on a (site) concept adds it to lvef's includes, so a site file can
    extend a standard concept without editing it."""
    extra: dict[str, list[str]] = {}
    for concept_id, (mapping_file, node) in collected.concept_nodes.items():
        for index, target in enumerate(node.get("part_of") or ()):
            if str(target) not in concepts:
                collected.error(
                    f"part_of refers to unknown concept {target!r}"
                    f"{did_you_mean(str(target), concepts)}",
                    mapping_file.location("concepts", concept_id, "part_of", index),
                )
                continue
            extra.setdefault(str(target), []).append(concept_id)
    return {
        concept_id: replace(concept, includes=(*concept.includes, *extra[concept_id]))
        if concept_id in extra
        else concept
        for concept_id, concept in concepts.items()
    }


def _check_includes(
    concepts: Mapping[str, Concept], defined: frozenset[str], collected: _Collected
) -> None:
    for concept in concepts.values():
        for index, included in enumerate(concept.includes):
            if included not in defined:
                location = concept.source
                collected.error(
                    f"include refers to unknown concept {included!r}"
                    f"{did_you_mean(included, defined)}",
                    Location(
                        location.file,
                        location.line,
                        location.column,
                        field=f"{location.field}.include[{index}]",
                    ),
                )
    reported: set[str] = set()
    for start in sorted(concepts):
        cycle = _find_cycle(start, concepts)
        if cycle and not reported.intersection(cycle):
            reported.update(cycle)
            collected.error(
                "include cycle: " + " -> ".join([*cycle, cycle[0]]),
                concepts[cycle[0]].source,
            )


def _find_cycle(start: str, concepts: Mapping[str, Concept]) -> list[str]:
    path: list[str] = []
    on_path: set[str] = set()
    finished: set[str] = set()

    def visit(concept_id: str) -> list[str]:
        if concept_id in on_path:
            return path[path.index(concept_id) :]
        if concept_id in finished or concept_id not in concepts:
            return []
        path.append(concept_id)
        on_path.add(concept_id)
        for included in concepts[concept_id].includes:
            cycle = visit(included)
            if cycle:
                return cycle
        path.pop()
        on_path.discard(concept_id)
        finished.add(concept_id)
        return []

    return visit(start)


def _collect_local_codes(
    files: Sequence[_File],
    systems: _SystemTable,
    defined: frozenset[str],
    collected: _Collected,
) -> dict[tuple[str, str], frozenset[str]]:
    local: dict[tuple[str, str], frozenset[str]] = {}
    first_at: dict[tuple[str, str], Location] = {}
    for mapping_file in files:
        for index, entry in enumerate(mapping_file.root.get("local_codes") or ()):
            uri = _resolve_system(
                str(entry["system"]),
                systems,
                mapping_file.location("local_codes", index, "system"),
                collected,
            )
            if uri is None:
                continue
            for code, targets in entry["codes"].items():
                target_ids = [targets] if isinstance(targets, str) else list(targets)
                location = mapping_file.location("local_codes", index, "codes", code)
                unknown = [target for target in target_ids if target not in defined]
                if unknown:
                    collected.error(
                        f"local code {code!r} maps to unknown concept {unknown[0]!r}"
                        f"{did_you_mean(unknown[0], defined)}",
                        location,
                    )
                    continue
                key = (uri, str(code))
                earlier = local.get(key)
                if earlier is not None and earlier != frozenset(target_ids):
                    # two mappings of one code (a site file over a shared one): the code
                    # would count as both, a haemoglobin result as platelets too
                    collected.error(
                        f"local code {code!r} of {uri} is mapped again, to "
                        f"{', '.join(sorted(target_ids))}; {first_at[key]} maps it to "
                        f"{', '.join(sorted(earlier))}: map it once (a list for several "
                        "concepts)",
                        location,
                    )
                    continue
                local[key] = frozenset(target_ids)
                first_at.setdefault(key, location)
    return local
