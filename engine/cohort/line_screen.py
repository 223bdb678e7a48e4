"""Decide from a line's raw bytes whether a cohort run must parse it (pass 2).

Most of an export is Observations, Conditions and Procedures no criterion reads: vital signs,
surveys, encounters' procedures, codes no concept holds. A `LineScreen`, built once per
worker from the compiled criteria and their terminology, lets a line go unparsed (not built
into Python objects) only when parsing it could change nothing the patient's evaluation or
report shows:

- the line is valid JSON: msgspec reads the fields below in one call (into a Struct of
  only those fields: the rest of the line is checked as JSON syntax and skipped), and, for
  a line the checks below would skip, simdjson validates the whole of it (msgspec does not
  check the UTF-8 of what it skips, nor whether a number it skips overflows a double, both
  of which orjson rejects; simdjson rejects both, in about a quarter of orjson's time);
  when the patient's runs of lines hold nothing that could be such a number (one SIMD
  search of each run, `line_validator`: half simdjson's time), only a line that is not all
  ASCII is validated so. Nesting deeper than orjson reads (1,024 levels) msgspec refuses
  (RecursionError, under Python's default recursion limit; where the limit was raised, every
  line is validated by simdjson: `nesting_checked_by_msgspec`). A line either rejects, or
  cannot represent (an integer beyond 64 bits, nesting msgspec refuses), is parsed, which
  reports the problem exactly as without the screen;
- it is an object of a type the record indexes by one coded field alone: `code`
  (Observation, Condition, Procedure) or `medicationCodeableConcept` (MedicationRequest,
  -Administration, -Statement), of a type no criterion reads without a concept (an atom
  with `resource:` but no `concept:` reads every resource of its types, so those types are
  always parsed). msgspec decodes a line into the Struct of its type (one per type, tagged
  by `resourceType`: only that type's fields are read);
- it has an `id` (a string, not empty: its `Type/id` takes part in dropping duplicates; a
  resource with an empty id is labelled by its position, as one without an id), a `subject`
  (whose `reference` is the patient the line was routed to, so the record's "no subject"
  problem cannot arise) and its coded field, and no `contained` (whose resources the
  record would index too). A medication line without a medicationCodeableConcept is coded
  by the Medication its `medicationReference` resolves to: it is skipped only through a
  shared Medication whose `code` (and each ingredient's `itemCodeableConcept`) the rule below
  finds inert (`LineScreen._shared_medication`:
  a plain `Medication/<id>` of the export's shared resources, written in the line as the
  search for shared references finds it, so that the record holds that Medication skipped
  or not; a patient holding a resource of that `Type/id` of their own is read again without
  the screen). A key given twice is read as orjson reads it: msgspec, like orjson, keeps
  the last value (and unescapes keys as orjson does);
- its coded field, and the `code` of each of an Observation's `component`s when it has any
  (a non-empty list of objects: the record classifies them as it does the code), is
  a CodeableConcept whose codings are all objects with a string `system` the mappings know
  (`Terminology.knows_system`) and a non-empty string `code` belonging to no concept the
  criteria read (`Terminology.concepts_of_coding`: exact codes, prefixes, ICD-10 ranges,
  value sets and local maps alike; `CompiledCriteria.concepts_read`: atoms' concepts and
  computed values' inputs). Such a resource indexes under no concept a criterion looks up
  and adds no data problem; the re-run store keeps only those concepts too, and names them
  (a re-run reading another evaluates the partition from the input). The verdict is kept
  per distinct `code` text (an export has a few hundred), so a line costs one msgspec
  decode, its share of a search of its run (`plain_json`) and a few attribute reads.
  Components matter: Synthea's survey Observations (PRAPARE, LOINC 93025-5, 21
  components each) are skipped only so.

A skipped line is still counted, and its `Type/id` still takes part in dropping duplicate
resources. The only other thing a skipped resource could change is the newest data date of
the report (`data_day`): the screen reads the line's dating fields (`data_day` of the
resource, exactly; `dispenseRequest.validityPeriod` through a Struct of `dispenseRequest`,
whose `null` or other JSON type has the line parsed), and the reader parses the skipped
lines of the latest day, so that date is the same too.
"""

from __future__ import annotations

import functools
import operator
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import hyperscan
import msgspec
import orjson
import simdjson

from engine.cohort.prefilter import PREVIEW_TYPES
from engine.evaluate import CompiledCriteria
from engine.normalise import Terminology
from engine.resource_types import CODE_ONLY_TYPES, MEDICATION_TYPES, RECORD_TYPES, RESOURCE_TYPES
from engine.sources.ndjson import DEFAULT_PATIENT_FIELDS, PARSED, PATIENT_FIELDS, SHARED_TYPES
from engine.sources.references import FHIR_ID

SCREENABLE_TYPES = CODE_ONLY_TYPES | {"Observation"} | set(MEDICATION_TYPES)
"""Types whose only coded fields are `code` (and, for Observation, components' codes), or,
for the medication types, `medicationCodeableConcept` (or the Medication that
`medicationReference` points to: screened through a shared Medication's code)."""

Skipped = tuple[str, str, str]
"""What the screen says of a line it leaves unparsed: its resourceType, `Type/id`, and
`data_day` of it."""

_CACHE_LIMIT = 100_000
"""`code` verdicts kept per screen before they are forgotten."""

_SHARED_MEDICATION = re.compile(f"Medication/{FHIR_ID.pattern}")
"""A reference to a shared Medication as the search of a patient's lines for references to
shared resources finds it (`ndjson_partitions._shared_reference_pattern`): its `Type/id`."""

_parsers = threading.local()

UNDECODABLE: tuple[type[Exception], ...] = (msgspec.DecodeError, RecursionError)
"""What msgspec raises for a line it does not decode: DecodeError, and RecursionError for
nesting deeper than the interpreter's recursion limit lets it go (about 1,000 levels, where
orjson allows 1,024: a line msgspec gives up on may still be one orjson parses). Either way
the line is parsed, which accepts it or reports it as without the screen."""


def json_checker() -> simdjson.Parser:
    """simdjson's parser (one per thread: a parser is reused, its documents are read one at a
    time): it validates a line as JSON in about a quarter of the time orjson takes to build
    it (a document it gives is dropped before the next parse)."""
    parser: simdjson.Parser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    return parser


Validator = Callable[[bytes], object]
"""What validates a line msgspec has decoded as orjson would read it (raises ValueError or
RuntimeError for a line orjson rejects): simdjson's parse (`json_checker().parse`)."""

_OVERFLOW_PATTERNS = (
    # An exponent of three digits or more where a number ends: inside an object or an array a
    # JSON number ends before white space, `,`, `]` or `}`, which the digits of a
    # hexadecimal id or a date never are (they go on, or end at `"`, `-` or a letter).
    rb"[0-9][eE][+\-]?[0-9]{3,}[\s,\]}]",
    # 210 digits in a row: with an exponent of two digits at most, only a number whose
    # integer part is that long reaches 1.8e308 (209 digits times 1e99 stay below it).
    rb"[0-9]{210}",
)
"""Where a number that overflows a double may be: every such number matches one of these
(Hyperscan regular expressions, `_OVERFLOW`)."""


def _overflow_database() -> hyperscan.Database | None:
    """`_OVERFLOW_PATTERNS` compiled; None where Hyperscan cannot run (a processor without
    the instructions it needs: then every line is validated by simdjson, as without it)."""
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(
            expressions=list(_OVERFLOW_PATTERNS),
            ids=list(range(len(_OVERFLOW_PATTERNS))),
            elements=len(_OVERFLOW_PATTERNS),
            flags=hyperscan.HS_FLAG_SINGLEMATCH,
        )
    except hyperscan.error:
        return None
    return database


_OVERFLOW = _overflow_database()
"""`_OVERFLOW_PATTERNS` compiled (6 ms, once per process: forked workers inherit it)."""
_scratches = threading.local()


def _stop(*_match: object) -> bool:
    return True  # the first match ends the scan (hyperscan.ScanTerminated)


def plain_json(text: bytes) -> bool:
    """Whether orjson accepts every line of `text` that msgspec decodes (as the screen does:
    into a Struct of some fields, the rest checked as JSON syntax and skipped).

    msgspec's skip lets through two things orjson rejects: invalid UTF-8 and a number that
    overflows a double (it checks escapes, surrogates, control characters, the number
    grammar, literals and nesting as orjson does: `tests/cohort/test_plain_json.py`). Text
    all ASCII holds no invalid UTF-8 (`bytes.isascii`, a word at a time), and a number that
    overflows has an exponent of three digits or more, or an integer part of 210 digits or
    more (`_OVERFLOW_PATTERNS`, searched by Hyperscan in SIMD: about 0.3 µs for a 1 KB line
    against simdjson's 0.63 for validating it, and no call per line when `text` is a run of
    lines). False when in doubt: a date or a value with three decimals matches neither, an
    export's lines almost never do.
    """
    return text.isascii() and not _may_overflow(text)


def _may_overflow(text: bytes) -> bool:
    """Whether `text` may hold a number that overflows a double (`_OVERFLOW_PATTERNS`;
    always, where Hyperscan cannot run)."""
    if _OVERFLOW is None:
        return True
    if not text:
        return False
    scratch: hyperscan.Scratch | None = getattr(_scratches, "scratch", None)
    if scratch is None:
        scratch = _scratches.scratch = hyperscan.Scratch(_OVERFLOW)
    try:
        _OVERFLOW.scan(text, match_event_handler=_stop, scratch=scratch)
    except hyperscan.ScanTerminated:
        return True
    return False


ORJSON_MAX_DEPTH = 1_024
"""The deepest nesting orjson reads (arrays and objects; simdjson reads as deep, but an object
nested 1,024 deep it rejects: such a line is parsed, and orjson decides)."""


def nesting_checked_by_msgspec() -> bool:
    """Whether msgspec, which gives up on nesting as deep as the interpreter's recursion limit
    (RecursionError: `UNDECODABLE`), gives up before orjson does: yes under Python's default
    limit of 1,000. A process that raised the limit (Hypothesis does, while it runs a test)
    could have msgspec decode a line nested deeper than orjson reads, which the run reports
    as not valid JSON: there every line msgspec decodes is validated by simdjson too."""
    return sys.getrecursionlimit() <= ORJSON_MAX_DEPTH


def _unless_ascii(parse: Validator, text: bytes) -> object:
    """`parse(text)` for a line that is not all ASCII (where invalid UTF-8 may be)."""
    return None if text.isascii() else parse(text)


def line_validator(texts: Iterable[bytes]) -> Validator | None:
    """What must still validate the lines of `texts` (a patient's runs of lines) that msgspec
    decodes, for them to be lines orjson accepts: nothing (None) when every text is
    `plain_json`; simdjson for the lines that are not ASCII when no text may hold a number
    that overflows (Synthea's practitioner names, "Dr. Marisol435 Tórrez28", put a few
    non-ASCII lines in a quarter of its patients' runs); else simdjson for every line
    (this thread's `json_checker`), as also in a process whose recursion limit lets msgspec
    nest deeper than orjson reads (`nesting_checked_by_msgspec`)."""
    if not nesting_checked_by_msgspec():
        return json_checker().parse
    ascii = True
    for text in texts:
        if _may_overflow(text):
            return json_checker().parse
        if ascii and not text.isascii():
            ascii = False
    if ascii:
        return None
    return functools.partial(_unless_ascii, json_checker().parse)


def _dating_fields(resource_type: str) -> tuple[Any, ...]:
    known = RESOURCE_TYPES[resource_type]
    return (*known.start_fields, *known.end_fields)


def _getter(*names: str) -> Callable[[Any], tuple[Any, ...]]:
    """The values of these attributes, always as a tuple (`operator.attrgetter` gives one
    value bare)."""
    if not names:
        return lambda _line: ()
    if len(names) == 1:
        only = operator.attrgetter(names[0])
        return lambda line: (only(line),)
    return operator.attrgetter(*names)


class _Reference(msgspec.Struct, gc=False):
    reference: Any = None


class _Period(msgspec.Struct, gc=False):
    start: Any = None
    end: Any = None


class _Component(msgspec.Struct, gc=False):
    code: msgspec.Raw = msgspec.Raw()


_code_of: Callable[[_Component], msgspec.Raw] = operator.attrgetter("code")
"""A component's `code` (its text; empty when absent)."""


class _Subject(msgspec.Struct, gc=False):
    reference: str


class _ScreenedLine(msgspec.Struct, tag_field="resourceType", kw_only=True, gc=False):
    """What the screen reads of a line of any type it may skip; the rest is skipped (checked
    as JSON syntax only). Each type has its own Struct (`_line_struct`), tagged by its
    `resourceType` (a line whose resourceType, or whose repeated resourceType, names another
    type fails the decoding).

    The checks msgspec can make are made in its decoding, which fails (the line is parsed)
    when a line lacks `id` (a string), `subject` (an object with a string `reference`) or
    its coded field (a medication type's may be absent: then its `medicationReference`
    decides), or has `contained` (any value, `null` too, as an `Unset` field), or gives a
    field another JSON type than these (an Observation's `component`: a list of objects)."""

    id: str
    subject: _Subject
    contained: msgspec.UnsetType = msgspec.UNSET


_DatingValue = str | _Period | None
"""A dating field as the screen reads it (a dateTime, instant or date: a string; a Period)."""


def _line_struct(resource_type: str) -> Any:
    """The Struct of a type's lines: `_ScreenedLine`, its coded field as `code` (for a
    medication type, `medicationCodeableConcept`), Observation's `component`, a medication
    type's `medicationReference` (a Raw, read only when its coded field is absent), and its
    dating fields (a field inside a container, such as
    `dispenseRequest.validityPeriod`, through a Struct of that container). A field a type
    lacks reads as absent (a class attribute: `component` UNSET, `medicationReference` an
    empty Raw)."""
    medication = RESOURCE_TYPES[resource_type].medication
    coded_field = "medicationCodeableConcept" if medication else "code"
    # A medication line may lack its medicationCodeableConcept (an empty Raw): then its
    # `medicationReference` decides (`LineScreen._shared_medication`).
    code_default = msgspec.Raw() if medication else msgspec.NODEFAULT
    fields: list[tuple[str, Any, Any]] = [
        ("code", msgspec.Raw, msgspec.field(default=code_default, name=coded_field))
    ]
    # what a skipped line of the type says (its type, `Type/`, its dating fields' values),
    # read from its Struct (a class attribute: no look-up by type per line)
    namespace: dict[str, Any] = {
        "screened": (resource_type, f"{resource_type}/", _dating_getter(resource_type))
    }
    if resource_type == "Observation":
        fields.append(("component", list[_Component] | msgspec.UnsetType, msgspec.UNSET))
    else:
        namespace["component"] = msgspec.UNSET
    if medication:
        fields.append(("medicationReference", msgspec.Raw, msgspec.Raw()))
    containers: dict[str, list[str]] = {}
    for dating_field in _dating_fields(resource_type):
        if dating_field.container is None:
            fields.append((dating_field.name, _DatingValue, None))
        else:
            containers.setdefault(dating_field.container, []).append(dating_field.name)
    for container, names in containers.items():
        holder = msgspec.defstruct(
            f"_{container}", [(name, _DatingValue, None) for name in names], frozen=True, gc=False
        )
        # Absent: an empty holder, so that `container.name` reads None (`null`, or any other
        # JSON type, fails the decoding: the line is parsed).
        fields.append((container, holder, holder()))
    return msgspec.defstruct(
        f"_{resource_type}Line",
        fields,
        bases=(_ScreenedLine,),
        tag=resource_type,
        namespace=namespace,
        kw_only=True,
        gc=False,
    )


def _dating_getter(resource_type: str) -> Callable[[Any], tuple[Any, ...]]:
    """A decoded line's dating fields' values (`container.name` for a field inside a
    container), always as a tuple."""
    return _getter(*(f.path for f in _dating_fields(resource_type)))


_LINE_STRUCTS = {name: _line_struct(name) for name in sorted(SCREENABLE_TYPES)}


_UNSET = msgspec.UNSET


def _nothing(_text: bytes) -> NoReturn:
    raise msgspec.DecodeError("no type to screen")


class ScreenedLines(Protocol):
    """A reader of one patient's lines (pass 2's `_PatientLines`), as `LineScreen.screen_lines`
    notes in it the lines it leaves unparsed."""

    @property
    def own_reference(self) -> str:
        """`Patient/<id>` of the patient the lines were routed to."""

    @property
    def validate(self) -> Validator | None:
        """What validates a line msgspec decoded (`line_validator` of the patient's runs: None
        when they are `plain_json`)."""

    @property
    def shared(self) -> Mapping[str, bytes] | None:
        """The export's shared resources by `Type/id` (None: a medication line without a
        medicationCodeableConcept is parsed)."""

    @property
    def relied(self) -> list[str] | None:
        """The `Medication/<id>` a skipped medication line was classified by are added here
        (the reader checks that the patient has no resource of their own with that `Type/id`);
        None: such a line is parsed."""

    @property
    def seen(self) -> dict[str, int]:
        """The position of the first line of each `Type/id` read so far, parsed or skipped."""

    @property
    def referring(self) -> frozenset[int]:
        """The positions of the lines that may refer to a shared resource."""

    @property
    def kept_referring(self) -> list[tuple[int, bytes]]:
        """Lines of `referring` read so far, parsed or skipped (position, text)."""

    newest: tuple[str, int, bytes]
    """The day, position and text of the first skipped line of the latest data day."""
    newest_in_preview: tuple[str, int, bytes]
    """The same of the skipped lines of the preview's types (`PREVIEW_TYPES`)."""
    skipped: bool
    """Whether a line was left unparsed."""

    def parse_unscreened(self, position: int, text: bytes) -> None:
        """Parse and check the line at `position` (the screen leaves it to parsing)."""

    def repeated(self, position: int, label: str, earlier: int, check: str) -> None:
        """Report the line at `position`, a repeat of the one at `earlier`."""


class _OneLine:
    """A reader of one line (`LineScreen.skippable_started`)."""

    def __init__(
        self,
        own_reference: str,
        validate: Validator | None,
        shared: Mapping[str, bytes] | None,
        relied: list[str] | None,
    ) -> None:
        self.own_reference = own_reference
        self.validate = validate
        self.shared = shared
        self.relied = relied
        self.seen: dict[str, int] = {}
        self.referring: frozenset[int] = frozenset()
        self.kept_referring: list[tuple[int, bytes]] = []
        self.newest: tuple[str, int, bytes] = ("", 0, b"")
        self.newest_in_preview: tuple[str, int, bytes] = ("", 0, b"")
        self.skipped = False

    def parse_unscreened(self, position: int, text: bytes) -> None:
        """Left to parsing: not skipped."""

    def repeated(self, position: int, label: str, earlier: int, check: str) -> None:
        raise AssertionError("one line repeats no other")  # pragma: no cover


@dataclass
class LineScreen:
    """Per-line parse decisions for one set of compiled criteria (see the module docstring)."""

    terminology: Terminology
    concepts_read: frozenset[str]
    """The concepts the criteria may look up in a record (`CompiledCriteria.concepts_read`):
    a code of any other concept is as inert as a code of none."""
    types: frozenset[str]
    heads: tuple[bytes, ...]
    """How a line of a type it may skip starts (`{"resourceType":"T",`): any other is parsed."""
    decode: Callable[[bytes], Any]
    """A line's `_ScreenedLine` (the Struct of its type); msgspec.DecodeError for a line
    that is not an object of one of `types` with fields of the types the Structs read."""
    run_heads: frozenset[bytes] = frozenset()
    """How pass 1's runs of one type start (`{"resourceType":"T"`) for the types it may skip:
    `skippable_started` takes their lines."""
    decode_kept: Callable[[bytes], Any] = _nothing
    """A settled patient's line of a type the run keeps (but Patient): its `_KeptLine` (the
    Struct of its type); msgspec.DecodeError for any other line, or one whose patient field
    is not an object with a string `reference` (`decode_checked_line` then decides)."""
    _code_verdicts: dict[bytes, bool] = field(default_factory=dict)
    """By the text of a `code`: whether it is inert (see `_inert_code`)."""
    _medication_verdicts: dict[bytes, bool] = field(default_factory=dict)
    """By the text of a shared Medication: whether it is one with an inert `code`."""
    _component_verdicts: dict[bytes, bool] = field(default_factory=dict)
    """By the texts of an Observation's components' codes, joined by NUL (`_inert_components`):
    whether they are all inert."""

    @classmethod
    def from_criteria(cls, criteria: CompiledCriteria) -> LineScreen:
        read_by_type = criteria.types_read_without_concept
        types = frozenset(SCREENABLE_TYPES - read_by_type)
        heads = tuple(sorted(b'{"resourceType":"%s",' % name.encode() for name in types))
        structs = {name: _LINE_STRUCTS[name] for name in sorted(types)}
        union = functools.reduce(operator.or_, structs.values()) if structs else None
        decode = msgspec.json.Decoder(union).decode if union is not None else _nothing
        run_heads = frozenset(b'{"resourceType":"%s"' % name.encode() for name in types)
        kept = sorted((RECORD_TYPES | criteria.resource_types) - SHARED_TYPES - {"Patient"})
        kept_union = functools.reduce(operator.or_, map(_kept_line_struct, kept))
        decode_kept = msgspec.json.Decoder(kept_union).decode
        return cls(
            criteria.terminology,
            criteria.concepts_read,
            types,
            heads,
            decode,
            run_heads,
            decode_kept,
        )

    def skippable(
        self,
        text: bytes,
        own_reference: str,
        shared: Mapping[str, bytes] | None = None,
        relied: list[str] | None = None,
    ) -> Skipped | None:
        """`(resourceType, Type/id, data day)` when the line need not be parsed, else None.

        `own_reference`: `Patient/<id>` of the patient the line was routed to. `shared` and
        `relied`: the export's shared resources by `Type/id`, and the list to which the
        `Medication/<id>` a skipped medication line refers to is added (a line without a
        medicationCodeableConcept is skipped through its shared Medication's code, which
        holds only while the patient has no resource of their own with that `Type/id`:
        the caller checks; without them, such a line is parsed).
        """
        if not text.startswith(self.heads):
            return None
        return self.skippable_started(text, own_reference, shared, relied)

    def skippable_started(
        self,
        text: bytes,
        own_reference: str,
        shared: Mapping[str, bytes] | None = None,
        relied: list[str] | None = None,
    ) -> Skipped | None:
        """`skippable` of a line known to start as a type it may skip does (one of
        `run_heads`: a run of such lines from pass 1), without looking at its start again.
        Exact for any line: the start only spares lines of other types their decoding, which
        checks the type (`resourceType`, repeated or not, wherever it is). The screen of one
        line through `screen_lines`, the one pass 2 runs."""
        line = _OneLine(own_reference, line_validator((text,)), shared, relied)
        self.screen_lines(line, ((0, text),), True)
        if not line.skipped:
            return None
        label = next(iter(line.seen))
        return label.partition("/")[0], label, line.newest[0]

    def screen_lines(
        self, reader: ScreenedLines, numbered: Iterable[tuple[int, bytes]], started: bool
    ) -> None:
        """Screen a patient's lines (position, text) in order: a line that need not be parsed
        is noted in `reader` (see `ScreenedLines`), any other goes to its
        `parse_unscreened`. `started`: every line is known to start as a type the screen
        may skip does (one of `run_heads`: a run of such lines from pass 1), so their start
        is not looked at (the decoding checks the type, wherever `resourceType` is); else a
        line that does not start as one of `heads` does is parsed.

        One loop for every line (no call, and no verdict to build, per line): a line is
        skipped as the module docstring says. A skipped line's `Type/id` takes part in
        dropping duplicates (`reader.seen`; a repeat is reported, `reader.repeated`), the
        first of its latest data day (of all, and of the preview's types) is noted
        (`reader.newest`, `reader.newest_in_preview`: the reader parses it), one that may
        refer to a shared resource (`reader.referring`) is kept in `reader.kept_referring`.
        """
        parse = reader.parse_unscreened
        heads = self.heads
        decode = self.decode
        verdicts = self._code_verdicts
        own_reference = reader.own_reference
        validate = reader.validate
        seen = reader.seen
        referring = reader.referring
        shared = reader.shared
        relied = reader.relied
        # The days of the newest skipped lines so far (of all, and of the preview's types),
        # kept here and written back with their lines only when a later day comes.
        newest_day = reader.newest[0]
        newest_in_preview_day = reader.newest_in_preview[0]
        skipped = False
        for position, text in numbered:
            if not started and not text.startswith(heads):
                parse(position, text)
                continue
            try:
                line = decode(text)
            except UNDECODABLE:  # not a JSON object, a field of another type, deep nesting
                parse(position, text)
                continue
            if line.subject.reference != own_reference or not line.id:
                parse(position, text)  # (an empty id labels no resource: parsing decides)
                continue
            code_text = bytes(line.code)
            inert = verdicts.get(code_text)
            if inert is None:
                inert = (
                    self._new_code_verdict(code_text)
                    if code_text  # else a medication line without a medicationCodeableConcept
                    else self._shared_medication(line.medicationReference, text, shared, relied)
                )
            if not inert or (
                line.component is not _UNSET and not self._inert_components(line.component)
            ):
                parse(position, text)
                continue
            if validate is not None:
                try:  # all of the line, as orjson would check it (UTF-8, numbers that overflow)
                    validate(text)
                except (ValueError, RuntimeError):  # UnicodeDecodeError is a ValueError
                    parse(position, text)
                    continue
            resource_type, label_head, dating = line.screened
            # `data_day`: the latest first ten characters of the values at least ten long,
            # which are those of the latest such value (a string's order is its prefix's first);
            # only a value later than the preview's newest day can change a newest day (below).
            newest = newest_in_preview_day
            for value in dating(line):
                if type(value) is str:
                    if value > newest and len(value) >= 10:
                        newest = value
                elif value is not None:  # a Period: its end, else its start
                    value = value.end or value.start
                    if type(value) is str and value > newest and len(value) >= 10:
                        newest = value
            label = label_head + line.id
            earlier = seen.setdefault(label, position)
            if earlier != position:
                reader.repeated(position, label, earlier, PARSED)
                continue
            skipped = True
            # No later day than either newest day unless later than the preview's, which is
            # never later than the other (a day is taken for both or for all's alone): most
            # lines then skip taking their day.
            if newest > newest_in_preview_day:
                day = newest[:10]
                if day > newest_day:
                    newest_day = day
                    reader.newest = (day, position, text)
                if day > newest_in_preview_day and resource_type in PREVIEW_TYPES:
                    newest_in_preview_day = day
                    reader.newest_in_preview = (day, position, text)
            if position in referring:
                reader.kept_referring.append((position, text))
        if skipped:
            reader.skipped = True

    def _inert_components(self, components: list[_Component]) -> bool:
        """Whether an Observation's `component` (a list of objects with a `code`) is one the
        record classifies under no concept read: not empty, and every code inert.

        Kept per list of the components' codes' texts, joined by NUL (a PRAPARE survey has 21
        components: one look-up instead of 21): no JSON text msgspec decodes holds a NUL (a
        control character, invalid in a string too), so a key is the list of one sequence of
        texts only (an absent `code`, an empty text, among them)."""
        if not components:  # `[]`: the record classifies the resource field by field
            return False
        key = b"\x00".join(map(_code_of, components))
        verdicts = self._component_verdicts
        inert = verdicts.get(key)
        if inert is None:
            if len(verdicts) >= _CACHE_LIMIT:
                verdicts.clear()
            inert = verdicts[key] = self._every_code_inert(components)
        return inert

    def _every_code_inert(self, components: list[_Component]) -> bool:
        """Whether every component's `code` is inert (classified as the record would)."""
        verdicts = self._code_verdicts
        for component in components:
            code_text = bytes(component.code)
            inert = verdicts.get(code_text) if code_text else False
            if inert is None:
                inert = self._new_code_verdict(code_text)
            if not inert:
                return False
        return True

    def _new_code_verdict(self, code_text: bytes) -> bool:
        if len(self._code_verdicts) >= _CACHE_LIMIT:
            self._code_verdicts.clear()
        try:
            code = orjson.loads(code_text)
        except orjson.JSONDecodeError:  # msgspec does not check what it keeps Raw: parse it
            code = None
        inert = self._code_verdicts[code_text] = self._inert_code(code)
        return inert

    def _shared_medication(
        self,
        reference: msgspec.Raw,
        text: bytes,
        shared: Mapping[str, bytes] | None,
        relied: list[str] | None,
    ) -> bool:
        """Whether a medication line without a medicationCodeableConcept refers, in its
        `medicationReference`, to a shared Medication whose `code` is inert (then its
        `Medication/<id>` is added to `relied`). The record classifies such a line by the
        resource its reference resolves to: the shared Medication `finish` adds to the
        patient's resources when the literal `"reference":"Medication/<id>"` is in a line of
        theirs (this one: the search of the patient's lines finds it, skipped or not) and
        no resource of theirs has that `Type/id` (the caller checks `relied`)."""
        if shared is None or relied is None or not reference:
            return False
        try:
            holder = orjson.loads(bytes(reference))  # what orjson reads of the whole line
        except orjson.JSONDecodeError:
            return False
        target = holder.get("reference") if type(holder) is dict else None
        if type(target) is not str or _SHARED_MEDICATION.fullmatch(target) is None:
            return False
        medication = shared.get(target)
        if medication is None or b'"reference":"%s"' % target.encode() not in text:
            return False
        inert = self._medication_verdicts.get(medication)
        if inert is None:
            if len(self._medication_verdicts) >= _CACHE_LIMIT:
                self._medication_verdicts.clear()
            try:
                resource = orjson.loads(medication)
            except orjson.JSONDecodeError:
                resource = None
            inert = self._medication_verdicts[medication] = (
                type(resource) is dict
                and resource.get("resourceType") == "Medication"
                and self._inert_code(resource.get("code"))
                and self._inert_ingredients(resource.get("ingredient"))
            )
        if inert:
            relied.append(target)
        return inert

    def _inert_ingredients(self, ingredients: Any) -> bool:
        """Whether a Medication's ingredients add no concept: the record classifies each
        `itemCodeableConcept` as a code of the medication (`engine.record`)."""
        if ingredients is None:
            return True
        if type(ingredients) is not list:
            return False
        for ingredient in ingredients:
            if type(ingredient) is not dict:
                return False
            item = ingredient.get("itemCodeableConcept")
            if item is not None and not self._inert_code(item):
                return False
        return True

    def _inert_code(self, code: Any) -> bool:
        """Whether a `code` indexes under no concept the criteria read and adds no data
        problem: a CodeableConcept whose codings are all in known systems and of no concept
        in `concepts_read`."""
        codings = code.get("coding") if type(code) is dict else None
        if type(codings) is not list or not codings:
            return False
        terminology = self.terminology
        concepts_read = self.concepts_read
        for coding in codings:
            if type(coding) is not dict:
                return False
            system, value = coding.get("system"), coding.get("code")
            if type(system) is not str or type(value) is not str or not value:
                return False
            if not terminology.knows_system(system):
                return False
            if not concepts_read.isdisjoint(terminology.concepts_of_coding(system, value)):
                return False
        return True


_FIRST_PATIENT_FIELDS = tuple(
    sorted({fields[0] for fields in PATIENT_FIELDS.values()} | {DEFAULT_PATIENT_FIELDS[0]})
)

_AnyHolder = _Reference | list[Any] | str | int | float | bool | None
"""Any JSON value, an object read as a `_Reference` (its `reference` only: a dict of every
key, as `Any` would give, costs more to build)."""

_CheckedLine: Any = msgspec.defstruct(
    "_CheckedLine",
    [("resourceType", Any, None), ("id", Any, None)]
    + [(name, _AnyHolder, None) for name in _FIRST_PATIENT_FIELDS],
    gc=False,
)
"""What a settled patient's line is checked for (`decode_checked_line`)."""
decode_checked_line = msgspec.json.Decoder(_CheckedLine).decode
"""A line's resourceType, id and the first patient field of every type (None when absent;
an object: a `_Reference`; a repeated key: its last value, as orjson reads it), the rest of
the line checked as JSON syntax only and skipped. Raises one of `UNDECODABLE` for a line
that is not a JSON object (or nests deeper than msgspec allows)."""
CheckedReference = _Reference
"""The type of an object in a patient field of `decode_checked_line`."""


class _KeptLine(msgspec.Struct, tag_field="resourceType", kw_only=True, gc=False):
    """What a settled patient's line of a type the run keeps is checked for, read as
    `decode_checked_line` reads it (a repeated key's last value), with the checks msgspec
    can make made in the decoding: its type (tagged by `resourceType`), its `id` (any value:
    a string labels it), and its type's first patient field (`patient`), an object with a
    string `reference`. One Struct per type (`_kept_line_struct`): only that type's patient
    field is read, and the Python checks of `decode_checked_line`'s result are not needed."""

    id: Any = None


@functools.cache
def _kept_line_struct(resource_type: str) -> Any:
    """The `_KeptLine` of a type: its first patient field as `patient`, `label_head` `T/`."""
    name = PATIENT_FIELDS.get(resource_type, DEFAULT_PATIENT_FIELDS)[0]
    return msgspec.defstruct(
        f"_{resource_type}KeptLine",
        [("patient", _Subject, msgspec.field(name=name))],
        bases=(_KeptLine,),
        tag=resource_type,
        namespace={"label_head": f"{resource_type}/"},
        kw_only=True,
        gc=False,
    )
