"""The baseline patient for NCT03036150 (DAPA-CKD) and the helpers every case uses.

A 62-year-old man with type 2 diabetes, hypertension and diabetic kidney disease: creatinine
1.8 mg/dL at visit 1 (6 days before the as-of day 2026-11-01; no eGFR reported, so CKD-EPI
2021 computes 42 mL/min/1.73 m2), UACR 850 mg/g at visit 1 and 420 mg/g a year earlier,
lisinopril 20 mg daily (an active order since January). Every criterion the record can answer
is clear for him; only the manual items are left, so he is a `candidate`, and `eligible` with
`FAVOURABLE` answers. Each case is this baseline with a few resources removed (by id) or added.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import orjson
from ckd_builders import (
    AS_OF,
    ICD10CM,
    LOINC,
    RXNORM,
    SNOMED,
    Resource,
    bundle,
    condition,
    daily_dosage,
    days_ago,
    medication_request,
    observation,
    patient,
)

from engine.attestations import Attestation
from engine.evaluate import CompiledCriteria, PatientEvaluation, evaluate_patient
from engine.record import build_record
from engine.sources import parse_bundle

VISIT_1 = days_ago(6)
"""The day of the visit-1 laboratory tests (2026-10-26)."""

BASELINE: tuple[Resource, ...] = (
    patient("1964-02-10", "male"),
    condition("type-2-diabetes", SNOMED, "44054006", "2012-04-02"),
    condition("hypertension", ICD10CM, "I10", "2010-09-15"),
    condition("diabetic-kidney-disease", SNOMED, "127013003", "2021-06-20"),
    observation("creatinine", "2160-0", 1.8, "mg/dL", VISIT_1),
    observation("uacr", "14959-1", 850, "mg/g", VISIT_1),
    observation("uacr-last-year", "14959-1", 420, "mg/g", days_ago(400)),
    medication_request(
        "lisinopril",
        "314077",
        "active",
        "2026-01-12",
        display="lisinopril 20 MG Oral Tablet",
        dosage=daily_dosage(1, None),
    ),
)

BASELINE_IDS = frozenset(resource["id"] for resource in BASELINE)

FAVOURABLE: Mapping[str, bool] = {
    "informed-consent": True,
    "ace-inhibitor-or-arb-stable-maximum-tolerated-dose": True,
    "ace-inhibitor-and-arb-contraindicated": False,
    "immunotherapy-for-renal-disease": False,
}
"""The answer to every manual item that keeps the baseline patient eligible."""

__all__ = ["AS_OF", "BASELINE", "FAVOURABLE", "LOINC", "RXNORM", "VISIT_1", "evaluate", "variant"]


def attest(answers: Mapping[str, bool]) -> dict[str, Attestation]:
    day = AS_OF + dt.timedelta(days=1)
    return {
        manual_id: Attestation(manual_id, answer, "Dr. Test Investigator", day)
        for manual_id, answer in answers.items()
    }


def variant(
    add: Iterable[Resource] = (),
    remove: Iterable[str] = (),
    replace_patient: Resource | None = None,
) -> list[Resource]:
    """The baseline without the resources whose ids are in `remove`, plus `add`."""
    removed = frozenset(remove)
    unknown = removed - BASELINE_IDS
    if unknown:
        raise ValueError(f"not in the baseline: {sorted(unknown)}")
    resources = [resource for resource in BASELINE if resource["id"] not in removed]
    if replace_patient is not None:
        resources = [replace_patient if r["resourceType"] == "Patient" else r for r in resources]
    return [*resources, *add]


def evaluate(
    trial: CompiledCriteria, resources: Iterable[Resource], answers: Mapping[str, bool]
) -> PatientEvaluation:
    """Bundle the resources, read the Bundle as the engine reads a file, evaluate as of AS_OF."""
    source = parse_bundle(orjson.dumps(bundle(*resources)), origin="test-patient.json")
    record = build_record(source, trial.terminology)
    return evaluate_patient(trial, record, AS_OF, attest(answers))
