"""FHIR JSON a request carries, checked for the shape of what the engine reads before it reads it.

A prefetched search Bundle, a prefetched Patient, an OperationOutcome given for a prefetch
key and an inline `bundle` of `POST /evaluate` are checked structurally, on the plain dicts
the engine evaluates:

- a Bundle by the Bundle reader's own checks (`engine.sources.bundle`: `type`, each entry an
  object whose `fullUrl` is a string and whose `resource` is an object with a resourceType and
  a FHIR id), and `entry` absent or an array, `link` absent or an array of objects, `total`
  absent or a non-negative integer, an entry's `search` an object;
- inside each resource (and each `contained` one), every element the engine reads
  (`engine.resource_types`, `engine.record`, the value and medication readers, the card's
  explanation) must have the JSON shape FHIR gives it: a CodeableConcept (`code`,
  `medicationCodeableConcept`, `valueCodeableConcept`, `clinicalStatus`, `category`, ...) is
  an object whose `coding` is an array of objects whose `system` and `code` are strings; a
  Reference (`subject`, `patient`, `medicationReference`) an object whose `reference` is a
  string; a date a string; a Quantity's `value` a number; an OperationOutcome's `issue` an
  array of objects.

A value of the wrong shape (`"entry": {}`, `"coding": [5]`, `"total": "x"`, `"subject": 5`)
is a 400 naming each element at fault (`prefetch.condition.entry[0].resource.code.coding[0]`;
at most `MAX_ISSUES`), never read as "no data": the engine reads FHIR JSON leniently (an
element of the wrong shape is skipped), which is right for files a site already holds and
wrong for a request whose answer a clinician acts on.

Elements the engine does not read are not checked: a vendor's own element (`"vendorFlag":
true`), an extension, an element of a later FHIR version. This is deliberately not the
fhir.resources models: the developers' guide's rule is to "validate with the fhir.resources
models what we write, not every resource we read" (the engine evaluates plain dicts); the
models refuse real EHR data for any element they do not know, and loading them cost the
first call about 240 ms.

`null` as the value of an element is refused (FHIR R4 JSON, 2.6.2: "JSON objects ... SHALL
NOT have null values"; CDS Hooks 2.0, "Use of JSON": "JSON elements SHALL NOT be null"). A
`null` inside an array of primitives is allowed: FHIR JSON uses it to line up a repeating
primitive with its `_element` extensions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.errors import InputError
from engine.resource_types import CODED_TYPES, RESOURCE_TYPES
from engine.service.problems import ApiError, Issue
from engine.sources.bundle import checked_bundle_type, entry_contents, json_kind
from engine.sources.references import is_fhir_id

MAX_ISSUES = 10
"""At most this many elements are named in one answer."""


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class _Primitive:
    """A JSON primitive: what it must be (for messages) and the test."""

    words: str
    accepts: Callable[[Any], bool]


@dataclass(frozen=True)
class _Object:
    """A JSON object; the elements named are checked when present, the others are not."""

    elements: Mapping[str, _Shape] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    words: str = "a JSON object"


@dataclass(frozen=True)
class _Array:
    """A JSON array of items of one shape."""

    item: _Shape


_Shape = _Primitive | _Object | _Array


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


STRING = _Primitive("a string", lambda value: isinstance(value, str))
BOOLEAN = _Primitive("true or false", lambda value: isinstance(value, bool))
INTEGER = _Primitive("an integer", _is_integer)
UNSIGNED = _Primitive("a non-negative integer", lambda value: _is_integer(value) and value >= 0)
DECIMAL = _Primitive(
    "a number",
    lambda value: isinstance(value, int | float) and not isinstance(value, bool),
)
ID = _Primitive(
    "a FHIR id (a string of letters, digits, '-' and '.')",
    lambda value: isinstance(value, str) and is_fhir_id(value),
)
DATE = STRING
"""date, dateTime, instant, time: strings (their content is the date readers' to judge: an
unusable date makes the criterion unknown, naming the field)."""

CODING = _Object(
    {"system": STRING, "code": STRING, "display": STRING, "version": STRING},
    words="a Coding (a JSON object)",
)
CODEABLE_CONCEPT = _Object(
    {"coding": _Array(CODING), "text": STRING}, words="a CodeableConcept (a JSON object)"
)
CONCEPTS = _Array(CODEABLE_CONCEPT)
IDENTIFIER = _Object({"system": STRING, "value": STRING})
REFERENCE = _Object(
    {"reference": STRING, "display": STRING, "identifier": IDENTIFIER},
    words="a Reference (a JSON object)",
)
PERIOD = _Object({"start": DATE, "end": DATE}, words="a Period (a JSON object)")
QUANTITY = _Object(
    {"value": DECIMAL, "comparator": STRING, "unit": STRING, "system": STRING, "code": STRING},
    words="a Quantity (a JSON object)",
)
RANGE = _Object({"low": QUANTITY, "high": QUANTITY})
RATIO = _Object({"numerator": QUANTITY, "denominator": QUANTITY})

_VALUES: dict[str, _Shape] = {
    "valueQuantity": QUANTITY,
    "valueCodeableConcept": CODEABLE_CONCEPT,
    "valueString": STRING,
    "valueBoolean": BOOLEAN,
    "valueInteger": INTEGER,
    "valueRange": RANGE,
    "valueRatio": RATIO,
    "valueSampledData": _Object(),
    "valueTime": DATE,
    "valueDateTime": DATE,
    "valuePeriod": PERIOD,
    "dataAbsentReason": CODEABLE_CONCEPT,
    "referenceRange": _Array(
        _Object({"low": QUANTITY, "high": QUANTITY, "type": CODEABLE_CONCEPT, "text": STRING})
    ),
}
"""An Observation's (or component's) value[x] and what reads beside it."""

_DOSAGE = _Object(
    {
        "sequence": INTEGER,
        "text": STRING,
        "asNeededBoolean": BOOLEAN,
        "asNeededCodeableConcept": CODEABLE_CONCEPT,
        "route": CODEABLE_CONCEPT,
        "timing": _Object(
            {
                "repeat": _Object({"frequency": INTEGER, "period": DECIMAL, "periodUnit": STRING}),
            }
        ),
        "doseAndRate": _Array(_Object({"type": CODEABLE_CONCEPT, "doseQuantity": QUANTITY})),
    }
)

_OWN_ELEMENTS: dict[str, dict[str, _Shape]] = {
    "Patient": {"birthDate": DATE, "gender": STRING},
    "Observation": {
        "category": CONCEPTS,
        "component": _Array(_Object({"code": CODEABLE_CONCEPT, **_VALUES})),
        **_VALUES,
    },
    "Condition": {"category": CONCEPTS},
    "MedicationStatement": {"dosage": _Array(_DOSAGE)},
    "MedicationRequest": {
        "intent": STRING,
        "dosageInstruction": _Array(_DOSAGE),
        "dispenseRequest": _Object(
            {
                "validityPeriod": PERIOD,
                "expectedSupplyDuration": QUANTITY,
                "numberOfRepeatsAllowed": UNSIGNED,
            }
        ),
    },
    "MedicationAdministration": {
        "dosage": _Object({"route": CODEABLE_CONCEPT, "dose": QUANTITY, "text": STRING})
    },
    "MedicationDispense": {"dosageInstruction": _Array(_DOSAGE)},
    "AllergyIntolerance": {
        "category": _Array(STRING),
        "criticality": STRING,
        "reaction": _Array(
            _Object(
                {
                    "substance": CODEABLE_CONCEPT,
                    "manifestation": CONCEPTS,
                    "severity": STRING,
                }
            )
        ),
    },
    "ResearchSubject": {"study": REFERENCE},
    "Medication": {
        "code": CODEABLE_CONCEPT,
        "ingredient": _Array(
            _Object(
                {
                    "itemCodeableConcept": CODEABLE_CONCEPT,
                    "itemReference": REFERENCE,
                    "strength": RATIO,
                }
            )
        ),
    },
}
"""Elements a type has besides those `engine.resource_types` gives (dates, status, code,
medication, patient): what the value, dose and explanation readers read."""


def _engine_elements(name: str) -> dict[str, _Shape]:
    """The elements of an engine type (`engine.resource_types.RESOURCE_TYPES`) it reads."""
    known = RESOURCE_TYPES[name]
    elements: dict[str, _Shape] = {"identifier": _Array(IDENTIFIER)}
    if name in CODED_TYPES:
        elements["code"] = CODEABLE_CONCEPT
    for date_field in (*known.start_fields, *known.end_fields):
        shape: _Shape = PERIOD if date_field.is_period else DATE
        if date_field.container is None:
            elements[date_field.name] = shape
        else:
            holder = elements.setdefault(date_field.container, _Object())
            assert isinstance(holder, _Object)
            elements[date_field.container] = _Object({**holder.elements, date_field.name: shape})
    if known.status_field == "status":
        elements["status"] = STRING
    else:
        elements[known.status_field] = CODEABLE_CONCEPT
        elements["verificationStatus"] = CODEABLE_CONCEPT
    if known.medication:
        elements["medicationCodeableConcept"] = CODEABLE_CONCEPT
        elements["medicationReference"] = REFERENCE
    for patient_field in ("subject", "patient", *known.patient_fields):
        elements[patient_field] = REFERENCE
    for own_name, own_shape in _OWN_ELEMENTS.get(name, {}).items():
        existing = elements.get(own_name)
        if isinstance(existing, _Object) and isinstance(own_shape, _Object):
            own_shape = _Object({**existing.elements, **own_shape.elements})
        elements[own_name] = own_shape
    return elements


_RESOURCE_ELEMENTS: dict[str, dict[str, _Shape]] = {
    **{name: _engine_elements(name) for name in RESOURCE_TYPES},
    "Patient": _OWN_ELEMENTS["Patient"],
    "Medication": _OWN_ELEMENTS["Medication"],
    "OperationOutcome": {
        "issue": _Array(
            _Object(
                {
                    "severity": STRING,
                    "code": STRING,
                    "diagnostics": STRING,
                    "details": CODEABLE_CONCEPT,
                }
            )
        ),
    },
}
"""The elements the engine reads of each resource type, by name; a type not listed has only
its resourceType, id and contained resources checked."""

_REQUIRED: dict[str, tuple[str, ...]] = {"OperationOutcome": ("issue",)}
"""Elements a type must have for the service to read it (R4: OperationOutcome.issue 1..*)."""

_SEARCH = _Object({"mode": STRING, "score": DECIMAL})
_LINK = _Object({"relation": STRING, "url": STRING})


# --------------------------------------------------------------------------- checks


def check_fhir_resource(
    value: Mapping[str, Any], field_name: str, serialised: bytes | None = None
) -> None:
    """400 naming the elements of `value` (a resource in the request field `field_name`) that
    the engine cannot read: a null, a Bundle that is not the shape the Bundle reader takes,
    an element the engine reads that has the wrong JSON shape (see the module's docstring).
    `serialised`: `value` as orjson writes it, when the caller has it already.
    """
    # orjson writes a member whose value is null as `"name":null`; only then is the tree
    # walked for the paths (a string holding those characters is escaped: `\":null`, which
    # the walk then clears). 0.3 ms against 6 ms for the walk on a 490-resource Bundle.
    try:
        maybe_null = b'":null' in (serialised if serialised is not None else orjson.dumps(value))
    except orjson.JSONEncodeError:  # what orjson does not write (an integer beyond 64 bits)
        maybe_null = True
    nulls = (
        [f"{field_name}{path}" for path in _null_values(value)][:MAX_ISSUES] if maybe_null else []
    )
    if nulls:
        raise ApiError(
            400,
            [
                Issue(
                    "invalid",
                    f"{path} is null; FHIR JSON leaves an element out instead "
                    "(R4 2.6.2; CDS Hooks 2.0, Use of JSON: elements SHALL NOT be null)",
                    (path,),
                )
                for path in nulls
            ],
        )
    issues: list[Issue] = []
    if value.get("resourceType") == "Bundle":
        _check_bundle(value, field_name, issues)
    else:
        _check_resource(value, field_name, issues)
    if issues:
        raise ApiError(400, issues[:MAX_ISSUES])


def _check_bundle(bundle: Mapping[str, Any], field_name: str, issues: list[Issue]) -> None:
    """The Bundle reader's checks (raised at the first), then the shape of each resource."""
    try:
        if "type" in bundle:
            checked_bundle_type(bundle["type"], field_name)
        entries = bundle.get("entry", [])
        if not isinstance(entries, list):
            _add_issue(
                issues, f"{field_name}.entry", f"must be an array, found {json_kind(entries)}"
            )
            return
        contents = [
            entry_contents(entry, index, field_name)[0] for index, entry in enumerate(entries)
        ]
    except InputError as error:
        at = f"{field_name}.{error.location.field}" if error.location.field else field_name
        raise ApiError.of(400, "invalid", f"{at}: {error.message}", at) from None
    if "total" in bundle:
        _check(bundle["total"], UNSIGNED, f"{field_name}.total", issues)
    if "link" in bundle:
        _check(bundle["link"], _Array(_LINK), f"{field_name}.link", issues)
    for index, (entry, resource) in enumerate(zip(entries, contents, strict=True)):
        at = f"{field_name}.entry[{index}]"
        if "search" in entry:
            _check(entry["search"], _SEARCH, f"{at}.search", issues)
        _check_resource(resource, f"{at}.resource", issues)


def _check_resource(resource: Any, path: str, issues: list[Issue]) -> None:
    """The shape of each element of `resource` the engine reads, and of its contained ones."""
    if not isinstance(resource, dict):
        _add_issue(issues, path, f"must be a JSON object (a resource), found {json_kind(resource)}")
        return
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        _add_issue(
            issues,
            f"{path}.resourceType",
            f"must be a FHIR resource type, found {json_kind(resource_type)}",
        )
        return
    _check(resource, _resource_shape(resource_type), path, issues)
    contained = resource.get("contained")
    if contained is not None:
        if not isinstance(contained, list):
            _add_issue(
                issues, f"{path}.contained", f"must be an array, found {json_kind(contained)}"
            )
            return
        for index, inner in enumerate(contained):
            _check_resource(inner, f"{path}.contained[{index}]", issues)


@functools.cache
def _resource_shape(resource_type: str) -> _Object:
    """The elements the engine reads of a resource of `resource_type`, and those required."""
    return _Object(
        {"id": ID, **_RESOURCE_ELEMENTS.get(resource_type, {})},
        _REQUIRED.get(resource_type, ()),
    )


def _check(value: Any, shape: _Shape, path: str, issues: list[Issue]) -> None:
    """Adds an issue for each place where `value` is not of `shape` (at most `MAX_ISSUES`)."""
    if len(issues) >= MAX_ISSUES:
        return
    if isinstance(shape, _Primitive):
        if not shape.accepts(value):
            _add_issue(issues, path, f"must be {shape.words}, found {_found(value)}")
    elif isinstance(shape, _Array):
        if not isinstance(value, list):
            _add_issue(issues, path, f"must be an array, found {json_kind(value)}")
            return
        item_shape = shape.item
        primitive = isinstance(item_shape, _Primitive)
        for index, item in enumerate(value):
            if primitive:  # checked here: a path is written only for a wrong value
                if item is not None and not item_shape.accepts(item):  # type: ignore[union-attr]
                    _check(item, item_shape, f"{path}[{index}]", issues)
                # (a null is lined up with an `_element` extension, R4 JSON 2.6.2)
            else:
                _check(item, item_shape, f"{path}[{index}]", issues)
    else:
        if not isinstance(value, dict):
            _add_issue(issues, path, f"must be {shape.words}, found {json_kind(value)}")
            return
        for name in shape.required:
            if name not in value:
                _add_issue(issues, f"{path}.{name}", "is required")
        for name, inner in shape.elements.items():
            if name in value:
                item = value[name]
                if isinstance(inner, _Primitive) and inner.accepts(item):
                    continue  # the common case: no path written
                _check(item, inner, f"{path}.{name}", issues)


def _found(value: Any) -> str:
    """What a primitive is, for a message (a string is quoted, shortened)."""
    if isinstance(value, str):
        return f"'{value[:64]}'" if len(value) <= 64 else f"'{value[:61]}...'"
    return json_kind(value)


def _add_issue(issues: list[Issue], path: str, message: str) -> None:
    if len(issues) < MAX_ISSUES:
        issues.append(Issue("invalid", f"{path}: {message}", (path,)))


def _null_values(value: Any, path: str = "") -> Iterator[str]:
    """Paths (`.entry`, `.entry[0].resource.code`) of the object members whose value is null."""
    if isinstance(value, dict):
        for name, item in value.items():
            if item is None:
                yield f"{path}.{name}"
            else:
                yield from _null_values(item, f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _null_values(item, f"{path}[{index}]")
