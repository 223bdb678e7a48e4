"""The baseline patient for NCT05315778 and the helpers every case uses.

The baseline is a 42-year-old woman with primary ITP (SNOMED and ICD-10-CM D69.3), treated
with prednisone and rituximab, with a full screening work-up on 2026-10-20 (12 days before
the as-of day 2026-11-01): normal blood counts, organ function and coagulation, ECOG 1,
negative serologies and a negative pregnancy test. Every criterion the record can answer is
clear for her; only the manual items are left, so she is a `candidate`, and `eligible` once
every manual item is answered favourably (`FAVOURABLE`).

Each test case is this baseline with a few resources removed (by id) or added.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from builders import SITE, condition, medication_request, observation, patient
from trial_patients import ICD10CM, LOINC, SNOMED, Resource, variant_of

NEGATIVE = (LOINC, "LA6577-6")
POSITIVE = (LOINC, "LA6576-8")


def _itp() -> Resource:
    itp = condition(SNOMED, "32273002", "2021-02-20", id="itp")
    itp["code"]["coding"].append({"system": ICD10CM, "code": "D69.3"})
    return itp


BASELINE: tuple[Resource, ...] = (
    patient("1984-03-15", "female"),
    _itp(),
    medication_request("8640", "completed", "2021-03-02", id="prednisone"),
    medication_request("121191", "completed", "2022-06-10", id="rituximab"),
    # screening laboratory tests, 2026-10-20, with the lab's own reference ranges
    observation("718-7", 128, "g/L", reference_range=(115, 150), id="hb"),
    observation("751-8", 3.2, "10*9/L", reference_range=(1.8, 6.3), id="anc"),
    observation("777-3", 28, "10*9/L", reference_range=(125, 350), id="platelets"),
    observation("14682-9", 64, "umol/L", reference_range=(41, 81), id="creatinine"),
    observation("14631-6", 12, "umol/L", reference_range=(3.4, 20.5), id="bilirubin"),
    observation("1742-6", 22, "U/L", reference_range=(7, 40), id="alt"),
    observation("1920-8", 25, "U/L", reference_range=(13, 35), id="ast"),
    observation("5902-2", 12.1, "s", reference_range=(11, 13.5), id="pt"),
    observation("6301-6", 1.02, "{INR}", reference_range=(0.8, 1.2), id="inr"),
    observation("3173-2", 30, "s", reference_range=(25, 35), id="aptt"),
    observation("18043-0", 62, "%", id="lvef"),
    observation("59408-5", 98, "%", id="spo2"),
    observation("89247-1", 1, id="ecog"),
    # serologies and pregnancy test, same day
    observation("56888-1", coded=NEGATIVE, id="hiv"),
    observation("24110-9", coded=NEGATIVE, id="syphilis"),
    observation("16128-1", coded=NEGATIVE, id="hcv-ab"),
    observation("5196-1", coded=NEGATIVE, id="hbsag"),
    observation("2106-3", coded=NEGATIVE, id="pregnancy-test"),
)

FAVOURABLE: Mapping[str, bool] = {
    # inclusion 1: relapsed (not refractory) ITP
    "refractory-itp-per-2020-guideline": False,
    "relapse-after-response": True,
    "adequate-venous-access": True,
    "informed-consent": True,
    "thrombocytopenia-due-to-thyroid-disease": False,
    "cardiovascular-disease-is-serious": False,
    "thrombocytopenia-is-primary-itp": True,
    "platelet-count-below-100-outside-record": True,
    "first-line-therapy-outside-record": False,
    "second-line-therapy-outside-record": False,
    "anti-cd20-outside-record": False,
    "unspecified-stroke-was-ischaemic": False,
    "carcinoma-in-situ-counts-as-malignancy": False,
    "viraemia-precludes-participation": False,
    "tuberculosis-untreated": False,
    "woman-of-childbearing-potential": True,
    "prior-car-t-or-bcma-therapy-unsuitable": False,
    "live-vaccine-within-6-weeks": False,
    "uncontrolled-infection-organ-dysfunction-or-disorder": False,
    "failed-t-cell-expansion": False,
    "dyspnea-ctcae-grade-1-or-higher": False,
    "other-clinical-study-within-3-months": False,
    "pregnant-breastfeeding-or-planning-pregnancy": False,
    "pregnant-despite-later-negative-test": False,
    "fertile-and-inappropriate": False,
    "suspected-substance-abuse": False,
    "investigator-judges-unsuitable": False,
}
"""The answer to every manual item that keeps the baseline patient eligible."""


evaluate = SITE.evaluate


def variant(
    add: Iterable[Resource] = (),
    remove: Iterable[str] = (),
    replace_patient: Resource | None = None,
) -> list[Resource]:
    """The baseline without the resources whose ids are in `remove`, plus `add`.

    `replace_patient` swaps the baseline Patient for another one (same id).
    """
    return variant_of(BASELINE, add, remove, replace_patient)
