"""Read YAML as ruamel's round-trip loader does (positions, scalar types), but faster, and
within limits that keep a hostile file from hanging or crashing the reader.

The round-trip scanner spends about half its time collecting comments, which nothing here
uses. `load_round_trip` parses with ruamel's plain scanner (configured like the round-trip
one: folded block scalars and tag escapes alike) and keeps the round-trip parser, composer
and constructor, so the result is the same `CommentedMap` tree with the same line and column
of every node. When that parse fails for any reason, the caller's own round-trip parse is
run instead, so every error (message, mark, exception class) is ruamel's usual one.

A plain scalar shaped like a date that is not one (`2026-02-30`) is an `ImpossibleDateError`
(a `MarkedYAMLError` with its line and column), where ruamel's constructor raises a bare
ValueError that names no position. An anchor defined twice (`&x` ... `&x`) is a
`DuplicateAnchorError`: YAML lets an alias take the later one, which in a criteria or mapping
file is a mistake waiting to happen, and ruamel only printed a Python warning naming no file.

Limits (`YamlLimitError`, a `MarkedYAMLError` with the line and column, so every reader
reports it as it reports a syntax error): a file that uses anchors is scanned first and may
not expand (aliases and merge keys followed) to more than `MAX_NODES` nodes (a "billion
laughs" alias bomb is refused before anything expands it); nesting may not go deeper than
`MAX_DEPTH` collections.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
    ScalarEvent,
)
from ruamel.yaml.nodes import Node
from ruamel.yaml.scanner import RoundTripScanner, Scanner

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "DuplicateAnchorError",
    "ImpossibleDateError",
    "YamlLimitError",
    "check_limits",
    "load_round_trip",
]

MAX_NODES = 100_000
"""Nodes a file may expand to with its aliases followed (the shipped files hold a few thousand)."""
MAX_DEPTH = 64
"""Collections nested in each other (criteria nest a dozen at most)."""

_ANCHOR = re.compile(r"(?:^|[\s\[{,])&\S")
"""An anchor may be defined: without one there is no alias to expand."""
_ALIAS = re.compile(r"(?:^|[\s\[{,:])\*\S")
"""An alias may be used (after a space, a flow indicator or a JSON-like key's colon): without
one nothing expands. Both are needed for a scan: a jsonpath's `&&` in a quoted string looks
like an anchor (NCT05315778), and scanning such a file cost a second parse of it."""
_BRACKETS = re.compile(r"[\[\]{}]")


class YamlLimitError(MarkedYAMLError):
    """A YAML file beyond the reading limits (alias expansion, nesting depth)."""


class ImpossibleDateError(ConstructorError):
    """A plain scalar shaped like a date (YAML 1.2's timestamp) that is no date: `2026-02-30`."""


class _Constructor(RoundTripConstructor):
    """The round-trip constructor, with an impossible date as a marked error."""

    def construct_yaml_timestamp(self, node: Any, values: Any = None) -> Any:
        try:
            return super().construct_yaml_timestamp(node, values)
        except ValueError as error:  # datetime's own: "day is out of range for month"
            raise ImpossibleDateError(
                problem=f"'{node.value}' is not a date ({error}); write a real date, or quote "
                "the value if it is meant as text",
                problem_mark=node.start_mark,
            ) from None


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", _Constructor.construct_yaml_timestamp)


class DuplicateAnchorError(ComposerError):
    """An anchor defined a second time in one document (`&base` twice)."""


class _Composer(Composer):
    """ruamel's composer, with an anchor defined twice as a marked error, not a warning."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not isinstance(event, AliasEvent) and anchor in self.anchors:
            first = self.anchors[anchor].start_mark.line + 1
            raise DuplicateAnchorError(
                problem=f"anchor &{anchor} is defined again, first on line {first} (an alias "
                f"*{anchor} would take this one); give each anchor its own name",
                problem_mark=event.start_mark,
            )
        if (
            type(event) is ScalarEvent
            and event.value == ""
            and event.style is None
            and isinstance(index, Node)
            and event.start_mark.line != index.end_mark.line
        ):
            # An empty value after its key's colon: without comment tokens the parser marks it
            # where the next token starts, the round-trip parser at the colon when a comment
            # follows the colon (`key: # note`). Such a text is read by the round-trip parser.
            text = self.loader.reader.buffer
            end = text.find("\n", index.end_mark.index)
            if "#" in text[index.end_mark.index : end if end >= 0 else len(text)]:
                raise ValueError("an empty value before a comment")
        return super().compose_node(parent, index)


class _ScannerWithoutComments(Scanner):
    """The round-trip scanner's tokens, without its comment tokens."""

    def scan_block_scalar(self, style: Any, rt: bool | None = True) -> Any:
        return Scanner.scan_block_scalar(self, style, rt=rt)

    scan_uri_escapes = RoundTripScanner.scan_uri_escapes


_DUPLICATE_KEY = re.compile(r'found duplicate key "(.*?)" with value')


def plain_yaml_problem(error: MarkedYAMLError) -> str:
    """What a YAML error says, for a person: a duplicate key named without its value
    (ruamel's message writes the value's whole repr, which can be pages of a concept), with
    where its mapping began; a tab's fix."""
    problem = str(error.problem or error.context)
    duplicate = _DUPLICATE_KEY.match(problem)
    if duplicate:
        problem = f"duplicate key '{duplicate.group(1)}'"
    if error.context and error.problem and error.context_mark is not None:
        problem += f" ({error.context}, line {error.context_mark.line + 1})"
    if "found character '\\t'" in str(error.problem):
        problem += "; indent with spaces, not tabs"
    return problem


def check_limits(text: str) -> None:
    """Raise YamlLimitError when `text` expands beyond MAX_NODES or nests beyond MAX_DEPTH.

    Flow brackets are counted; a text that defines an anchor and uses an alias is scanned
    (parser events, nothing constructed); the depth of block collections is checked on the
    loaded tree by `load_round_trip`. A syntax error met while scanning is left for the
    loader to report.
    """
    _check_brackets(text)
    if _ANCHOR.search(text) is None or _ALIAS.search(text) is None:
        return
    anchored: dict[str, int] = {}
    stack: list[list[Any]] = [[None, 0]]  # [anchor, expanded node count] per open collection
    try:
        for event in YAML(typ="safe", pure=True).parse(text):
            if isinstance(event, CollectionStartEvent):
                stack.append([event.anchor, 1])
                if len(stack) - 1 > MAX_DEPTH:
                    raise _too_deep(event)
            elif isinstance(event, CollectionEndEvent):
                anchor, count = stack.pop()
                if anchor is not None:
                    anchored[anchor] = count
                stack[-1][1] += count
            elif isinstance(event, AliasEvent):
                stack[-1][1] += anchored.get(event.anchor, 1)
            elif isinstance(event, NodeEvent):  # a scalar
                if event.anchor is not None:
                    anchored[event.anchor] = 1
                stack[-1][1] += 1
            else:
                continue
            if stack[-1][1] > MAX_NODES or sum(level[1] for level in stack) > MAX_NODES:
                raise YamlLimitError(
                    problem=f"the document expands to more than {MAX_NODES:,} nodes through "
                    "its aliases (an alias bomb?); write the values out instead",
                    problem_mark=event.start_mark,
                )
    except YamlLimitError:
        raise
    except RecursionError:
        raise YamlLimitError(problem=f"nested deeper than {MAX_DEPTH} levels") from None
    except MarkedYAMLError:
        return


def _check_brackets(text: str) -> None:
    """Refuse flow brackets nested deeper than MAX_DEPTH (counted without parsing, quotes
    ignored: ruamel's scanner slows down quadratically with flow depth)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for match in _BRACKETS.finditer(text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        if depth > MAX_DEPTH:
            line = text.count("\n", 0, match.start())
            column = match.start() - (text.rfind("\n", 0, match.start()) + 1)
            raise YamlLimitError(
                problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=_Mark(line, column)
            )


def load_round_trip(text: str, fallback: Callable[[], Any]) -> Any:
    """`YAML(typ="rt").load(text)` without comments; `fallback()` if that raises anything
    but an impossible date.

    Raises YamlLimitError for a text beyond the limits (see the module), ImpossibleDateError
    for a date-shaped scalar that is no date, DuplicateAnchorError for an anchor defined twice.
    """
    check_limits(text)
    try:
        tree = _load_with_libyaml(text) if _LIBYAML_HAZARDS.search(text) is None else None
    except RecursionError:
        raise YamlLimitError(problem=f"nested deeper than {MAX_DEPTH} levels") from None
    except Exception:  # what libyaml reads otherwise or refuses: ruamel's scanner decides
        tree = None
    if tree is not None:
        check_depth(tree)
        return tree
    yaml = YAML(typ="rt")
    yaml.Scanner = _ScannerWithoutComments
    yaml.Constructor = _Constructor
    yaml.Composer = _Composer
    try:
        tree = yaml.load(text)
    except RecursionError:
        raise YamlLimitError(problem=f"nested deeper than {MAX_DEPTH} levels") from None
    except (ImpossibleDateError, DuplicateAnchorError):
        raise
    except Exception:
        try:
            tree = fallback()
        except RecursionError:
            raise YamlLimitError(problem=f"nested deeper than {MAX_DEPTH} levels") from None
        except TypeError:  # ruamel's constructor cannot hash a key that is a collection
            raise _collection_key_error(text) from None
    check_depth(tree)
    return tree


def _collection_key_error(text: str) -> ConstructorError:
    """The marked error for a mapping key that is a list or a mapping (`[a]: b`, `{a: 1}: b`),
    which ruamel's round-trip constructor fails on with a bare TypeError."""
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    pending = [YAML(typ="rt").compose(text)]
    while pending:
        node = pending.pop()
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, (MappingNode, SequenceNode)):
                    return ConstructorError(
                        problem="a key that is a list or a mapping; write each key as plain text",
                        problem_mark=key.start_mark,
                    )
                pending += (key, value)
        elif isinstance(node, SequenceNode):
            pending += node.value
    return ConstructorError(problem="a key that is a list or a mapping; write keys as plain text")


_LIBYAML_HAZARDS = re.compile(
    r"[\t\r\x85\u2028\u2029\ufeff]|^%|(?:^|[\s\[{,:])!|[|>][-+0-9]*#|^(?:---[ ]+)?[|>]",
    re.MULTILINE,
)
"""What libyaml (YAML 1.1) may read otherwise than ruamel (1.2), or ruamel's round-trip
parser builds otherwise than from events: tabs, line breaks other than LF (1.1 counts NEL and
the Unicode separators as breaks), a byte order mark, directives, tags, a block scalar's
header followed by `#` without a space (libyaml takes it as a comment, ruamel refuses it), a
block scalar that is the document itself (a header at the start of a line, or after `---`:
1.2 lets its lines start in column 0, where libyaml ends it, reading a following `#` line as
a comment: `|-` then `#` is `#` for ruamel, empty for libyaml).
1.2's escapes, `\\/` included, libyaml reads alike. A text holding one is read by ruamel's
scanner."""


def _load_with_libyaml(text: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.Parser = lambda loader: _LibyamlEvents(text)
    yaml.Constructor = _Constructor
    return yaml.load(text)


def _no_anchor(event: Any) -> Any:
    if event.anchor is not None:  # YAML 1.1 ends an anchor's name sooner than 1.2 (`&a:b`)
        raise ValueError("an anchor or alias")
    return event


def _scalar_event(event: Any) -> Any:
    from ruamel.yaml import events

    style = _no_anchor(event).style or None  # PyYAML's plain style is "", ruamel's None
    if style is None and event.value == "":
        # libyaml marks it at the colon, ruamel where the next token starts: ruamel reads it
        raise ValueError("an empty plain scalar")
    return events.ScalarEvent(
        event.anchor,
        event.tag,
        event.implicit,
        event.value,
        event.start_mark,
        event.end_mark,
        style=style,
    )


class _LibyamlEvents:
    """ruamel's parser (the events its composer asks for) from libyaml's parser in C, through
    PyYAML: the same events, with marks of the same line and column, about four times faster
    than ruamel's scanner in Python. ruamel's composer, resolver (YAML 1.2) and round-trip
    constructor make the tree from them as from its own parser's.

    Used for texts without `_LIBYAML_HAZARDS` only; a text libyaml refuses, or holding an
    empty plain scalar, an anchor or an alias, is read again by ruamel's scanner
    (`load_round_trip`), so every error is ruamel's.
    """

    _KINDS: ClassVar[dict[type, Callable[[Any], Any]]] = {}

    def __init__(self, text: str) -> None:
        import yaml  # type: ignore[import-untyped]  # PyYAML: libyaml's parser, in C

        self._parser = yaml.CSafeLoader(text)
        self._next: Any = None
        if not _LibyamlEvents._KINDS:
            _LibyamlEvents._KINDS.update(_event_kinds(yaml))

    def _fetch(self) -> Any:
        if self._next is None and self._parser.check_event():
            event = self._parser.get_event()
            self._next = self._KINDS[type(event)](event)
        return self._next

    def check_event(self, *choices: type) -> bool:
        event = self._fetch()
        if event is None:
            return False
        return not choices or isinstance(event, choices)

    def peek_event(self) -> Any:
        return self._fetch()

    def get_event(self) -> Any:
        event = self._fetch()
        self._next = None
        return event

    def dispose(self) -> None:
        self._parser.dispose()


def _event_kinds(yaml: Any) -> dict[type, Callable[[Any], Any]]:
    """PyYAML's event classes, each with how to make ruamel's event of it."""
    from ruamel.yaml import events

    pure = yaml.events
    return {
        pure.StreamStartEvent: lambda e: events.StreamStartEvent(e.start_mark, e.end_mark),
        pure.StreamEndEvent: lambda e: events.StreamEndEvent(e.start_mark, e.end_mark),
        pure.DocumentStartEvent: lambda e: events.DocumentStartEvent(
            e.start_mark, e.end_mark, explicit=e.explicit, version=e.version, tags=e.tags
        ),
        pure.DocumentEndEvent: lambda e: events.DocumentEndEvent(
            e.start_mark, e.end_mark, explicit=e.explicit
        ),
        pure.AliasEvent: _no_anchor,
        pure.ScalarEvent: _scalar_event,
        pure.SequenceStartEvent: lambda e: events.SequenceStartEvent(
            _no_anchor(e).anchor, e.tag, e.implicit, e.start_mark, e.end_mark, e.flow_style
        ),
        pure.SequenceEndEvent: lambda e: events.SequenceEndEvent(e.start_mark, e.end_mark),
        pure.MappingStartEvent: lambda e: events.MappingStartEvent(
            _no_anchor(e).anchor, e.tag, e.implicit, e.start_mark, e.end_mark, e.flow_style
        ),
        pure.MappingEndEvent: lambda e: events.MappingEndEvent(e.start_mark, e.end_mark),
    }


def check_depth(tree: Any) -> None:
    """Raise YamlLimitError when a loaded tree nests collections deeper than MAX_DEPTH."""
    stack: list[tuple[Any, int]] = [(tree, 0)]
    seen: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= MAX_DEPTH:
                raise YamlLimitError(
                    problem=f"nested deeper than {MAX_DEPTH} levels",
                    problem_mark=_mark_of(node),
                )
            if id(node) in seen:
                continue
            seen.add(id(node))
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)


def _mark_of(node: Any) -> Any:
    """A mark-like position (line, column) of a round-trip node, when it has one."""
    position = getattr(node, "lc", None)
    if position is None or position.line is None:
        return None
    return _Mark(position.line, position.col)


class _Mark:
    """Enough of ruamel's Mark for error messages: 0-based line and column."""

    def __init__(self, line: int, column: int) -> None:
        self.line = line
        self.column = column
        self.name = "<yaml>"

    def __str__(self) -> str:
        return f'  in "{self.name}", line {self.line + 1}, column {self.column + 1}'


def _too_deep(event: Any) -> YamlLimitError:
    return YamlLimitError(
        problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark
    )
