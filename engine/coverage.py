"""Terminology coverage: what the mappings match in a site's data, and what they seem to miss.

For every concept a criteria file uses, `coverage_report` counts the codes of the data that
matched it (patients per code), and lists the codes no concept maps whose display or text
looks like one of the concept's members: a local lab code named "Neutrophils", a
product-level RxNorm code whose name contains an ingredient of the set. Candidates are
ranked by how many patients they would change: patients who have the code and not yet any
member of the concept.

The names of a concept's members come from the mapping files' comments (`- 718-7  # Hemoglobin
[Mass/volume] in Blood`), the concept's display, and the displays the data itself gives its
matched codes. Similarity is rapidfuzz's: `fuzz.token_sort_ratio` on names stripped of the
words every lab or diagnosis name shares (specimen, method, "[Mass/volume]", "(disorder)"),
and for drugs `fuzz.partial_ratio` of an ingredient name (no digits) inside the product's
name. A comment `# NOT 770-8 ...` marks a code the mapping leaves out on purpose: it is
reported as such, never suggested.

Pure functions over parsed resources (plain dicts); the command reads files and prints.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz, process, utils

from engine.criteria.model import CriteriaFile, ResourceAtom, iter_atoms
from engine.normalise.terminology import Terminology
from engine.resource_types import MEDICATION_REFERENCING_TYPES

__all__ = [
    "SUGGESTIONS_FILE",
    "Candidate",
    "CodeCount",
    "ConceptCoverage",
    "CoverageReport",
    "MappingNames",
    "concepts_used",
    "coverage_csv",
    "coverage_report",
    "coverage_table",
    "mapping_names",
    "mapping_snippet",
]

MINIMUM_SCORE = 88.0
"""Candidates below this rapidfuzz score (0-100) are not listed."""
MINIMUM_INGREDIENT_SCORE = 90.0
"""A drug's name must contain an ingredient name at least this well (partial ratio)."""

_CONCEPT_LINE = re.compile(r"^  ([a-z0-9][a-z0-9-]*):\s*(?:#.*)?$")
_SECTION_LINE = re.compile(r"^([a-z_]+):")
_LIST_ITEM = re.compile(r"""^\s*-\s*["']?([A-Za-z0-9][\w.\-]*)["']?\s*#\s*(.+?)\s*$""")
_FLOW_SINGLE = re.compile(
    r"""^\s*[\w-]+:\s*(?:\{\s*[\w-]+:\s*)?\[\s*["']?([A-Za-z0-9][\w.\-]*)["']?\s*\]\s*\}?"""
    r"""\s*#\s*(.+?)\s*$"""
)
_NAME_ONLY = re.compile(r"^\s*#\s*-\s*([\w.\-]+)\s*#\s*(.+?)\s*$")
"""A commented-out list item `# - romiplostim  # romiplostim`: a member name with no code."""
_LEFT_OUT = re.compile(r"\bNOT\s+([A-Za-z0-9][\w.\-]*[A-Za-z0-9])")
_NOTE = re.compile(r"\((?:Synthea[^)]*|verify|[^)]*to verify[^)]*)\)")
_BRACKETS = re.compile(r"\[[^\]]*\]|\((?:disorder|finding|procedure|situation|substance)\)")
_DIGIT = re.compile(r"\d")
_SHARED_WORDS = frozenset(
    {
        *("in", "by", "of", "the", "and", "or", "with", "without"),
        *("blood", "serum", "plasma", "whole", "arterial", "venous", "capillary"),
        *("automated", "manual", "count", "method", "presence", "mass", "volume", "moles"),
        *("units", "unit", "disorder", "finding", "procedure", "situation"),
    }
)
"""Words nearly every lab or diagnosis name has: left out before comparing names."""
_CODED_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Observation": ("code",),
    "Condition": ("code",),
    "Procedure": ("code",),
    "AllergyIntolerance": ("code",),
    "Immunization": ("vaccineCode",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationAdministration": ("medicationCodeableConcept",),
    "MedicationStatement": ("medicationCodeableConcept",),
    "MedicationDispense": ("medicationCodeableConcept",),
}
_MEDICATION_TYPES = frozenset(MEDICATION_REFERENCING_TYPES) | {"AllergyIntolerance"}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CodeCount:
    """A code of the data that matched a concept, and how many patients have it."""

    system: str
    code: str
    display: str
    patients: int


@dataclass(frozen=True)
class Candidate:
    """A code no concept maps whose name looks like a member of the concept.

    `patients_gained`: patients with this code and no member of the concept yet (whose
    answer the mapping would change); `similar_to`: the member name it resembles.
    """

    system: str
    code: str
    display: str
    resource_types: tuple[str, ...]
    patients: int
    patients_gained: int
    score: float
    similar_to: str
    member_concept: str
    """The concept (the one used, or one it includes) whose member name it resembles: where
    the suggested mapping puts it (a prednisone tablet goes to glucocorticoids)."""
    left_out_on_purpose: bool = False


@dataclass(frozen=True)
class ConceptCoverage:
    """One concept of the criteria: its matched codes and the candidates it may miss."""

    concept_id: str
    display: str
    resource_types: tuple[str, ...]
    patients: int
    matched: tuple[CodeCount, ...]
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class CoverageReport:
    """Coverage of every concept the criteria use, over `patient_count` patients."""

    patient_count: int
    concepts: tuple[ConceptCoverage, ...]


@dataclass(frozen=True)
class MappingNames:
    """Names of mapped codes read from the mapping files' comments, by concept id and code;
    `left_out` holds the codes a comment says are left out on purpose (`# NOT 770-8`)."""

    names: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    left_out: Mapping[str, frozenset[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- inputs


def concepts_used(criteria: CriteriaFile) -> dict[str, tuple[str, ...]]:
    """Every concept an atom of the criteria names, with the resource types it is read from."""
    used: dict[str, set[str]] = {}
    for criterion in criteria.criteria:
        for atom in iter_atoms(criterion.expression):
            if isinstance(atom, ResourceAtom) and atom.concept is not None:
                used.setdefault(atom.concept, set()).update(atom.resource_types)
    return {concept_id: tuple(sorted(types)) for concept_id, types in sorted(used.items())}


def mapping_names(texts: Iterable[str]) -> MappingNames:
    """The comment next to each code of each concept in mapping files' texts.

    Reads `- CODE  # name` items and one-code flow lists `loinc: [CODE]  # name` under
    `concepts:`, and commented-out items `# - romiplostim  # romiplostim`, names with no code
    claimed (keyed `name:romiplostim`); `# NOT CODE` comments mark codes left out on purpose.
    Continuation comments (`# ... by manual count`) and notes such as "(Synthea)" are dropped.
    """
    names: dict[str, dict[str, str]] = {}
    left_out: dict[str, set[str]] = {}
    for text in texts:
        section: str | None = None
        concept: str | None = None
        for line in text.splitlines():
            section_match = _SECTION_LINE.match(line)
            if section_match:
                section, concept = section_match.group(1), None
                continue
            if section != "concepts":
                continue
            concept_match = _CONCEPT_LINE.match(line)
            if concept_match:
                concept = concept_match.group(1)
                continue
            if concept is None:
                continue
            for code in _LEFT_OUT.findall(line.partition("#")[2]):
                left_out.setdefault(concept, set()).add(code)
            name_only = _NAME_ONLY.match(line)
            if name_only:
                names.setdefault(concept, {})[f"name:{name_only.group(1)}"] = name_only.group(2)
                continue
            item = _LIST_ITEM.match(line) or _FLOW_SINGLE.match(line)
            if item:
                code, comment = item.groups()
                name = _NOTE.sub("", comment).strip(" ;,")
                if name and not name.startswith(("...", "NOT ")):
                    names.setdefault(concept, {})[code] = name
    return MappingNames(
        names=names, left_out={key: frozenset(codes) for key, codes in left_out.items()}
    )


# --------------------------------------------------------------------------- the report


@dataclass
class _Seen:
    """Patients per code, collected in one pass over the data."""

    patient_ids: set[str] = field(default_factory=set)
    matched: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    """(concept, system, code) -> patients."""
    concept_patients: dict[str, set[str]] = field(default_factory=dict)
    unmapped: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """(system, code) -> patients."""
    unmapped_types: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """(system, code) -> the resource types it was found in."""
    displays: dict[tuple[str, str], str] = field(default_factory=dict)


def coverage_report(
    terminology: Terminology,
    concepts: Mapping[str, Iterable[str]],
    patients: Iterable[tuple[str, Iterable[Mapping[str, Any]]]],
    names: MappingNames | None = None,
    minimum_score: float = MINIMUM_SCORE,
) -> CoverageReport:
    """The coverage of `concepts` (id -> resource types read) over `patients`.

    `patients` yields (patient id, that patient's resources as plain dicts); a
    medicationReference is resolved among the patient's own resources (contained, `Type/id`
    or fullUrl-style `urn:uuid:` ids). `names` are the member names from the mapping files
    (`mapping_names`).
    """
    names = names or MappingNames()
    seen = _Seen()
    for patient_id, resources in patients:
        seen.patient_ids.add(patient_id)
        _read_patient(terminology, concepts, patient_id, list(resources), seen)
    results = [
        _concept_coverage(terminology, concept_id, tuple(types), names, seen, minimum_score)
        for concept_id, types in concepts.items()
    ]
    return CoverageReport(patient_count=len(seen.patient_ids), concepts=tuple(results))


def _read_patient(
    terminology: Terminology,
    concepts: Mapping[str, Iterable[str]],
    patient_id: str,
    resources: list[Mapping[str, Any]],
    seen: _Seen,
) -> None:
    by_reference: dict[str, Mapping[str, Any]] = {}
    for resource in resources:
        if resource.get("resourceType") == "Medication" and isinstance(resource.get("id"), str):
            by_reference[f"Medication/{resource['id']}"] = resource
            by_reference[f"urn:uuid:{resource['id']}"] = resource
    used = frozenset(concepts)
    for resource in resources:
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str) or resource_type not in _CODED_FIELDS:
            continue
        codings = list(_codings(resource, by_reference))
        found = False
        for system, code, display in codings:
            if display:
                seen.displays.setdefault((system, code), display)
            matched = terminology.concepts_of_coding(system, code)
            found = found or bool(matched)
            for concept_id in matched & used:
                seen.matched.setdefault((concept_id, system, code), set()).add(patient_id)
                seen.concept_patients.setdefault(concept_id, set()).add(patient_id)
        if not found:
            for system, code, _display in codings:
                seen.unmapped.setdefault((system, code), set()).add(patient_id)
                seen.unmapped_types.setdefault((system, code), set()).add(resource_type)


def _codings(
    resource: Mapping[str, Any], by_reference: Mapping[str, Mapping[str, Any]]
) -> Iterable[tuple[str, str, str]]:
    """(system, code, display or the concept's text) of the resource's coded fields."""
    concepts: list[Any] = [resource.get(name) for name in _CODED_FIELDS[resource["resourceType"]]]
    reference = resource.get("medicationReference")
    if isinstance(reference, Mapping) and isinstance(reference.get("reference"), str):
        target = reference["reference"]
        medication = by_reference.get(target)
        if medication is None and target.startswith("#"):
            medication = next(
                (
                    item
                    for item in resource.get("contained") or ()
                    if isinstance(item, Mapping) and item.get("id") == target[1:]
                ),
                None,
            )
        if medication is not None:
            concepts.append(medication.get("code"))
    if resource.get("resourceType") == "Observation":
        concepts.extend(
            component.get("code")
            for component in resource.get("component") or ()
            if isinstance(component, Mapping)
        )
    for concept in concepts:
        if not isinstance(concept, Mapping):
            continue
        text = concept.get("text") if isinstance(concept.get("text"), str) else ""
        for coding in concept.get("coding") or ():
            if not isinstance(coding, Mapping):
                continue
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str) and code:
                display = coding.get("display")
                yield system, code, display if isinstance(display, str) else str(text or "")


def _concept_coverage(
    terminology: Terminology,
    concept_id: str,
    resource_types: tuple[str, ...],
    names: MappingNames,
    seen: _Seen,
    minimum_score: float,
) -> ConceptCoverage:
    concept = terminology.concept(concept_id)
    matched = sorted(
        (
            CodeCount(system, code, seen.displays.get((system, code), ""), len(patient_ids))
            for (matched_id, system, code), patient_ids in seen.matched.items()
            if matched_id == concept_id
        ),
        key=lambda count: (-count.patients, count.system, count.code),
    )
    member_names = _member_names(terminology, concept_id, names)
    for count in matched:
        if count.display:
            member_names.setdefault(count.display, concept_id)
    left_out = _left_out(terminology, concept_id, names)
    with_concept = seen.concept_patients.get(concept_id, set())
    candidates: list[Candidate] = []
    medication = any(resource_type in _MEDICATION_TYPES for resource_type in resource_types)
    for (system, code), patient_ids in seen.unmapped.items():
        found_in = tuple(sorted(seen.unmapped_types[(system, code)] & set(resource_types)))
        if not found_in:
            continue
        display = seen.displays.get((system, code), "")
        if not display:
            continue
        best = _similarity(display, member_names, medication, minimum_score)
        if best is None:
            continue
        score, similar_to = best
        candidates.append(
            Candidate(
                system=system,
                code=code,
                display=display,
                resource_types=found_in,
                patients=len(patient_ids),
                patients_gained=len(patient_ids - with_concept),
                score=round(score, 1),
                similar_to=similar_to,
                member_concept=member_names[similar_to],
                left_out_on_purpose=code in left_out,
            )
        )
    candidates.sort(
        key=lambda item: (-item.patients_gained, -item.patients, -item.score, item.code)
    )
    return ConceptCoverage(
        concept_id=concept_id,
        display=concept.display,
        resource_types=resource_types,
        patients=len(with_concept),
        matched=tuple(matched),
        candidates=tuple(candidates),
    )


def _members(terminology: Terminology, concept_id: str) -> list[str]:
    """The concept and every concept it includes, directly or not."""
    return sorted(
        member
        for member in terminology.concept_ids()
        if concept_id in terminology.containing_concepts(member)
    )


def _member_names(terminology: Terminology, concept_id: str, names: MappingNames) -> dict[str, str]:
    """Member name -> the concept (this one or one it includes) it names a member of."""
    found: dict[str, str] = {}
    for member in _members(terminology, concept_id):
        found.setdefault(terminology.concept(member).display, member)
        for name in names.names.get(member, {}).values():
            found.setdefault(name, member)
    return found


def _left_out(terminology: Terminology, concept_id: str, names: MappingNames) -> frozenset[str]:
    codes: set[str] = set()
    for member in _members(terminology, concept_id):
        codes |= names.left_out.get(member, frozenset())
    return frozenset(codes)


def _shared_words_removed(text: str) -> str:
    words = utils.default_process(_BRACKETS.sub(" ", text)).split()
    return " ".join(word for word in words if word not in _SHARED_WORDS)


def _similarity(
    display: str, member_names: Iterable[str], medication: bool, minimum_score: float
) -> tuple[float, str] | None:
    """(score, member name) of the member name most like `display`, or None below the bar."""
    names = sorted(member_names)
    best: tuple[float, str] | None = None
    if medication:
        ingredients = [name for name in names if not _DIGIT.search(name) and len(name) >= 4]
        found = process.extractOne(
            display,
            ingredients,
            scorer=fuzz.partial_ratio,
            processor=utils.default_process,
            score_cutoff=max(minimum_score, MINIMUM_INGREDIENT_SCORE),
        )
        if found is not None:
            best = (float(found[1]), found[0])
    processed = {name: _shared_words_removed(name) for name in names}
    found = process.extractOne(
        _shared_words_removed(display),
        processed,
        scorer=fuzz.token_sort_ratio,
        processor=None,
        score_cutoff=minimum_score,
    )
    if found is not None and (best is None or float(found[1]) > best[0]):
        best = (float(found[1]), str(found[2]))
    return best


# --------------------------------------------------------------------------- output

CSV_COLUMNS = (
    "concept",
    "kind",
    "system",
    "code",
    "display",
    "resource_types",
    "patients",
    "patients_gained",
    "score",
    "similar_to",
)


def coverage_csv(report: CoverageReport) -> str:
    """One CSV row per matched code (`kind` matched) and per candidate (`candidate` or
    `left-out`, a code a mapping comment leaves out on purpose)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for concept in report.concepts:
        for count in concept.matched:
            writer.writerow(
                [concept.concept_id, "matched", count.system, count.code, count.display, "",
                 count.patients, "", "", ""]
            )  # fmt: skip
        for candidate in concept.candidates:
            writer.writerow(
                [
                    concept.concept_id,
                    "left-out" if candidate.left_out_on_purpose else "candidate",
                    candidate.system,
                    candidate.code,
                    candidate.display,
                    " ".join(candidate.resource_types),
                    candidate.patients,
                    candidate.patients_gained,
                    f"{candidate.score:g}",
                    candidate.similar_to,
                ]
            )
    return buffer.getvalue()


def coverage_table(report: CoverageReport, matched_limit: int = 5) -> str:
    """A readable plain-text report: per concept, its patients, top matched codes, candidates."""
    lines = [f"Terminology coverage over {report.patient_count} patients", ""]
    for concept in report.concepts:
        lines.append(
            f"{concept.concept_id} ({concept.display}) "
            f"[{', '.join(concept.resource_types)}]: {concept.patients} patients"
        )
        if not concept.matched:
            lines.append("  matched: nothing in the data")
        for count in concept.matched[:matched_limit]:
            lines.append(
                f"  matched   {_short_system(count.system)} {count.code} "
                f"{count.display or '-'}: {count.patients} patients"
            )
        if len(concept.matched) > matched_limit:
            lines.append(f"  ... and {len(concept.matched) - matched_limit} more matched codes")
        for candidate in concept.candidates:
            label = "left out " if candidate.left_out_on_purpose else "candidate"
            types = ", ".join(candidate.resource_types)
            lines.append(
                f"  {label} {_short_system(candidate.system)} {candidate.code} "
                f"{candidate.display} ({types}): {candidate.patients} "
                f"patients, {candidate.patients_gained} would gain the concept; "
                f"like '{candidate.similar_to}' ({candidate.score:g})"
            )
    suggested = len(
        {
            (candidate.system, candidate.code)
            for concept in report.concepts
            for candidate in concept.candidates
            if not candidate.left_out_on_purpose
        }
    )
    if suggested:
        lines.append(
            f"Suggested mappings: {suggested} code{'s' if suggested > 1 else ''}, in the "
            "local_codes: snippet (review every line before pasting it into a site mapping file)"
        )
    else:
        lines.append("Suggested mappings: none (no unmapped code resembles a member of a concept)")
    return "\n".join(lines) + "\n"


SUGGESTIONS_FILE = "suggested-mappings.yaml"
"""Where `trialsieve coverage --out` writes the `mapping_snippet`, when there is one."""


def mapping_snippet(report: CoverageReport) -> str | None:
    """A `local_codes:` block mapping every candidate (not those left out on purpose) into
    the concept whose member it resembles, to review and paste into a site's mapping file;
    None when there is nothing to suggest (a file of comments only is no mapping file)."""
    by_system: dict[str, list[tuple[str, str, Candidate]]] = {}
    for concept in report.concepts:
        for candidate in concept.candidates:
            if not candidate.left_out_on_purpose:
                by_system.setdefault(candidate.system, []).append(
                    (candidate.code, candidate.member_concept, candidate)
                )
    if not by_system:
        return None
    lines = [
        "# Suggested by `trialsieve coverage`: review every line before pasting it into a",
        "# site mapping file (see mappings/local-example.yaml); delete what does not belong.",
        "local_codes:",
    ]
    for system in sorted(by_system):
        lines += [f"  - system: {system}", "    codes:"]
        entries: dict[str, list[tuple[str, Candidate]]] = {}
        for code, concept_id, candidate in by_system[system]:
            entries.setdefault(code, []).append((concept_id, candidate))
        for code in sorted(entries):
            concept_ids = sorted({concept_id for concept_id, _ in entries[code]})
            candidate = entries[code][0][1]
            target = concept_ids[0] if len(concept_ids) == 1 else f"[{', '.join(concept_ids)}]"
            comment = (
                f"{candidate.display}; {candidate.patients_gained} patients gain it, "
                f"like '{candidate.similar_to}'"
            ).replace("#", "")
            lines.append(f'      "{code}": {target}   # {comment}')
    return "\n".join(lines) + "\n"


def _short_system(system: str) -> str:
    known = {
        "http://loinc.org": "LOINC",
        "http://snomed.info/sct": "SNOMED",
        "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
        "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
        "http://hl7.org/fhir/sid/icd-10": "ICD-10",
        "http://www.whocc.no/atc": "ATC",
        "http://hl7.org/fhir/sid/cvx": "CVX",
    }
    return known.get(system, system)
