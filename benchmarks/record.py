"""How long `build_record` takes per patient (not a test: run it by hand).

    .venv/bin/python benchmarks/record.py [BUNDLE_FOLDER ...]

Reads every patient Bundle first (parsing is the source's cost, not the record's), then times
`build_record` with a dictionary-lookup classifier, the best of several rounds per patient,
and prints the median, 90th percentile and largest time, with resource counts.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from engine.record import build_record
from engine.sources import BundleFileSource, PatientResources

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import synthea

DEFAULT_FOLDER = synthea("bundles")
ROUNDS = 7

# About the size of a trial's mapping: the codes a handful of concepts cover.
CONCEPTS_BY_CODING: dict[tuple[str | None, str], frozenset[str]] = {
    ("http://loinc.org", "718-7"): frozenset({"hemoglobin"}),
    ("http://loinc.org", "777-3"): frozenset({"platelets"}),
    ("http://loinc.org", "26515-7"): frozenset({"platelets"}),
    ("http://loinc.org", "38483-4"): frozenset({"creatinine"}),
    ("http://loinc.org", "2160-0"): frozenset({"creatinine"}),
    ("http://loinc.org", "1975-2"): frozenset({"bilirubin-total"}),
    ("http://loinc.org", "1742-6"): frozenset({"alt"}),
    ("http://loinc.org", "1920-8"): frozenset({"ast"}),
    ("http://loinc.org", "6301-6"): frozenset({"inr"}),
    ("http://loinc.org", "5902-2"): frozenset({"prothrombin-time"}),
    ("http://loinc.org", "10230-1"): frozenset({"lvef"}),
    ("http://loinc.org", "751-8"): frozenset({"neutrophils"}),
    ("http://snomed.info/sct", "22298006"): frozenset({"myocardial-infarction"}),
    ("http://snomed.info/sct", "401303003"): frozenset({"myocardial-infarction"}),
    ("http://snomed.info/sct", "401314000"): frozenset({"myocardial-infarction"}),
    ("http://snomed.info/sct", "399211009"): frozenset({"myocardial-infarction"}),
    ("http://snomed.info/sct", "72892002"): frozenset({"pregnancy"}),
    ("http://snomed.info/sct", "254837009"): frozenset({"malignancy"}),
    ("http://snomed.info/sct", "93761005"): frozenset({"malignancy"}),
    ("http://snomed.info/sct", "92691004"): frozenset({"malignancy"}),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "309362"): frozenset({"antiplatelet"}),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "855812"): frozenset({"antiplatelet"}),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "243670"): frozenset({"antiplatelet"}),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "855332"): frozenset({"anticoagulant"}),
}
NO_CONCEPTS: frozenset[str] = frozenset()


class DictionaryClassifier:
    """A classifier that is one dictionary lookup, like a terminology with a warm cache."""

    def concepts_of_coding(self, system: str | None, code: str) -> frozenset[str]:
        return CONCEPTS_BY_CODING.get((system, code), NO_CONCEPTS)

    def knows_system(self, system: str | None) -> bool:
        return True


def best_time(patient: PatientResources, classifier: DictionaryClassifier) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        build_record(patient, classifier)
        best = min(best, time.perf_counter() - started)
    return best


def main(folders: list[str]) -> None:
    patients = list(BundleFileSource(*(folders or [str(DEFAULT_FOLDER)])))
    classifier = DictionaryClassifier()
    milliseconds = sorted(
        (best_time(patient, classifier) * 1000, len(patient.resources)) for patient in patients
    )
    times = [each[0] for each in milliseconds]
    counts = sorted(len(patient.resources) for patient in patients)
    print(f"{len(patients)} patients, resources per patient: median {statistics.median(counts)}")
    print(f"build_record median {statistics.median(times):.3f} ms")
    print(f"build_record p90    {times[int(len(times) * 0.9)]:.3f} ms")
    print(f"build_record max    {times[-1]:.3f} ms ({milliseconds[-1][1]} resources)")
    per_resource = [time_ms / count * 1000 for time_ms, count in milliseconds]
    print(f"per resource median {statistics.median(per_resource):.2f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
