"""Cohort discovery: one trial's criteria over every patient of a record set.

`run_cohort` evaluates a `CohortInput` (`NdjsonInput`: a Bulk NDJSON folder, grouped by patient
into partition files by `ndjson_partitions`; `BundleInput`: a folder of per-patient Bundles)
partition by partition with an engine from `ENGINES`, and writes subjects.ndjson,
issues.ndjson, cohort.csv, attrition.csv/.html, data_availability.csv, errors.ndjson and
summary.json. Each patient's ResearchSubject and
DetectedIssue are those `trialsieve evaluate` gives. See docs/cohort.md.
"""

from engine.cohort.engines import (
    ENGINES,
    Engine,
    EngineKind,
    EngineSettings,
    engine_kind,
    run_dask,
    run_local,
)
from engine.cohort.inputs import BundleInput, CohortInput, NdjsonInput, PartitionedInput
from engine.cohort.ndjson_partitions import (
    NdjsonFolderSource,
    PartitionedExport,
    load_shared_resources,
    partition_ndjson,
    read_partition,
)
from engine.cohort.partition import CRITERION_VALUES, criterion_value, study_reference
from engine.cohort.prefilter import Prefilter, RequiredConcept
from engine.cohort.runner import (
    CohortSummary,
    ProgressListener,
    kept_types,
    run_cohort,
)
from engine.errors import CohortError
from engine.resource_types import RECORD_TYPES

__all__ = [
    "CRITERION_VALUES",
    "ENGINES",
    "RECORD_TYPES",
    "BundleInput",
    "CohortError",
    "CohortInput",
    "CohortSummary",
    "Engine",
    "EngineKind",
    "EngineSettings",
    "NdjsonFolderSource",
    "NdjsonInput",
    "PartitionedExport",
    "PartitionedInput",
    "Prefilter",
    "ProgressListener",
    "RequiredConcept",
    "criterion_value",
    "engine_kind",
    "kept_types",
    "load_shared_resources",
    "partition_ndjson",
    "read_partition",
    "run_cohort",
    "run_dask",
    "run_local",
    "study_reference",
]
