"""Computed values (`computed:`) and medication use (`use:`) through load, compile, evaluate."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.errors import TrialsieveError
from engine.evaluate import CompiledCriteria, Truth
from engine.evaluate.nodes import EvaluationContext
from engine.lint import has_errors, lint_paths
from engine.record import build_record
from engine.sources import parse_bundle
from engine.trial import load_trial

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 11, 1)
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"

CRITERIA = """
trial: {id: NCT00000001, title: Computed values and medication use}
mappings: [MAPPINGS]
windows:
  visit:
    within: P14D
criteria:
  - id: inclusion-1-egfr
    kind: inclusion
    text: eGFR >= 25
    expression:
      resource: Observation
      concept: egfr-ckd-epi
      within: visit
      value: ">= 25 mL/min/{1.73_m2}"
      computed:
        formula: egfr-ckd-epi-2021-creatinine
        PREFER
  - id: inclusion-2-acr
    kind: inclusion
    text: UACR >= 200 mg/g
    expression:
      resource: Observation
      concept: urine-albumin-creatinine-ratio
      within: visit
      value: ">= 200 mg/g"
      computed: {formula: albumin-creatinine-ratio, inputs: {urine_creatinine: P1M}}
  - id: inclusion-3-ace
    kind: inclusion
    text: ACE inhibitor or ARB for at least 4 weeks
    expression:
      resource: MedicationStatement
      concept: ace-inhibitor-or-arb
      use: {continuous_for: P4W, allowed_gap: P3D}
  - id: exclusion-1-sglt2
    kind: exclusion
    text: SGLT2 inhibitor within 8 weeks
    expression:
      resource: MedicationStatement
      concept: sglt2-inhibitors
      use: {within: P8W}
  - id: exclusion-2-steroid-dose
    kind: exclusion
    text: prednisone-equivalent above 7.5 mg/day in the last 3 months
    expression:
      resource: MedicationStatement
      concept: methylprednisolone
      use: {within: P3M, daily_dose: "> 7.5 mg", equivalent: prednisone}
"""


def write_trial(tmp_path: Path, prefer: str = "measured", text: str = CRITERIA) -> Path:
    path = tmp_path / "trial.yaml"
    body = text.replace("MAPPINGS", str(ROOT / "mappings")).replace("PREFER", f"prefer: {prefer}")
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def measured_first(tmp_path_factory: pytest.TempPathFactory) -> CompiledCriteria:
    return load_trial(write_trial(tmp_path_factory.mktemp("measured")))


def patient(gender: str = "male", birth: str = "1966-05-01") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p", "gender": gender, "birthDate": birth}


def observation(
    code: str, value: float, unit: str, day: str, identifier: str | None = None
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": identifier or f"{code}-{day}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": f"{day}T09:00:00+00:00",
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
        "subject": {"reference": "Patient/p"},
    }


def order(
    identifier: str, code: str, status: str, authored: str, system: str = RXNORM, **more: Any
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": identifier,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": system, "code": code}]},
        "authoredOn": f"{authored}T09:00:00+00:00",
        "subject": {"reference": "Patient/p"},
        **more,
    }


def context_of(
    trial: CompiledCriteria,
    resources: Sequence[dict[str, Any]],
    computed_values: dict[str, Any] | None = None,
) -> EvaluationContext:
    """The evaluation context of a patient holding `resources` (a collection Bundle's
    entries), as of AS_OF; `computed_values`: what computed values found before (stored)."""
    document = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"http://example.org/{r['resourceType']}/{r['id']}", "resource": r}
            for r in resources
        ],
    }
    record = build_record(parse_bundle(orjson.dumps(document), origin="test"), trial.terminology)
    return EvaluationContext(
        record,
        AS_OF,
        {},
        trial.terminology,
        unavailable_types=trial.unavailable_types,
        computed_values=computed_values,
    )


def outcome_of(trial: CompiledCriteria, criterion: str, *resources: dict[str, Any]) -> Any:
    (compiled,) = [c for c in trial.criteria if c.id == criterion]
    return compiled.root.evaluate(context_of(trial, resources))


# ------------------------------------------------------------------ computed values

CREATININE_2 = observation("2160-0", 2.0, "mg/dL", "2026-10-25", "creatinine")


def test_no_measured_egfr_computes_ckd_epi_2021_and_cites_every_input(
    measured_first: CompiledCriteria,
) -> None:
    result = outcome_of(measured_first, "inclusion-1-egfr", patient(), CREATININE_2)
    assert result.truth is Truth.MET, result.reason
    assert "computed: 37.5 mL/min/{1.73_m2}" in result.reason  # male, 60 years, 2.0 mg/dL
    assert result.evidence == ("Observation/creatinine", "Patient/p")


def test_creatinine_in_umol_per_litre_is_converted_before_the_formula(
    measured_first: CompiledCriteria,
) -> None:
    high = observation("14682-9", 442, "umol/L", "2026-10-25", "creatinine-si")  # 5.0 mg/dL
    result = outcome_of(measured_first, "inclusion-1-egfr", patient(), high)
    assert result.truth is Truth.NOT_MET, result.reason
    assert "creatinine 5 mg/dL" in result.reason


def test_a_measured_ckd_epi_value_is_preferred_over_the_computed_one(
    measured_first: CompiledCriteria,
) -> None:
    measured = observation("98979-8", 20, "mL/min/{1.73_m2}", "2026-10-26", "egfr")
    result = outcome_of(measured_first, "inclusion-1-egfr", patient(), CREATININE_2, measured)
    assert result.truth is Truth.NOT_MET
    assert result.evidence == ("Observation/egfr",)


def test_prefer_computed_uses_the_formula_even_with_a_measured_value(tmp_path: Path) -> None:
    trial = load_trial(write_trial(tmp_path, prefer="computed"))
    measured = observation("98979-8", 20, "mL/min/{1.73_m2}", "2026-10-26", "egfr")
    result = outcome_of(trial, "inclusion-1-egfr", patient(), CREATININE_2, measured)
    assert result.truth is Truth.MET and "computed" in result.reason


def test_stale_missing_and_unusable_inputs_are_unknown_with_the_reason(
    measured_first: CompiledCriteria,
) -> None:
    stale = observation("2160-0", 1.0, "mg/dL", "2026-06-01", "old-creatinine")
    result = outcome_of(measured_first, "inclusion-1-egfr", patient(), stale)
    assert result.truth is Truth.UNKNOWN and "stale" in result.reason and result.missing
    missing = outcome_of(measured_first, "inclusion-1-egfr", patient())
    assert missing.truth is Truth.UNKNOWN and "no creatinine" in missing.reason
    no_sex = outcome_of(measured_first, "inclusion-1-egfr", patient(gender="unknown"), CREATININE_2)
    assert no_sex.truth is Truth.UNKNOWN and "needs sex female or male" in no_sex.reason
    implausible = observation("2160-0", 88, "mg/dL", "2026-10-25", "slip")
    slipped = outcome_of(measured_first, "inclusion-1-egfr", patient(), implausible)
    assert slipped.truth is Truth.UNKNOWN and "plausible" in slipped.reason


def test_acr_from_its_parts_with_an_input_window_of_its_own(
    measured_first: CompiledCriteria,
) -> None:
    albumin = observation("14957-5", 300, "mg/L", "2026-10-30", "albumin")
    creatinine = observation("14683-7", 8.84, "mmol/L", "2026-10-10", "urine-creatinine")  # 1 g/L
    result = outcome_of(measured_first, "inclusion-2-acr", patient(), albumin, creatinine)
    assert result.truth is Truth.MET, result.reason
    assert set(result.evidence) == {"Observation/albumin", "Observation/urine-creatinine"}


def test_a_value_whose_formula_reads_no_patient_is_shared_by_patients_holding_none_of_it(
    measured_first: CompiledCriteria,
) -> None:
    """The UACR (its formula reads no age or sex) answers the same for every patient holding
    no UACR, urine albumin or urine creatinine: that outcome is made once (`ComputedNode.reads`)
    and is the one the ordinary evaluation makes; a patient holding any of them is evaluated.
    The eGFR (its formula reads the Patient, whom it cites) is made for each patient."""
    from engine.evaluate.computed import ComputedNode
    from engine.evaluate.nodes import Reads
    from engine.evaluate.outcome import is_shared

    (acr,) = [c.root for c in measured_first.criteria if c.id == "inclusion-2-acr"]
    (egfr,) = [c.root for c in measured_first.criteria if c.id == "inclusion-1-egfr"]
    assert isinstance(acr, ComputedNode) and isinstance(egfr, ComputedNode)
    assert acr.reads == Reads(
        frozenset({"urine-albumin-creatinine-ratio", "urine-albumin", "urine-creatinine"}),
        frozenset({"Observation"}),
        frozenset(),
    )
    assert egfr.reads is None
    unrelated = observation("2160-0", 2.0, "mg/dL", "2026-10-25", "creatinine")
    first = outcome_of(measured_first, "inclusion-2-acr", patient())
    second = outcome_of(
        measured_first, "inclusion-2-acr", patient("female", "1990-01-01"), unrelated
    )
    assert first is second and is_shared(first)
    assert first.truth is Truth.UNKNOWN and first.missing and not first.evidence
    # the outcome the ordinary evaluation makes for such a patient
    document = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient()}]}
    record = build_record(
        parse_bundle(orjson.dumps(document), origin="t"), measured_first.terminology
    )
    context = EvaluationContext(record, AS_OF, {}, measured_first.terminology)
    assert acr.reads is not None and acr.reads.unread_by(context)
    assert acr._evaluate(context) == first
    # a patient holding an input (too old to use) is evaluated, and says so
    old = observation("14683-7", 8.84, "mmol/L", "2025-01-10", "urine-creatinine")
    stale = outcome_of(measured_first, "inclusion-2-acr", patient(), old)
    assert stale is not first and "stale" in stale.reason
    assert outcome_of(measured_first, "inclusion-1-egfr", patient()) is not outcome_of(
        measured_first, "inclusion-1-egfr", patient()
    )


def test_a_ratio_in_mg_per_mmol_is_converted_to_mg_per_g(measured_first: CompiledCriteria) -> None:
    ratio = observation("9318-7", 25, "mg/mmol", "2026-10-30", "acr")  # 221 mg/g
    assert outcome_of(measured_first, "inclusion-2-acr", patient(), ratio).truth is Truth.MET


# ------------------------------------------------------------------ medication use


def test_continuous_use_for_four_weeks(measured_first: CompiledCriteria) -> None:
    active = order("lisinopril", "314076", "active", "2026-08-01")
    assert outcome_of(measured_first, "inclusion-3-ace", patient(), active).truth is Truth.MET
    recent = order("recent", "314076", "active", "2026-10-20")
    assert outcome_of(measured_first, "inclusion-3-ace", patient(), recent).truth is Truth.NOT_MET
    ended = order("ended", "314076", "completed", "2026-08-01")
    unsure = outcome_of(measured_first, "inclusion-3-ace", patient(), ended)
    assert unsure.truth is Truth.UNKNOWN and "end of use unknown" in unsure.reason
    assert outcome_of(measured_first, "inclusion-3-ace", patient()).truth is Truth.NOT_MET


def test_supplies_joined_across_a_short_gap(measured_first: CompiledCriteria) -> None:
    def supply(identifier: str, start: str) -> dict[str, Any]:
        return order(
            identifier,
            "C09CA01",
            "completed",
            start,
            system=ATC,
            dispenseRequest={"expectedSupplyDuration": {"value": 22, "code": "d"}},
        )

    first, second = supply("first", "2026-09-20"), supply("second", "2026-10-14")  # 2-day gap
    result = outcome_of(measured_first, "inclusion-3-ace", patient(), first, second)
    assert result.truth is Truth.MET, result.reason
    late = supply("late", "2026-10-18")  # 6-day gap
    assert outcome_of(measured_first, "inclusion-3-ace", patient(), first, late).truth is (
        Truth.NOT_MET
    )


def test_last_use_within_eight_weeks(measured_first: CompiledCriteria) -> None:
    supply = {"expectedSupplyDuration": {"value": 30, "code": "d"}}
    recent = order("dapa", "1488564", "completed", "2026-08-15", dispenseRequest=supply)
    assert outcome_of(measured_first, "exclusion-1-sglt2", patient(), recent).truth is Truth.MET
    old = order("old", "1488564", "completed", "2026-05-01", dispenseRequest=supply)
    assert outcome_of(measured_first, "exclusion-1-sglt2", patient(), old).truth is Truth.NOT_MET
    unknown_end = order("open", "1488564", "stopped", "2026-05-01")
    assert outcome_of(measured_first, "exclusion-1-sglt2", patient(), unknown_end).truth is (
        Truth.UNKNOWN
    )


def statement(identifier: str, code: str, status: str, **dates: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": identifier,
        "status": status,
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
        "subject": {"reference": "Patient/p"},
        **dates,
    }


def test_a_stopped_statement_with_one_date_may_have_lasted_into_the_window(
    measured_first: CompiledCriteria,
) -> None:
    """A MedicationStatement `stopped` or `completed` with a single date proves use on that
    day; its end is not in the record. Begun before the 8 weeks, it may have lasted into
    them: unknown, naming it and why, as the same order (MedicationRequest) and
    `continuous_for` say; never "no use" (an exclusion cleared)."""
    for status in ("stopped", "completed", "on-hold"):
        stopped = statement("dapa", "1488564", status, effectiveDateTime="2026-09-01")
        result = outcome_of(measured_first, "exclusion-1-sglt2", patient(), stopped)
        assert result.truth is Truth.UNKNOWN, (status, result.reason)
        assert "MedicationStatement/dapa (effectiveDateTime, " in result.reason
        assert "began 2026-09-01, before the window, and its end is not known" in result.reason
        assert result.evidence == ("MedicationStatement/dapa",) and result.missing
    in_window = statement("dapa", "1488564", "completed", effectiveDateTime="2026-10-15")
    assert outcome_of(measured_first, "exclusion-1-sglt2", patient(), in_window).truth is (
        Truth.MET
    )
    ended = statement(
        "dapa", "1488564", "completed", effectivePeriod={"start": "2026-05-01", "end": "2026-06-01"}
    )
    assert outcome_of(measured_first, "exclusion-1-sglt2", patient(), ended).truth is (
        Truth.NOT_MET
    )
    ace = statement("lisinopril", "314076", "stopped", effectiveDateTime="2026-09-01")
    continuous = outcome_of(measured_first, "inclusion-3-ace", patient(), ace)
    assert continuous.truth is Truth.UNKNOWN and "end of use unknown" in continuous.reason


PLAIN_WINDOWS = """
trial: {id: NCT00000002, title: A medication in a window two ways}
mappings: [MAPPINGS]
criteria:
  - id: exclusion-1-within-active
    kind: exclusion
    text: SGLT2 inhibitor within 8 weeks (timing active)
    expression:
      resource: MedicationStatement
      concept: sglt2-inhibitors
      within: P8W
      timing: active
  - id: exclusion-2-use-within
    kind: exclusion
    text: SGLT2 inhibitor within 8 weeks (use)
    expression:
      resource: MedicationStatement
      concept: sglt2-inhibitors
      use: {within: P8W}
  - id: exclusion-3-began-within
    kind: exclusion
    text: SGLT2 inhibitor started within 8 weeks
    expression:
      resource: MedicationStatement
      concept: sglt2-inhibitors
      within: P8W
      timing: onset
"""

DAPAGLIFLOZIN = "1488564"


def supplied(days: int) -> dict[str, Any]:
    return {"expectedSupplyDuration": {"value": days, "unit": "days", "code": "d"}}


@pytest.fixture(scope="module")
def plain_windows(tmp_path_factory: pytest.TempPathFactory) -> CompiledCriteria:
    return load_trial(write_trial(tmp_path_factory.mktemp("plain"), text=PLAIN_WINDOWS))


@pytest.mark.parametrize(
    ("resource", "expected", "reason"),
    [
        (  # 90 days from 2026-08-01: in use to 2026-10-29, the window is from 2026-09-06
            order("dapa", DAPAGLIFLOZIN, "completed", "2026-08-01", dispenseRequest=supplied(90)),
            Truth.MET,
            "latest began 2026-08-01 (before the window) and active in it",
        ),
        (
            order("dapa", DAPAGLIFLOZIN, "completed", "2026-09-01"),
            Truth.UNKNOWN,
            "MedicationRequest/dapa (open-ended order, completed) began 2026-09-01, before the "
            "window, and its end is not known",
        ),
        (
            order("dapa", DAPAGLIFLOZIN, "on-hold", "2026-08-01"),
            Truth.UNKNOWN,
            "(open-ended order, on-hold) began 2026-08-01",
        ),
        (
            statement("dapa", DAPAGLIFLOZIN, "stopped", effectiveDateTime="2026-09-01"),
            Truth.UNKNOWN,
            "MedicationStatement/dapa (effectiveDateTime, stopped) began 2026-09-01",
        ),
        (
            statement("dapa", DAPAGLIFLOZIN, "stopped", effectivePeriod={"start": "2026-06-01"}),
            Truth.UNKNOWN,
            "(effectivePeriod without end, stopped) began 2026-06-01",
        ),
        (  # 30 days from 2026-05-01: ended long before the window
            order("dapa", DAPAGLIFLOZIN, "completed", "2026-05-01", dispenseRequest=supplied(30)),
            Truth.NOT_MET,
            "none on record",
        ),
        (
            order("dapa", DAPAGLIFLOZIN, "active", "2026-08-01"),
            Truth.MET,
            "1 found",
        ),
        (
            statement("dapa", DAPAGLIFLOZIN, "completed", effectiveDateTime="2026-10-15"),
            Truth.MET,
            "latest 2026-10-15",
        ),
    ],
    ids=[
        "supply-reaching-in",
        "completed-open-ended",
        "held",
        "stopped-statement-one-date",
        "stopped-statement-open-period",
        "supply-ended-before",
        "active-order",
        "statement-in-window",
    ],
)
def test_a_medication_within_a_window_is_in_it_by_its_period_of_use(
    plain_windows: CompiledCriteria, resource: dict[str, Any], expected: Truth, reason: str
) -> None:
    """`within: P8W` with `timing: active` (the Timing section's "on an ACE inhibitor in the
    last 4 weeks") reads a medication's period of use, as `use: {within: P8W}` does: a 90-day
    supply begun before the window is in it, an order or statement whose end is unknown may
    be (unknown, naming it), never "none on record"."""
    plain = outcome_of(plain_windows, "exclusion-1-within-active", patient(), resource)
    assert plain.truth is expected, plain.reason
    assert reason in plain.reason
    assert outcome_of(plain_windows, "exclusion-2-use-within", patient(), resource).truth is (
        expected
    )


def test_timing_onset_still_reads_when_a_medication_began(plain_windows: CompiledCriteria) -> None:
    supply = order("dapa", DAPAGLIFLOZIN, "completed", "2026-08-01", dispenseRequest=supplied(90))
    began_before = outcome_of(plain_windows, "exclusion-3-began-within", patient(), supply)
    assert began_before.truth is Truth.NOT_MET, began_before.reason
    recent = order("dapa", DAPAGLIFLOZIN, "completed", "2026-10-01")
    assert outcome_of(plain_windows, "exclusion-3-began-within", patient(), recent).truth is (
        Truth.MET
    )


def test_an_unidentified_drug_whose_supply_ended_before_the_window_does_not_matter(
    plain_windows: CompiledCriteria,
) -> None:
    def text_only(identifier: str, authored: str, **more: Any) -> dict[str, Any]:
        unnamed = order(identifier, "x", "completed", authored, **more)
        return {**unnamed, "medicationCodeableConcept": {"text": "dapagliflozin 10 mg"}}

    ended = text_only("old", "2026-05-01", dispenseRequest=supplied(30))
    assert outcome_of(plain_windows, "exclusion-1-within-active", patient(), ended).truth is (
        Truth.NOT_MET
    )
    reaching = text_only("reaching", "2026-08-01", dispenseRequest=supplied(90))
    result = outcome_of(plain_windows, "exclusion-1-within-active", patient(), reaching)
    assert result.truth is Truth.UNKNOWN and "which drug it is cannot be told" in result.reason


def test_a_stopped_dose_statement_begun_before_the_window_is_unknown(
    measured_first: CompiledCriteria,
) -> None:
    dosage = {
        "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": {"value": 8, "unit": "mg"}}],
    }
    stopped = statement(
        "mp", "6902", "stopped", effectiveDateTime="2026-07-01", dosage=[dosage]
    )  # before the 3 months from 2026-08-01
    result = outcome_of(measured_first, "exclusion-2-steroid-dose", patient(), stopped)
    assert result.truth is Truth.UNKNOWN, result.reason
    assert "MedicationStatement/mp" in result.reason and "its end is not known" in result.reason


def test_daily_dose_through_the_prednisone_equivalence_table(
    measured_first: CompiledCriteria,
) -> None:
    def methylprednisolone(milligrams: float) -> dict[str, Any]:
        dosage = {
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": milligrams, "unit": "mg"}}],
        }
        return order(
            f"mp-{milligrams:g}", "6902", "active", "2026-10-01", dosageInstruction=[dosage]
        )

    high = outcome_of(measured_first, "exclusion-2-steroid-dose", patient(), methylprednisolone(8))
    assert high.truth is Truth.MET and "10 mg/day prednisone-equivalent" in high.reason
    low = outcome_of(measured_first, "exclusion-2-steroid-dose", patient(), methylprednisolone(4))
    assert low.truth is Truth.NOT_MET


THRESHOLDS = """
trial: {id: NCT00000003, title: Prednisone-equivalent thresholds}
mappings: [MAPPINGS]
criteria:
""" + "".join(
    f"""
  - id: inclusion-{name}
    kind: inclusion
    text: prednisone-equivalent {test} on the as-of day
    expression:
      resource: MedicationStatement
      concept: systemic-glucocorticoid-ingredients
      use: {{daily_dose: "{test}", equivalent: prednisone}}
"""
    for name, test in (
        ("ge-5", ">= 5 mg"),
        ("gt-5", "> 5 mg"),
        ("ge-10", ">= 10 mg"),
        ("gt-10", "> 10 mg"),
        ("le-5", "<= 5 mg"),
        ("eq-5", "= 5 mg"),
    )
)


@pytest.fixture(scope="module")
def thresholds(tmp_path_factory: pytest.TempPathFactory) -> CompiledCriteria:
    return load_trial(write_trial(tmp_path_factory.mktemp("thresholds"), text=THRESHOLDS))


def taking(
    code: str, milligrams: float, system: str = RXNORM, unit: str = "mg", frequency: int = 1
) -> dict[str, Any]:
    dosage = {
        "timing": {"repeat": {"frequency": frequency, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": {"value": milligrams, "unit": unit}}],
    }
    return {
        **statement("steroid", code, "active", effectiveDateTime="2026-10-01"),
        "medicationCodeableConcept": {"coding": [{"system": system, "code": code}]},
        "dosage": [dosage],
    }


TABLE_DOSES = [  # each is prednisone 5 mg (Liu D et al. 2013, Table 1)
    ("prednisone", "8640", RXNORM, 5),
    ("prednisolone", "8638", RXNORM, 5),
    ("methylprednisolone", "6902", RXNORM, 4),
    ("triamcinolone", "H02AB08", ATC, 4),
    ("hydrocortisone", "H02AB09", ATC, 20),
    ("cortisone", "2878", RXNORM, 25),
    ("dexamethasone", "3264", RXNORM, 0.75),
    ("betamethasone", "1514", RXNORM, 0.6),
]


@pytest.mark.parametrize(
    ("code", "system", "milligrams"),
    [entry[1:] for entry in TABLE_DOSES],
    ids=[entry[0] for entry in TABLE_DOSES],
)
def test_the_tables_equivalent_doses_are_exactly_prednisone_5_mg(
    thresholds: CompiledCriteria, code: str, system: str, milligrams: float
) -> None:
    """Dexamethasone 0.75 mg and betamethasone 0.6 mg are prednisone 5 mg in the cited
    table: with rounded factors (6.667, 8.333) they were 5.00025 mg ("> 5 mg") and 4.9998 mg
    ("not >= 5 mg"). Each drug at its table dose is 5 mg exactly, and twice it 10 mg."""
    once = taking(code, milligrams, system)
    for criterion, truth in (
        ("inclusion-ge-5", Truth.MET),
        ("inclusion-gt-5", Truth.NOT_MET),
        ("inclusion-le-5", Truth.MET),
        ("inclusion-eq-5", Truth.MET),
    ):
        result = outcome_of(thresholds, criterion, patient(), once)
        assert result.truth is truth, (criterion, result.reason)
        assert "daily dose 5 mg/day prednisone-equivalent" in result.reason
    twice = taking(code, milligrams, system, frequency=2)
    assert outcome_of(thresholds, "inclusion-ge-10", patient(), twice).truth is Truth.MET
    assert outcome_of(thresholds, "inclusion-gt-10", patient(), twice).truth is Truth.NOT_MET


def test_a_dose_in_micrograms_or_split_is_as_exact(thresholds: CompiledCriteria) -> None:
    micrograms = taking("3264", 750, unit="ug")  # dexamethasone 0.75 mg
    result = outcome_of(thresholds, "inclusion-gt-5", patient(), micrograms)
    assert result.truth is Truth.NOT_MET, result.reason
    assert "dexamethasone 0.75 mg = prednisone 5 mg" in result.reason
    thirds = taking("3264", 0.25, frequency=3)  # 0.25 mg three times a day
    assert outcome_of(thresholds, "inclusion-eq-5", patient(), thirds).truth is Truth.MET
    tenths = taking("1514", 0.2, frequency=3)  # betamethasone 0.6 mg: 0.2 x 3 is not 0.6000...1
    assert outcome_of(thresholds, "inclusion-ge-5", patient(), tenths).truth is Truth.MET


TOTALS = """
trial: {id: NCT00000004, title: Daily dose totals}
mappings: [MAPPINGS]
criteria:
""" + "".join(
    f"""
  - id: {name}
    kind: inclusion
    text: prednisone-equivalent {test}
    expression:
      resource: MedicationStatement
      concept: systemic-glucocorticoid-ingredients
      use: {{{window}daily_dose: "{test}", equivalent: prednisone}}
"""
    for name, window, test in (
        ("above-7-5-now", "", "> 7.5 mg"),
        ("at-least-7-5-now", "", ">= 7.5 mg"),
        ("below-7-5-now", "", "< 7.5 mg"),
        ("above-7-5-in-3-months", "within: P3M, ", "> 7.5 mg"),
    )
)


@pytest.fixture(scope="module")
def totals(tmp_path_factory: pytest.TempPathFactory) -> CompiledCriteria:
    return load_trial(write_trial(tmp_path_factory.mktemp("totals"), text=TOTALS))


def steroid_order(
    identifier: str,
    code: str,
    milligrams: float,
    authored: str = "2026-10-01",
    status: str = "active",
    **more: Any,
) -> dict[str, Any]:
    dosage = {
        "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": {"value": milligrams, "unit": "mg"}}],
    }
    return order(identifier, code, status, authored, dosageInstruction=[dosage], **more)


def steroid_statement(identifier: str, code: str, milligrams: float, **more: Any) -> dict[str, Any]:
    taken = taking(code, milligrams)
    return {**taken, "id": identifier, **more}


PREDNISONE, DEXAMETHASONE = "8640", "3264"


def test_two_records_of_one_drug_not_linked_may_be_one_course_or_two(
    totals: CompiledCriteria,
) -> None:
    """Prednisone 5 mg in two unlinked statements from the same day: one course recorded
    twice (5 mg/day) or two taken together (10 mg/day); "> 7.5 mg" depends on it: unknown,
    naming both and the total, never a silent "not > 7.5 mg"."""
    first = steroid_statement("d0", PREDNISONE, 5)
    second = steroid_statement("d1", PREDNISONE, 5)
    result = outcome_of(totals, "above-7-5-now", patient(), first, second)
    assert result.truth is Truth.UNKNOWN, result.reason
    assert "MedicationStatement/d0 (5 mg/day" in result.reason
    assert "one course recorded twice or courses taken together" in result.reason
    assert (
        "10 mg/day prednisone-equivalent (MedicationStatement/d0 + MedicationStatement/d1) "
        "would be > 7.5 mg, 5 mg/day prednisone-equivalent (MedicationStatement/d0) would not"
    ) in result.reason
    assert set(result.evidence) == {"MedicationStatement/d0", "MedicationStatement/d1"}
    below = outcome_of(totals, "below-7-5-now", patient(), first, second)
    assert below.truth is Truth.UNKNOWN, below.reason  # 5 is below 7.5, 10 is not
    assert outcome_of(totals, "below-7-5-now", patient(), first).truth is Truth.MET
    small = steroid_statement("d1", PREDNISONE, 2)
    none_passes = outcome_of(totals, "above-7-5-now", patient(), first, small)
    assert none_passes.truth is Truth.NOT_MET, none_passes.reason  # 5, 2 or 7: none > 7.5
    assert "added up, 7 mg/day prednisone-equivalent" in none_passes.reason
    ten, other_ten = (steroid_statement(name, PREDNISONE, 10) for name in ("d0", "d1"))
    both_pass = outcome_of(totals, "above-7-5-now", patient(), ten, other_ten)
    assert both_pass.truth is Truth.MET, both_pass.reason  # 10 (one course) or 20
    assert "one course or several, 10 to 20 mg/day prednisone-equivalent, is > 7.5" in (
        both_pass.reason
    )
    disagreeing = outcome_of(totals, "above-7-5-now", patient(), ten, second)
    assert disagreeing.truth is Truth.UNKNOWN, disagreeing.reason  # 10, 5 (one course) or 15


def test_orders_written_together_are_added(totals: CompiledCriteria) -> None:
    """Requests sharing a groupIdentifier were authorised together by one author (FHIR R4):
    5 mg and 2.5 mg tablets are 7.5 mg a day."""
    group = {"system": "urn:example:prescriptions", "value": "rx-1"}
    five = steroid_order("five", PREDNISONE, 5, groupIdentifier=group)
    half = steroid_order("two-and-a-half", PREDNISONE, 2.5, groupIdentifier=group)
    result = outcome_of(totals, "at-least-7-5-now", patient(), five, half)
    assert result.truth is Truth.MET, result.reason
    assert "daily dose 7.5 mg/day prednisone-equivalent on 2026-11-01, the total of" in (
        result.reason
    )
    above = outcome_of(totals, "above-7-5-now", patient(), five, half)
    assert above.truth is Truth.NOT_MET, above.reason


def test_different_drugs_taken_together_are_added_in_prednisone_equivalents(
    totals: CompiledCriteria,
) -> None:
    prednisone = steroid_statement("pred", PREDNISONE, 5)
    dexamethasone = steroid_statement("dexa", DEXAMETHASONE, 0.75)  # prednisone 5 mg
    result = outcome_of(totals, "above-7-5-now", patient(), prednisone, dexamethasone)
    assert result.truth is Truth.MET, result.reason
    assert "10 mg/day prednisone-equivalent on 2026-11-01, the total of" in result.reason
    assert "courses taken together" in result.reason


def test_records_of_one_course_are_counted_once(totals: CompiledCriteria) -> None:
    """A statement based on an order, and a renewal naming the order it renews, are one
    course: 5 mg + 5 mg of one course is 5 mg/day, and the renewal's dose replaces the
    earlier order's from its start."""
    ordered = steroid_order("ordered", PREDNISONE, 5)
    taken = steroid_statement(
        "taken", PREDNISONE, 5, basedOn=[{"reference": "MedicationRequest/ordered"}]
    )
    result = outcome_of(totals, "above-7-5-now", patient(), ordered, taken)
    assert result.truth is Truth.NOT_MET, result.reason
    assert "added up" not in result.reason
    supply = {"expectedSupplyDuration": {"value": 90, "unit": "days", "code": "d"}}
    old = steroid_order("old", PREDNISONE, 10, "2026-09-01", "completed", dispenseRequest=supply)
    renewed = steroid_order(
        "renewed",
        PREDNISONE,
        5,
        "2026-10-15",
        priorPrescription={"reference": "MedicationRequest/old"},
    )
    now = outcome_of(totals, "above-7-5-now", patient(), old, renewed)  # old supply to 11-29
    assert now.truth is Truth.NOT_MET, now.reason  # 5 mg from 2026-10-15, not 15
    earlier = outcome_of(totals, "above-7-5-in-3-months", patient(), old, renewed)
    assert earlier.truth is Truth.MET, earlier.reason  # 10 mg from 2026-09-01
    assert "(MedicationRequest/old)" in earlier.reason
    unlinked = {key: value for key, value in renewed.items() if key != "priorPrescription"}
    unsure = outcome_of(totals, "above-7-5-now", patient(), old, unlinked)
    assert unsure.truth is Truth.UNKNOWN, unsure.reason  # 5 (the newer), or 15 if both
    assert "would not" in unsure.reason and "15 mg/day" in unsure.reason


def test_a_course_that_may_have_lasted_into_the_day_adds_a_reading(
    totals: CompiledCriteria,
) -> None:
    stopped = steroid_order("stopped", PREDNISONE, 10, "2026-09-01", "stopped")  # end unknown
    result = outcome_of(totals, "above-7-5-now", patient(), stopped)
    assert result.truth is Truth.UNKNOWN, result.reason
    assert "MedicationRequest/stopped (10 mg/day prednisone-equivalent" in result.reason
    assert "its end is not known" in result.reason
    low = steroid_order("stopped", PREDNISONE, 5, "2026-09-01", "stopped")
    assert outcome_of(totals, "above-7-5-now", patient(), low).truth is Truth.NOT_MET


def test_a_dose_that_cannot_be_read_settles_only_what_it_cannot_change(
    totals: CompiledCriteria,
) -> None:
    """Dexamethasone without a dosage beside prednisone 10 mg: the total is at least 10 mg,
    so "> 7.5 mg" is met; "< 7.5 mg" stays unknown, naming the unreadable dose."""
    prednisone = steroid_statement("pred", PREDNISONE, 10)
    unknown_dose = {
        key: value
        for key, value in steroid_statement("dexa", DEXAMETHASONE, 1).items()
        if key != "dosage"
    }
    met = outcome_of(totals, "above-7-5-now", patient(), prednisone, unknown_dose)
    assert met.truth is Truth.MET, met.reason
    below = outcome_of(totals, "below-7-5-now", patient(), prednisone, unknown_dose)
    assert below.truth is Truth.NOT_MET, below.reason  # at least 10: never below 7.5
    low = steroid_statement("pred", PREDNISONE, 5)
    unsure = outcome_of(totals, "above-7-5-now", patient(), low, unknown_dose)
    assert unsure.truth is Truth.UNKNOWN and "MedicationStatement/dexa: no dosage" in (
        unsure.reason
    )


# ------------------------------------------------------------------ load errors


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        (
            "formula: egfr-ckd-epi-2021-creatinine",
            "formula: egfr-mdrd",
            "field computed.formula",
        ),
        ("urine_creatinine: P1M", "creatinine: P1M", "has no measured input 'creatinine'"),
        (
            'concept: egfr-ckd-epi\n      within: visit\n      value: ">= 25 mL/min/{1.73_m2}"',
            'concept: body-mass-index\n      within: visit\n      value: ">= 25 kg/m2"',
            "does not convert",
        ),
        ('daily_dose: "> 7.5 mg"', 'daily_dose: "> 7.5 mL"', "must be a mass"),
        ("equivalent: prednisone", "equivalent: cortisol", "no concept in the mappings has"),
    ],
)
def test_bad_formulas_units_and_tables_are_load_errors_with_line_and_field(
    tmp_path: Path, replace: str, by: str, message: str
) -> None:
    assert replace in CRITERIA
    path = write_trial(tmp_path, text=CRITERIA.replace(replace, by))
    with pytest.raises(TrialsieveError) as raised:
        load_trial(path)
    text = str(raised.value)
    assert message in text and f"{path}:" in text


def test_a_formula_input_missing_from_the_mappings_is_a_load_error(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "systems.yaml").write_text(
        (ROOT / "mappings" / "systems.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (mappings / "kidney.yaml").write_text(
        "concepts:\n"
        "  egfr-ckd-epi:\n"
        "    display: eGFR\n"
        "    unit: mL/min/{1.73_m2}\n"
        "    codes: {loinc: [98979-8]}\n",
        encoding="utf-8",
    )
    criteria = tmp_path / "trial.yaml"
    criteria.write_text(
        textwrap.dedent(
            """
            trial: {id: NCT00000002, title: Missing input}
            mappings: [mappings]
            criteria:
              - id: inclusion-1-egfr
                kind: inclusion
                text: eGFR >= 25
                expression:
                  resource: Observation
                  concept: egfr-ckd-epi
                  within: P14D
                  value: ">= 25 mL/min/{1.73_m2}"
                  computed: {formula: egfr-ckd-epi-2021-creatinine}
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(TrialsieveError, match=r"needs concept 'creatinine' \(input creatinine\)"):
        load_trial(criteria)
    problems = lint_paths([criteria])
    assert has_errors(problems)
    assert any("trial.yaml:13:27" in str(problem) for problem in problems), problems


def test_a_dose_order_that_may_have_lasted_into_the_window_is_unknown(
    measured_first: CompiledCriteria,
) -> None:
    old_open = order("mp-open", "6902", "completed", "2026-01-10")  # no supply, end unknown
    result = outcome_of(measured_first, "exclusion-2-steroid-dose", patient(), old_open)
    assert result.truth is Truth.UNKNOWN and "its end is not known" in result.reason


@pytest.mark.parametrize("prefer", ["measured", "computed"])
def test_inputs_of_a_type_not_exported_make_the_computed_value_unknown_not_missing(
    tmp_path: Path, prefer: str
) -> None:
    """A Bulk export that left Observation out (issue 12): the formula's inputs are data the
    server did not export, not results never taken ("no creatinine within ...")."""
    trial = replace(
        load_trial(write_trial(tmp_path, prefer=prefer)),
        unavailable_types=frozenset({"Observation"}),
    )
    result = outcome_of(trial, "inclusion-1-egfr", patient(), CREATININE_2)
    assert result.truth is Truth.UNKNOWN
    subject = "eGFR by a CKD-EPI equation"
    computed = "cannot compute CKD-EPI 2021 (creatinine, race-free)"
    assert f"{subject}: {computed}: Observation not exported by the server" in result.reason
    assert "no creatinine" not in result.reason
    assert set(result.missing) == {
        f"{subject}: Observation not exported by the server",
        f"{subject} computed by egfr-ckd-epi-2021-creatinine: Observation not exported by the "
        "server",
    }


def test_inputs_a_server_refused_name_the_servers_answer(tmp_path: Path) -> None:
    """The same for a FHIR server that refused the Observation search (the record's
    unavailable types carry its answer): the reason is the server's, not "not exported"."""
    trial = load_trial(write_trial(tmp_path, prefer="computed"))
    refused = "not available from the server (HTTP 403 Forbidden: no Observation access)"
    document = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"http://example.org/{r['resourceType']}/{r['id']}", "resource": r}
            for r in (patient(), CREATININE_2)
        ],
    }
    resources = replace(
        parse_bundle(orjson.dumps(document), origin="test"),
        unavailable_types={"Observation": refused},
    )
    record = build_record(resources, trial.terminology)
    context = EvaluationContext(
        record,
        AS_OF,
        {},
        trial.terminology,
        unavailable_types=frozenset({"Observation"}),
        unavailable_reasons=record.unavailable_types,
    )
    (criterion,) = [c for c in trial.criteria if c.id == "inclusion-1-egfr"]
    result = criterion.root.evaluate(context)
    assert result.truth is Truth.UNKNOWN
    assert f"cannot compute CKD-EPI 2021 (creatinine, race-free): Observation {refused}" in (
        result.reason
    )
    assert "not exported" not in result.reason


@pytest.mark.parametrize(
    ("resource", "rule"),
    [
        (
            statement("dapa", DAPAGLIFLOZIN, "stopped", effectiveDateTime="2026-09-01"),
            "MedicationStatement/dapa (effectiveDateTime, stopped) began 2026-09-01",
        ),
        (
            order("dapa", DAPAGLIFLOZIN, "completed", "2026-09-01"),
            "MedicationRequest/dapa (open-ended order, completed) began 2026-09-01",
        ),
    ],
    ids=["stopped-statement", "completed-order"],
)
def test_a_medication_that_may_have_lasted_into_the_window_is_said_alike_both_ways(
    plain_windows: CompiledCriteria, resource: dict[str, Any], rule: str
) -> None:
    """The plain `within:` form says what `use: {within}` says, in the same words (one
    helper, `nodes.unknown_use`): a use whose end is unknown is not "unusable data"."""
    plain = outcome_of(plain_windows, "exclusion-1-within-active", patient(), resource)
    use = outcome_of(plain_windows, "exclusion-2-use-within", patient(), resource)
    subject = plain.reason.split(": ", 1)[0]
    expected = (
        f"{subject}: use within 2026-09-06 to 2026-11-01 unknown: {rule}, before the window, "
        "and its end is not known: it may have lasted into the window"
    )
    assert plain.truth is Truth.UNKNOWN and use.truth is Truth.UNKNOWN
    assert plain.reason == expected
    assert use.reason == expected
    assert plain.missing == use.missing
    assert "unusable data" not in plain.reason


def test_the_explanation_of_a_plain_window_says_the_use_may_have_lasted(tmp_path: Path) -> None:
    from engine.report.explanation import explain, explanation_text
    from engine.screening import screen_patient
    from engine.sources.base import PatientResources

    trial = load_trial(write_trial(tmp_path, text=PLAIN_WINDOWS))
    stopped = statement("dapa", DAPAGLIFLOZIN, "stopped", effectiveDateTime="2026-09-01")
    resources = [patient(), stopped]
    source = PatientResources("p", resources, [None] * len(resources), "test")
    text = explanation_text(explain(screen_patient(trial, source, AS_OF).evaluation), width=1000)
    said = (
        "use within 2026-09-06 to 2026-11-01 unknown: MedicationStatement/dapa (effectiveDateTime,"
        " stopped) began 2026-09-01, before the window, and its end is not known: it may have "
        "lasted into the window"
    )
    assert text.count(said) >= 2, text  # the plain form's step and the use form's
    assert "unusable data" not in text
    assert "no result dated 2026-09-06" not in text
