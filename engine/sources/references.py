"""Reading FHIR literal references: which `Type/id` a reference string points to.

Shared by the sources (is this resource about the Bundle's patient?) and the record
(`PatientRecord.resolve`). Plain strings in, plain strings out.
"""

from __future__ import annotations

import re

# A resource type, an id, and an optional version, at the end of a relative or absolute URL:
# "Patient/a", "Patient/a/_history/2", "https://server/fhir/Patient/a".
_TYPE_AND_ID = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
"""A FHIR id (R4 datatypes, `id`): letters, digits, '-' and '.', 1 to 64 of them."""


def is_fhir_id(text: object) -> bool:
    """True for a FHIR id that is safe as a path segment (not `.` or `..`, no newline).

    >>> is_fhir_id("p-1.2"), is_fhir_id("../x"), is_fhir_id(".."), is_fhir_id("a\\n")
    (True, False, False, False)
    """
    return isinstance(text, str) and FHIR_ID.fullmatch(text) is not None and text.strip(".") != ""


def reference_key(reference: str) -> str | None:
    """The `Type/id` a literal reference names, or None when it names none.

    Relative, absolute and versioned references all reduce to `Type/id`; `urn:uuid:`
    references, contained (`#id`) and conditional (`Type?identifier=...`) references do not
    name a type and id, so they give None.

    >>> reference_key("https://example.org/fhir/Observation/abc/_history/2")
    'Observation/abc'
    >>> reference_key("urn:uuid:4d0b58d2-7bd4-4b43-9d5f-8aa0c4a1e6d5") is None
    True
    """
    if reference.startswith(("urn:", "#")) or "?" in reference:
        return None
    match = _TYPE_AND_ID.search(reference)
    if match is None or not is_fhir_id(match.group(2)):
        return None  # `Patient/..` names no resource (and must never become a request path)
    return f"{match.group(1)}/{match.group(2)}"


def id_from_full_url(full_url: str) -> str | None:
    """The logical id a Bundle entry's fullUrl carries (`urn:uuid:X` -> X, `.../Type/X` -> X).

    >>> id_from_full_url("urn:uuid:4d0b58d2-7bd4-4b43-9d5f-8aa0c4a1e6d5")
    '4d0b58d2-7bd4-4b43-9d5f-8aa0c4a1e6d5'
    >>> id_from_full_url("https://example.org/fhir/Patient/p1")
    'p1'
    """
    if full_url.startswith(("urn:uuid:", "urn:oid:")):
        return full_url.split(":", 2)[2] or None
    key = reference_key(full_url)
    return key.split("/", 1)[1] if key else None
