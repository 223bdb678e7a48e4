"""The source stage: read patient data and yield it one patient at a time.

A source is anything iterable over `PatientResources` (the `PatientSource` protocol).
`BundleFileSource` reads Bundle JSON files and folders; `read_bundle_file` and `parse_bundle`
read a single Bundle. Unreadable data raises `engine.errors.InputError` naming the file,
resource and field.
"""

from engine.sources.base import PatientResources, PatientSource
from engine.sources.bundle import (
    ACCEPTED_BUNDLE_TYPES,
    BundleFileSource,
    parse_bundle,
    read_bundle_file,
)
from engine.sources.references import id_from_full_url, reference_key

__all__ = [
    "ACCEPTED_BUNDLE_TYPES",
    "BundleFileSource",
    "PatientResources",
    "PatientSource",
    "id_from_full_url",
    "parse_bundle",
    "read_bundle_file",
    "reference_key",
]
