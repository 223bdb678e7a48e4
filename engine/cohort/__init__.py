"""Cohort discovery: one trial's criteria over every patient of a record set.

`run_cohort` evaluates a `CohortInput` (`NdjsonInput`: a Bulk NDJSON folder, grouped by patient
into partition files by `ndjson_partitions`; `BundleInput`: a folder of per-patient Bundles)
partition by partition with an engine from `ENGINES`, and writes subjects.ndjson,
issues.ndjson, cohort.csv, attrition.csv/.html, data_availability.csv, errors.ndjson and
summary.json. Each patient's ResearchSubject and
DetectedIssue are those `trialsieve evaluate` gives. See docs/cohort.md.

The names are imported on first use: a Dask worker or a partition worker that imports
`engine.cohort.engines` or `engine.cohort.partition` loads neither the runner nor the output
writers (pyarrow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.lazy_exports import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BundleInput": "engine.cohort.inputs",
        "CRITERION_VALUES": "engine.cohort.partition",
        "CohortError": "engine.errors",
        "CohortInput": "engine.cohort.inputs",
        "CohortSummary": "engine.cohort.runner",
        "ENGINES": "engine.cohort.engines",
        "Engine": "engine.cohort.engines",
        "EngineKind": "engine.cohort.engines",
        "EngineSettings": "engine.cohort.engines",
        "NdjsonFolderSource": "engine.cohort.ndjson_partitions",
        "NdjsonInput": "engine.cohort.inputs",
        "PartitionedExport": "engine.cohort.ndjson_partitions",
        "PartitionedInput": "engine.cohort.inputs",
        "Prefilter": "engine.cohort.prefilter",
        "ProgressListener": "engine.cohort.runner",
        "RECORD_TYPES": "engine.resource_types",
        "RequiredConcept": "engine.cohort.prefilter",
        "criterion_value": "engine.cohort.partition",
        "engine_kind": "engine.cohort.engines",
        "kept_types": "engine.cohort.runner",
        "load_shared_resources": "engine.cohort.ndjson_partitions",
        "partition_ndjson": "engine.cohort.ndjson_partitions",
        "read_partition": "engine.cohort.ndjson_partitions",
        "run_cohort": "engine.cohort.runner",
        "run_dask": "engine.cohort.engines",
        "run_local": "engine.cohort.engines",
        "study_reference": "engine.cohort.partition",
    },
)
