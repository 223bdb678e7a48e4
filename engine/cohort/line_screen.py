"""Decide from a line's raw bytes whether a cohort run must parse it (pass 2).

Most of an export is Observations, Conditions and Procedures no criterion reads: vital signs,
surveys, encounters' procedures, codes no concept holds. A `LineScreen`, built once per
worker from the compiled criteria and their terminology, lets a line go unparsed (not built
into Python objects) only when parsing it could change nothing the patient's evaluation or
report shows:

- the line is valid JSON (simdjson validates it without building it: a quarter of orjson's
  time; a document simdjson rejects or cannot represent, such as an integer beyond 64 bits,
  is parsed, which reports the problem exactly as without the screen);
- it is an object of a type the record indexes by `code` alone (Observation, Condition,
  Procedure) that no criterion reads without a concept (an atom with `resource:` but no
  `concept:` reads every resource of its types, so those types are always parsed);
- its keys are distinct, include `id` (a string: its `Type/id` takes part in dropping
  duplicates), `subject` (whose `reference` is the patient the line was routed to, so the
  record's "no subject" problem cannot arise) and `code`, and not `contained` nor
  `component` (whose codes the record would classify too);
- its `code` is a CodeableConcept whose codings are all objects with a string `system` the
  mappings know (`Terminology.knows_system`) and a non-empty string `code` belonging to no
  concept at all (`Terminology.concepts_of_coding`: exact codes, prefixes, ICD-10 ranges,
  value sets and local maps alike, concepts of every trial included). Such a resource
  indexes under no concept and adds no data problem. The verdict is kept per distinct
  `code` text (an export has a few hundred), so a line costs one simdjson parse and about
  ten field reads.

A skipped line is still counted, and its `Type/id` still takes part in dropping duplicate
resources. The only other thing a skipped resource could change is the newest data date of
the report (`data_day`): the screen reads the line's dating fields (`data_day` of the
resource, exactly), and the reader parses the skipped lines of the latest day, so that date
is the same too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import simdjson

from engine.evaluate import CompiledCriteria
from engine.normalise import Terminology
from engine.resource_types import CODE_ONLY_TYPES, RESOURCE_TYPES

SCREENABLE_TYPES = CODE_ONLY_TYPES | {"Observation"}
"""Types whose only coded fields are `code` (and, for Observation, components' codes)."""

_REQUIRED_KEYS = frozenset({"resourceType", "id", "subject", "code"})
_REFUSED_KEYS = frozenset({"contained", "component"})

Skipped = tuple[str, str, str]
"""What the screen says of a line it leaves unparsed: its resourceType, `Type/id`, and
`data_day` of it."""

_CACHE_LIMIT = 100_000
"""Verdicts kept per screen (shapes of lines, `code` texts) before they are forgotten."""

_UNSEEN = ("unseen",)
"""What `_plans` gives for a shape not met yet."""

_parsers = threading.local()


def json_checker() -> simdjson.Parser:
    """simdjson's parser (one per thread: a parser is reused, its documents are read one at a
    time): it validates a line as JSON in about a quarter of the time orjson takes to build
    it, and reads a few fields of it lazily."""
    parser: simdjson.Parser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    return parser


@dataclass
class LineScreen:
    """Per-line parse decisions for one set of compiled criteria (see the module docstring)."""

    terminology: Terminology
    types: frozenset[str]
    heads: tuple[bytes, ...]
    """How a line of a type it may skip starts (`{"resourceType":"T",`): any other is parsed."""
    _plans: dict[tuple[str, ...], tuple[str, ...] | None] = field(default_factory=dict)
    """By a line's resourceType and keys: the dating fields to read when it may be skipped."""
    _code_verdicts: dict[bytes, bool] = field(default_factory=dict)
    """By the minified text of a `code`: whether it is inert (see `_inert_code`)."""

    @classmethod
    def from_criteria(cls, criteria: CompiledCriteria) -> LineScreen:
        read_by_type = criteria.types_read_without_concept
        types = frozenset(
            name
            for name in SCREENABLE_TYPES - read_by_type
            if not any(f.container for f in _dating_fields(name))
        )
        heads = tuple(sorted(b'{"resourceType":"%s",' % name.encode() for name in types))
        return cls(criteria.terminology, types, heads)

    def skippable(
        self, text: bytes, own_reference: str, parser: simdjson.Parser | None = None
    ) -> Skipped | None:
        """`(resourceType, Type/id, data day)` when the line need not be parsed, else None.

        `own_reference`: `Patient/<id>` of the patient the line was routed to. `parser`:
        this thread's `json_checker()`, when the caller has it at hand.
        """
        if not text.startswith(self.heads):
            return None
        try:
            document: Any = (parser or json_checker()).parse(text)
        except (ValueError, RuntimeError):  # UnicodeDecodeError is a ValueError
            return None
        # Valid JSON that starts `{"resourceType":"T",`: an object, of a type in `types`
        # (unless a key is repeated, which its plan refuses).
        resource_type = document["resourceType"]
        shape = (resource_type, *document.keys())
        plan = self._plans.get(shape, _UNSEEN)
        if plan is _UNSEEN:
            plan = self._new_plan(shape)
        if plan is None:
            return None
        # The plan has checked that these keys are there.
        if subject_reference(document["subject"]) != own_reference:
            return None
        resource_id = document["id"]
        code = document["code"]
        if type(resource_id) is not str or type(code) is not simdjson.Object:
            return None
        code_text = cast(bytes, code.mini)  # bytes, whatever the stubs say
        inert = self._code_verdicts.get(code_text)
        if inert is None:
            inert = self._new_code_verdict(code_text)
        if not inert:
            return None
        newest = ""
        for name in plan:
            value = document[name]
            if type(value) is simdjson.Object:
                period = value.as_dict()
                value = period.get("end") or period.get("start")
            if type(value) is str and len(value) >= 10 and value[:10] > newest:
                newest = value[:10]
        return resource_type, f"{resource_type}/{resource_id}", newest

    def _new_plan(self, shape: tuple[str, ...]) -> tuple[str, ...] | None:
        if len(self._plans) >= _CACHE_LIMIT:
            self._plans.clear()
        plan = self._plans[shape] = self._plan(shape)
        return plan

    def _new_code_verdict(self, code_text: bytes) -> bool:
        if len(self._code_verdicts) >= _CACHE_LIMIT:
            self._code_verdicts.clear()
        inert = self._code_verdicts[code_text] = self._inert_code(orjson.loads(code_text))
        return inert

    def _plan(self, shape: tuple[str, ...]) -> tuple[str, ...] | None:
        """The dating fields a line of this type and these keys holds, or None when a line
        of this shape must be parsed."""
        resource_type, keys = shape[0], frozenset(shape[1:])
        if resource_type not in self.types or len(keys) != len(shape) - 1:
            return None  # a type never skipped, or a key given twice
        if not keys.issuperset(_REQUIRED_KEYS) or keys & _REFUSED_KEYS:
            return None
        return tuple(f.name for f in _dating_fields(resource_type) if f.name in keys)

    def _inert_code(self, code: Any) -> bool:
        """Whether a `code` indexes under no concept and adds no data problem: a
        CodeableConcept whose codings are all in known systems and of no concept."""
        codings = code.get("coding") if type(code) is dict else None
        if type(codings) is not list or not codings:
            return False
        terminology = self.terminology
        for coding in codings:
            if type(coding) is not dict:
                return False
            system, value = coding.get("system"), coding.get("code")
            if type(system) is not str or type(value) is not str or not value:
                return False
            if not terminology.knows_system(system):
                return False
            if terminology.concepts_of_coding(system, value):
                return False
        return True


def subject_reference(holder: Any) -> Any:
    """The `reference` of a patient field read through simdjson, as orjson would read it:
    simdjson gives the first of a repeated key, orjson the last, so an object of more than
    one key is converted whole (its last `reference` wins). None when it has none."""
    if type(holder) is not simdjson.Object:
        return None
    if len(holder) == 1:
        return holder.get("reference")
    return holder.as_dict().get("reference")


def _dating_fields(resource_type: str) -> tuple[Any, ...]:
    known = RESOURCE_TYPES[resource_type]
    return (*known.start_fields, *known.end_fields)
