"""A criterion's `where` / `where_not` jsonpath, answered once per distinct content it reads.

A filter asks whether a jsonpath-ng expression finds anything in a resource. Most filters
read one or two top-level fields (`category[?(@ == 'medication')]` reads `category`,
`$[?($.criticality == 'high')]` reads `criticality`), whose values repeat across patients
(the same allergy categories, codes and reactions), while jsonpath-ng walks the resource
anew each time (5-15 us). `JsonPathFilter.finds` answers by those fields' values: the
answer is jsonpath-ng's, computed once per distinct value (compared by `repr`, which tells
apart every JSON value: `1`, `1.0` and `True`, `null` and `"None"`) and kept for the process.

Which fields an expression reads is worked out from its parsed form, conservatively: a path
whose first step is a plain field name (after an optional `$`) and whose later steps only
look inside what that field holds (fields, indexes, slices, `..`, filters over `@`), or a
filter on the root whose every condition reads `$.<field>...` only. Anything else (`$`
inside a field's filter, `` `parent` ``, other named operators, `*` at the top) reads the
whole resource: jsonpath-ng runs on every resource, as before.
"""

from __future__ import annotations

from typing import Any

import jsonpath_ng.jsonpath as jsonpath
from jsonpath_ng.ext import filter as ext_filter

_KNOWN_LIMIT = 50_000
"""Answers kept per filter (cleared when full)."""

_ABSENT: Any = object()

_LOCAL_STEPS: tuple[type, ...] = tuple(
    step
    for step in (
        jsonpath.Fields,
        jsonpath.Index,
        jsonpath.Slice,
        getattr(jsonpath, "Wildcard", None),
        getattr(ext_filter, "And", None),
        getattr(ext_filter, "Or", None),
    )
    if isinstance(step, type)
)
"""Steps that read only what they are applied to (besides Child, Descendants, Filter,
Expression and This, checked with what they hold)."""


def _key_of(resource: dict[str, Any], fields: tuple[str, ...]) -> tuple[str | None, ...]:
    """What a filter reading several fields is answered by (a function apart: its
    generator reads `resource`, which would be a cell at every call of `finds`)."""
    return tuple(
        None if value is _ABSENT else repr(value)
        for value in (resource.get(name, _ABSENT) for name in fields)
    )


class JsonPathFilter:
    """A compiled `where` / `where_not` expression (`path`: jsonpath-ng's), with the
    top-level fields of a resource it reads (`fields`; None: it may read anything)."""

    __slots__ = ("_known", "fields", "path", "text")

    def __init__(self, text: str, path: Any) -> None:
        self.text = text
        self.path = path
        self.fields = fields_read(path)
        self._known: dict[Any, bool] = {}

    def finds(self, resource: dict[str, Any]) -> bool:
        """Whether the expression finds anything in the resource."""
        fields = self.fields
        if fields is None or not resource:
            return bool(self.path.find(resource))
        if len(fields) == 1:
            value = resource.get(fields[0], _ABSENT)
            key: Any = None if value is _ABSENT else repr(value)
        else:
            key = _key_of(resource, fields)
        known = self._known
        found = known.get(key)
        if found is None:
            found = bool(self.path.find(resource))
            if len(known) >= _KNOWN_LIMIT:
                known.clear()
            known[key] = found
        return found

    def __repr__(self) -> str:
        return f"JsonPathFilter({self.text!r})"


def fields_read(path: Any) -> tuple[str, ...] | None:
    """The top-level fields of a resource whose values alone decide what `path` finds in
    it (a non-empty resource), sorted; None when it may read more (see the module)."""
    if jsonpath.auto_id_field is not None:
        return None  # ids made up from other fields: anything may be read
    steps = _steps(path)
    first, rest = steps[0][1], steps[1:]
    if type(first) is jsonpath.Root:
        if len(rest) == 1 and type(rest[0][1]) is ext_filter.Filter and rest[0][0] is _CHILD:
            return _root_filter_fields(rest[0][1])
        if not rest or rest[0][0] is not _CHILD:  # `$..x` reads the whole resource
            return None
        first, rest = rest[0][1], rest[1:]
    if type(first) is not jsonpath.Fields or "*" in first.fields:
        return None
    if not all(_local(step) for _join, step in rest):
        return None
    return tuple(sorted(set(first.fields)))


_CHILD = jsonpath.Child


def _steps(path: Any) -> list[tuple[type | None, Any]]:
    """A path's steps in order, each with how it joins the one before (`.`: Child, `..`:
    Descendants): `a.b[?(...)]` is Child(Child(a, b), filter)."""
    rights: list[tuple[type | None, Any]] = []
    while type(path) is jsonpath.Child or type(path) is jsonpath.Descendants:
        rights.append((type(path), path.right))
        path = path.left
    return [(None, path), *reversed(rights)]


def _root_filter_fields(root_filter: Any) -> tuple[str, ...] | None:
    """`$[?(<condition> && ...)]` whose conditions each read `$.<field>...` and compare it
    with a literal: for a non-empty resource it finds something exactly when every condition
    holds, whichever member of the root is the candidate."""
    fields: set[str] = set()
    for expression in root_filter.expressions:
        if type(expression) is not ext_filter.Expression:
            return None
        if isinstance(expression.value, jsonpath.JSONPath):
            return None
        steps = _steps(expression.target)
        if type(steps[0][1]) is not jsonpath.Root or len(steps) < 2 or steps[1][0] is not _CHILD:
            return None
        first = steps[1][1]
        if type(first) is not jsonpath.Fields or "*" in first.fields:
            return None
        if not all(_local(step) for _join, step in steps[2:]):
            return None
        fields.update(first.fields)
    return tuple(sorted(fields)) if fields else None


def _local(step: Any) -> bool:
    """Whether a step reads only what it is applied to (no `$`, no parent, no named
    operator)."""
    kind = type(step)
    if kind is jsonpath.Child or kind is jsonpath.Descendants:
        return _local(step.left) and _local(step.right)
    if kind is jsonpath.This:  # exactly `@` (the named operators subclass it)
        return True
    if kind is ext_filter.Filter:
        return all(_local(expression) for expression in step.expressions)
    if kind is ext_filter.Expression:
        value = step.value
        return _local(step.target) and (not isinstance(value, jsonpath.JSONPath) or _local(value))
    if kind in _LOCAL_STEPS:
        operands = getattr(step, "operands", None)  # `&&`, `||`
        return operands is None or all(_local(operand) for operand in operands)
    return False
