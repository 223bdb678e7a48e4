"""Attestations: a person's answers to the manual items of a trial, per patient.

The file (YAML or JSON) lists who answered what and when:

    attestations:
      - patient: itp-relapsed-candidate
        trial: NCT05315778            # optional: only for this trial
        by: Dr. Example Investigator
        date: 2026-11-02
        answers:
          informed-consent: true

An answer is the truth of the manual atom's question. Unknown manual ids are an error (a typo
must not silently leave an item unanswered).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from engine.errors import AttestationError, Location
from engine.normalise.yaml_reading import load_round_trip


@dataclass(frozen=True)
class Attestation:
    """One person's answer to one manual item for one patient."""

    manual_id: str
    answer: bool
    by: str
    date: dt.date | None


ENTRY_KEYS = ("patient", "trial", "by", "date", "answers")
Attestations = Mapping[str, Mapping[str, Attestation]]
"""Patient id -> manual atom id -> attestation."""


def load_attestations(
    path: str | Path, known_manual_ids: Iterable[str], trial_id: str | None = None
) -> Attestations:
    """Read an attestation file; every manual id must be one the criteria ask about.

    An entry may name its `trial`; with `trial_id` given, entries for other trials are
    skipped (one file can then serve a service that loads several trials).
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise AttestationError(f"cannot read: {error.strerror}", Location(file=file)) from None
    try:
        document = load_round_trip(text, lambda: YAML(typ="rt").load(text))
    except MarkedYAMLError as error:
        mark = error.problem_mark
        raise AttestationError(
            f"not valid YAML: {error.problem}",
            Location(file=file, line=mark.line + 1 if mark else None),
        ) from None
    except YAMLError as error:
        raise AttestationError(f"not valid YAML: {error}", Location(file=file)) from None
    known = frozenset(known_manual_ids)
    if not isinstance(document, dict) or not isinstance(document.get("attestations"), list):
        raise AttestationError(
            "expected a mapping with a list under 'attestations'", Location(file=file, line=1)
        )
    unknown_keys = sorted(str(key) for key in document if key != "attestations")
    if unknown_keys:
        raise AttestationError(
            f"unknown top-level key(s) {', '.join(unknown_keys)}: an attestation file holds "
            "only 'attestations'",
            Location(file=file, line=_key_line(document, unknown_keys[0]), field=unknown_keys[0]),
        )
    result: dict[str, dict[str, Attestation]] = {}
    answered_on: dict[tuple[str, str], int | None] = {}
    for index, entry in enumerate(document["attestations"]):
        line = _line_of(document["attestations"], index)
        where = Location(file=file, line=line, field=f"attestations[{index}]")
        if not isinstance(entry, dict):
            raise AttestationError("each attestation must be a mapping", where)
        unknown_fields = sorted(str(key) for key in entry if key not in ENTRY_KEYS)
        if unknown_fields:
            raise AttestationError(
                f"unknown key(s) {', '.join(unknown_fields)}; an attestation has "
                f"{', '.join(ENTRY_KEYS)}",
                where,
            )
        entry_trial = entry.get("trial")
        if entry_trial is not None and not isinstance(entry_trial, str):
            raise AttestationError("'trial' must be a trial id such as NCT05315778", where)
        if trial_id is not None and entry_trial is not None and entry_trial != trial_id:
            continue
        patient = entry.get("patient")
        by = entry.get("by")
        answers = entry.get("answers")
        if not isinstance(patient, str) or not patient:
            found = "" if patient is None else f", found {patient!r}"
            raise AttestationError(f"'patient' (a patient id, as text) is required{found}", where)
        if not isinstance(by, str) or not by:
            found = "" if by is None else f", found {by!r}"
            raise AttestationError(f"'by' (who attests, as text) is required{found}", where)
        if not isinstance(answers, dict) or not answers:
            raise AttestationError("'answers' must map manual item ids to true/false", where)
        day = _read_date(entry.get("date"), where)
        for manual_id, answer in answers.items():
            answer_line = _key_line(answers, manual_id) or line
            answer_where = Location(file=file, line=answer_line, field=f"answers.{manual_id}")
            if manual_id not in known:
                raise AttestationError(
                    f"'{manual_id}' is not a manual item of these criteria "
                    f"(known: {', '.join(sorted(known))})",
                    answer_where,
                )
            if not isinstance(answer, bool):
                raise AttestationError("an answer must be true or false", answer_where)
            earlier = result.get(patient, {}).get(str(manual_id))
            if earlier is not None and earlier.answer != answer:
                first_line = answered_on[patient, str(manual_id)]
                raise AttestationError(
                    f"patient {patient}'s '{manual_id}' is answered {str(answer).lower()} here "
                    f"and {str(earlier.answer).lower()} on line {first_line} (by {earlier.by}): "
                    "remove the answer that no longer holds",
                    answer_where,
                )
            answered_on.setdefault((patient, str(manual_id)), answer_line)
            result.setdefault(patient, {})[str(manual_id)] = Attestation(
                str(manual_id), answer, by, day
            )
    return result


def _read_date(value: Any, where: Location) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise AttestationError(f"'date' must be YYYY-MM-DD, found '{value}'", where) from None


def _key_line(mapping: Any, key: str) -> int | None:
    try:
        return int(mapping.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return None


def _line_of(sequence: Any, index: int) -> int | None:
    try:
        return int(sequence.lc.item(index)[0]) + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
