"""Validate what we write with the fhir.resources R4B models (not what we read)."""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

import orjson

from engine.errors import Location, OutputValidationError


def validate_resource(resource: dict[str, Any]) -> None:
    """Raise OutputValidationError naming the resource and the fields that fail validation."""
    # The R4B models (a third of a second to import) load with the first resource validated:
    # a cohort worker whose output shapes were all validated before never needs them.
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    resource_type = resource.get("resourceType", "")
    model = get_fhir_model_class(resource_type)
    try:
        model.model_validate(resource)
    except ValidationError as error:
        fields = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise OutputValidationError(
            f"generated {resource_type} is not valid FHIR R4B: {fields}",
            Location(resource=f"{resource_type}/{resource.get('id', '?')}"),
        ) from None


def validate_bundle(bundle: dict[str, Any]) -> None:
    """Validate a Bundle and each resource in it."""
    for entry in bundle.get("entry", ()):
        validate_resource(entry["resource"])
    validate_resource(bundle)


_VOCABULARY_KEYS = frozenset({"resourceType", "status", "system", "code", "url", "use", "type"})
"""Keys whose string values come from small vocabularies: part of a shape, value and all."""
_FHIR_STRING = re.compile(r"[ \r\n\t\S]+")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_FHIR_DATE_TIME = re.compile(
    r"([0-9]{4})(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?"
)
_OTHER_WHITESPACE = (
    "\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""The characters `_FHIR_STRING` refuses: whitespace (`str.isspace`, what `\\s` matches) other
than space, CR, LF and tab (a test checks every code point)."""
_ASCII_OTHER_WHITESPACE = _OTHER_WHITESPACE[:6]
_REFUSED_WHITESPACE = re.compile(f"[{_OTHER_WHITESPACE}]")


_UNFIT = re.compile(f"[{_OTHER_WHITESPACE}\x00-\x08\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
"""What `fhir_text` replaces: whitespace FHIR strings refuse, and control characters they
should not hold (tab, CR and LF aside), which XHTML (a narrative) cannot hold at all, as it
cannot U+FFFE, U+FFFF and lone surrogates."""


def fhir_text(value: str) -> str:
    """`value` as a FHIR string (and a narrative's XHTML) can hold it: whitespace the FHIR
    string pattern refuses (a no-break space, U+2028) becomes a space, a control character
    (NUL, U+0001, DEL...), U+FFFE, U+FFFF or a lone surrogate U+FFFD, the replacement
    character. For texts made of what a record or a criteria file says (a coded value's
    text, a problem quoting a field). A text `str.isprintable` passes holds neither (a
    quarter of the search's time)."""
    if value.isprintable():
        return value
    return _UNFIT.sub(_fit_character, value)


def _fit_character(found: re.Match[str]) -> str:
    return " " if found.group().isspace() else "\ufffd"


def has_refused_whitespace(value: str) -> bool:
    """Whether `value` holds a character the FHIR string pattern refuses (`_FHIR_STRING`:
    whitespace other than space, CR, LF, tab). A short printable text holds none (each is a
    Unicode separator or control character, which `str.isprintable` refuses; a third of the
    time of the searches on a reference); an ASCII text is searched for each of the six
    ASCII ones (`in`: a memchr each); any other text once with a character class (`in` would
    scan a two-byte text byte by byte for characters such as U+2000)."""
    if len(value) < 128 and value.isprintable():
        return False
    if value.isascii():
        return any(map(value.__contains__, _ASCII_OTHER_WHITESPACE))  # (no generator's cell)
    return _REFUSED_WHITESPACE.search(value) is not None


StringFit = bool | None
"""`fits_fhir_string`'s answer: True, False or None."""


def fits_fhir_string(value: str) -> StringFit:
    """Whether `value` fits the FHIR string pattern (`_FHIR_STRING`: not empty, no other
    whitespace than space, CR, LF, tab), in a tenth of the regular expression's time on the
    kilobytes of a DetectedIssue's narrative: True; else False when the R4B models accept it
    all the same (they search their pattern rather than match it whole: a text holding one
    character it allows passes), None when they refuse it too (empty, or nothing but such
    whitespace). Falsy either way; an output's shape keeps the difference, so that a text the
    models refuse never takes the shape of one they accepted (`OutputShapes`)."""
    if value and not has_refused_whitespace(value):
        return True
    return False if _FHIR_STRING.search(value) is not None else None


_FORMATTED_KEYS = {
    "id": _FHIR_ID,
    "date": _FHIR_DATE_TIME,
    "start": _FHIR_DATE_TIME,
    "end": _FHIR_DATE_TIME,
    "birthDate": _FHIR_DATE_TIME,
}
"""Keys whose strings FHIR constrains by a pattern: whether a value fits is part of a shape
(also every key ending in `Date`, `DateTime` or `Instant`, `identifiedDateTime` say)."""
_DATED_SUFFIXES = ("Date", "DateTime", "Instant", "lastUpdated")

Shape = Hashable


def output_shape(value: Any, key: str = "") -> Shape:
    """What the R4B models' verdict on a generated value depends on, without its free text.

    Objects by their keys (in order) and the shapes of their values; arrays by the distinct
    shapes of their items; strings by whether they are empty (FHIR strings may not be), by
    their value under a vocabulary key (`status`, `code`, ...), by whether they fit the FHIR
    pattern under a formatted key (`id`, `date`, ...), else by whether they fit the FHIR
    string pattern (not empty, no other whitespace than space, tab, CR, LF) and, when not,
    whether the models accept them (`fits_fhir_string`); numbers and booleans by their type.
    """
    if type(value) is dict:
        return tuple((name, output_shape(item, name)) for name, item in value.items())
    if type(value) is list:
        shapes: dict[Shape, None] = {}
        for item in value:
            shapes[_item_shape(item) if type(item) is dict else output_shape(item, key)] = None
        return ("[]", *shapes)
    if type(value) is str:
        if key in _VOCABULARY_KEYS:
            return ("s", value)
        pattern = _FORMATTED_KEYS.get(key)
        if pattern is None and key.endswith(_DATED_SUFFIXES):
            pattern = _FHIR_DATE_TIME
        if pattern is not None:
            return ("s", key, pattern.fullmatch(value) is not None)
        return ("s", fits_fhir_string(value))
    return type(value).__name__


_item_shapes: dict[bytes, Shape] = {}
"""Shapes of the objects met as array items, by their JSON text: the evidence entries of
the criteria that cite nothing repeat from patient to patient (three in four, NCT05315778
--full), and serialising one costs a twentieth of walking it. Two objects with the same
text are the same output: an item whose text was met before takes that item's shape."""
_PLAIN_JSON_ONLY = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
"""orjson refuses (TypeError) a dataclass, a date, a str, int, dict or list subclass: such an
item's shape is walked (an enum member, which orjson writes as its value, takes the shape of
that value)."""


def _item_shape(item: dict[str, Any]) -> Shape:
    """`output_shape` of an object inside an array (its key does not change its shape)."""
    try:
        text = orjson.dumps(item, option=_PLAIN_JSON_ONLY)
    except TypeError:
        return output_shape(item)
    shape = _item_shapes.get(text)
    if shape is None:
        shape = output_shape(item)
        if len(_item_shapes) >= 4096:
            _item_shapes.clear()
        _item_shapes[text] = shape
    return shape


class OutputShapes:
    """Validates generated resources with the R4B models once per shape (`output_shape`).

    A cohort writes one ResearchSubject and one DetectedIssue per patient, mostly of a few
    shapes: validating each patient's costs more than evaluating them. A resource whose shape
    was validated before is taken as valid: what the models check (required fields, types,
    cardinality, code values, id and date patterns) is in the shape; free text is in it only
    by whether it fits the FHIR string pattern.
    """

    def __init__(self, known_valid: set[Shape] | None = None) -> None:
        """`known_valid`: shapes validated before, under the same trialsieve and models (a
        cohort keeps them on disk, `engine.compiled_cache.validated_shapes`)."""
        self._valid: set[Shape] = set(known_valid or ())
        self._valid_objects: dict[int, Shape] = {}
        """Shape objects found valid before, by their id (kept, so that an id is not
        reused): a shape made once and given for many resources is known without hashing
        it (a DetectedIssue's shape is a tree of a hundred tuples, whose hash Python
        computes anew at every lookup)."""
        self.validated = 0

    @property
    def valid_shapes(self) -> frozenset[Shape]:
        """The shapes taken as valid: given, and validated here."""
        return frozenset(self._valid)

    def knows(self, shape: Shape) -> bool:
        """Whether a resource of this shape is taken as valid."""
        return self._valid_objects.get(id(shape)) is shape or shape in self._valid

    def validate(self, resource: dict[str, Any]) -> None:
        """Raise OutputValidationError (see `validate_resource`) for an invalid resource."""
        shape = output_shape(resource)
        if shape in self._valid:
            return
        validate_resource(resource)
        self.validated += 1
        self._valid.add(shape)

    def validate_json(self, text: bytes, shape: Shape) -> None:
        """`validate` of a resource written as `text` whose `output_shape` is `shape` (made
        with the text from the same parts, `engine.report.resources.detected_issue_json`):
        a shape not validated before is validated (`validate`) on the text itself, parsed."""
        if self._valid_objects.get(id(shape)) is shape:
            return
        if shape not in self._valid:
            self.validate(orjson.loads(text))
            if shape not in self._valid:  # not the text's shape (a bug): known by the text's
                return
        if len(self._valid_objects) >= 4096:
            self._valid_objects.clear()
        self._valid_objects[id(shape)] = shape
