"""The baseline patient for NCT03036150 (DAPA-CKD) and the helpers every case uses.

A 62-year-old man with type 2 diabetes, hypertension and diabetic kidney disease: creatinine
1.8 mg/dL at visit 1 (6 days before the as-of day 2026-11-01; no eGFR reported, so CKD-EPI
2021 computes 42 mL/min/1.73 m2), UACR 850 mg/g at visit 1 and 420 mg/g a year earlier,
lisinopril 20 mg daily (an active order since January). Every criterion the record can answer
is clear for him; only the manual items are left, so he is a `candidate`, and `eligible` with
`FAVOURABLE` answers. Each case is this baseline with a few resources removed (by id) or added.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ckd_builders import (
    SITE,
    condition,
    daily_dosage,
    medication_request,
    observation,
    patient,
)
from trial_patients import ICD10CM, SNOMED, Resource, days_ago, variant_of

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

FAVOURABLE: Mapping[str, bool] = {
    "informed-consent": True,
    "ace-inhibitor-or-arb-stable-maximum-tolerated-dose": True,
    "ace-inhibitor-and-arb-contraindicated": False,
    "immunotherapy-for-renal-disease": False,
    "organ-involvement-is-lupus-nephritis-or-anca-vasculitis": False,
    "budesonide-taken-by-mouth": False,
    "transplanted-organ-is-solid-organ": False,
    "nyha-class-iv-is-congestive-heart-failure": False,
    "sacubitril-valsartan-counts-as-stable-maximum-tolerated-arb": True,
}
"""The answer to every manual item that keeps the baseline patient eligible."""

evaluate = SITE.evaluate


def variant(
    add: Iterable[Resource] = (),
    remove: Iterable[str] = (),
    replace_patient: Resource | None = None,
) -> list[Resource]:
    """The baseline without the resources whose ids are in `remove`, plus `add`."""
    return variant_of(BASELINE, add, remove, replace_patient)
