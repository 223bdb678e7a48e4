"""The source stage: read patient data and yield it one patient at a time.

A source is anything iterable over `PatientResources` (the `PatientSource` protocol).
`BundleFileSource` reads Bundle JSON files and folders; `read_bundle_file` and `parse_bundle`
read a single Bundle. Unreadable data raises `engine.errors.InputError` naming the file,
resource and field. `ndjson_files`, `patient_reference` and `SourceProblem` read Bulk Data
style NDJSON (grouping a folder by patient through partition files is the cohort's:
`engine.cohort.ndjson_partitions`). `export_to_folder` fetches such a folder with a Bulk
Data `$export`.
`FhirServerSource` pulls patients from a FHIR R4 server through a `FhirServerClient`
(defined in `engine.fhir_http`, the HTTP layer sources and sinks share, with `BearerToken`
`RetryPolicy` and `ServerLimits`; listed here too for the source's callers).
"""

from typing import TYPE_CHECKING

from engine.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from engine.errors import BulkExportError
    from engine.fhir_http import BearerToken, FhirServerClient, RetryPolicy, ServerLimits
    from engine.sources.base import PatientResources, PatientSource
    from engine.sources.bulk_export import (
        BulkExportResult,
        ExportedFile,
        ExportIssue,
        ExportProgress,
        ExportRequest,
        export_to_folder,
    )
    from engine.sources.bundle import (
        ACCEPTED_BUNDLE_TYPES,
        BundleFileSource,
        parse_bundle,
        read_bundle_file,
    )
    from engine.sources.fhir_server import FhirServerSource
    from engine.sources.ndjson import SourceProblem, ndjson_files, patient_reference
    from engine.sources.references import id_from_full_url, reference_key

__all__ = [
    "ACCEPTED_BUNDLE_TYPES",
    "BearerToken",
    "BulkExportError",
    "BulkExportResult",
    "BundleFileSource",
    "ExportIssue",
    "ExportProgress",
    "ExportRequest",
    "ExportedFile",
    "FhirServerClient",
    "FhirServerSource",
    "PatientResources",
    "PatientSource",
    "RetryPolicy",
    "ServerLimits",
    "SourceProblem",
    "export_to_folder",
    "id_from_full_url",
    "ndjson_files",
    "parse_bundle",
    "patient_reference",
    "read_bundle_file",
    "reference_key",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ACCEPTED_BUNDLE_TYPES": "engine.sources.bundle",
        "BearerToken": "engine.fhir_http",
        "BulkExportError": "engine.errors",
        "BulkExportResult": "engine.sources.bulk_export",
        "BundleFileSource": "engine.sources.bundle",
        "ExportIssue": "engine.sources.bulk_export",
        "ExportProgress": "engine.sources.bulk_export",
        "ExportRequest": "engine.sources.bulk_export",
        "ExportedFile": "engine.sources.bulk_export",
        "FhirServerClient": "engine.fhir_http",
        "FhirServerSource": "engine.sources.fhir_server",
        "PatientResources": "engine.sources.base",
        "PatientSource": "engine.sources.base",
        "RetryPolicy": "engine.fhir_http",
        "ServerLimits": "engine.fhir_http",
        "SourceProblem": "engine.sources.ndjson",
        "export_to_folder": "engine.sources.bulk_export",
        "id_from_full_url": "engine.sources.references",
        "ndjson_files": "engine.sources.ndjson",
        "parse_bundle": "engine.sources.bundle",
        "patient_reference": "engine.sources.ndjson",
        "read_bundle_file": "engine.sources.bundle",
        "reference_key": "engine.sources.references",
    },
)
