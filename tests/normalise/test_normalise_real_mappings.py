"""The real mappings folder: loads, holds every concept the criteria use, matches real codes."""

from __future__ import annotations

import pytest

from engine.normalise import Measurement, Terminology, measure

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"

REQUIRED_CONCEPTS = [
    # conditions
    "primary-itp", "systemic-lupus-erythematosus", "antiphospholipid-syndrome", "hiv-infection",
    "hepatitis-c-infection", "hepatitis-b-infection", "lymphoproliferative-disorder",
    "drug-induced-thrombocytopenia", "other-secondary-thrombocytopenia",
    "secondary-itp-chronic-causes", "secondary-itp-transient-causes", "thyroid-disease",
    "arterial-thrombosis", "venous-thrombosis", "serious-cardiovascular-disease", "malignancy",
    "coagulation-disorder", "active-serious-infection", "dyspnea", "pregnancy", "breastfeeding",
    "substance-abuse",
    # procedures
    "splenectomy",
    # medications
    "glucocorticoids", "intravenous-immunoglobulin", "itp-first-line-therapy", "anti-cd20",
    "tpo-receptor-agonists", "anticoagulants", "antiplatelets", "anticoagulant-or-antiplatelet",
    "car-t-related-drugs",
    # observations
    "hemoglobin", "neutrophils", "platelets", "creatinine", "total-bilirubin", "alt", "ast",
    "lvef", "spo2", "inhaled-oxygen", "prothrombin-time", "inr", "aptt", "ecog", "hiv-antibody",
    "treponemal-antibody", "syphilis-nontreponemal-test", "hcv-antibody", "hcv-rna", "hbsag",
    "hbv-dna", "pregnancy-test",
    "breastfeeding-status",
    # answers
    "positive", "negative",
]  # fmt: skip

CANONICAL_UNITS = {
    "hemoglobin": "g/L",
    "neutrophils": "10*9/L",
    "platelets": "10*9/L",
    "creatinine": "umol/L",
    "total-bilirubin": "umol/L",
    "alt": "U/L",
    "ast": "U/L",
    "lvef": "%",
    "spo2": "%",
    "prothrombin-time": "s",
    "inr": "1",
    "aptt": "s",
    "hcv-rna": "[IU]/mL",
    "hbv-dna": "[IU]/mL",
}


@pytest.mark.parametrize("concept_id", REQUIRED_CONCEPTS)
def test_required_concept_exists(real_terminology: Terminology, concept_id: str) -> None:
    assert real_terminology.has_concept(concept_id)
    assert real_terminology.concept(concept_id).display


@pytest.mark.parametrize(("concept_id", "unit"), sorted(CANONICAL_UNITS.items()))
def test_canonical_units(real_terminology: Terminology, concept_id: str, unit: str) -> None:
    assert real_terminology.concept(concept_id).unit == unit


@pytest.mark.parametrize(
    ("system", "code", "concept_id"),
    [
        (LOINC, "38483-4", "creatinine"),  # Synthea's usual creatinine
        (LOINC, "2160-0", "creatinine"),
        (LOINC, "718-7", "hemoglobin"),
        (LOINC, "777-3", "platelets"),
        (LOINC, "89247-1", "ecog"),
        (SNOMED, "32273002", "primary-itp"),
        (ICD10CM, "D69.3", "primary-itp"),
        (ICD10, "D69.3", "primary-itp"),
        (SNOMED, "22298006", "arterial-thrombosis"),
        (SNOMED, "401303003", "arterial-thrombosis"),
        (SNOMED, "401314000", "arterial-thrombosis"),
        (ICD10CM, "I21.4", "arterial-thrombosis"),
        (ICD10CM, "I26.99", "venous-thrombosis"),
        (ICD10CM, "I82.401", "venous-thrombosis"),
        (SNOMED, "72892002", "pregnancy"),
        (ICD10CM, "O9A.111", "pregnancy"),
        (ICD10CM, "Z33.1", "pregnancy"),
        (SNOMED, "254837009", "malignancy"),
        (ICD10CM, "C50.911", "malignancy"),
        (ICD10, "C91.1", "malignancy"),
        (ICD10CM, "D68.0", "coagulation-disorder"),
        (ICD10CM, "F10.20", "substance-abuse"),
        (SNOMED, "86406008", "secondary-itp-chronic-causes"),
        (ICD10CM, "B18.2", "hepatitis-c-infection"),
        (ICD10CM, "D75.822", "secondary-itp-transient-causes"),  # HIT: D75.82 is a header
        (ICD10, "D69.300x001", "primary-itp"),  # Chinese clinical-edition extension
        (ICD10CM, "O22.52", "venous-thrombosis"),  # O22.5 is a header: O22.50-O22.53
        (ICD10CM, "I63.6", "venous-thrombosis"),
        (ICD10CM, "I63.512", "arterial-thrombosis"),
        (ICD10CM, "R65.21", "active-serious-infection"),
        (ICD10CM, "Z85.3", "malignancy"),
        (ICD10CM, "D46.9", "malignancy"),
        (ICD10CM, "D69.1", "coagulation-disorder"),
        (ICD10CM, "D65", "coagulation-disorder-transient"),
        (RXNORM, "243670", "antiplatelets"),
        (RXNORM, "309362", "anticoagulant-or-antiplatelet"),
        (RXNORM, "855332", "anticoagulants"),
        (ATC, "B01AF01", "anticoagulants"),
        (ATC, "H02AB07", "itp-first-line-therapy"),
        (ATC, "J06BA02", "itp-first-line-therapy"),
        (ATC, "L01XC02", "anti-cd20"),
        (ATC, "B02BX05", "tpo-receptor-agonists"),
        ("http://www.ama-assn.org/go/cpt", "38120", "splenectomy"),
        ("http://www.cms.gov/Medicare/Coding/ICD10", "07TP4ZZ", "splenectomy"),
        (SNOMED, "260385009", "negative"),
        (LOINC, "LA6576-8", "positive"),
        (LOINC, "3151-8", "inhaled-oxygen"),
    ],
)
def test_real_codes_match(
    real_terminology: Terminology, system: str, code: str, concept_id: str
) -> None:
    assert concept_id in real_terminology.concepts_of_coding(system, code)


@pytest.mark.parametrize(
    ("system", "code", "concept_id"),
    [
        (ICD10CM, "D69.3", "coagulation-disorder"),  # ITP is not a coagulation disorder here
        (ICD10CM, "D69.3", "secondary-itp-chronic-causes"),
        (ICD10CM, "D69.3", "secondary-itp-transient-causes"),
        (ICD10CM, "B18.2", "secondary-itp-chronic-causes"),  # only viraemic HCV counts
        (LOINC, "20507-0", "treponemal-antibody"),  # RPR is not a treponemal test
        (ICD10CM, "I63.6", "arterial-thrombosis"),  # cerebral venous thrombosis is venous
        (SNOMED, "230690007", "arterial-thrombosis"),  # unspecified stroke: asked
        (ICD10CM, "R57.2", "active-serious-infection"),  # not an ICD-10-CM code
        (ICD10CM, "D47.2", "malignancy"),  # MGUS
        (ICD10CM, "D65", "coagulation-disorder"),  # DIC is transient
        (SNOMED, "402653004", "primary-itp"),  # thrombocytopenia due to defective production
        (ICD10CM, "F17.210", "substance-abuse"),  # nicotine dependence
        (ICD10CM, "D05.10", "malignancy"),  # carcinoma in situ
        (LOINC, "770-8", "neutrophils"),  # a percentage, not a count
        (LOINC, "5770-3", "total-bilirubin"),  # urine test strip
        (RXNORM, "106258", "glucocorticoids"),  # hydrocortisone topical cream
        (SNOMED, "10939881000119105", "substance-abuse"),  # unhealthy drinking (screening)
    ],
)
def test_real_codes_do_not_match(
    real_terminology: Terminology, system: str, code: str, concept_id: str
) -> None:
    assert concept_id not in real_terminology.concepts_of_coding(system, code)


@pytest.mark.parametrize(
    ("system", "code", "current"),
    [
        (ICD10CM, "O00.101", True),  # tubal pregnancy: present until treated
        (ICD10CM, "O01.9", True),  # hydatidiform mole
        (ICD10CM, "O07.4", True),  # failed attempted termination: it may go on
        (ICD10CM, "O09.511", True),  # supervision of elderly primigravida
        (ICD10CM, "O24.414", True),  # gestational diabetes
        (ICD10CM, "O9A.111", True),
        (ICD10CM, "O03.9", False),  # complete or unspecified spontaneous abortion
        (ICD10CM, "O03.4", False),  # incomplete spontaneous abortion
        (ICD10CM, "O04.89", False),  # complications following induced termination
        (ICD10CM, "O08.0", False),  # complications following ectopic and molar pregnancy
        (ICD10CM, "O80", False),  # encounter for full-term uncomplicated delivery
        (ICD10CM, "O82", False),  # encounter for caesarean delivery
        (ICD10, "O03.9", False),  # spontaneous abortion, complete or unspecified
        (ICD10, "O06.9", False),  # unspecified abortion
        (ICD10, "O80.0", False),  # spontaneous vertex delivery
        (ICD10, "O00.1", True),
    ],
)
def test_pregnancy_holds_current_pregnancies_not_their_outcome(
    real_terminology: Terminology, system: str, code: str, current: bool
) -> None:
    """Haematology QA session 14, finding 1: an abortive outcome or a delivery records a
    pregnancy that has ended (ICD-10-CM chapter 15 blocks O00-O08, O80-O82)."""
    assert ("pregnancy" in real_terminology.concepts_of_coding(system, code)) is current


def test_text_answers(real_terminology: Terminology) -> None:
    assert "positive" in real_terminology.concepts_of_text("Reactive")
    assert "negative" in real_terminology.concepts_of_text("Non-reactive")
    assert "positive" not in real_terminology.concepts_of_text("not detected")


def test_ecog_answers(real_terminology: Terminology) -> None:
    values = [
        real_terminology.answer_value("ecog", LOINC, code)
        for code in ["LA9622-7", "LA9623-5", "LA9624-3", "LA9625-0", "LA9626-8", "LA9627-6"]
    ]
    assert values == [0, 1, 2, 3, 4, 5]


def test_synthea_creatinine_in_umol(real_terminology: Terminology) -> None:
    resource = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": LOINC, "code": "38483-4"}]},
        "valueQuantity": {
            "value": 1.2,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
    }
    result = measure(resource, real_terminology.concept("creatinine"), real_terminology)
    assert getattr(result, "value", None) == pytest.approx(106.1, abs=0.1)


def test_a_site_concept_part_of_lvef_reads_its_own_value_path(
    real_terminology: Terminology,
) -> None:
    echo_report = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [
                {"system": "http://hospital.example.org/fhir/CodeSystem/lab", "code": "ECHO-LVEF"}
            ]
        },
        "extension": [
            {
                "url": "http://hospital.example.org/fhir/StructureDefinition/ejection-fraction",
                "valueQuantity": {
                    "value": 45,
                    "unit": "%",
                    "system": "http://unitsofmeasure.org",
                    "code": "%",
                },
            }
        ],
    }
    assert "lvef" in real_terminology.concepts_of_coding(
        "http://hospital.example.org/fhir/CodeSystem/lab", "ECHO-LVEF"
    )
    result = measure(echo_report, real_terminology.concept("lvef"), real_terminology)
    assert isinstance(result, Measurement)
    assert result.value == 45
    assert result.field.startswith("extension")


@pytest.mark.parametrize(
    ("written", "offered"),
    [
        ("egfr", ["egfr-ckd-epi"]),  # a shorter name of a concept: the ids it begins
        ("hemoglobn", ["hemoglobin"]),  # a slip of the keyboard
        ("haemoglobin", ["hemoglobin"]),  # British spelling
        ("type-1-diabetis", ["type-1-diabetes"]),
        ("diabetes-type-1", ["type-1-diabetes"]),  # the same words in another order
        ("diabetes-type-2", []),  # never type 1 for type 2: numbers must agree
        ("sglt2", ["sglt2-inhibitors"]),
        ("uacr", []),  # nothing like it: no guess
    ],
)
def test_an_unknown_concept_id_is_offered_the_ids_like_it(
    real_terminology: Terminology, written: str, offered: list[str]
) -> None:
    """The "did you mean" of an unknown concept in criteria (lint and compile)."""
    assert real_terminology.similar_concepts(written) == offered
    hint = real_terminology.unknown_concept_hint(written)
    assert hint == (f" (did you mean '{offered[0]}'?)" if offered else "")
