"""trialsieve: FHIR-based clinical-trial eligibility engine.

The public Python API (see docs/api.md): load a trial, read or bring a patient's resources,
screen them, take the FHIR output; or run a whole cohort.

    load_trial(criteria_path) -> CompiledCriteria       criteria file + its mappings, compiled
    read_bundle_file(path) -> PatientResources          one patient's Bundle (JSON)
    PatientResources(patient_id, resources, full_urls, origin)   resources from anywhere
    screen_patient(trial, resources, as_of, answers) -> Screening
    Screening.evaluation, .status, .transaction_bundle (the FHIR output), .research_subject(),
        .detected_issue()
    run_cohort(criteria_path, BundleInput(folder) | NdjsonInput(folder), out_dir, as_of, ...)
    TrialsieveError                                     the root of every error raised on purpose

The names are imported on first use, so that `import engine` (and the command line's start)
stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from engine.cohort.inputs import BundleInput, NdjsonInput
    from engine.cohort.runner import run_cohort
    from engine.errors import TrialsieveError
    from engine.screening import Screening, screen_patient
    from engine.sources.base import PatientResources
    from engine.sources.bundle import read_bundle_file
    from engine.trial import load_trial

__version__ = "0.2.0"

__all__ = [
    "BundleInput",
    "NdjsonInput",
    "PatientResources",
    "Screening",
    "TrialsieveError",
    "__version__",
    "load_trial",
    "read_bundle_file",
    "run_cohort",
    "screen_patient",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BundleInput": "engine.cohort.inputs",
        "NdjsonInput": "engine.cohort.inputs",
        "PatientResources": "engine.sources.base",
        "Screening": "engine.screening",
        "TrialsieveError": "engine.errors",
        "load_trial": "engine.trial",
        "read_bundle_file": "engine.sources.bundle",
        "run_cohort": "engine.cohort.runner",
        "screen_patient": "engine.screening",
    },
)
