"""Which `Type/id` a reference names."""

from __future__ import annotations

import doctest

import pytest

from engine.sources import references
from engine.sources.references import id_from_full_url, reference_key


@pytest.mark.parametrize(
    ("reference", "key"),
    [
        ("Patient/p1", "Patient/p1"),
        ("Patient/p1/_history/2", "Patient/p1"),
        ("https://example.org/fhir/Observation/abc", "Observation/abc"),
        ("https://example.org/fhir/Observation/abc/_history/7", "Observation/abc"),
        ("http://localhost:8080/Medication/m.1-a", "Medication/m.1-a"),
        ("urn:uuid:0b7496cb-ffc9-0874-03f4-f4841c4dfa63", None),
        ("urn:oid:1.2.3", None),
        ("#med1", None),
        ("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999701995", None),
        ("Patient", None),
        ("patient/p1", None),
        ("Patient/has space", None),
        ("", None),
    ],
)
def test_reference_key(reference: str, key: str | None) -> None:
    assert reference_key(reference) == key


@pytest.mark.parametrize(
    ("full_url", "resource_id"),
    [
        ("urn:uuid:0b7496cb-ffc9-0874-03f4-f4841c4dfa63", "0b7496cb-ffc9-0874-03f4-f4841c4dfa63"),
        ("https://example.org/fhir/Patient/p1", "p1"),
        ("urn:uuid:", None),
        ("https://example.org/", None),
    ],
)
def test_id_from_full_url(full_url: str, resource_id: str | None) -> None:
    assert id_from_full_url(full_url) == resource_id


def test_docstring_examples() -> None:
    assert doctest.testmod(references).failed == 0
