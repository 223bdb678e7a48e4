"""Concept sets and the fast lookup from a coding to the concepts it belongs to.

A `Terminology` is built by `engine.normalise.loader.load_terminology` from the mapping
files. It answers, for any (system, code) met in patient data, which concepts the code is
a member of: exact codes, code prefixes (ATC classes), ICD-10 category ranges, a site's
local codes, all closed over `include` (a concept that includes another contains all of
its members). Answers are memoised: every coding of every resource goes through here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from engine.errors import Location

_NUMBER = re.compile(r"\d+")
_SIMILAR_SCORE = 75
"""The token sort ratio (0-100) above which a concept id is offered as "did you mean"."""

__all__ = [
    "CodeRange",
    "Concept",
    "DoseEquivalent",
    "Terminology",
    "exact_decimal",
    "normalise_code",
    "normalise_text",
]

_SPACES = re.compile(r"\s+")
# Bound the memo tables so a stream of junk codes cannot grow them without limit.
_MEMO_LIMIT = 200_000


def normalise_code(code: str, icd_style: bool) -> str:
    """The comparable form of a code: trimmed; for ICD-style systems without dots, upper case.

    >>> normalise_code(" d69.3 ", icd_style=True), normalise_code("D69.3", icd_style=False)
    ('D693', 'D69.3')
    """
    code = code.strip()
    if icd_style:
        return code.replace(".", "").upper()
    return code


def normalise_text(text: str) -> str:
    """Case- and space-insensitive form of free text.

    >>> normalise_text("  Not  Detected")
    'not detected'
    """
    return _SPACES.sub(" ", text).strip().casefold()


PER_RESULT = "per-result"
"""The `reference_range` value of a concept whose range is only ever the result's own."""


@dataclass(frozen=True)
class CodeRange:
    """An inclusive range of ICD-10 codes, e.g. C00-C97 or D69.4-D69.6.

    A code is in the range when its leading characters (as many as each bound has, dots
    removed) lie between the bounds: C50.9 is in C00-C97 because C50 is.
    """

    low: str
    high: str
    text: str

    def contains(self, normalised_code: str) -> bool:
        """True if the (normalised, dot-free, upper-case) code falls in the range.

        >>> in_c00_c97 = CodeRange("C00", "C97", "C00-C97")
        >>> in_c00_c97.contains("C509"), in_c00_c97.contains("D693")
        (True, False)
        """
        return (
            normalised_code[: len(self.low)] >= self.low
            and normalised_code[: len(self.high)] <= self.high
        )


@dataclass(frozen=True)
class UnitConversion:
    """A conversion a concept declares from a unit UCUM cannot convert (or must not): value in
    the concept's unit = `factor` x value in `from_unit` + `offset`. `source` cites where the
    equation comes from (HbA1c: the IFCC-NGSP master equation)."""

    from_unit: str
    factor: float
    offset: float
    source: str


def exact_decimal(number: float) -> Fraction:
    """A number read from JSON or YAML (a float, or an int) as the decimal it was written as,
    exactly: the shortest text that reads back as the same float (`0.6`, not the binary
    0.59999999999999997...).

    >>> exact_decimal(0.6), exact_decimal(5)
    (Fraction(3, 5), Fraction(5, 1))
    """
    return Fraction(number) if isinstance(number, int) else Fraction(repr(float(number)))


@dataclass(frozen=True)
class DoseEquivalent:
    """`drug_mg` of a drug is equivalent to `reference_mg` of an equivalence table's reference
    drug (dexamethasone 0.75 mg = prednisone 5 mg), both exact: the doses as the mapping
    writes them (a table's own pair, or a factor per 1 mg), so that a dose equal to the
    table's anchor dose compares equal, never 5.00025 mg."""

    drug_mg: Fraction
    reference_mg: Fraction

    @property
    def factor(self) -> Fraction:
        """mg of the reference drug per mg of this drug."""
        return self.reference_mg / self.drug_mg

    def text(self, drug: str, reference: str) -> str:
        """How an explanation shows it: "dexamethasone 0.75 mg = prednisone 5 mg"."""
        return f"{drug} {float(self.drug_mg):g} mg = {reference} {float(self.reference_mg):g} mg"


@dataclass(frozen=True)
class Concept:
    """A named set of codes (and, for measurements, the canonical unit and defaults).

    `codes`, `prefixes`, `ranges` and `answers` are keyed by code-system URI. `includes`
    names the concepts whose members also belong to this one. `texts` are the
    normalised free-text answers that mean this concept (for answer concepts).
    """

    id: str
    display: str
    unit: str | None
    reference_low: float | None
    reference_high: float | None
    molar_mass: float | None
    value_path: str | None
    source: Location
    codes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    first_codes: Mapping[str, str] = field(default_factory=dict)
    """The first code of each system as the mapping file lists them, systems in the file's
    order: the code its authors put first (the one a laboratory orders, 718-7 for
    haemoglobin), which explanations name as an example."""
    prefixes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ranges: Mapping[str, tuple[CodeRange, ...]] = field(default_factory=dict)
    includes: tuple[str, ...] = ()
    answers: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    texts: frozenset[str] = frozenset()
    description: str | None = None
    plausible_low: float | None = None
    plausible_high: float | None = None
    """Values outside [plausible_low, plausible_high] (canonical unit) are data errors."""
    dose_equivalents: Mapping[str, DoseEquivalent] = field(default_factory=dict)
    """Equivalence table -> the equivalent doses of this drug and of the table's reference
    drug (`prednisone: {drug_mg: 4, reference_mg: 5}` on methylprednisolone)."""
    conversions: tuple[UnitConversion, ...] = ()
    reference_range_per_result: bool = False
    """`reference_range: per-result` in the mappings: no default range on purpose (it depends
    on the assay), so a ULN/LLN test uses each result's own referenceRange or is unknown."""


def similar_ids(word: str, ids: Iterable[str], limit: int = 3) -> list[str]:
    """The concept ids of `ids` most like `word`, best first, for a "did you mean": ids that
    begin with it and a hyphen ("egfr" -> "egfr-ckd-epi"), then ids of nearly the same words
    in any order or with a slip of the keyboard ("hemoglobn", "haemoglobin" -> "hemoglobin"),
    scored by rapidfuzz's token sort ratio. An id whose numbers differ is never offered
    ("type-2-diabetes" is not "type-1-diabetes")."""
    from rapidfuzz import fuzz, process  # only when an id is wrong

    numbers = _NUMBER.findall(word)
    ordered = sorted(ids)
    found = [name for name in ordered if name.startswith(f"{word}-")]
    words = {name: name.replace("-", " ") for name in ordered if name not in found}
    ranked = process.extract(
        word.replace("-", " "),
        words,
        scorer=fuzz.token_sort_ratio,
        score_cutoff=_SIMILAR_SCORE,
        limit=None,
    )
    found += [name for _words, _score, name in ranked]
    return [name for name in found if _NUMBER.findall(name) == numbers][:limit]


def did_you_mean(word: str, ids: Iterable[str]) -> str:
    """` (did you mean 'a' or 'b'?)` with the ids like `word` (`similar_ids`), or ""."""
    similar = [f"'{name}'" for name in similar_ids(word, ids)]
    return f" (did you mean {' or '.join(similar)}?)" if similar else ""


class Terminology:
    """The loaded concepts, with memoised code, text and unit-alias lookups."""

    def __init__(
        self,
        concepts: Mapping[str, Concept],
        system_equivalents: Mapping[str, str],
        icd_systems: Iterable[str],
        local_codes: Mapping[tuple[str, str], frozenset[str]],
        unit_aliases: Mapping[str, str | tuple[str, ...]],
        system_aliases: Mapping[str, str] | None = None,
        files_read: Iterable[str | Path] = (),
    ) -> None:
        self.files_read: tuple[Path, ...] = tuple(dict.fromkeys(Path(path) for path in files_read))
        """The files besides the mapping files that the concepts' codes were read from
        (ValueSet files and the cached expansions looked for beside them, present or not), as
        the mapping files name them: what a cohort run's manifest and stored outcomes depend
        on with the mapping files (`engine.cohort.partition.CriteriaFiles`)."""
        self._concepts = dict(concepts)
        self._concept_ids = frozenset(self._concepts)
        self._system_equivalents = dict(system_equivalents)
        self._icd_systems = frozenset(icd_systems)
        self._system_aliases = dict(system_aliases or {})
        self._unit_aliases: dict[str, tuple[str, ...]] = {
            alias: (target,) if isinstance(target, str) else tuple(target)
            for alias, target in unit_aliases.items()
        }
        self._unit_aliases_folded = {
            normalise_text(alias): readings for alias, readings in self._unit_aliases.items()
        }
        self._containers = _containing_concepts(self._concepts)

        self._exact: dict[tuple[str, str], set[str]] = {}
        self._prefixes: dict[str, list[tuple[str, str]]] = {}
        self._ranges: dict[str, list[tuple[CodeRange, str]]] = {}
        self._answers: dict[tuple[str, str, str], float] = {}
        self._texts: dict[str, set[str]] = {}
        for concept in self._concepts.values():
            for system, codes in concept.codes.items():
                icd_style = system in self._icd_systems
                for code in codes:
                    key = (system, normalise_code(code, icd_style))
                    self._exact.setdefault(key, set()).add(concept.id)
            for system, prefixes in concept.prefixes.items():
                icd_style = system in self._icd_systems
                for prefix in prefixes:
                    self._prefixes.setdefault(system, []).append(
                        (normalise_code(prefix, icd_style), concept.id)
                    )
            for system, code_ranges in concept.ranges.items():
                for code_range in code_ranges:
                    self._ranges.setdefault(system, []).append((code_range, concept.id))
            for system, answers in concept.answers.items():
                icd_style = system in self._icd_systems
                for code, number in answers.items():
                    self._answers[(concept.id, system, normalise_code(code, icd_style))] = number
            for text in concept.texts:
                self._texts.setdefault(text, set()).add(concept.id)
        for (system, code), concept_ids in local_codes.items():
            key = (system, normalise_code(code, system in self._icd_systems))
            self._exact.setdefault(key, set()).update(concept_ids)

        self._value_paths = {
            concept.id: concept.value_path
            for concept in self._concepts.values()
            if concept.value_path is not None
        }
        self._known_systems = frozenset(
            {system for system, _ in self._exact}
            | set(self._prefixes)
            | set(self._ranges)
            | {system for _, system, _ in self._answers}
        )
        self._coding_memo: dict[tuple[str | None, str], frozenset[str]] = {}
        self._system_memo: dict[str | None, bool] = {}
        self._classification_memo: dict[tuple[str | None, str], frozenset[str] | None] = {}
        self._text_memo: dict[str, frozenset[str]] = {}
        self._unit_alias_memo: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ concepts

    def concept(self, concept_id: str) -> Concept:
        """The concept with this id; KeyError if there is none."""
        return self._concepts[concept_id]

    def has_concept(self, concept_id: str) -> bool:
        """True if a concept with this id is defined."""
        return concept_id in self._concepts

    def concept_ids(self) -> frozenset[str]:
        """Every concept id defined."""
        return self._concept_ids

    def similar_concepts(self, concept_id: str, limit: int = 3) -> list[str]:
        """The concept ids most like `concept_id`, best first (`similar_ids`)."""
        return similar_ids(concept_id, self._concept_ids, limit)

    def unknown_concept_hint(self, concept_id: str) -> str:
        """` (did you mean 'a' or 'b'?)` for an id no concept has, or "" (`did_you_mean`)."""
        return did_you_mean(concept_id, self._concept_ids)

    def containing_concepts(self, concept_id: str) -> frozenset[str]:
        """The concept itself and every concept that includes it, directly or not."""
        return self._containers.get(concept_id, frozenset({concept_id}))

    # ------------------------------------------------------------------ systems

    def canonical_system(self, system: str) -> str:
        """The canonical URI for a system URI or OID that mappings declare equivalent."""
        return self._system_equivalents.get(system, system)

    def system_uri(self, alias_or_uri: str) -> str:
        """The URI of a system alias (`loinc`), or the argument when it is already a URI."""
        return self._system_aliases.get(alias_or_uri, alias_or_uri)

    def has_value_paths(self) -> bool:
        """True if some concept says where a site keeps its value (`value_path`)."""
        return bool(self._value_paths)

    def value_path_within(self, concept_ids: Iterable[str], within: str) -> str | None:
        """The value_path of one of `concept_ids` that is `within` or included in it, if any."""
        for concept_id in sorted(concept_ids):
            path = self._value_paths.get(concept_id)
            if path is not None and within in self.containing_concepts(concept_id):
                return path
        return None

    def knows_system(self, system: str | None) -> bool:
        """True if some concept or local code map uses this code system (URI or equivalent)."""
        known = self._system_memo.get(system)
        if known is None:
            known = system is not None and self.canonical_system(system) in self._known_systems
            if len(self._system_memo) >= _MEMO_LIMIT:
                self._system_memo.clear()
            self._system_memo[system] = known
        return known

    # ------------------------------------------------------------------ lookups

    def concepts_of_coding(self, system: str | None, code: str) -> frozenset[str]:
        """Every concept the coding belongs to (exact, prefix, ICD range, local; includes applied).

        A coding without a system matches nothing: a bare code is ambiguous.
        """
        key = (system, code)
        found = self._coding_memo.get(key)
        if found is None:
            found = self._lookup_coding(system, code)
            if len(self._coding_memo) >= _MEMO_LIMIT:
                self._coding_memo.clear()
            self._coding_memo[key] = found
        return found

    def classify_coding(self, system: str | None, code: str) -> frozenset[str] | None:
        """`concepts_of_coding`, except None when nothing matches and the system is unknown.

        One memoised lookup for the record stage, which must tell "no concept" from "a code
        system the mappings do not know".
        """
        key = (system, code)
        memo = self._classification_memo
        if key in memo:
            return memo[key]
        found: frozenset[str] | None = self.concepts_of_coding(system, code)
        if not found and not self.knows_system(system):
            found = None
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[key] = found
        return found

    @property
    def classification_memo(self) -> Mapping[tuple[str | None, str], frozenset[str] | None]:
        """What `classify_coding` has answered so far, by (system, code); read-only. The
        record stage looks a coding up here before calling it (one dictionary lookup for
        each coding of a record, each distinct coding classified once per process)."""
        return self._classification_memo

    def _lookup_coding(self, system: str | None, code: str) -> frozenset[str]:
        if system is None or not code:
            return frozenset()
        canonical = self.canonical_system(system)
        normalised = normalise_code(code, canonical in self._icd_systems)
        direct: set[str] = set(self._exact.get((canonical, normalised), ()))
        for prefix, concept_id in self._prefixes.get(canonical, ()):
            if normalised.startswith(prefix):
                direct.add(concept_id)
        for code_range, concept_id in self._ranges.get(canonical, ()):
            if code_range.contains(normalised):
                direct.add(concept_id)
        return self._close(direct)

    def _close(self, direct: Iterable[str]) -> frozenset[str]:
        closed: set[str] = set()
        for concept_id in direct:
            closed |= self.containing_concepts(concept_id)
        return frozenset(closed)

    def answer_value(self, concept_id: str, system: str | None, code: str) -> float | None:
        """The number a coded answer stands for in this concept (ECOG LA9623-5 -> 1), or None."""
        if system is None:
            return None
        canonical = self.canonical_system(system)
        normalised = normalise_code(code, canonical in self._icd_systems)
        return self._answers.get((concept_id, canonical, normalised))

    def concepts_of_text(self, text: str) -> frozenset[str]:
        """The concepts whose `text` list holds this free text (case- and space-insensitive)."""
        found = self._text_memo.get(text)
        if found is None:
            found = self._close(self._texts.get(normalise_text(text), ()))
            if len(self._text_memo) >= _MEMO_LIMIT:
                self._text_memo.clear()
            self._text_memo[text] = found
        return found

    def unit_alias(self, unit_text: str) -> str | None:
        """The UCUM unit an exact unit string stands for, per `unit_aliases`, or None (its
        first reading, for an alias with several: `unit_readings`)."""
        readings = self._unit_aliases.get(unit_text)
        return readings[0] if readings else None

    def unit_alias_ignoring_case(self, unit_text: str) -> str | None:
        """Like `unit_alias`, ignoring case and spacing."""
        readings = self.unit_readings_ignoring_case(unit_text)
        return readings[0] if readings else None

    def unit_readings(self, unit_text: str) -> tuple[str, ...]:
        """Every UCUM unit an exact unit string may stand for, in the mappings' order (empty
        when it is no alias). Most aliases have one reading; "IU/L" has two: the WHO
        International Unit `[IU]/L` (hCG) and the enzyme unit `U/L` (ALT), told apart by
        the unit of the concept measured (`engine.normalise.units.ucum_unit`)."""
        return self._unit_aliases.get(unit_text, ())

    def unit_readings_ignoring_case(self, unit_text: str) -> tuple[str, ...]:
        """Like `unit_readings`, ignoring case and spacing."""
        known = self._unit_alias_memo.get(unit_text)
        if known is None:
            if len(self._unit_alias_memo) >= _MEMO_LIMIT:
                self._unit_alias_memo.clear()
            known = self._unit_aliases_folded.get(normalise_text(unit_text), ())
            self._unit_alias_memo[unit_text] = known
        return known


def _containing_concepts(concepts: Mapping[str, Concept]) -> dict[str, frozenset[str]]:
    """For each concept, itself plus every concept that includes it (transitively)."""
    included_by: dict[str, set[str]] = {concept_id: set() for concept_id in concepts}
    for concept in concepts.values():
        for included in concept.includes:
            included_by.setdefault(included, set()).add(concept.id)
    result: dict[str, frozenset[str]] = {}
    for concept_id in concepts:
        seen = {concept_id}
        stack = [concept_id]
        while stack:
            for parent in included_by.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        result[concept_id] = frozenset(seen)
    return result
