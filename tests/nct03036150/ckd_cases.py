"""Per-criterion cases for NCT03036150: the baseline patient plus or minus a few resources.

Every criterion has at least one case of each role: `MEETS` (verdict clear), `FAILS`
(inclusion not met, exclusion met) and `SILENT` (the data it needs is absent or unattested:
missing data for measurements, the closed-world answer for diagnoses and drugs, manual review
for questions). Unless a case says otherwise, the manual items are answered favourably
(`FAVOURABLE`), so the verdict shows what the record decides. Dates are relative to the as-of
day 2026-11-01; visit 1 is the 14 days up to it.
"""

from __future__ import annotations

from ckd_baseline import FAVOURABLE, VISIT_1
from ckd_builders import (
    allergy,
    condition,
    daily_dosage,
    date_time,
    medication_request,
    medication_statement,
    observation,
    patient,
    procedure,
)
from trial_patients import (
    ALLERGY_CLINICAL,
    ALLERGY_VERIFICATION,
    ATC,
    CLEAR,
    CONDITION_VERIFICATION,
    CPT,
    ICD10,
    ICD10CM,
    LOINC,
    MANUAL,
    MISSING,
    RXNORM,
    SNOMED,
    UCUM,
    Case,
    Cases,
    Resource,
    Role,
    days_ago,
    short_id,
)

__all__ = ["CASES", "Case", "Role", "short_id"]


def without(*manual_ids: str) -> dict[str, bool]:
    """The favourable answers but for these manual items (left unanswered)."""
    return {key: value for key, value in FAVOURABLE.items() if key not in manual_ids}


def answered(**overrides: bool) -> dict[str, bool]:
    return {**FAVOURABLE, **{key.replace("_", "-"): value for key, value in overrides.items()}}


def verified(resource: Resource, status: str) -> Resource:
    """The Condition with this verificationStatus (FHIR R4 condition-ver-status)."""
    coding = {"system": CONDITION_VERIFICATION, "code": status}
    return {**resource, "verificationStatus": {"coding": [coding]}}


def allergy_as(
    resource: Resource, clinical: str | None = None, verification: str | None = None
) -> Resource:
    """The AllergyIntolerance with this clinicalStatus and verificationStatus (FHIR R4
    allergyintolerance-clinical, allergyintolerance-verification)."""
    changed = dict(resource)
    if clinical is not None:
        changed["clinicalStatus"] = {"coding": [{"system": ALLERGY_CLINICAL, "code": clinical}]}
    if verification is not None:
        coding = {"system": ALLERGY_VERIFICATION, "code": verification}
        changed["verificationStatus"] = {"coding": [coding]}
    return changed


def onset_as(resource: Resource, **fields: object) -> Resource:
    """The Condition with these fields instead of its onsetDateTime."""
    kept = {key: value for key, value in resource.items() if key != "onsetDateTime"}
    return {**kept, **fields}


def single_dated(statement: Resource) -> Resource:
    """The MedicationStatement dated by one day (`effectiveDateTime`, its period's start)
    instead of its effectivePeriod."""
    kept = {key: value for key, value in statement.items() if key != "effectivePeriod"}
    return {**kept, "effectiveDateTime": statement["effectivePeriod"]["start"]}


def years(value: int) -> Resource:
    return {"value": value, "unit": "a", "system": UCUM, "code": "a"}


i1, i2, i3, i4, i5 = (Cases(f"inclusion-{number}", FAVOURABLE) for number in range(1, 6))
e1, e2, e3, e4, e5, e6, e7 = (Cases(f"exclusion-{number}", FAVOURABLE) for number in range(1, 8))

EGFR_2021 = "98979-8"
MDRD = "33914-3"
UACR = "14959-1"
UACR_MOLAR = "32294-1"  # Albumin/Creatinine [Ratio] in Urine, reported in mg/mmol{creat}
NYHA = "88020-3"
NYHA_IV = (LOINC, "LA28407-7")
NYHA_III = (LOINC, "LA28406-9")
TACROLIMUS = "1664463"
DAPAGLIFLOZIN = "1488564"
PREDNISONE_5_MG_TABLET = "312617"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
DAPAGLIFLOZIN_10_MG_TABLET = "1488569"  # SCD (VSAC Hypoglycemics Treatment Medications)

FARXIGA_DISPLAY = "Farxiga 10 mg tablet (dapagliflozin)"


def referring(id: str, status: str, authored_on: str, **dispense: int) -> Resource:
    """A MedicationRequest whose medicationReference names a Medication not in the record."""
    order = medication_request(id, DAPAGLIFLOZIN, status, authored_on, **dispense)
    del order["medicationCodeableConcept"]
    return {
        **order,
        "medicationReference": {"reference": "Medication/farxiga-10", "display": FARXIGA_DISPLAY},
    }


def procedure_in_text(id: str, text: str, performed: str) -> Resource:
    """A Procedure naming what was done as text, with no coding."""
    return {**procedure(id, SNOMED, "0", performed), "code": {"text": text}}


def text_only(id: str, text: str, authored_on: str) -> Resource:
    """A MedicationRequest naming its drug as text, with no coding."""
    order = medication_request(id, DAPAGLIFLOZIN, "active", authored_on)
    return {**order, "medicationCodeableConcept": {"text": text}}


def ingredient_only(id: str, code: str, authored_on: str) -> Resource:
    """A MedicationRequest of a contained Medication coded only by its ingredient."""
    order = medication_request(id, code, "active", authored_on)
    del order["medicationCodeableConcept"]
    medication = {
        "resourceType": "Medication",
        "id": "med",
        "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]}}],
    }
    return {**order, "contained": [medication], "medicationReference": {"reference": "#med"}}


INCLUSION_1 = [
    i1.silent("unattested", MANUAL, answers=without("informed-consent"), reason=("manual review",)),
    i1.meets("consent attested"),
    i1.fails("consent attested no", answers=answered(informed_consent=False)),
]

INCLUSION_2 = [
    i2.meets("62 years old", evidence=("Patient/patient",)),
    i2.meets("exactly 18 on the as-of day", patient=patient("2008-11-01")),
    i2.fails("17 years old", patient=patient("2009-06-01")),
    i2.silent("no birth date", MISSING, patient={"resourceType": "Patient", "id": "patient"}),
]

INCLUSION_3 = [
    i3.meets(
        "no eGFR reported: computed by CKD-EPI 2021 from creatinine 1.8 mg/dL",
        reason=("computed: 42.0 mL/min/{1.73_m2} by CKD-EPI 2021",),
        evidence=("Observation/creatinine", "Patient/patient"),
    ),
    i3.meets(
        "creatinine in umol/L is converted (159 umol/L = 1.8 mg/dL)",
        remove=("creatinine",),
        add=(observation("creatinine-si", "14682-9", 159, "umol/L", VISIT_1),),
        evidence=("Observation/creatinine-si",),
    ),
    i3.meets(
        "a reported CKD-EPI eGFR of 58 decides over the creatinine",
        add=(observation("egfr", EGFR_2021, 58, "mL/min/{1.73_m2}", days_ago(3)),),
        evidence=("Observation/egfr",),
    ),
    i3.meets(
        "a reported eGFR 30 and creatinine 4.2 mg/dL (computed 15) the same day: reported wins",
        remove=("creatinine",),
        add=(
            observation("egfr", EGFR_2021, 30, "mL/min/{1.73_m2}", VISIT_1),
            observation("creatinine-high", "2160-0", 4.2, "mg/dL", VISIT_1),
        ),
        reason=("computed one is of the same day and says otherwise",),
        evidence=("Observation/egfr", "Observation/creatinine-high"),
    ),
    i3.fails(
        "reported eGFR 45 on 2026-10-19, then creatinine 3.5 mg/dL: the newer (eGFR 19) decides",
        remove=("creatinine",),
        add=(
            observation("egfr", EGFR_2021, 45, "mL/min/{1.73_m2}", days_ago(13)),
            observation("creatinine-rising", "2160-0", 3.5, "mg/dL", days_ago(2)),
        ),
        reason=("computed: 18.9 mL/min", "measured one is older and says otherwise"),
        evidence=("Observation/creatinine-rising", "Observation/egfr"),
    ),
    i3.fails(
        "computed eGFR 24.993 from creatinine 2.776 mg/dL reads 24.99, not 25.0",
        remove=("creatinine",),
        add=(observation("creatinine-boundary", "2160-0", 2.776, "mg/dL", VISIT_1),),
        reason=("computed: 24.99 mL/min/{1.73_m2}", "is not between 25"),
    ),
    i3.meets(
        "computed eGFR 25.0035 from creatinine 2.775 mg/dL reads 25.004, not 25",
        remove=("creatinine",),
        add=(observation("creatinine-boundary", "2160-0", 2.775, "mg/dL", VISIT_1),),
        reason=("computed: 25.004 mL/min/{1.73_m2}", "is between 25"),
    ),
    i3.fails(
        "reported CKD-EPI eGFR 22 'mL/min/1.73m2' (as laboratories print it) is below 25",
        add=(observation("egfr-printed", EGFR_2021, 22, "mL/min/1.73m2", days_ago(3)),),
        evidence=("Observation/egfr-printed",),
    ),
    i3.meets(
        "reported CKD-EPI eGFR 0.9 mL/s/1.73m2 (SI) is 54 mL/min/1.73 m2",
        add=(observation("egfr-si", EGFR_2021, 0.9, "mL/s/1.73m2", days_ago(3)),),
        evidence=("Observation/egfr-si",),
    ),
    i3.fails(
        "reported CKD-EPI eGFR 22 is below 25",
        add=(observation("egfr", EGFR_2021, 22, "mL/min/{1.73_m2}", days_ago(3)),),
    ),
    i3.fails(
        "computed eGFR 97 from creatinine 0.9 mg/dL is above 75",
        remove=("creatinine",),
        add=(observation("creatinine-normal", "2160-0", 0.9, "mg/dL", VISIT_1),),
        reason=("computed",),
    ),
    i3.fails(
        "computed eGFR 15 from creatinine 4.2 mg/dL is below 25",
        remove=("creatinine",),
        add=(observation("creatinine-high", "2160-0", 4.2, "mg/dL", VISIT_1),),
    ),
    i3.silent(
        "only an MDRD eGFR and no creatinine: MDRD is not CKD-EPI",
        MISSING,
        remove=("creatinine",),
        add=(observation("egfr-mdrd", MDRD, 40, "mL/min/{1.73_m2}", VISIT_1),),
        reason=("no creatinine",),
    ),
    i3.silent(
        "creatinine older than visit 1 is stale",
        MISSING,
        remove=("creatinine",),
        add=(observation("creatinine-old", "2160-0", 1.8, "mg/dL", days_ago(40)),),
        reason=("stale",),
    ),
    i3.silent(
        "gender unknown: the equation needs sex",
        MISSING,
        patient=patient("1964-02-10", "unknown"),
        reason=("needs sex female or male",),
    ),
]

INCLUSION_4 = [
    i4.meets(
        "UACR 850 mg/g at visit 1, 420 mg/g a year ago",
        evidence=("Observation/uacr", "Observation/uacr-last-year"),
    ),
    i4.meets(
        "UACR 30 mg/mmol (265 mg/g) at visit 1",
        remove=("uacr",),
        add=(observation("uacr-si", UACR, 30, "mg/mmol", VISIT_1),),
    ),
    i4.meets(
        "UACR (LOINC 32294-1) 96 mg/mmol{creat}, LOINC's unit, is 849 mg/g at visit 1",
        remove=("uacr",),
        add=(observation("uacr-ratio", UACR_MOLAR, 96, "mg/mmol{creat}", VISIT_1),),
        evidence=("Observation/uacr-ratio",),
    ),
    i4.meets(
        "UACR in mg/g{creat} (UCUM annotation: a label, not another unit)",
        remove=("uacr",),
        add=(observation("uacr-annotated", UACR, 850, "mg/g{creat}", VISIT_1),),
        evidence=("Observation/uacr-annotated",),
    ),
    i4.fails(
        "UACR (LOINC 32294-1) 15 mg/mmol{creat} is 133 mg/g, below 200",
        remove=("uacr",),
        add=(observation("uacr-ratio-low", UACR_MOLAR, 15, "mg/mmol{creat}", VISIT_1),),
        reason=("132.6",),
    ),
    i4.meets(
        "an earlier UACR of 3.0 mg/mmol{creat} is KDIGO A2 (its mg/mmol cut-off)",
        remove=("uacr-last-year",),
        add=(observation("uacr-ratio-before", UACR_MOLAR, 3.0, "mg/mmol{creat}", days_ago(400)),),
        evidence=("Observation/uacr-ratio-before",),
    ),
    i4.meets(
        "UACR computed from urine albumin 500 mg/L and urine creatinine 1 g/L",
        remove=("uacr",),
        add=(
            observation("urine-albumin", "14957-5", 500, "mg/L", VISIT_1),
            observation("urine-creatinine", "2161-8", 1, "g/L", VISIT_1),
        ),
        reason=("computed",),
        evidence=("Observation/urine-albumin", "Observation/urine-creatinine"),
    ),
    i4.meets(
        "an earlier UACR of 3.0 mg/mmol is KDIGO A2 (its mg/mmol cut-off, not 26.5 mg/g)",
        remove=("uacr-last-year",),
        add=(observation("uacr-si-before", UACR, 3.0, "mg/mmol", days_ago(400)),),
        evidence=("Observation/uacr-si-before",),
    ),
    i4.silent(
        "an earlier UACR of 2.9 mg/mmol is below A2: no evidence either way",
        MISSING,
        remove=("uacr-last-year",),
        add=(observation("uacr-si-normal", UACR, 2.9, "mg/mmol", days_ago(400)),),
        reason=("does not rule it out",),
    ),
    i4.meets(
        "no earlier UACR, a PCR of 600 mg/g a year ago (KDIGO A2 is PCR 150 mg/g)",
        remove=("uacr-last-year",),
        add=(observation("pcr-before", "2890-2", 600, "mg/g", days_ago(400)),),
        evidence=("Observation/pcr-before",),
    ),
    i4.meets(
        "no earlier UACR, a PCR of 20 mg/mmol a year ago (its mg/mmol cut-off, 15)",
        remove=("uacr-last-year",),
        add=(observation("pcr-before-si", "2890-2", 20, "mg/mmol", days_ago(400)),),
    ),
    i4.silent(
        "no earlier UACR, a PCR of 100 mg/g a year ago is below A2: no evidence either way",
        MISSING,
        remove=("uacr-last-year",),
        add=(observation("pcr-normal", "2890-2", 100, "mg/g", days_ago(400)),),
        reason=("does not rule it out",),
    ),
    i4.meets(
        "no earlier UACR, 24-hour urine protein 0.8 g/24h a year ago",
        remove=("uacr-last-year",),
        add=(observation("protein-24h", "2889-4", 0.8, "g/24h", days_ago(400)),),
        evidence=("Observation/protein-24h",),
    ),
    i4.meets(
        "no earlier UACR, 24-hour urine albumin 45 mg/(24.h) a year ago",
        remove=("uacr-last-year",),
        add=(observation("albumin-24h", "14956-7", 45, "mg/(24.h)", days_ago(400)),),
    ),
    i4.meets(
        "persistent proteinuria (ICD-10-CM R80.1) diagnosed 2 years ago, no earlier UACR",
        remove=("uacr-last-year",),
        add=(condition("proteinuria", ICD10CM, "R80.1", "2024-06-01"),),
        evidence=("Condition/proteinuria",),
    ),
    i4.silent(
        "Bence Jones proteinuria (R80.3) is light chains, not albumin: no evidence",
        MISSING,
        remove=("uacr-last-year",),
        add=(condition("bence-jones", ICD10CM, "R80.3", "2024-06-01"),),
    ),
    i4.silent(
        "orthostatic proteinuria (R80.2) is benign: no evidence",
        MISSING,
        remove=("uacr-last-year",),
        add=(condition("orthostatic", ICD10CM, "R80.2", "2024-06-01"),),
    ),
    i4.meets(
        "an albuminuria diagnosis is the earlier evidence",
        remove=("uacr-last-year",),
        add=(condition("microalbuminuria", SNOMED, "90781000119102", "2024-03-01"),),
    ),
    i4.fails(
        "UACR 150 mg/g at visit 1",
        remove=("uacr",),
        add=(observation("uacr-low", UACR, 150, "mg/g", VISIT_1),),
    ),
    i4.fails(
        "UACR 6200 mg/g at visit 1",
        remove=("uacr",),
        add=(observation("uacr-nephrotic", UACR, 6200, "mg/g", VISIT_1),),
    ),
    i4.silent(
        "UACR 20 mg/g a year ago, no albuminuria diagnosis: no evidence against it",
        MISSING,
        remove=("uacr-last-year",),
        add=(observation("uacr-normal-before", UACR, 20, "mg/g", days_ago(400)),),
        reason=("20 mg/g", "is not >= 30 mg/g, which does not rule it out"),
        evidence=("Observation/uacr-normal-before",),
    ),
    i4.silent(
        "only a normal UACR of 2015 (20 mg/g): unknown, as with no earlier UACR",
        MISSING,
        remove=("uacr-last-year",),
        add=(observation("uacr-2015", UACR, 20, "mg/g", "2015-03-01"),),
        reason=("does not rule it out",),
    ),
    i4.silent(
        "no UACR at visit 1",
        MISSING,
        remove=("uacr",),
        reason=("no urine_albumin",),
    ),
    i4.silent(
        "UACR from urine albumin and urine creatinine 12 days apart: not one sample",
        MISSING,
        remove=("uacr",),
        add=(
            observation("urine-albumin", "14957-5", 300, "mg/L", days_ago(13)),
            observation("urine-creatinine", "2161-8", 40, "mg/dL", days_ago(1)),
        ),
        reason=(
            "urine albumin on 2026-10-19 and urine creatinine on 2026-10-31 are not from the "
            "same sample",
        ),
    ),
    i4.silent(
        "only recent UACRs: no evidence 3 months before visit 1",
        MISSING,
        remove=("uacr-last-year",),
        add=(observation("uacr-last-month", UACR, 700, "mg/g", days_ago(40)),),
        reason=(
            "to 2026-08-01 (at least 3 months before the as-of date 2026-11-01); outside the "
            "window: the earliest after it, 2026-09-22 (Observation/uacr-last-month), is too "
            "recent",
        ),
    ),
    i4.silent(
        "a UACR one day short of 3 months before visit 1 is too recent",
        MISSING,
        remove=("uacr-last-year",),
        add=(observation("uacr-3-months-less-a-day", UACR, 420, "mg/g", "2026-08-02"),),
        reason=("the earliest after it, 2026-08-02 (Observation/uacr-3-months-less-a-day)",),
    ),
    i4.silent(
        "albuminuria diagnosed 2 months ago, no older UACR",
        MISSING,
        remove=("uacr-last-year",),
        add=(condition("recent-albuminuria", SNOMED, "274769005", days_ago(60)),),
    ),
]

LISINOPRIL_ENDED = medication_request("lisinopril-ended", "314077", "completed", days_ago(90))
LISINOPRIL_ON_HOLD = {
    **medication_request("lisinopril-held", "314077", "on-hold", "2026-01-15"),
    "statusReason": {"text": "held: potassium 6.1"},
}
LISINOPRIL_PROPOSED = {
    **medication_request("lisinopril-proposed", "314077", "active", "2026-01-15"),
    "intent": "proposal",
}

SACUBITRIL_VALSARTAN_97_103 = "1656354"

INCLUSION_5_ARNI = [
    i5.silent(
        "sacubitril / valsartan since January, no ACE-I or ARB: counts as the ARB? (unanswered)",
        MANUAL,
        remove=("lisinopril",),
        add=(medication_request("arni", SACUBITRIL_VALSARTAN_97_103, "active", "2026-01-12"),),
        answers={
            **without("sacubitril-valsartan-counts-as-stable-maximum-tolerated-arb"),
            "ace-inhibitor-and-arb-contraindicated": False,
        },
        reason=("manual review",),
    ),
    i5.meets(
        "sacubitril / valsartan since January, attested as the ARB treatment",
        remove=("lisinopril",),
        add=(medication_request("arni", SACUBITRIL_VALSARTAN_97_103, "active", "2026-01-12"),),
        evidence=("MedicationRequest/arni",),
    ),
    i5.fails(
        "sacubitril / valsartan by ATC C09DX04, attested not the ARB, no contraindication",
        remove=("lisinopril",),
        add=(medication_request("arni-atc", "C09DX04", "active", "2026-01-12", system=ATC),),
        answers=answered(
            sacubitril_valsartan_counts_as_stable_maximum_tolerated_arb=False,
            ace_inhibitor_and_arb_contraindicated=False,
        ),
    ),
    i5.meets(
        "Zestril 20 mg tablet (branded lisinopril, RxNorm SBD 104378) since January",
        remove=("lisinopril",),
        add=(medication_request("zestril", "104378", "active", "2026-01-12"),),
        answers=without("sacubitril-valsartan-counts-as-stable-maximum-tolerated-arb"),
        evidence=("MedicationRequest/zestril",),
    ),
    i5.meets(
        "Diovan 160 mg tablet (branded valsartan, RxNorm SBD 351762) since January",
        remove=("lisinopril",),
        add=(medication_request("diovan", "351762", "active", "2026-01-12"),),
        answers=without("sacubitril-valsartan-counts-as-stable-maximum-tolerated-arb"),
    ),
    i5.silent(
        "Entresto 97/103 mg tablet (RxNorm SBD 1656356) since January: an ARNI, asked",
        MANUAL,
        remove=("lisinopril",),
        add=(medication_request("entresto", "1656356", "active", "2026-01-12"),),
        answers={
            **without("sacubitril-valsartan-counts-as-stable-maximum-tolerated-arb"),
            "ace-inhibitor-and-arb-contraindicated": False,
        },
        reason=("manual review",),
    ),
    i5.meets(
        "valsartan and amlodipine by ATC C09DB01 since January: an ARB",
        remove=("lisinopril",),
        add=(medication_request("exforge", "C09DB01", "active", "2026-01-12", system=ATC),),
        answers=without("sacubitril-valsartan-counts-as-stable-maximum-tolerated-arb"),
        evidence=("MedicationRequest/exforge",),
    ),
]

INCLUSION_5 = [
    i5.meets(
        "active lisinopril order since January, stable dose attested",
        evidence=("MedicationRequest/lisinopril",),
        reason=("in use continuously for 4 weeks (2026-10-04 to 2026-11-01)",),
    ),
    i5.meets(
        "losartan refills of 30 days with a 3-day gap",
        remove=("lisinopril",),
        add=(
            medication_request("losartan-1", "979492", "completed", days_ago(60), supply_days=30),
            medication_request("losartan-2", "979492", "active", days_ago(27), supply_days=30),
        ),
        reason=("in use continuously",),
    ),
    i5.meets(
        "ramipril 10 mg capsule (SCD) since January",
        remove=("lisinopril",),
        add=(medication_request("ramipril", "261962", "active", "2026-01-12"),),
        evidence=("MedicationRequest/ramipril",),
    ),
    i5.meets(
        "fosinopril (ingredient) since January",
        remove=("lisinopril",),
        add=(medication_request("fosinopril", "50166", "active", "2026-01-12"),),
    ),
    i5.meets(
        "perindopril erbumine 4 mg tablet (SCD) since January",
        remove=("lisinopril",),
        add=(medication_request("perindopril", "854988", "active", "2026-01-12"),),
    ),
    i5.meets(
        "olmesartan 20 mg tablet (SCD) since January",
        remove=("lisinopril",),
        add=(medication_request("olmesartan", "349401", "active", "2026-01-12"),),
    ),
    i5.meets(
        "not on an ACE-I or ARB, contraindication attested",
        remove=("lisinopril",),
        answers=answered(ace_inhibitor_and_arb_contraindicated=True),
    ),
    i5.fails(
        "lisinopril started 2 weeks before visit 1",
        remove=("lisinopril",),
        add=(medication_request("lisinopril-new", "314077", "active", days_ago(14)),),
    ),
    i5.fails(
        "dose not stable (investigator)",
        answers=answered(ace_inhibitor_or_arb_stable_maximum_tolerated_dose=False),
    ),
    i5.fails(
        "lisinopril only proposed (intent proposal): no use",
        remove=("lisinopril",),
        add=(LISINOPRIL_PROPOSED,),
    ),
    i5.meets(
        "lisinopril on record beside an unidentifiable order",
        add=(referring("farxiga-order", "active", "2026-01-15"),),
        evidence=("MedicationRequest/lisinopril",),
    ),
    i5.meets(
        "lisinopril as the ingredient of a contained Medication",
        remove=("lisinopril",),
        add=(ingredient_only("lisinopril-ingredient", "29046", "2026-01-15"),),
    ),
    i5.silent(
        "only an order whose Medication is not in the record",
        MISSING,
        remove=("lisinopril",),
        add=(referring("unknown-order", "active", "2026-01-15"),),
        reason=("is not in the record: which drug it is cannot be told",),
    ),
    i5.silent(
        "lisinopril order on hold: end of use unknown",
        MISSING,
        remove=("lisinopril",),
        add=(LISINOPRIL_ON_HOLD,),
        reason=("end of use unknown",),
    ),
    i5.silent(
        "an ended order without supply duration: continuous use unknown",
        MISSING,
        remove=("lisinopril",),
        add=(LISINOPRIL_ENDED,),
        reason=("end of use unknown",),
    ),
    i5.silent(
        "no ACE-I or ARB and contraindication unanswered",
        MANUAL,
        remove=("lisinopril",),
        answers=without("ace-inhibitor-and-arb-contraindicated"),
    ),
]

EXCLUSION_1 = [
    e1.meets("no such diagnosis"),
    e1.fails("ADPKD (ICD-10-CM Q61.2)", add=(condition("adpkd", ICD10CM, "Q61.2", "2015-01-01"),)),
    e1.fails(
        "lupus nephritis (SNOMED), resolved",
        add=(condition("ln", SNOMED, "68815009", "2010-01-01", "resolved", "2012-01-01"),),
    ),
    e1.fails(
        "tubulo-interstitial nephropathy in SLE (M32.15)",
        add=(condition("ln-m3215", ICD10CM, "M32.15", "2018-03-01"),),
    ),
    e1.fails(
        "lupus nephritis WHO class IV (SNOMED)",
        add=(condition("ln-iv", SNOMED, "36402006", "2019-01-01"),),
    ),
    e1.fails(
        "granulomatosis with polyangiitis (M31.31)",
        add=(condition("gpa", ICD10CM, "M31.31", "2019-05-01"),),
    ),
    e1.fails(
        "microscopic polyangiitis in SNOMED CT (239928004)",
        add=(condition("mpa", SNOMED, "239928004", "2020-04-01"),),
        evidence=("Condition/mpa",),
    ),
    e1.fails(
        "eosinophilic granulomatosis with polyangiitis in SNOMED CT (82275008)",
        add=(condition("egpa", SNOMED, "82275008", "2021-09-01"),),
    ),
    e1.fails(
        "ADPKD type 1 (PKD1) in SNOMED CT (253878003)",
        add=(condition("pkd1", SNOMED, "253878003", "2005-01-01"),),
    ),
    e1.meets(
        "polyarteritis nodosa (155441006) is not an ANCA-associated vasculitis",
        add=(condition("pan", SNOMED, "155441006", "2020-04-01"),),
    ),
    e1.silent(
        "WHO ICD-10 M32.1, SLE with organ involvement: is it lupus nephritis? (unanswered)",
        MANUAL,
        add=(condition("sle-organ", ICD10, "M32.1", "2017-01-01"),),
        answers=without("organ-involvement-is-lupus-nephritis-or-anca-vasculitis"),
        reason=("manual review",),
    ),
    e1.fails(
        "WHO ICD-10 M32.1, attested lupus nephritis",
        add=(condition("sle-organ", ICD10, "M32.1", "2017-01-01"),),
        answers=answered(organ_involvement_is_lupus_nephritis_or_anca_vasculitis=True),
        evidence=("Condition/sle-organ",),
    ),
    e1.meets(
        "WHO ICD-10 M32.1, attested not lupus nephritis (lupus pericarditis)",
        add=(condition("sle-organ", ICD10, "M32.1", "2017-01-01"),),
        answers=answered(organ_involvement_is_lupus_nephritis_or_anca_vasculitis=False),
    ),
    e1.fails(
        "ICD-10-CM M32.10, SLE organ involvement unspecified, attested lupus nephritis",
        add=(condition("sle-unspecified", ICD10CM, "M32.10", "2017-01-01"),),
        answers=answered(organ_involvement_is_lupus_nephritis_or_anca_vasculitis=True),
    ),
    e1.meets(
        "ICD-10-CM M32.19, SLE with other organ involvement, is not the kidney: no question",
        add=(condition("sle-other-organ", ICD10CM, "M32.19", "2017-01-01"),),
        answers=without("organ-involvement-is-lupus-nephritis-or-anca-vasculitis"),
    ),
    e1.silent("nothing recorded: closed world", CLEAR),
]

TACROLIMUS_ACTIVE = medication_request("tacrolimus", TACROLIMUS, "active", days_ago(100))


def prednisone(
    id: str, dosage: Resource | None, status: str = "active", code: str = "8640"
) -> Resource:
    return medication_request(
        id,
        code,
        status,
        days_ago(50),
        display="prednisone 5 MG Oral Tablet" if code == PREDNISONE_5_MG_TABLET else None,
        dosage=dosage,
    )


RX_GROUP = {"system": "urn:example:prescription", "value": "rx-1"}
"""A groupIdentifier: requests authorised together (FHIR R4 MedicationRequest)."""

EXCLUSION_2 = [
    e2.meets("no immunosuppressive therapy"),
    e2.meets(
        "tacrolimus in use, not for renal disease (investigator)",
        add=(TACROLIMUS_ACTIVE,),
        answers=answered(immunotherapy_for_renal_disease=False),
    ),
    e2.meets(
        "prednisone 5 mg/day is not above 7.5 mg",
        add=(prednisone("prednisone-low", daily_dosage(5)),),
        answers=answered(immunotherapy_for_renal_disease=True),
    ),
    e2.meets(
        "cyclophosphamide a year ago, 30-day supply",
        add=(medication_request("cyclo", "3002", "completed", days_ago(365), supply_days=30),),
        answers=answered(immunotherapy_for_renal_disease=True),
    ),
    e2.fails(
        "tacrolimus in use for renal disease",
        add=(TACROLIMUS_ACTIVE,),
        answers=answered(immunotherapy_for_renal_disease=True),
        evidence=("MedicationRequest/tacrolimus",),
    ),
    e2.fails(
        "obinutuzumab (ATC L01FA03) 3 months ago, for renal disease",
        add=(
            medication_request(
                "obinutuzumab", "L01FA03", "completed", days_ago(90), supply_days=1, system=ATC
            ),
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
        evidence=("MedicationRequest/obinutuzumab",),
    ),
    e2.fails(
        "prednisone 2 x 5 mg tablets daily (10 mg) for renal disease",
        add=(prednisone("prednisone-tablets", daily_dosage(2, None), code=PREDNISONE_5_MG_TABLET),),
        answers=answered(immunotherapy_for_renal_disease=True),
        reason=("10 mg/day prednisone-equivalent",),
    ),
    e2.fails(
        "prednisone 10 MG Oral Tablet (RxNorm 198145, a product), one a day, for renal disease",
        add=(
            medication_request(
                "prednisone-10",
                "198145",
                "active",
                days_ago(40),
                display="prednisone 10 MG Oral Tablet",
                dosage=daily_dosage(1, None),
            ),
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
        reason=("10 mg/day prednisone-equivalent",),
    ),
    e2.fails(
        "dexamethasone 4 MG Oral Tablet (RxNorm 197582), one a day: 26.7 mg prednisone-equivalent",
        add=(
            medication_request(
                "dexamethasone-4",
                "197582",
                "active",
                days_ago(40),
                display="dexamethasone 4 MG Oral Tablet",
                dosage=daily_dosage(1, None),
            ),
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
        evidence=("MedicationRequest/dexamethasone-4",),
    ),
    e2.fails(
        "methylprednisolone 8 mg/day = 10 mg prednisone-equivalent",
        add=(medication_request("mp", "6902", "active", days_ago(30), dosage=daily_dosage(8)),),
        answers=answered(immunotherapy_for_renal_disease=True),
    ),
    e2.silent(
        "tacrolimus in use, indication not attested",
        MANUAL,
        add=(TACROLIMUS_ACTIVE,),
        answers=without("immunotherapy-for-renal-disease"),
    ),
    e2.fails(
        "prednisone 5 mg + 5 mg ordered together (one groupIdentifier): 10 mg/day",
        add=(
            {**prednisone("prednisone-morning", daily_dosage(5)), "groupIdentifier": RX_GROUP},
            {**prednisone("prednisone-evening", daily_dosage(5)), "groupIdentifier": RX_GROUP},
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
        reason=("10 mg/day prednisone-equivalent on 2026-", "the total of"),
    ),
    e2.fails(
        "prednisone 5 mg with dexamethasone 0.75 mg (prednisone 5 mg): 10 mg/day",
        add=(
            prednisone("prednisone-low", daily_dosage(5)),
            medication_request(
                "dexamethasone", "3264", "active", days_ago(20), dosage=daily_dosage(0.75)
            ),
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
    ),
    e2.meets(
        "prednisone 5 mg order and the statement of it (basedOn): one course, 5 mg/day",
        add=(
            prednisone("prednisone-low", daily_dosage(5)),
            {
                **medication_statement("prednisone-taken", "8640", "active", days_ago(50), None),
                "dosage": [daily_dosage(5)],
                "basedOn": [{"reference": "MedicationRequest/prednisone-low"}],
            },
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
    ),
    e2.silent(
        "two prednisone 5 mg orders, not linked: one course or two cannot be told",
        MISSING,
        add=(
            prednisone("prednisone-low", daily_dosage(5)),
            prednisone("prednisone-again", daily_dosage(5)),
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
        reason=("one course recorded twice or courses taken together", "10 mg/day"),
    ),
    e2.meets(
        "dexamethasone 0.75 mg/day is prednisone 5 mg, not above 7.5 mg",
        add=(
            medication_request(
                "dexamethasone", "3264", "active", days_ago(20), dosage=daily_dosage(0.75)
            ),
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
    ),
    e2.silent(
        "prednisone order without dosage: daily dose unknown",
        MISSING,
        add=(prednisone("prednisone-no-dose", None),),
        answers=answered(immunotherapy_for_renal_disease=True),
        reason=("no dosage",),
    ),
]

BUDESONIDE = "19831"

EXCLUSION_2_BUDESONIDE = [
    e2.fails(
        "mycophenolate mofetil 500 mg tablet (RxNorm SCD 200060) for lupus nephritis",
        add=(medication_request("mmf", "200060", "active", days_ago(60)),),
        answers=answered(immunotherapy_for_renal_disease=True),
        evidence=("MedicationRequest/mmf",),
    ),
    e2.fails(
        "cyclophosphamide 1000 mg injection (RxNorm 1734919) 5 months ago",
        add=(
            medication_request(
                "cyclophosphamide-iv", "1734919", "completed", days_ago(150), supply_days=1
            ),
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
    ),
    e2.fails(
        "chlorambucil (ATC L01AA02) 4 months ago, for membranous nephropathy",
        add=(
            medication_request(
                "chlorambucil", "L01AA02", "completed", days_ago(120), supply_days=30, system=ATC
            ),
        ),
        answers=answered(immunotherapy_for_renal_disease=True),
        evidence=("MedicationRequest/chlorambucil",),
    ),
    e2.silent(
        "budesonide (ingredient only) in use, for IgA nephropathy: taken by mouth? (unanswered)",
        MANUAL,
        add=(medication_request("budesonide", BUDESONIDE, "active", days_ago(40)),),
        answers={
            **without("budesonide-taken-by-mouth"),
            "immunotherapy-for-renal-disease": True,
        },
        reason=("manual review",),
    ),
    e2.fails(
        "budesonide in use, attested by mouth (Nefecon) for IgA nephropathy",
        add=(medication_request("budesonide", BUDESONIDE, "active", days_ago(40)),),
        answers=answered(budesonide_taken_by_mouth=True, immunotherapy_for_renal_disease=True),
        evidence=("MedicationRequest/budesonide",),
    ),
    e2.meets(
        "budesonide in use, attested inhaled",
        add=(medication_request("budesonide", BUDESONIDE, "active", days_ago(40)),),
        answers=answered(budesonide_taken_by_mouth=False, immunotherapy_for_renal_disease=True),
    ),
    e2.meets(
        "inhaled budesonide (ATC R03BA02): no question about the route",
        add=(
            medication_request("budesonide-inhaled", "R03BA02", "active", days_ago(40), system=ATC),
        ),
        answers={
            **without("budesonide-taken-by-mouth"),
            "immunotherapy-for-renal-disease": True,
        },
    ),
    e2.meets(
        "budesonide stopped 8 months ago: outside the 6 months",
        add=(
            medication_request(
                "budesonide-old", BUDESONIDE, "completed", days_ago(240), supply_days=30
            ),
        ),
        answers={
            **without("budesonide-taken-by-mouth"),
            "immunotherapy-for-renal-disease": True,
        },
    ),
]

EXCLUSION_3 = [
    e3.meets("no transplant"),
    e3.meets(
        "corneal transplant status (Z94.7) is not an organ",
        add=(condition("cornea", ICD10CM, "Z94.7", "2018-01-01"),),
    ),
    e3.fails(
        "history of renal transplant (SNOMED, Synthea)",
        add=(condition("kidney-tx", SNOMED, "161665007", "2016-01-01"),),
    ),
    e3.fails(
        "kidney transplant Procedure",
        add=(procedure("kidney-tx-procedure", SNOMED, "70536003", "2009-07-01"),),
    ),
    e3.fails(
        "kidney transplant Procedure, ICD-10-PCS 0TY00Z0",
        add=(procedure("kidney-tx-pcs", ICD10PCS, "0TY00Z0", "2011-03-01"),),
        evidence=("Procedure/kidney-tx-pcs",),
    ),
    e3.fails(
        "kidney transplant Procedure, CPT 50360",
        add=(procedure("kidney-tx-cpt", CPT, "50360", "2013-05-01"),),
    ),
    e3.fails(
        "heart transplant Procedure, ICD-10-PCS 02YA0Z0",
        add=(procedure("heart-tx-pcs", ICD10PCS, "02YA0Z0", "2015-08-01"),),
    ),
    e3.meets(
        "renal autotransplantation (CPT 50380) is not an organ transplant",
        add=(procedure("auto-tx", CPT, "50380", "2014-01-01"),),
    ),
    e3.fails(
        "lung transplant rejection (ICD-10-CM T86.810)",
        add=(condition("lung-tx-rejection", ICD10CM, "T86.810", "2019-06-01"),),
        evidence=("Condition/lung-tx-rejection",),
    ),
    e3.meets(
        "corneal transplant rejection (T86.840) is a tissue graft, not an organ",
        add=(condition("cornea-rejection", ICD10CM, "T86.840", "2019-06-01"),),
    ),
    e3.fails(
        "liver transplant status Z94.4",
        add=(condition("liver-tx", ICD10CM, "Z94.4", "2020-02-02"),),
    ),
    e3.silent(
        "transplant status unspecified (Z94.9): a solid organ? (unanswered)",
        MANUAL,
        add=(condition("tx-unspecified", ICD10CM, "Z94.9", "2015-01-01"),),
        answers=without("transplanted-organ-is-solid-organ"),
        reason=("manual review",),
    ),
    e3.fails(
        "a 'Transplantation' Procedure (SNOMED CT 77465005), attested a solid organ",
        add=(procedure("tx-procedure", SNOMED, "77465005", "2012-01-01"),),
        answers=answered(transplanted_organ_is_solid_organ=True),
        evidence=("Procedure/tx-procedure",),
    ),
    e3.meets(
        "other transplanted organ and tissue status (Z94.89), attested bone marrow",
        add=(condition("tx-other", ICD10CM, "Z94.89", "2015-01-01"),),
        answers=answered(transplanted_organ_is_solid_organ=False),
    ),
    e3.meets(
        "bone marrow transplant status (Z94.81) is a cell transplant: no question",
        add=(condition("bmt", ICD10CM, "Z94.81", "2015-01-01"),),
        answers=without("transplanted-organ-is-solid-organ"),
    ),
    e3.silent("nothing recorded: closed world", CLEAR),
    e3.silent(
        "a Procedure in text only ('Kidney transplant'): which procedure it is cannot be told",
        MISSING,
        add=(procedure_in_text("kidney-tx-text", "Kidney transplant", "2012-04-01"),),
        reason=(
            "Procedure/kidney-tx-text: its procedure ('Kidney transplant') has no code the "
            "mappings know: which procedure it is cannot be told",
        ),
    ),
    e3.silent(
        "a Procedure coded only in a local system no mapping knows: cannot be told",
        MISSING,
        add=(procedure("kidney-tx-local", "urn:oid:2.16.840.1.113883.1.2.9", "KTX", "2012-04-01"),),
        reason=(
            "Procedure/kidney-tx-local: coded only as urn:oid:2.16.840.1.113883.1.2.9|KTX",
            "which procedure it is cannot be told",
        ),
    ),
    e3.fails(
        "a kidney transplant Procedure (SNOMED) beside one in text only: the coded one decides",
        add=(
            procedure("kidney-tx-coded", SNOMED, "70536003", "2009-07-01"),
            procedure_in_text("kidney-tx-words", "Kidney transplant", "2012-04-01"),
        ),
        evidence=("Procedure/kidney-tx-coded",),
    ),
]

EXCLUSION_4 = [
    e4.meets("never on an SGLT2 inhibitor"),
    e4.meets(
        "dapagliflozin ended 5 months ago (30-day supply)",
        add=(
            medication_request(
                "dapa-old", DAPAGLIFLOZIN, "completed", days_ago(180), supply_days=30
            ),
        ),
    ),
    e4.meets(
        "empagliflozin statement intended: a planned drug is no use",
        add=(medication_statement("empa-intended", "1545653", "intended", days_ago(2), None),),
    ),
    e4.meets(
        "dapagliflozin order of intent plan: no use",
        add=(
            {
                **medication_request("dapa-plan", DAPAGLIFLOZIN, "active", days_ago(10)),
                "intent": "plan",
            },
        ),
    ),
    e4.fails(
        "empagliflozin supply reaching into the last 8 weeks",
        add=(
            medication_request(
                "empa", "1545653", "completed", days_ago(80), supply_days=30, refills=1
            ),
        ),
    ),
    e4.fails(
        "dapagliflozin statement, ongoing",
        add=(medication_statement("dapa-statement", DAPAGLIFLOZIN, "active", "2026-06-01", None),),
    ),
    e4.fails(
        "intolerance of dapagliflozin",
        add=(allergy("dapa-intolerance", RXNORM, DAPAGLIFLOZIN, "2024-05-01"),),
    ),
    e4.fails(
        "dapagliflozin 10 mg tablet (SCD), active order",
        add=(medication_request("dapa-scd", DAPAGLIFLOZIN_10_MG_TABLET, "active", days_ago(30)),),
        evidence=("MedicationRequest/dapa-scd",),
    ),
    e4.fails(
        "Farxiga 10 mg (SBD), active order",
        add=(medication_request("farxiga", "1486977", "active", days_ago(30)),),
    ),
    e4.fails(
        "empagliflozin 10 mg / linagliptin 5 mg (SCD), active order",
        add=(medication_request("glyxambi-scd", "1602109", "active", days_ago(30)),),
    ),
    e4.fails(
        "intolerance of Jardiance 10 mg (SBD)",
        add=(allergy("jardiance-intolerance", RXNORM, "1545664", "2024-05-01"),),
    ),
    e4.fails(
        "intolerance of dapagliflozin, resolved: still a previous intolerance",
        add=(
            allergy_as(
                allergy("dapa-intolerance", RXNORM, DAPAGLIFLOZIN, "2024-05-01"),
                clinical="resolved",
            ),
        ),
        evidence=("AllergyIntolerance/dapa-intolerance",),
    ),
    e4.meets(
        "intolerance of dapagliflozin refuted",
        add=(
            allergy_as(
                allergy("dapa-intolerance", RXNORM, DAPAGLIFLOZIN, "2024-05-01"),
                verification="refuted",
            ),
        ),
    ),
    e4.silent(
        "intolerance of dapagliflozin unconfirmed: confirm",
        MISSING,
        add=(
            allergy_as(
                allergy("dapa-intolerance", RXNORM, DAPAGLIFLOZIN, "2024-05-01"),
                verification="unconfirmed",
            ),
        ),
        reason=(
            "AllergyIntolerance/dapa-intolerance: unconfirmed allergy or intolerance "
            "(verificationStatus unconfirmed): confirm",
        ),
    ),
    e4.fails(
        "saxagliptin and dapagliflozin by ATC A10BD21",
        add=(medication_request("qtern", "A10BD21", "active", days_ago(200), system=ATC),),
    ),
    e4.fails(
        "SGLT2 inhibitor by ATC class",
        add=(medication_request("atc-sglt2", "A10BK01", "active", days_ago(200), system=ATC),),
    ),
    e4.silent(
        "an order whose Medication is not in the record: which drug cannot be told",
        MISSING,
        add=(referring("farxiga-order", "active", days_ago(60)),),
        reason=(
            "MedicationRequest/farxiga-order: its medication (Medication/farxiga-10, "
            f"'{FARXIGA_DISPLAY}') is not in the record: which drug it is cannot be told",
        ),
    ),
    e4.silent(
        "an order naming its drug as text only",
        MISSING,
        add=(text_only("dapa-text", "dapagliflozin 10 mg tablet", days_ago(30)),),
        reason=("its medication ('dapagliflozin 10 mg tablet') has no code the mappings know",),
    ),
    e4.meets(
        "an unidentifiable order ended long before the 8 weeks (30-day supply)",
        add=(referring("farxiga-old", "completed", days_ago(365), supply_days=30),),
    ),
    e4.fails(
        "a contained Medication coded only by its ingredient, dapagliflozin",
        add=(ingredient_only("dapa-ingredient", DAPAGLIFLOZIN, days_ago(30)),),
    ),
    e4.fails(
        "empagliflozin on record beside an unidentifiable order: settled present",
        add=(
            medication_request("empa-active", "1545653", "active", days_ago(20)),
            referring("farxiga-order", "active", days_ago(60)),
        ),
        evidence=("MedicationRequest/empa-active",),
    ),
    e4.silent(
        "stopped dapagliflozin order without supply duration: end unknown",
        MISSING,
        add=(medication_request("dapa-stopped", DAPAGLIFLOZIN, "stopped", days_ago(120)),),
        reason=("its end is not known: it may have lasted into the window",),
    ),
    e4.silent(
        "dapagliflozin statement stopped, one date before the 8 weeks: end unknown",
        MISSING,
        add=(
            single_dated(
                medication_statement("dapa-said", DAPAGLIFLOZIN, "stopped", days_ago(61), None)
            ),
        ),
        reason=("MedicationStatement/dapa-said", "its end is not known"),
    ),
    e4.fails(
        "dapagliflozin statement completed, one date in the 8 weeks",
        add=(
            single_dated(
                medication_statement("dapa-said", DAPAGLIFLOZIN, "completed", days_ago(20), None)
            ),
        ),
        evidence=("MedicationStatement/dapa-said",),
    ),
]

T1DM_PROVISIONAL = verified(
    condition("t1dm-provisional", SNOMED, "46635009", "2015-05-01"), "provisional"
)

EXCLUSION_5 = [
    e5.meets("type 2 diabetes only"),
    e5.fails(
        "latent autoimmune diabetes in adults (SNOMED CT 426875007): type 1 (ADA)",
        add=(condition("lada", SNOMED, "426875007", "2015-01-01"),),
        evidence=("Condition/lada",),
    ),
    e5.fails(
        "type 1 diabetes (ICD-10-CM E10.9)",
        add=(condition("t1dm", ICD10CM, "E10.9", "1990-01-01"),),
    ),
    e5.fails(
        "type 1 diabetes (SNOMED)",
        add=(condition("t1dm-snomed", SNOMED, "46635009", "1990-01-01"),),
    ),
    e5.fails(
        "type 1 diabetes without complication (SNOMED 313435000)",
        add=(condition("t1dm-313435000", SNOMED, "313435000", "1995-01-01"),),
        evidence=("Condition/t1dm-313435000",),
    ),
    e5.fails(
        "renal disorder due to type 1 diabetes (SNOMED 421893009)",
        add=(condition("t1dm-renal", SNOMED, "421893009", "2015-01-01"),),
    ),
    e5.fails(
        "pre-existing type 1 diabetes in pregnancy (O24.012)",
        add=(condition("t1dm-pregnancy", ICD10CM, "O24.012", "2001-05-01"),),
    ),
    e5.meets(
        "MODY type 1 (SNOMED 609562003) is not type 1 diabetes",
        add=(condition("mody1", SNOMED, "609562003", "2005-01-01"),),
    ),
    e5.meets(
        "type 1 diabetes refuted",
        add=(verified(condition("t1dm-refuted", SNOMED, "46635009", "2015-05-01"), "refuted"),),
    ),
    e5.fails(
        "type 1 diabetes provisional, and confirmed by another record",
        add=(
            verified(
                condition("t1dm-provisional", SNOMED, "46635009", "2015-05-01"), "provisional"
            ),
            condition("t1dm", ICD10CM, "E10.9", "1990-01-01"),
        ),
        evidence=("Condition/t1dm",),
    ),
    e5.silent(
        "type 1 diabetes provisional: confirm",
        MISSING,
        add=(
            verified(
                condition("t1dm-provisional", SNOMED, "46635009", "2015-05-01"), "provisional"
            ),
        ),
        reason=("provisional diagnosis (verificationStatus provisional): confirm",),
    ),
    e5.silent(
        "type 1 diabetes unconfirmed: confirm",
        MISSING,
        add=(
            verified(condition("t1dm-unconfirmed", ICD10CM, "E10.9", "2015-05-01"), "unconfirmed"),
        ),
        reason=("unconfirmed diagnosis",),
    ),
    e5.silent("nothing recorded: closed world", CLEAR),
]

HEART_FAILURE = condition("chf", SNOMED, "88805009", "2022-01-01")


EXCLUSION_6 = [
    e6.meets("no heart failure"),
    e6.meets(
        "heart failure, NYHA class III last month",
        add=(HEART_FAILURE, observation("nyha", NYHA, None, None, days_ago(30), coded=NYHA_III)),
    ),
    e6.meets(
        "NYHA class IV last month with heart failure resolved in 2023, attested not CHF",
        add=(
            condition("chf-resolved", SNOMED, "88805009", "2022-01-01", "resolved", "2023-01-01"),
            observation("nyha", NYHA, None, None, days_ago(30), coded=NYHA_IV),
        ),
    ),
    e6.silent(
        "NYHA class IV last month with heart failure resolved in 2023: is it CHF? (unanswered)",
        MANUAL,
        add=(
            condition("chf-resolved", SNOMED, "88805009", "2022-01-01", "resolved", "2023-01-01"),
            observation("nyha", NYHA, None, None, days_ago(30), coded=NYHA_IV),
        ),
        answers=without("nyha-class-iv-is-congestive-heart-failure"),
        reason=("manual review",),
    ),
    e6.fails(
        "NYHA class IV last month, no heart failure coded, attested CHF",
        add=(observation("nyha", NYHA, None, None, days_ago(30), coded=NYHA_IV),),
        answers=answered(nyha_class_iv_is_congestive_heart_failure=True),
        evidence=("Observation/nyha",),
    ),
    e6.meets(
        "NYHA class III last month, no heart failure coded: no question",
        add=(observation("nyha", NYHA, None, None, days_ago(30), coded=NYHA_III),),
        answers=without("nyha-class-iv-is-congestive-heart-failure"),
    ),
    e6.meets(
        "no heart failure and no NYHA class: no question",
        answers=without("nyha-class-iv-is-congestive-heart-failure"),
    ),
    e6.fails(
        "heart failure, NYHA class IV last month",
        add=(HEART_FAILURE, observation("nyha", NYHA, None, None, days_ago(30), coded=NYHA_IV)),
        evidence=("Observation/nyha",),
    ),
    e6.silent("heart failure without a recent NYHA class", MISSING, add=(HEART_FAILURE,)),
    e6.fails(
        "hypertensive heart and CKD with heart failure (ICD-10-CM I13.0), NYHA class IV",
        add=(
            condition("hhd-ckd-hf", ICD10CM, "I13.0", "2023-03-01"),
            observation("nyha", NYHA, None, None, days_ago(30), coded=NYHA_IV),
        ),
        answers=without("nyha-class-iv-is-congestive-heart-failure"),
        evidence=("Condition/hhd-ckd-hf", "Observation/nyha"),
    ),
]

EXCLUSION_7 = [
    e7.meets("no event"),
    e7.meets(
        "STEMI two years ago, never closed in the record",
        add=(condition("stemi-old", SNOMED, "401303003", "2024-10-01"),),
    ),
    e7.meets(
        "'history of myocardial infarction' recorded last week is not an acute event",
        add=(condition("history-mi", SNOMED, "399211009", days_ago(7)),),
    ),
    e7.fails("NSTEMI 30 days ago", add=(condition("nstemi", SNOMED, "401314000", days_ago(30)),)),
    e7.fails("TIA (G45.9) 10 weeks ago", add=(condition("tia", ICD10CM, "G45.9", days_ago(70)),)),
    e7.fails(
        "acute coronary syndrome (394659003) 5 weeks ago",
        add=(condition("acs", SNOMED, "394659003", days_ago(35)),),
        evidence=("Condition/acs",),
    ),
    e7.meets(
        "acute coronary syndrome (394659003) 2 years ago",
        add=(condition("acs-old", SNOMED, "394659003", "2024-09-01"),),
    ),
    e7.fails(
        "unstable angina 3 weeks ago, resolved",
        add=(condition("ua", SNOMED, "4557003", days_ago(21), "resolved", days_ago(18)),),
    ),
    e7.meets(
        "stroke recorded last month, onset aged 50 (onsetAge: 2014)",
        add=(
            onset_as(
                condition("stroke-age-50", ICD10CM, "I63.9", "2014-01-01"),
                onsetAge=years(50),
                recordedDate=date_time(days_ago(30)),
            ),
        ),
    ),
    e7.meets(
        "stroke with no onset, recorded a year ago: began before the 12 weeks",
        add=(
            onset_as(
                condition("stroke-recorded-old", ICD10CM, "I63.9", "2025-01-01"),
                recordedDate=date_time(days_ago(365)),
            ),
        ),
    ),
    e7.silent(
        "stroke differential diagnosis 4 weeks ago: confirm",
        MISSING,
        add=(
            verified(condition("stroke-ruleout", ICD10CM, "I63.9", days_ago(28)), "differential"),
        ),
        reason=("differential diagnosis (verificationStatus differential): confirm",),
    ),
    e7.silent(
        "stroke with no onset, recorded 4 weeks ago: the record date is no onset",
        MISSING,
        add=(
            onset_as(
                condition("stroke-recorded", ICD10CM, "I63.9", "2026-01-01"),
                recordedDate=date_time(days_ago(28)),
            ),
        ),
        reason=("has no onset date; recorded",),
    ),
    e7.silent(
        "stroke at age 62 (onsetAge), recorded 10 days ago: the age spans the window's start",
        MISSING,
        add=(
            onset_as(
                condition("stroke-age-62", ICD10CM, "I63.9", "2026-01-01"),
                onsetAge=years(62),
                recordedDate=date_time(days_ago(10)),
            ),
        ),
        reason=("began aged 62 years (onsetAge): 2026-02-10 to 2027-02-09",),
    ),
    e7.silent(
        "stroke onset as text (onsetString), recorded 10 days ago",
        MISSING,
        add=(
            onset_as(
                condition("stroke-text", ICD10CM, "I63.9", "2026-01-01"),
                onsetString="last month",
                recordedDate=date_time(days_ago(10)),
            ),
        ),
        reason=("onset as text only ('last month', onsetString)",),
    ),
    e7.silent("nothing recorded: closed world", CLEAR),
]

CASES: list[Case] = [
    *INCLUSION_1,
    *INCLUSION_2,
    *INCLUSION_3,
    *INCLUSION_4,
    *INCLUSION_5,
    *INCLUSION_5_ARNI,
    *EXCLUSION_1,
    *EXCLUSION_2,
    *EXCLUSION_2_BUDESONIDE,
    *EXCLUSION_3,
    *EXCLUSION_4,
    *EXCLUSION_5,
    *EXCLUSION_6,
    *EXCLUSION_7,
]
