"""Load a criteria file: YAML -> JSON Schema validation -> semantic checks -> `CriteriaFile`.

Every problem is reported with the file, line and column, the criterion id and the field, and
all problems of a file are reported together (`ErrorCollection`), not just the first.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import jsonschema_rs
from jsonpath_ng.ext.parser import parse as parse_json_path
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from engine.criteria.model import (
    AS_OF,
    Absence,
    AllOf,
    AnyOf,
    AnyValueTest,
    ComputedValue,
    CriteriaFile,
    Criterion,
    CriterionKind,
    Expression,
    IsoDuration,
    ManualAtom,
    MedicationExposure,
    NotOf,
    PatientAtom,
    PerUnitTest,
    QuantityTest,
    Relation,
    ResourceAtom,
    Selection,
    SourcePosition,
    Timing,
    Trial,
    ValueTest,
    Window,
)
from engine.criteria.values import parse_per_unit_test, parse_range_test, parse_value_test
from engine.errors import CriteriaError, ErrorCollection, Location, TrialsieveError
from engine.normalise.formulas import FORMULAS, InputKind
from engine.normalise.yaml_reading import check_limits, load_round_trip, plain_yaml_problem
from engine.resource_types import (
    CONCEPT_OPTIONAL_TYPES,
    MEDICATION_TYPES,
    absence_defaults,
    default_absence,
    expand_resource_types,
    types_needing_timing,
)
from engine.schemas import CRITERIA_SCHEMA, load_schema

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

EXPRESSION_KEYS = ("all", "any", "not", "resource", "patient", "manual")
"""The operator keys of an expression, in the order of the schema's `oneOf`."""

EVER = Window(None, name="ever")
LONGEST_WINDOW_YEARS = 200
"""A window longer than this is a mistake (and its first day would fall before year 1)."""

_ISO_DURATION = re.compile(r"P(?=[0-9])(?:([0-9]+)Y)?(?:([0-9]+)M)?(?:([0-9]+)W)?(?:([0-9]+)D)?")
_YAML_KEY_LINE = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w-]*)\s*:")
_CRITERION_ID_LINE = re.compile(r"^\s*-\s+id\s*:\s*['\"]?([a-z0-9][a-z0-9-]*)")

PathSegment = str | int
_Problem = tuple[list[PathSegment], CriteriaError]
"""An error with the data path it is about (to know which criterion is broken)."""


def load_criteria(path: str | Path) -> CriteriaFile:
    """Read, validate and type one criteria file.

    Raises CriteriaError for one problem and ErrorCollection (of CriteriaError) for several.
    """
    text_path = str(path)
    raw = _read_bytes(text_path)
    # The mapping paths are made absolute from the working folder when the path is relative.
    reading_key = _reading_key(text_path)
    key = (*reading_key, raw)
    loaded = _loaded.get(key)
    if loaded is None:
        document = _read_document(text_path, raw, _readings.get(reading_key))
        loaded = _Checker(document).run()
        if len(_loaded) >= _LOADED_LIMIT:
            _loaded.clear()
            _readings.clear()
        _loaded[key] = loaded
        _readings[reading_key] = _Reading(document.lines, document.tree, document.data)
    return loaded


def last_reading(path: str | Path) -> object | None:
    """The last reading this process holds of the criteria file at `path` (as given): what
    an edit of one criterion is read alone from. Opaque: for `engine.compiled_cache` to keep,
    so that a new process compiling an edited trial reads the edited criterion alone too."""
    return _readings.get(_reading_key(str(path)))


def take_reading(path: str | Path, reading: object) -> bool:
    """Hold `reading` (one `last_reading` gave, kept by the cache) as the last reading of
    the criteria file at `path`, unless this process holds one already, or `reading` is not
    a whole reading (its fields of the wrong types); whether it was taken. A reading that no
    longer fits the file only costs a reading of the whole file (`_reread_criterion`)."""
    key = _reading_key(str(path))
    if key in _readings or not isinstance(reading, _Reading):
        return False
    if not (
        type(reading.lines) is list
        and all(type(line) is str for line in reading.lines)
        and isinstance(reading.tree, CommentedMap)
        and type(reading.data) is dict
        and type(reading.data.get("criteria")) is list
    ):
        return False
    _readings[key] = reading
    return True


def _reading_key(path: str) -> tuple[str, str]:
    """The working folder (when `path` is relative) and the path as given."""
    return ("" if os.path.isabs(path) else os.getcwd(), path)


_LOADED_LIMIT = 64
_loaded: dict[tuple[str, str, bytes], CriteriaFile] = {}
"""Criteria files loaded in this process, by working folder, path as given and content."""


@dataclass(frozen=True)
class _Reading:
    """A criteria file as it was last loaded without problems: its lines, tree and plain
    data, from which an edit of one criterion is read alone (`_reread_criterion`)."""

    lines: list[str]
    tree: CommentedMap
    data: dict[str, Any]


_readings: dict[tuple[str, str], _Reading] = {}
"""The last reading of each criteria file loaded in this process, by working folder and
path as given (a `--watch` process, a benchmark's re-runs)."""


@cache
def schema_validator() -> Draft202012Validator:
    """The compiled validator of the criteria schema (built once per process), whose errors
    the loader explains.

    The schema ships inside the package (`engine/schemas/`); tests/criteria/test_criteria_schema.py
    checks it against the metaschema, so loading does not pay for that check on every run.
    """
    from jsonschema import Draft202012Validator  # 0.07 s to import: only for a file it refuses

    return Draft202012Validator(load_schema(CRITERIA_SCHEMA))


@cache
def _fast_schema_validator() -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(load_schema(CRITERIA_SCHEMA))


def valid_by_schema(data: Any) -> bool:
    """Whether `data` is valid by the criteria schema, as jsonschema-rs (compiled, about 100
    times faster than jsonschema) says; False when it cannot tell (a value it cannot read).

    Only its yes is taken: a document it refuses is validated again with jsonschema, whose
    errors the loader explains (tests/criteria/test_criteria_schema.py: it accepts nothing
    jsonschema refuses).
    """
    try:
        return bool(_fast_schema_validator().is_valid(data))
    except Exception:  # a value it cannot convert (a date, a huge integer): ask jsonschema
        return False


def parse_iso_duration(text: str) -> IsoDuration:
    """`P1Y2M3W4D` -> IsoDuration; raise ValueError for anything else (no time part).

    >>> parse_iso_duration("P2W")
    IsoDuration(years=0, months=0, weeks=2, days=0, text='P2W')
    >>> parse_iso_duration("PT12H")
    Traceback (most recent call last):
    ...
    ValueError: 'PT12H' is not an ISO 8601 duration such as P28D, P3M, P1Y, P2W
    """
    match = _ISO_DURATION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"'{_shortened(text, 24)}' is not an ISO 8601 duration such as P28D, P3M, P1Y, P2W"
        )
    too_long = ValueError(f"'{_shortened(text, 24)}' is longer than {LONGEST_WINDOW_YEARS} years")
    if any(group is not None and len(group) > 6 for group in match.groups()):
        raise too_long
    years, months, weeks, days = (int(group) if group else 0 for group in match.groups())
    if years * 366 + months * 31 + weeks * 7 + days > LONGEST_WINDOW_YEARS * 366:
        raise too_long
    return IsoDuration(years=years, months=months, weeks=weeks, days=days, text=text)


# --------------------------------------------------------------------------- reading


@dataclass
class _Document:
    """A criteria file read into a ruamel tree (positions) and plain data (values)."""

    path: str
    lines: list[str]
    tree: CommentedMap
    data: dict[str, Any]
    reading_problems: list[tuple[list[PathSegment], str]] = field(default_factory=list)
    """Problems found while reading (a tagged scalar, a date), as data path and message."""


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CriteriaError("criteria file not found", Location(file=path)) from None
    except IsADirectoryError:
        raise CriteriaError(
            "expected a criteria file, found a folder", Location(file=path)
        ) from None
    except OSError as error:
        raise CriteriaError(
            f"cannot read the file: {error.strerror}", Location(file=path)
        ) from None


def _read_document(path: str, raw: bytes, earlier: _Reading | None = None) -> _Document:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise CriteriaError("the file is not UTF-8 text", Location(file=path, line=line)) from None
    lines = text.splitlines()
    if earlier is not None:
        reread = _reread_criterion(path, text, lines, earlier)
        if reread is not None:
            return reread
    try:
        tree = load_round_trip(text, lambda: YAML(typ="rt").load(text))
    except MarkedYAMLError as error:
        raise _yaml_syntax_error(path, lines, error) from None
    except YAMLError as error:
        raise CriteriaError(f"YAML: {error}", Location(file=path)) from None
    if tree is None:
        raise CriteriaError("the criteria file is empty", Location(file=path))
    if not isinstance(tree, CommentedMap):
        raise CriteriaError(
            "a criteria file is a mapping with trial: and criteria: at the top",
            Location(file=path, line=1, column=1),
            lines[0].strip() if lines else None,
        )
    document = _Document(path, lines, tree, {})
    document.data = cast(dict[str, Any], _plain(tree, [], document))
    return document


def _reread_criterion(
    path: str, text: str, lines: list[str], earlier: _Reading
) -> _Document | None:
    """The document of `text` when it is `earlier`'s with the lines of one criterion edited
    (as many lines as before, the edit within the lines from that criterion's `- ` to the
    next one's, or to the next top-level key): only those lines are read as YAML, in a text
    where every other line is blank but the `criteria:` key's, so that each node keeps its
    line and column, and the criterion's tree takes the place of its earlier one. None for
    any other edit, or anything the lines alone might read otherwise than the whole file
    (an anchor or alias in them, a directive or document marker in the file, a criteria
    list not in block style, an item whose `- ` is not on its first line): the file is then
    read whole. Reading an edit of one criterion of NCT05315778 (835 lines) this way takes
    about a twentieth of reading the file (`tests/criteria/test_loader_reread.py` compares
    both readings of many edits)."""
    before = earlier.lines
    if len(lines) != len(before) or _WHOLE_FILE_ONLY.search(text) is not None:
        return None
    changed = [
        number for number, (line, was) in enumerate(zip(lines, before, strict=True)) if line != was
    ]
    tree = earlier.tree
    criteria = tree.get("criteria")
    if not changed or not isinstance(criteria, CommentedSeq) or criteria.fa.flow_style():
        return None
    key_line = tree.lc.key("criteria")[0]
    if lines[key_line].split("#", 1)[0].strip() != "criteria:":
        return None
    following = [tree.lc.key(key)[0] for key in tree]
    end_of_list = min((line for line in following if line > key_line), default=len(lines))
    starts = [criteria.lc.item(index) for index in range(len(criteria))]
    ends = [line for line, _column in starts[1:]] + [end_of_list]
    index = next(
        (
            number
            for number, ((start, _column), end) in enumerate(zip(starts, ends, strict=True))
            if start <= changed[0] and changed[-1] < end
        ),
        None,
    )
    if index is None:
        return None
    (start, column), end = starts[index], ends[index]
    if column < 2 or before[start][column - 2 : column] != "- ":
        return None
    if lines[start][:column] != before[start][:column]:
        return None
    region = lines[start:end]
    if any(_ANCHOR_OR_ALIAS.search(line) for line in (*region, *before[start:end])):
        return None
    partial = [""] * end
    partial[key_line] = lines[key_line]
    partial[start:end] = region
    # the next line's indentation, up to its first token (the next item's `- `): a value
    # left empty at the region's end is marked there, as the whole file marks it
    following_line = lines[end] if end < len(lines) else ""
    indentation = following_line[: len(following_line) - len(following_line.lstrip(" "))]
    partial_text = "\n".join(partial) + "\n" + indentation
    try:
        check_limits(text)
        read = load_round_trip(partial_text, lambda: YAML(typ="rt").load(partial_text))
    except Exception:  # the whole file's reading reports it
        return None
    items = read.get("criteria") if isinstance(read, CommentedMap) and len(read) == 1 else None
    if not isinstance(items, CommentedSeq) or len(items) != 1:
        return None
    if items.lc.item(0) != (start, column):
        return None
    edited = copy.copy(criteria)  # shares the positions (`lc`): every item keeps its place
    list.__setitem__(edited, index, items[0])
    edited_tree = copy.copy(tree)
    edited_tree["criteria"] = edited
    document = _Document(path, lines, edited_tree, {})
    data = dict(earlier.data)
    data["criteria"] = list(data["criteria"])
    data["criteria"][index] = _plain(items[0], ["criteria", index], document)
    document.data = data
    return document


_ANCHOR_OR_ALIAS = re.compile(r"(?:^|[\s\[{,])[&*]")
"""Where an anchor or an alias may start (a token's first character: `10*9/L` is no alias;
in a quoted text it is taken as one all the same, and the file is read whole)."""
_WHOLE_FILE_ONLY = re.compile(r"^(?:%|---|\.\.\.)", re.MULTILINE)
"""A directive or document marker: a criteria file holding one is always read whole."""


SNIPPET_LIMIT = 120
"""Characters of the offending line shown under an error (a hostile line can be megabytes)."""


def _shortened(line: str, limit: int = SNIPPET_LIMIT) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _yaml_syntax_error(path: str, lines: list[str], error: MarkedYAMLError) -> CriteriaError:
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    message = f"YAML: {plain_yaml_problem(error)}"
    if "block scalar" in str(error.context):
        message += "; quote a value that starts with '>' or '|', e.g. value: \"> 1.5 x ULN\""
    criterion = field_name = snippet = None
    if line is not None and line <= len(lines):
        snippet = _shortened(lines[line - 1].strip())
        key_match = _YAML_KEY_LINE.match(lines[line - 1])
        field_name = key_match.group(1) if key_match else None
        for earlier in reversed(lines[:line]):
            id_match = _CRITERION_ID_LINE.match(earlier)
            if id_match:
                criterion = id_match.group(1)
                break
    location = Location(path, line, column, criterion=criterion, field=field_name)
    return CriteriaError(message, location, snippet)


def _plain(node: Any, path: list[PathSegment], document: _Document) -> Any:
    """ruamel's tree as plain dict/list/str/int/float/bool/None; odd YAML becomes an error."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, TaggedScalar):
        text = f"{tag} {node.value}".strip()
        document.reading_problems.append(
            (
                path,
                f"YAML reads '{text}' as a tagged value because it starts with '!'; "
                f'put it in quotes: "{text}"',
            )
        )
        return text
    if tag is not None and isinstance(node, CommentedMap | CommentedSeq):
        document.reading_problems.append((path, f"YAML tag '{tag}' is not used in criteria files"))
    if isinstance(node, dict):
        return {str(key): _plain(value, [*path, str(key)], document) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item, [*path, index], document) for index, item in enumerate(node)]
    if isinstance(node, dt.date):
        text = node.isoformat()
        document.reading_problems.append((path, f"YAML reads {text} as a date; put it in quotes"))
        return text
    if node is None or isinstance(node, bool):
        return node
    if isinstance(node, int):
        return bool(node) if type(node).__name__ == "ScalarBoolean" else int(node)
    if isinstance(node, float):
        return float(node)
    return str(node)


# --------------------------------------------------------------------------- positions


def _position(
    document: _Document, path: Sequence[PathSegment], at_key: bool = False
) -> tuple[int, int]:
    """1-based line and column of the node at `path` (of its key, with `at_key`)."""
    node: Any = document.tree
    line, column = node.lc.line, node.lc.col
    for index, segment in enumerate(path):
        last = index == len(path) - 1
        try:
            if isinstance(node, CommentedMap) and segment in node:
                line, column = node.lc.key(segment) if last and at_key else node.lc.value(segment)
            elif isinstance(node, CommentedSeq) and isinstance(segment, int):
                line, column = node.lc.item(segment)
            else:
                break
        except (KeyError, IndexError, TypeError):
            break  # a key merged in with `<<:` has no position of its own; keep the parent's
        node = node[segment]
    return line + 1, column + 1


def _source_position(
    document: _Document, path: Sequence[PathSegment], at_key: bool = False
) -> SourcePosition:
    line, column = _position(document, path, at_key)
    return SourcePosition(document.path, line, column)


def _criterion_id(document: _Document, path: Sequence[PathSegment]) -> str | None:
    if len(path) < 2 or path[0] != "criteria" or not isinstance(path[1], int):
        return None
    criteria = document.data.get("criteria")
    if isinstance(criteria, list) and path[1] < len(criteria):
        criterion = criteria[path[1]]
        if isinstance(criterion, dict) and isinstance(criterion.get("id"), str):
            return str(criterion["id"])
    return f"#{path[1] + 1}"


def _field_name(path: Sequence[PathSegment]) -> str | None:
    """The field an error is about: relative to its atom inside a criterion, else full path."""
    relative = list(path)
    if len(relative) >= 2 and relative[0] == "criteria" and isinstance(relative[1], int):
        relative = relative[2:]
        if relative[:1] == ["expression"]:
            index = 1
            while index < len(relative):
                segment = relative[index]
                if segment in ("all", "any") and index + 1 < len(relative):
                    index += 2
                elif segment == "not" and index + 1 < len(relative):
                    index += 1
                else:
                    break
            relative = relative[index:] or relative
    text = ""
    for segment in relative:
        text += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if text else segment)
    return text or None


def _error_at(
    document: _Document, path: Sequence[PathSegment], message: str, at_key: bool = False
) -> CriteriaError:
    line, column = _position(document, path, at_key)
    location = Location(
        document.path,
        line,
        column,
        criterion=_criterion_id(document, path),
        field=_field_name(path),
    )
    snippet = (
        _shortened(document.lines[line - 1].strip()) if 0 < line <= len(document.lines) else None
    )
    return CriteriaError(message, location, snippet or None)


# --------------------------------------------------------------------------- schema errors


def _problem(
    document: _Document, path: Sequence[PathSegment], message: str, at_key: bool = False
) -> _Problem:
    return list(path), _error_at(document, path, message, at_key)


def _schema_errors(document: _Document) -> list[_Problem]:
    if valid_by_schema(document.data):
        return []
    problems: list[_Problem] = []
    for error in schema_validator().iter_errors(document.data):
        problems.extend(_explain(document, error))
    return problems


def _explain(document: _Document, error: ValidationError) -> Iterator[_Problem]:
    """Turn one jsonschema error into errors a person can act on (descending into oneOf)."""
    path: list[PathSegment] = list(error.absolute_path)
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    custom = schema.get("errorMessage")
    if "propertyNames" in error.absolute_schema_path:
        reason = schema.get("patternErrorMessage") if error.validator == "pattern" else None
        yield _problem(
            document,
            [*path, str(instance)],
            f"'{instance}' cannot be a name here: {reason or _reason(error)}",
            at_key=True,
        )
    elif error.validator == "oneOf":
        yield from _explain_expression(document, error, path)
    elif error.validator == "pattern" and schema.get("pattern") == _value_test_pattern():
        yield _problem(document, path, _value_test_message(str(instance), schema))
    elif error.validator == "pattern":
        message = schema.get("patternErrorMessage", f"does not match {schema.get('pattern')}")
        suggestion = _duration_suggestion(instance) if "ISO 8601 duration" in message else ""
        if suggestion:  # a window or duration written another way: "6 months" is P6M
            message = f"{message.rstrip('.')}{suggestion}."
        yield _problem(document, path, f"'{instance}': {message}")
    elif error.validator == "anyOf" and isinstance(instance, list) and _list_branch(error):
        for sub_error in _list_branch(error):
            yield from _explain(document, sub_error)
    elif (
        error.validator == "anyOf"
        and custom is None
        and not isinstance(instance, list)
        and _item_branch(error)
    ):
        for sub_error in _item_branch(error):
            yield from _explain(document, sub_error)
    elif isinstance(custom, str) and error.validator == "required":
        for key in error.validator_value:
            if key not in instance:
                yield _problem(document, [*path, key], custom)
    elif isinstance(custom, str):
        yield _problem(document, path, f"{_quoted(instance)}{custom}{_branch_suggestion(error)}")
    elif error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        also = "".join(f", and keys starting with '{_prefix(p)}' (ignored)" for p in patterns)
        for key in instance:
            if key not in allowed and not any(re.search(p, str(key)) for p in patterns):
                message = (
                    f"unknown key '{key}'{word_suggestion(key, allowed)}; allowed: "
                    f"{', '.join(allowed)}{also}"
                )
                yield _problem(document, [*path, key], message, at_key=True)
    elif error.validator == "required":
        missing = [key for key in error.validator_value if key not in instance]
        for key in missing:
            yield _problem(document, [*path, key], f"'{key}' is missing")
    else:
        yield _problem(document, path, _reason(error))


def _explain_expression(
    document: _Document, error: ValidationError, path: list[PathSegment]
) -> Iterator[_Problem]:
    instance = error.instance
    keys = ", ".join(EXPRESSION_KEYS)
    if not isinstance(instance, dict):
        yield _problem(
            document,
            path,
            f"an expression is a mapping with one of {keys}; found {_describe(instance)}",
        )
        return
    present = [key for key in EXPRESSION_KEYS if key in instance]
    if not present:
        unknown = [key for key in instance if key != "label"]
        hint = ""
        if unknown:
            hint = f"; found '{unknown[0]}'{word_suggestion(unknown[0], EXPRESSION_KEYS)}"
        at = [*path, unknown[0]] if unknown else path
        yield _problem(
            document, at, f"an expression needs one of {keys}{hint}", at_key=bool(unknown)
        )
        return
    if len(present) > 1:
        yield _problem(
            document,
            [*path, present[1]],
            f"an expression has exactly one of {keys}; found {' and '.join(present)} "
            "(put them under all: or any:)",
            at_key=True,
        )
        return
    branch = EXPRESSION_KEYS.index(present[0])
    for sub_error in error.context or ():
        if sub_error.relative_schema_path and sub_error.relative_schema_path[0] == branch:
            yield from _explain(document, sub_error)


def _list_branch(error: ValidationError) -> list[ValidationError]:
    """For "one X or a list of X" written as a list: the errors of the list branch."""
    return [
        sub_error
        for sub_error in error.context or ()
        if sub_error.relative_path or sub_error.schema.get("type") == "array"
    ]


def _item_branch(error: ValidationError) -> list[ValidationError]:
    """For "one X or a list of X" written as one X: the errors of the single-item branch
    (of the branches the instance's JSON type fits, when some fit: a text written where a
    text or a mapping may stand is not told that it is not a mapping). Of mappings of
    several kinds (`value: {between: [...]}` or `{per_unit: [...]}`), the kinds whose keys
    the mapping has (their errors lie inside it): a bad bound of `between` is named, not
    "'per_unit' is missing"."""
    branch = [
        sub_error
        for sub_error in error.context or ()
        if isinstance(sub_error.schema, dict)
        and (sub_error.relative_path or sub_error.schema.get("type") != "array")
    ]
    fitting = [sub_error for sub_error in branch if sub_error.validator != "type"]
    meant = {sub_error.relative_schema_path[0] for sub_error in fitting if sub_error.relative_path}
    inside = [sub_error for sub_error in fitting if sub_error.relative_schema_path[0] in meant]
    return inside or fitting or branch


@cache
def _value_test_pattern() -> str:
    schema: dict[str, Any] = schema_validator().schema
    return str(schema["$defs"]["valueTest"]["pattern"])


def _value_test_message(text: str, schema: dict[str, Any]) -> str:
    try:
        parse_value_test(text)
    except ValueError as error:
        return f"cannot read '{text}': {error}"
    return f"cannot read '{text}': {schema.get('patternErrorMessage', 'not a value test')}"


def _reason(error: ValidationError) -> str:
    """A plain-words version of jsonschema's message for the simple keywords."""
    value = error.validator_value
    instance = error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    match error.validator:
        case "type":
            expected = " or ".join(_TYPE_WORDS.get(name, name) for name in _as_list(value))
            return f"expected {expected}, found {_describe(instance)}"
        case "enum":
            choices = [str(choice) for choice in value]
            return (
                f"'{instance}' is not one of: {', '.join(choices)}"
                f"{word_suggestion(str(instance), choices)}"
            )
        case "const":
            return f"{_quoted(instance)}must be '{value}'"
        case "minItems":
            return (
                "the list is empty; give at least one item"
                if value == 1
                else f"give at least {value} items"
            )
        case "maxItems":
            return f"give at most {value} item{'' if value == 1 else 's'}, found {len(instance)}"
        case "minLength":
            return "must not be empty"
        case "minimum":
            return f"{instance} is too small; the minimum is {value}"
        case "uniqueItems":
            repeated = next(
                (item for index, item in enumerate(instance) if item in instance[:index]), None
            )
            return f"the list has '{repeated}' twice"
        case "minProperties":
            names = ", ".join(sorted(schema.get("properties", {})))
            return f"give at least one of: {names}"
        case "not":
            return f"'{instance}' is reserved"
        case _:
            return str(error.message)


_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "object": "a mapping (key: value)",
    "array": "a list",
    "boolean": "true or false",
    "null": "nothing",
}


def _as_list(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else [str(value)]


def _describe(instance: Any) -> str:
    if instance is None:
        return "nothing"
    if isinstance(instance, bool):
        return f"{str(instance).lower()} (a boolean)"
    if isinstance(instance, int | float):
        return f"the number {instance}"
    if isinstance(instance, str):
        return f"the text '{instance}'"
    if isinstance(instance, list):
        return "a list"
    return "a mapping"


def _quoted(instance: Any) -> str:
    return f"'{instance}': " if isinstance(instance, str | int | float) else ""


_LOOSE_DURATION = re.compile(
    r"^\s*P?\s*([0-9]+)\s*(Y|YRS?|YEARS?|M|MOS?|MONTHS?|W|WKS?|WEEKS?|D|DAYS?)\s*$", re.IGNORECASE
)


def _duration_suggestion(text: object) -> str:
    """ " (did you mean 'P6M'?)" for a duration written another way ('6 months', '180 days',
    '6M', 'p6m', 'P6m'), else ""."""
    if not isinstance(text, str):
        return ""
    upper = text.strip().upper()
    if upper != text and _ISO_DURATION.fullmatch(upper):
        return f" (did you mean '{upper}'?)"
    loose = _LOOSE_DURATION.match(text)
    if loose is None:
        return ""
    number, unit = loose.groups()
    return f" (did you mean 'P{int(number)}{unit[0].upper()}'?)"


def _zero_length(duration: IsoDuration) -> bool:
    return not (duration.years or duration.months or duration.weeks or duration.days)


_NO_LENGTH_WINDOW = (
    "'{text}' is a window of no length: write how far to look back (P1D is the as-of date "
    "and the day before), or status: [active] for active (in use) on the as-of date"
)


def _prefix(pattern: str) -> str:
    """The prefix a `patternProperties` pattern such as `^x-` stands for (`x-`)."""
    return pattern.removeprefix("^")


def _branch_suggestion(error: ValidationError) -> str:
    """ " Did you mean 'X'?" for a misspelt word of a list of choices (`enum`: the schema's,
    or one of its branches'), such as 'Conditon' for `resource:`; else ""."""
    for branch_error in (error, *(error.context or ())):
        word = branch_error.instance
        if branch_error.validator != "enum" or not isinstance(word, str):
            continue
        close = closest_word(word, [str(choice) for choice in branch_error.validator_value])
        if close is not None:
            whose = "" if word == error.instance else f" for '{word}'"
            return f" Did you mean '{close}'{whose}?"
    return ""


def closest_word(word: str, choices: Sequence[str]) -> str | None:
    """The choice most like `word` (difflib, ratio 0.6 or more), or None."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def word_suggestion(word: str, choices: Sequence[str]) -> str:
    """` (did you mean 'x'?)` with the choice most like `word` (`closest_word`), or ""."""
    close = closest_word(word, choices)
    return f" (did you mean '{close}'?)" if close is not None else ""


# --------------------------------------------------------------------------- building


class _Checker:
    """Validates a document and builds the model, collecting every problem on the way."""

    def __init__(self, document: _Document) -> None:
        self.document = document
        self.errors: list[CriteriaError] = []
        self.windows: dict[str, Window] = {}
        self.windows_known = True
        self.manual_atoms: dict[str, ManualAtom] = {}
        self.atom_ids: dict[str, tuple[ResourceAtom | None, list[PathSegment]]] = {}
        """Resource atoms by `id`, with their path (None: the atom has other errors)."""
        self.anchored: list[tuple[ResourceAtom, list[PathSegment]]] = []
        self.broken: set[tuple[PathSegment, ...]] = set()
        """Every data path that has a schema error at or below it."""

    def run(self) -> CriteriaFile:
        for data_path, message in self.document.reading_problems:
            self.errors.append(_error_at(self.document, data_path, message))
        problems = _schema_errors(self.document)
        self.errors.extend(error for _, error in problems)
        self.broken = {
            tuple(path[:length]) for path, _ in problems for length in range(len(path) + 1)
        }
        data = self.document.data
        self.windows_known = ("windows",) not in self.broken
        if self.windows_known:
            errors_before = len(self.errors)
            self.windows = self._windows(data.get("windows") or {})
            self.windows_known = len(self.errors) == errors_before
        criteria = self._criteria(data.get("criteria"))
        self._check_anchors()
        mapping_paths = () if ("mappings",) in self.broken else self._mapping_paths(data)
        self._raise_if_any()
        return CriteriaFile(
            path=self.document.path,
            trial=self._trial(data["trial"]),
            mapping_paths=mapping_paths,
            windows=self.windows,
            criteria=criteria,
            version=str(data["version"]) if data.get("version") is not None else None,
            manual_atoms=self.manual_atoms,
        )

    def _criteria(self, entries: Any) -> tuple[Criterion, ...]:
        criteria: list[Criterion] = []
        first_lines: dict[str, int] = {}
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            path: list[PathSegment] = ["criteria", index]
            if not isinstance(entry, dict):
                continue
            identifier = entry.get("id")
            if isinstance(identifier, str) and identifier in first_lines:
                self._fail(
                    path,
                    "id",
                    f"duplicate criterion id '{identifier}' "
                    f"(first used on line {first_lines[identifier]})",
                )
            elif isinstance(identifier, str):
                first_lines[identifier] = _position(self.document, [*path, "id"])[0]
            criterion = self._criterion(entry, path)
            if criterion is not None:
                criteria.append(criterion)
        return tuple(criteria)

    def _raise_if_any(self) -> None:
        if not self.errors:
            return
        unique: dict[str, CriteriaError] = {}
        for error in self.errors:
            unique.setdefault(str(error), error)
        ordered = sorted(
            unique.values(),
            key=lambda error: (error.location.line or 0, error.location.column or 0),
        )
        if len(ordered) == 1:
            raise ordered[0]
        raise ErrorCollection(
            f"{len(ordered)} problems in {self.document.path}",
            Location(file=self.document.path),
            errors=list[TrialsieveError](ordered),
        )

    # ----------------------------------------------------------------------- sections

    def _trial(self, trial: dict[str, Any]) -> Trial:
        system = trial.get("identifier_system")
        if system is None:
            return Trial(id=trial["id"], title=trial["title"])
        return Trial(id=trial["id"], title=trial["title"], identifier_system=system)

    def _mapping_paths(self, data: dict[str, Any]) -> tuple[str, ...]:
        """The `mappings:` entries as absolute paths (their existence is checked by lint)."""
        directory = Path(self.document.path).absolute().parent
        return tuple(os.path.normpath(directory / mapping) for mapping in data.get("mappings", []))

    def _windows(self, windows: dict[str, Any]) -> dict[str, Window]:
        result: dict[str, Window] = {}
        for name, definition in windows.items():
            try:
                duration = parse_iso_duration(definition["within"])
            except ValueError as error:
                self.errors.append(
                    _error_at(self.document, ["windows", name, "within"], str(error))
                )
                continue
            if _zero_length(duration):
                self.errors.append(
                    _error_at(
                        self.document,
                        ["windows", name, "within"],
                        _NO_LENGTH_WINDOW.format(text=duration.text),
                    )
                )
                continue
            result[name] = Window(duration, name=name, description=definition.get("description"))
        return result

    def _criterion(self, entry: dict[str, Any], path: list[PathSegment]) -> Criterion | None:
        """Check the criterion's expression; build it if the criterion has no schema error."""
        if "expression" not in entry:
            return None
        expression = self._expression(entry["expression"], [*path, "expression"])
        if expression is None or tuple(path) in self.broken:
            return None
        return Criterion(
            id=entry["id"],
            kind=CriterionKind(entry["kind"]),
            text=entry["text"],
            expression=expression,
            note=entry.get("note"),
            position=_source_position(self.document, path),
        )

    # ----------------------------------------------------------------------- expressions

    def _expression(self, node: Any, path: list[PathSegment]) -> Expression | None:
        """Build an expression; None where it (or an operand) has errors, reported on the way.

        Atoms with schema errors are skipped (their errors are reported already); the others
        get the semantic checks even when something elsewhere in the file is broken.
        """
        operators = (
            [key for key in EXPRESSION_KEYS if key in node] if isinstance(node, dict) else []
        )
        if len(operators) != 1:
            return None
        operator = operators[0]
        if operator in ("resource", "patient", "manual") and tuple(path) in self.broken:
            return None
        if operator in ("all", "any") and not isinstance(node[operator], list):
            return None
        position = _source_position(self.document, [*path, operator], at_key=True)
        label = node.get("label")
        if operator in ("all", "any"):
            operands = [
                self._expression(operand, [*path, operator, index])
                for index, operand in enumerate(node[operator])
            ]
            if any(operand is None for operand in operands):
                return None
            built = tuple(operand for operand in operands if operand is not None)
            if operator == "all":
                return AllOf(built, label=label, position=position)
            return AnyOf(built, label=label, position=position)
        if operator == "not":
            operand = self._expression(node["not"], [*path, "not"])
            return None if operand is None else NotOf(operand, label=label, position=position)
        if operator == "resource":
            return self._resource_atom(node, path, label, position)
        if operator == "patient":
            return self._patient_atom(node["patient"], path, label, position)
        return self._manual_atom(node["manual"], path, label, position)

    def _resource_atom(
        self,
        node: dict[str, Any],
        path: list[PathSegment],
        label: str | None,
        position: SourcePosition,
    ) -> ResourceAtom | None:
        written = node["resource"] if isinstance(node["resource"], list) else [node["resource"]]
        types = expand_resource_types(written)
        failed = False
        concept = node.get("concept")
        if concept is None and not set(written) <= CONCEPT_OPTIONAL_TYPES:
            self._fail(
                path,
                "concept",
                f"'concept' is missing; only {' and '.join(sorted(CONCEPT_OPTIONAL_TYPES))} "
                "may go without one (given a 'where' filter)",
            )
            failed = True
        elif concept is None and "where" not in node:
            self._fail(
                path,
                "where",
                "without a 'concept', give a 'where' filter to say what to look for",
            )
            failed = True
        window = self._window(node.get("within"), [*path, "within"])
        value = self._value_test(node.get("value"), [*path, "value"])
        timing: Timing | None = node.get("timing")
        if timing is None:
            needing = types_needing_timing(types)
            bounded = (window is not None and not window.is_ever) or any(
                direction in node for direction in ("before", "after")
            )
            if needing and bounded:
                self._fail(
                    path,
                    "timing",
                    f"say how a {' or '.join(needing)} is in the window: 'timing: onset' "
                    "(it began in the window) or 'timing: active' (it was active at some point "
                    "of it; records rarely close old diagnoses)",
                )
                failed = True
            timing = "active"
        absence: Absence | None = node.get("absent")
        if absence is None:
            defaults = absence_defaults(types)
            if len(set(defaults.values())) > 1:
                listed = ", ".join(f"{name}: {meaning}" for name, meaning in defaults.items())
                self._fail(
                    path,
                    "absent",
                    f"these types mean different things when none is found ({listed}); say "
                    "'absent: not-met' or 'absent: unknown'",
                )
                failed = True
            absence = default_absence(types)
        if "value" in node and set(types) != {"Observation"}:
            self._fail(
                path, "value", "a value test reads Observation values; use resource: Observation"
            )
            failed = True
        for key in ("where", "where_not"):
            for index, expression in enumerate(node.get(key, [])):
                failed |= not self._check_json_path(expression, [*path, key, index])
        computed = self._computed(node, types, path) if "computed" in node else None
        exposure = self._use(node, types, path) if "use" in node else None
        atom_id = node.get("id")
        if atom_id is not None:
            failed |= not self._claim_atom_id(atom_id, path)
        relations = self._relations(node, path)
        apart = None
        if "apart" in node:
            apart = self._duration(node["apart"], [*path, "apart"])
            failed |= apart is None
        if (
            window is None
            or ("value" in node and value is None)
            or failed
            or relations is None
            or ("computed" in node and computed is None)
            or ("use" in node and exposure is None)
        ):
            return None
        selection: Selection = node.get("select", "latest" if value is not None else "any")
        failing: Absence = node.get("failing", "not-met")
        if failing != "not-met" and (value is None or selection not in ("any", "count")):
            self._fail(
                path,
                "failing",
                "failing says what results failing the value test mean for select: any or "
                "count; it needs a value test and one of those",
            )
            return None
        status = node.get("status")
        atom = ResourceAtom(
            resource_types=types,
            concept=concept,
            window=window,
            selection=selection,
            minimum_count=node.get("at_least", 1),
            value=value,
            status=tuple(status) if status is not None else None,
            where=tuple(node.get("where", ())),
            where_not=tuple(node.get("where_not", ())),
            label=label,
            position=position,
            computed=computed,
            exposure=exposure,
            timing=timing,
            absence=absence,
            id=atom_id,
            relations=relations,
            apart=apart,
            failing=failing,
        )
        if atom_id is not None:
            self.atom_ids[atom_id] = (atom, path)
        if relations:
            self.anchored.append((atom, path))
        return atom

    def _claim_atom_id(self, atom_id: str, path: list[PathSegment]) -> bool:
        """Reserve an atom id; False (reported) when another atom has it."""
        first = self.atom_ids.get(atom_id)
        if first is not None:
            first_line = _position(self.document, [*first[1], "id"])[0]
            self._fail(
                path,
                "id",
                f"duplicate atom id '{atom_id}' (first used on line {first_line}); "
                "give each atom its own id",
            )
            return False
        self.atom_ids[atom_id] = (None, path)
        return True

    def _relations(
        self, node: dict[str, Any], path: list[PathSegment]
    ) -> tuple[Relation, ...] | None:
        """The `before:` / `after:` of an atom; None when one has errors (reported)."""
        relations: list[Relation] = []
        failed = False
        for direction in ("before", "after"):
            written = node.get(direction)
            if written is None:
                continue
            here = [*path, direction]
            position = _source_position(self.document, here, at_key=True)
            if isinstance(written, str):
                relations.append(Relation(direction, written, position=position))
                continue
            at_least = at_most = None
            if "at_least" in written:
                at_least = self._duration(written["at_least"], [*here, "at_least"])
                failed |= at_least is None
            if "at_most" in written:
                at_most = self._duration(written["at_most"], [*here, "at_most"])
                failed |= at_most is None
            if (
                at_least is not None
                and at_most is not None
                and (_rough_days(at_least) > _rough_days(at_most))
            ):
                self._fail(
                    here,
                    "at_most",
                    f"at_most {at_most.text} is shorter than at_least {at_least.text}",
                )
                failed = True
            relations.append(
                Relation(
                    direction,
                    written["anchor"],
                    at_least=at_least,
                    at_most=at_most,
                    event=written.get("event", "first"),
                    position=position,
                )
            )
        return None if failed else tuple(relations)

    def _duration(self, text: str, path: list[PathSegment]) -> IsoDuration | None:
        try:
            return parse_iso_duration(text)
        except ValueError as error:
            self.errors.append(_error_at(self.document, path, str(error)))
            return None

    def _check_anchors(self) -> None:
        """Every anchor names `as-of` or an atom of the file, and no anchors go in a circle."""
        names = sorted(self.atom_ids)
        for atom, path in self.anchored:
            for relation in atom.relations:
                if relation.anchor == AS_OF or relation.anchor in self.atom_ids:
                    continue
                field: list[PathSegment] = [*path, relation.direction]
                if isinstance(self._node_at(field), dict):
                    field.append("anchor")
                known = f"; atom ids: {', '.join(names)}" if names else "; no atom has an id"
                message = (
                    f"unknown anchor '{relation.anchor}'{word_suggestion(relation.anchor, names)}: "
                    f"write '{AS_OF}' or the id of a resource atom{known}"
                )
                self.errors.append(_error_at(self.document, field, message))
        graph = {
            atom.id: [r.anchor for r in atom.relations if r.anchor in self.atom_ids]
            for atom, _ in self.anchored
            if atom.id is not None
        }
        reported: set[frozenset[str]] = set()
        for start in graph:
            cycle = _cycle_from(start, graph)
            if cycle is None or frozenset(cycle) in reported:
                continue
            reported.add(frozenset(cycle))
            atom, path = next(pair for pair in self.anchored if pair[0].id == cycle[0])
            direction = next(
                r.direction for r in atom.relations if r.anchor == cycle[1 % len(cycle)]
            )
            self._fail(
                path,
                direction,
                "circular anchors: "
                + " -> ".join([*cycle, cycle[0]])
                + "; an atom cannot be dated by itself",
            )

    def _node_at(self, path: list[PathSegment]) -> Any:
        node: Any = self.document.data
        for segment in path:
            try:
                node = node[segment]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    def _computed(
        self, node: dict[str, Any], types: tuple[str, ...], path: list[PathSegment]
    ) -> ComputedValue | None:
        """`computed:` (a formula standing in for a measured value); None after an error."""
        spec = node["computed"]
        here = [*path, "computed"]
        if set(types) != {"Observation"} or "value" not in node or "concept" not in node:
            self._fail(
                path,
                "computed",
                "computed needs resource: Observation, a concept and a value test",
            )
            return None
        if node.get("select", "latest") != "latest":
            self._fail(path, "select", "a computed value is tested as the latest; use latest")
            return None
        formula = FORMULAS.get(spec["formula"])
        if formula is None:
            self._fail(
                here,
                "formula",
                f"unknown formula '{spec['formula']}'; known formulas: "
                f"{', '.join(sorted(FORMULAS))}",
            )
            return None
        names = [item.name for item in formula.inputs if item.kind is InputKind.MEASUREMENT]
        windows: list[tuple[str, Window]] = []
        for name, within in (spec.get("inputs") or {}).items():
            if name not in names:
                self._fail(
                    [*here, "inputs"],
                    name,
                    f"formula {formula.id} has no measured input '{name}'; "
                    f"its inputs: {', '.join(names)}",
                )
                return None
            window = self._window(within, [*here, "inputs", name])
            if window is None:
                return None
            windows.append((name, window))
        same_sample = bool(spec.get("same_sample", False))
        if same_sample and len(names) < 2:
            self._fail(
                here,
                "same_sample",
                f"same_sample needs two or more measured inputs; formula {formula.id} has "
                f"{len(names)}",
            )
            return None
        return ComputedValue(
            formula.id,
            spec.get("prefer", "measured"),
            tuple(windows),
            _source_position(self.document, [*here, "formula"]),
            same_sample=same_sample,
        )

    def _use(
        self, node: dict[str, Any], types: tuple[str, ...], path: list[PathSegment]
    ) -> MedicationExposure | None:
        """`use:` (medication exposure: continuous use, last use, daily dose)."""
        spec = node["use"]
        here = [*path, "use"]
        if not set(types) <= set(MEDICATION_TYPES):
            self._fail(path, "use", "use reads medication resources; use MedicationStatement")
            return None
        if "within" in node:
            self._fail(path, "within", "with use:, write the window inside it (use.within) instead")
            return None
        if not {"continuous_for", "within", "daily_dose"} & set(spec):
            self._fail(path, "use", "use needs continuous_for, within or daily_dose")
            return None
        window = self._window(spec["within"], [*here, "within"]) if "within" in spec else None
        dose = self._value_test(spec.get("daily_dose"), [*here, "daily_dose"])
        if "daily_dose" in spec and not (isinstance(dose, QuantityTest) and dose.unit):
            if dose is not None:
                self._fail(here, "daily_dose", "daily_dose needs a quantity test with a unit")
            return None
        if "within" in spec and window is None:
            return None
        if "equivalent" in spec and "daily_dose" not in spec:
            self._fail(here, "equivalent", "equivalent converts a daily_dose; add one")
            return None
        durations: dict[str, IsoDuration] = {}
        for key in ("continuous_for", "allowed_gap"):
            if key in spec:
                try:
                    durations[key] = parse_iso_duration(spec[key])
                except ValueError as error:
                    self._fail(here, key, str(error))
                    return None
        continuous = durations.get("continuous_for")
        if continuous is not None and _zero_length(continuous):
            self._fail(
                here,
                "continuous_for",
                f"'{continuous.text}' is no length of use: write how long the use must have "
                "lasted up to the as-of date (P4W); for in use on the as-of date, status: [active]",
            )
            return None
        return MedicationExposure(
            continuous_for=durations.get("continuous_for"),
            within=window,
            allowed_gap=durations.get("allowed_gap"),
            daily_dose=dose if isinstance(dose, QuantityTest) else None,
            equivalent=spec.get("equivalent"),
            position=_source_position(self.document, here, at_key=True),
        )

    def _patient_atom(
        self,
        node: dict[str, Any],
        path: list[PathSegment],
        label: str | None,
        position: SourcePosition,
    ) -> PatientAtom | None:
        age = node.get("age", {})
        minimum, maximum = age.get("min"), age.get("max")
        if minimum is not None and maximum is not None and minimum > maximum:
            self._fail(
                [*path, "patient", "age"], "max", f"age max {maximum} is below age min {minimum}"
            )
            return None
        return PatientAtom(
            minimum_age=minimum,
            maximum_age=maximum,
            genders=tuple(node.get("gender", ())),
            label=label,
            position=position,
        )

    def _manual_atom(
        self,
        node: dict[str, Any],
        path: list[PathSegment],
        label: str | None,
        position: SourcePosition,
    ) -> ManualAtom | None:
        atom = ManualAtom(id=node["id"], question=node["question"], label=label, position=position)
        first = self.manual_atoms.get(atom.id)
        if first is not None:
            first_line = first.position.line if first.position else "?"
            self._fail(
                [*path, "manual"],
                "id",
                f"duplicate manual id '{atom.id}' (first used on line {first_line}); "
                "give each question its own id",
            )
            return None
        self.manual_atoms[atom.id] = atom
        return atom

    # ----------------------------------------------------------------------- leaves

    def _window(self, within: str | None, path: list[PathSegment]) -> Window | None:
        if within is None or within == "ever":
            return EVER
        if within.startswith("P"):
            try:
                duration = parse_iso_duration(within)
            except ValueError as error:
                self.errors.append(_error_at(self.document, path, str(error)))
                return None
            if _zero_length(duration):
                message = _NO_LENGTH_WINDOW.format(text=within)
                self.errors.append(_error_at(self.document, path, message))
                return None
            return Window(duration)
        if within in self.windows:
            return self.windows[within]
        if not self.windows_known:
            return None  # the windows section has its own errors; do not pile on
        names = list(self.windows)
        known = f"; named windows: {', '.join(names)}" if names else "; this file defines none"
        suggestion = _duration_suggestion(within) or word_suggestion(within, names)
        self.errors.append(
            _error_at(self.document, path, f"unknown window '{within}'{suggestion}{known}")
        )
        return None

    def _value_test(
        self, text: str | list[str] | dict[str, Any] | None, path: list[PathSegment]
    ) -> ValueTest | None:
        if text is None:
            return None
        if isinstance(text, dict) and "per_unit" in text:
            try:
                return parse_per_unit_test(text["per_unit"])
            except ValueError as error:
                self.errors.append(_error_at(self.document, [*path, "per_unit"], str(error)))
                return None
        if isinstance(text, dict):
            low, high = text["between"]
            try:
                return parse_range_test(low, high)
            except ValueError as error:
                self.errors.append(_error_at(self.document, [*path, "between"], str(error)))
                return None
        if isinstance(text, list):
            tests = [self._value_test(item, [*path, index]) for index, item in enumerate(text)]
            singles = [test for test in tests if test is not None]
            if len(singles) < len(tests):
                return None
            return AnyValueTest(
                tuple(test for test in singles if not isinstance(test, AnyValueTest | PerUnitTest)),
                " or ".join(text),
            )
        try:
            return parse_value_test(text)
        except ValueError as error:
            self.errors.append(_error_at(self.document, path, f"cannot read '{text}': {error}"))
            return None

    def _check_json_path(self, expression: str, path: list[PathSegment]) -> bool:
        try:
            _parse_json_path(expression)
        except Exception as error:  # jsonpath-ng raises bare Exception subclasses of its own
            self.errors.append(
                _error_at(self.document, path, f"cannot read the jsonpath '{expression}': {error}")
            )
            return False
        return True

    def _fail(self, path: list[PathSegment], key: str, message: str) -> None:
        self.errors.append(_error_at(self.document, [*path, key], message))


def _rough_days(duration: IsoDuration) -> float:
    """A duration's length in days, months and years averaged (for comparing two)."""
    return duration.years * 365.25 + duration.months * 30.44 + duration.weeks * 7 + duration.days


def _cycle_from(start: str, graph: dict[str, list[str]]) -> list[str] | None:
    """A circle of anchors through `start` (the ids in order), or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, trail = stack.pop()
        for anchor in graph.get(name, ()):
            if anchor == start:
                return trail
            if anchor not in seen:
                seen.add(anchor)
                stack.append((anchor, [*trail, anchor]))
    return None


@cache
def _parse_json_path(expression: str) -> object:
    return parse_json_path(expression)
