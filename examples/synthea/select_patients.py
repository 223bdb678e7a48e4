"""Choose the example Synthea patients and copy their Bundles here (run by hand, once).

    .venv/bin/python examples/synthea/select_patients.py [SOURCE_FOLDER] [--copy]

Lists each candidate patient's features (labs, diagnoses, drugs an eligibility test asks
about), then chooses deterministically: for every feature, rarest first, the smallest files
that have it until two chosen patients do (or all that exist); then the smallest remaining
patients until there are TARGET_COUNT, alternating sex. Prints the Markdown table that
README.md holds; with --copy, copies the chosen Bundles and the data's LICENSE here.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

DEFAULT_SOURCE = Path("/work/shared/data/synthea-exafluence/bundles")
HERE = Path(__file__).resolve().parent
TARGET_COUNT = 20
PATIENTS_PER_FEATURE = 2

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

# feature -> the (system, code) pairs that show it
FEATURES: dict[str, set[tuple[str, str]]] = {
    "hemoglobin": {(LOINC, "718-7")},
    "platelets": {(LOINC, "777-3")},
    "creatinine": {(LOINC, "38483-4"), (LOINC, "2160-0")},
    "bilirubin/ALT/AST": {(LOINC, "1975-2"), (LOINC, "1742-6"), (LOINC, "1920-8")},
    "INR/PT": {(LOINC, "6301-6"), (LOINC, "5902-2")},
    "LVEF": {(LOINC, "10230-1")},
    "neutrophils": {(LOINC, "751-8"), (LOINC, "770-8")},
    "myocardial infarction": {
        (SNOMED, "22298006"),
        (SNOMED, "401303003"),
        (SNOMED, "401314000"),
        (SNOMED, "399211009"),
    },
    "pregnancy": {(SNOMED, "72892002"), (SNOMED, "198992004")},
    "malignancy": {(SNOMED, "254837009"), (SNOMED, "93761005"), (SNOMED, "92691004")},
    "antiplatelet drug": {
        (RXNORM, "309362"),
        (RXNORM, "855812"),
        (RXNORM, "243670"),
        (RXNORM, "2563431"),
    },
    "anticoagulant": {(RXNORM, "855332"), (RXNORM, "1659263"), (RXNORM, "1361226")},
}
# Features read from the structure rather than a code.
MEDICATION_REFERENCE = "medicationReference"
ALLERGY = "allergy"
NO_BLOOD_COUNT = "no blood count"
# Features whose table cell names what exactly the patient has.
DESCRIBED_FEATURES = {
    "myocardial infarction",
    "pregnancy",
    "malignancy",
    "antiplatelet drug",
    "anticoagulant",
}


@dataclass
class Candidate:
    path: Path
    patient_id: str
    sex: str
    birth_date: str
    state: str
    resource_count: int
    size: int
    features: set[str] = field(default_factory=set)
    details: dict[str, set[str]] = field(default_factory=dict)


def codings(concept: Any) -> list[dict[str, Any]]:
    return list(concept.get("coding", [])) if isinstance(concept, dict) else []


def describe(path: Path) -> Candidate | None:
    bundle = orjson.loads(path.read_bytes())
    resources = [entry["resource"] for entry in bundle["entry"]]
    patients = [resource for resource in resources if resource["resourceType"] == "Patient"]
    if len(patients) != 1:
        return None
    patient = patients[0]
    candidate = Candidate(
        path=path,
        patient_id=patient["id"],
        sex=patient.get("gender", "?"),
        birth_date=patient.get("birthDate", "?"),
        state=path.parent.name.replace("_", " ").title(),
        resource_count=len(resources),
        size=path.stat().st_size,
    )
    medications = {
        f"Medication/{resource['id']}": resource.get("code")
        for resource in resources
        if resource["resourceType"] == "Medication"
    }
    for resource in resources:
        resource_type = resource["resourceType"]
        concepts = [resource.get("code")]
        if resource_type.startswith("Medication") and resource_type != "Medication":
            concepts = [resource.get("medicationCodeableConcept")]
            reference = resource.get("medicationReference", {}).get("reference")
            if reference:
                candidate.features.add(MEDICATION_REFERENCE)
                key = "Medication/" + reference.removeprefix("urn:uuid:")
                concepts = [medications.get(key)]
        if resource_type == "AllergyIntolerance":
            candidate.features.add(ALLERGY)
        if resource_type not in {
            "Observation",
            "Condition",
            "MedicationRequest",
            "MedicationAdministration",
        }:
            continue
        for concept in concepts:
            for coding in codings(concept):
                pair = (coding.get("system", ""), coding.get("code", ""))
                for feature, pairs in FEATURES.items():
                    if pair in pairs:
                        candidate.features.add(feature)
                        candidate.details.setdefault(feature, set()).add(
                            coding.get("display", pair[1])
                        )
    if "hemoglobin" not in candidate.features and "platelets" not in candidate.features:
        candidate.features.add(NO_BLOOD_COUNT)
    return candidate


def choose(candidates: list[Candidate]) -> list[Candidate]:
    by_size = sorted(candidates, key=lambda candidate: (candidate.size, candidate.patient_id))
    all_features = [*FEATURES, MEDICATION_REFERENCE, ALLERGY, NO_BLOOD_COUNT]
    rarest_first = sorted(
        all_features,
        key=lambda feature: sum(feature in candidate.features for candidate in candidates),
    )
    chosen: list[Candidate] = []
    for feature in rarest_first:
        for candidate in by_size:
            if sum(feature in each.features for each in chosen) >= PATIENTS_PER_FEATURE:
                break
            if feature in candidate.features and candidate not in chosen:
                chosen.append(candidate)
    for candidate in by_size:
        if len(chosen) >= TARGET_COUNT:
            break
        female_count = sum(each.sex == "female" for each in chosen)
        wanted_sex = "female" if female_count * 2 < len(chosen) else "male"
        if candidate not in chosen and candidate.sex == wanted_sex:
            chosen.append(candidate)
    return sorted(chosen, key=lambda candidate: candidate.patient_id)


def short_name(display: str) -> str:
    """'Clopidogrel 75 MG Oral Tablet' -> 'clopidogrel'; drop SNOMED's '(disorder)' tags."""
    if display[:1].isdigit() or " MG" in display or " UNT" in display:
        words = [word for word in display.split() if word[:1].isalpha() and word != "ML"]
        return words[0].lower().rstrip(",") if words else display
    return display.split(" (")[0]


def table(chosen: list[Candidate]) -> str:
    rows = [
        "| file | sex | born | state | resources | size | what it has |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for candidate in chosen:
        what = []
        for feature in sorted(candidate.features):
            displays = candidate.details.get(feature)
            if feature not in DESCRIBED_FEATURES or not displays:
                what.append(feature)
            else:
                what.append(f"{feature} ({'; '.join(sorted(map(short_name, displays)))})")
        rows.append(
            f"| `{candidate.path.name}` | {candidate.sex} | {candidate.birth_date[:4]} "
            f"| {candidate.state} | {candidate.resource_count} | {candidate.size // 1024} KB "
            f"| {', '.join(what)} |"
        )
    return "\n".join(rows)


def main(arguments: list[str]) -> None:
    copy = "--copy" in arguments
    folders = [argument for argument in arguments if argument != "--copy"]
    source = Path(folders[0]) if folders else DEFAULT_SOURCE
    candidates = [
        candidate
        for path in sorted(source.rglob("*.json"))
        if not path.name.startswith(("hospitalInformation", "practitionerInformation"))
        and (candidate := describe(path)) is not None
    ]
    chosen = choose(candidates)
    print(table(chosen))
    total = sum(candidate.size for candidate in chosen)
    print(f"\n{len(chosen)} patients, {total / 1024 / 1024:.1f} MB")
    if copy:
        for candidate in chosen:
            shutil.copyfile(candidate.path, HERE / candidate.path.name)
        license_file = source.parent / "LICENSE"
        shutil.copyfile(license_file, HERE / "LICENSE")


if __name__ == "__main__":
    main(sys.argv[1:])
