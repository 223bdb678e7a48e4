"""Decide from a line's raw bytes whether a cohort run must parse it (pass 2).

Most of an export is Observations no criterion reads: vital signs, surveys, panels of codes
no concept holds. A `LineScreen`, built once per worker from the compiled criteria and their
terminology, lets a line go unparsed only when parsing it could change nothing the patient's
evaluation or report shows:

- its type is one the record indexes by `code` alone (Observation, Condition, Procedure) and
  no criterion reads it without a concept (an atom with `resource:` but no `concept:` reads
  every resource of its types, so those types are always parsed);
- it starts `{"resourceType":"T","id":"X",` (so its label, used to drop duplicates, is read
  exactly), ends with `}`, has no backslash (no escaped text to misread), no `contained`
  resources, and exactly one `"subject":` which refers to the patient it was routed to (the
  record's "no subject" problem cannot arise);
- it has no components and exactly one `"code":{`, its code: a CodeableConcept whose
  codings are all `{"system":"S","code":"C"...}`, each in a system the mappings know
  (`Terminology.knows_system`) and belonging to no concept at all
  (`Terminology.concepts_of_coding`: exact codes, prefixes, ICD-10 ranges, value sets and
  local maps alike). Such a resource indexes under no concept and adds no data problem.

Whatever is in doubt is parsed. A skipped line is still counted, still checked to be a whole
JSON object line (ends with `}`; a line that does not is parsed, which reports why), and its
`Type/id` still takes part in dropping duplicate resources. The only other thing a skipped
resource could change is the newest data date of the report (`data_day`): the screen reads
the line's dating fields from its text (`dating_day`), an upper bound, and the reader parses
skipped lines from the highest bound down until no skipped line can beat the latest day
found, so that date is exact too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.criteria.model import ResourceAtom, iter_atoms
from engine.evaluate import CompiledCriteria
from engine.normalise import Terminology
from engine.resource_types import CODE_ONLY_TYPES, RESOURCE_TYPES

SCREENABLE_TYPES = CODE_ONLY_TYPES | {"Observation"}
"""Types whose only coded fields are `code` (and, for Observation, components' codes)."""

_HEAD = re.compile(rb'\{"resourceType":"([A-Za-z]{1,64})","id":"([A-Za-z0-9\-.]{1,64})",')
_CODE_FIELD = re.compile(rb'"code":\{"coding":\[(\{[^\[\]]*\})\]')
_CODING = re.compile(rb'\{"system":"([^"]*)","code":"([^"]*)"')


@dataclass
class LineScreen:
    """Per-line parse decisions for one set of compiled criteria (see the module docstring)."""

    terminology: Terminology
    types: frozenset[bytes]
    _dating: dict[bytes, tuple[re.Pattern[bytes], re.Pattern[bytes], re.Pattern[bytes] | None]] = (
        field(default_factory=dict)
    )
    _coding_verdicts: dict[tuple[bytes, bytes], bool] = field(default_factory=dict)

    @classmethod
    def from_criteria(cls, criteria: CompiledCriteria) -> LineScreen:
        read_by_type = {
            resource_type
            for compiled in criteria.criteria
            for atom in iter_atoms(compiled.criterion.expression)
            if isinstance(atom, ResourceAtom) and atom.concept is None
            for resource_type in atom.resource_types
        }
        types = frozenset(t.encode() for t in SCREENABLE_TYPES - read_by_type)
        screen = cls(criteria.terminology, types)
        for name in types:
            known = RESOURCE_TYPES[name.decode()]
            fields = (*known.start_fields, *known.end_fields)
            plain = [re.escape(f.name) for f in fields if not f.is_period and not f.container]
            periods = [re.escape(f.name) for f in fields if f.is_period and not f.container]
            if any(f.container for f in fields):
                continue  # a dating field inside another: not read from text, never skipped
            keys = re.compile(rb'"(?:%s)":' % "|".join(plain + periods).encode())
            plain_pattern = re.compile(rb'"(?:%s)":"([^"]*)"' % "|".join(plain).encode())
            period_pattern = (
                re.compile(rb'"(?:%s)":\{([^{}]*)\}' % "|".join(periods).encode())
                if periods
                else None
            )
            screen._dating[name] = (keys, plain_pattern, period_pattern)
        return screen

    def skippable(self, text: bytes, subject: bytes) -> tuple[str, str] | None:
        """`(Type/id, dating day bound)` when the line need not be parsed, else None.

        `subject`: `"subject":{"reference":"Patient/<id>"` of the patient the line was routed
        to. The bound is at least what `data_day` gives for the parsed resource.
        """
        head = _HEAD.match(text)
        if head is None:
            return None
        resource_type = head.group(1)
        dating = self._dating.get(resource_type)
        if dating is None or not text.endswith(b"}") or b"\\" in text:
            return None
        if b'"contained"' in text or text.count(b'"subject":') != 1 or subject not in text:
            return None
        # One `code` (the resource's own: no components, whose codes would be read too).
        code_fields = _CODE_FIELD.findall(text)
        if len(code_fields) != 1 or text.count(b'"code":{') != 1 or b'"component"' in text:
            return None
        for codings in code_fields:
            found = _CODING.findall(codings)
            if not found or len(found) != codings.count(b"{"):
                return None
            for system, code in found:
                if not self._inert(system, code):
                    return None
        day = _dating_day(text, *dating)
        if day is None:
            return None
        return f"{resource_type.decode()}/{head.group(2).decode()}", day

    def _inert(self, system: bytes, code: bytes) -> bool:
        """Whether a coding is in a known system and belongs to no concept."""
        key = (system, code)
        verdict = self._coding_verdicts.get(key)
        if verdict is None:
            system_text, code_text = system.decode(), code.decode()
            verdict = (
                bool(code_text)
                and self.terminology.knows_system(system_text)
                and not self.terminology.concepts_of_coding(system_text, code_text)
            )
            self._coding_verdicts[key] = verdict
        return verdict


_PERIOD_BOUND = re.compile(rb'"(?:start|end)":"([^"]*)"')


def _dating_day(
    text: bytes,
    keys: re.Pattern[bytes],
    plain: re.Pattern[bytes],
    period: re.Pattern[bytes] | None,
) -> str | None:
    """An upper bound of `data_day` of the line's resource, read from its text ('' when no
    dating field holds ten characters); None when some dating field's value is not a plain
    string (or, for a Period, an object without nested objects)."""
    values = plain.findall(text)
    periods = period.findall(text) if period is not None else []
    if len(values) + len(periods) != len(keys.findall(text)):
        return None
    newest = b""
    for value in values:
        if len(value) >= 10 and value[:10] > newest:
            newest = value[:10]
    if periods:
        for inside in periods:
            for value in _PERIOD_BOUND.findall(inside):
                if len(value) >= 10 and value[:10] > newest:
                    newest = value[:10]
    try:
        return newest.decode()
    except UnicodeDecodeError:
        return None
