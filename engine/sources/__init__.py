"""The source stage: read patient data and yield it one patient at a time.

A source is anything iterable over `PatientResources` (the `PatientSource` protocol).
`BundleFileSource` reads Bundle JSON files and folders; `read_bundle_file` and `parse_bundle`
read a single Bundle. Unreadable data raises `engine.errors.InputError` naming the file,
resource and field. `NdjsonFolderSource` reads a Bulk Data style NDJSON folder, grouped by
patient through partition files (`partition_ndjson`, `read_partition`).
`FhirServerSource` pulls patients from a FHIR R4 server through a `FhirServerClient`.
"""

from engine.errors import BulkExportError
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
from engine.sources.fhir_server import BearerToken, FhirServerClient, FhirServerSource, RetryPolicy
from engine.sources.ndjson import (
    NdjsonFolderSource,
    PartitionedExport,
    SourceProblem,
    load_shared_resources,
    ndjson_files,
    partition_ndjson,
    patient_reference,
    read_partition,
)
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
    "NdjsonFolderSource",
    "PartitionedExport",
    "PatientResources",
    "PatientSource",
    "RetryPolicy",
    "SourceProblem",
    "export_to_folder",
    "id_from_full_url",
    "load_shared_resources",
    "ndjson_files",
    "parse_bundle",
    "partition_ndjson",
    "patient_reference",
    "read_bundle_file",
    "read_partition",
    "reference_key",
]
