"""Constants and types shared by the normalise tests (conftest.py cannot be imported)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SYSTEMS = """\
systems:
  loinc: http://loinc.org
  snomed:
    uri: http://snomed.info/sct
    equivalents: ["urn:oid:2.16.840.1.113883.6.96"]
  icd10cm:
    uri: http://hl7.org/fhir/sid/icd-10-cm
    icd: true
  atc: http://www.whocc.no/atc
  local-lab: http://hospital.example.org/lab
"""

WriteMapping = Callable[..., Path]
