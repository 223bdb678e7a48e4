"""Criteria test cases: what an informatician expects a criteria file to answer for a patient.

A case file (YAML) sits next to the criteria, in a `tests/` folder (`criteria/tests/*.yaml`):

    criteria: ../NCT05315778.yaml        # relative to this file
    as_of: 2026-11-01                    # default for every case
    cases:
      - name: on aspirin, excluded by E2
        bundle: ../../examples/patients/itp-refractory-on-aspirin.json
        expect:
          status: ineligible
          criteria:
            exclusion-2-thrombosis-or-antithrombotics: fails
      - name: haemoglobin 95 g/L in screening excludes
        patient:                           # compact: demographics and coded facts
          gender: female
          birthDate: 1980-05-01
          conditions: [{code: snomed 32273002, onset: 2016-04-05}]
          observations: [{code: loinc 718-7, value: 95 g/L, date: 2026-10-20}]
          medications: [{code: rxnorm 1191, status: active, date: 2025-02-14}]
          procedures: [{code: snomed 234319005, date: 2020-06-18}]
          allergies: [{code: rxnorm 1191, criticality: high, category: medication}]
        answers: {adequate-venous-access: true}
        expect:
          criteria: {exclusion-7-screening-blood-counts: fails}

Outcomes are the verdicts seen from the patient's side: `clear`, `fails`, `missing-data`,
`manual-review`; `status` is the ResearchSubject status. `run_case` screens the patient as
`trialsieve evaluate` does and compares; a failure carries the explanation of each criterion
that differs (engine.report.explanation), for `trialsieve test` to print. A compact patient's
dates must be FHIR dates or dateTimes and its values finite numbers: a case holding what no
resource could (`onset: 12`, `1980-02-30`, `1e999 g/L`) is refused with its line and field.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import MarkedYAMLError

from engine.attestations import Attestation
from engine.criteria.loader import word_suggestion
from engine.errors import CriteriaError, DateProblem, ErrorCollection, Location, TrialsieveError
from engine.evaluate import CompiledCriteria, CriterionVerdict, SubjectStatus
from engine.evaluate.timing import parse_date_range
from engine.normalise.yaml_reading import load_round_trip
from engine.report.explanation import criterion_lines, explain

CASES_FOLDER = "tests"
"""Case files live in this folder beside the criteria files (`criteria/tests/*.yaml`)."""


@dataclass(frozen=True)
class CriteriaCase:
    """One patient and what the criteria should answer for them."""

    name: str
    file: str
    line: int | None
    as_of: dt.date
    bundle: Path | None = None
    patient: Mapping[str, Any] | None = None
    answers: Mapping[str, bool] = field(default_factory=dict)
    status: SubjectStatus | None = None
    verdicts: Mapping[str, CriterionVerdict] = field(default_factory=dict)
    index: int = 0
    """The case's place in the file's `cases:` list (for its errors' field)."""
    verdict_lines: Mapping[str, int | None] = field(default_factory=dict)
    """The line of each criterion id under `expect.criteria:`."""


@dataclass(frozen=True)
class CaseFile:
    """A case file: the criteria it tests and its cases."""

    path: Path
    criteria: Path
    cases: tuple[CriteriaCase, ...]


@dataclass(frozen=True)
class CaseResult:
    """A case's outcome: `differences` (empty when it passed), each with the explanation."""

    case: CriteriaCase
    differences: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.differences


def case_files(paths: list[Path]) -> Iterator[Path]:
    """The case files under the given paths: a file as given; in a folder, every
    `tests/*.yaml` below it (sorted)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                file
                for file in path.rglob("*.y*ml")
                if file.parent.name == CASES_FOLDER and file.suffix in (".yaml", ".yml")
            )
        else:
            yield path


def load_case_file(path: Path) -> CaseFile:
    """Read a case file; CriteriaError naming the file, line and field for anything wrong."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        root = load_round_trip(text, lambda: YAML(typ="rt").load(text))
    except OSError as error:
        raise CriteriaError(f"cannot read: {error.strerror}", Location(file=file)) from None
    except MarkedYAMLError as error:
        mark = error.problem_mark
        raise CriteriaError(
            f"not valid YAML: {error.problem}",
            Location(file=file, line=mark.line + 1 if mark else None),
        ) from None
    if not isinstance(root, CommentedMap) or not isinstance(root.get("criteria"), str):
        raise CriteriaError(
            "a case file needs `criteria:` (the criteria file) and `cases:`",
            Location(file=file, field="criteria"),
        )
    default_day = _day(root.get("as_of"), file, _line(root, "as_of"), "as_of")
    cases = root.get("cases")
    if not isinstance(cases, list) or not cases:
        raise CriteriaError("`cases:` must be a list of cases", Location(file=file, field="cases"))
    loaded = tuple(_case(node, index, path, default_day) for index, node in enumerate(cases))
    return CaseFile(path, (path.parent / root["criteria"]).resolve(), loaded)


def _line(node: Any, key: str | int) -> int | None:
    try:
        return (
            int(node.lc.key(key)[0]) + 1 if isinstance(key, str) else int(node.lc.item(key)[0]) + 1
        )
    except (AttributeError, KeyError, TypeError, IndexError):
        return None


def _day(value: object, file: str, line: int | None, name: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise CriteriaError(
            f"'{value}' is not a date (YYYY-MM-DD)", Location(file=file, line=line, field=name)
        ) from None


def _case(node: object, index: int, path: Path, default_day: dt.date | None) -> CriteriaCase:
    file = str(path)
    where = Location(file=file, field=f"cases[{index}]")
    if not isinstance(node, CommentedMap):
        raise CriteriaError("a case must be a mapping", where)
    line = int(node.lc.line) + 1
    name = str(node.get("name") or f"case {index + 1}")

    def problem(message: str, key: str) -> CriteriaError:
        return CriteriaError(
            f"case '{name}': {message}",
            Location(file=file, line=_line(node, key) or line, field=f"cases[{index}].{key}"),
        )

    day = _day(node.get("as_of"), file, _line(node, "as_of"), "as_of") or default_day
    if day is None:
        raise problem("no as_of date (give it in the case or at the top of the file)", "as_of")
    bundle, patient = node.get("bundle"), node.get("patient")
    if (bundle is None) == (patient is None):
        raise problem("give `bundle:` (a Bundle file) or `patient:` (compact), not both", "bundle")
    bundle_path = (path.parent / str(bundle)).resolve() if bundle is not None else None
    if bundle_path is not None and not bundle_path.is_file():
        raise problem(f"`bundle:` {bundle_path}: no such file", "bundle")
    expect = node.get("expect")
    if not isinstance(expect, CommentedMap):
        raise problem("`expect:` with `status:` and/or `criteria:` is required", "expect")
    status = None
    if expect.get("status") is not None:
        try:
            status = SubjectStatus(str(expect["status"]))
        except ValueError:
            raise _not_one_of(
                f"case '{name}': status",
                str(expect["status"]),
                [s.value for s in SubjectStatus],
                Location(
                    file=file,
                    line=_line(expect, "status") or line,
                    field=f"cases[{index}].expect.status",
                ),
            ) from None
    verdicts: dict[str, CriterionVerdict] = {}
    expected = expect.get("criteria") or {}
    for criterion_id, verdict in expected.items():
        try:
            verdicts[str(criterion_id)] = CriterionVerdict(str(verdict))
        except ValueError:
            raise _not_one_of(
                f"case '{name}': {criterion_id}'s outcome",
                str(verdict),
                [v.value for v in CriterionVerdict],
                Location(
                    file=file,
                    line=_line(expected, criterion_id) or line,
                    field=f"cases[{index}].expect.criteria.{criterion_id}",
                ),
            ) from None
    answers = node.get("answers") or {}
    if not isinstance(answers, Mapping) or not all(isinstance(v, bool) for v in answers.values()):
        raise problem("`answers:` maps manual item ids to true or false", "answers")
    return CriteriaCase(
        name=name,
        file=file,
        line=line,
        as_of=day,
        bundle=bundle_path,
        patient=dict(patient) if isinstance(patient, Mapping) else None,
        answers={str(k): bool(v) for k, v in answers.items()},
        status=status,
        verdicts=verdicts,
        index=index,
        verdict_lines={key: _line(expected, key) for key in verdicts},
    )


def check_criterion_ids(trial: CompiledCriteria, case_file: CaseFile) -> None:
    """CriteriaError naming the case file, line and field for a criterion id a case expects
    that the criteria do not have (a typo is a bad case file, exit 2, not a failing case);
    ErrorCollection of them when there are several, so that all are fixed at once."""
    known = [compiled.criterion.id for compiled in trial.criteria]
    errors: list[TrialsieveError] = []
    for case in case_file.cases:
        for criterion_id in case.verdicts:
            if criterion_id in known:
                continue
            errors.append(
                CriteriaError(
                    f"case '{case.name}': {trial.source.path} has no criterion "
                    f"'{criterion_id}'{word_suggestion(criterion_id, known)}",
                    Location(
                        file=case.file,
                        line=case.verdict_lines.get(criterion_id) or case.line,
                        field=f"cases[{case.index}].expect.criteria.{criterion_id}",
                    ),
                )
            )
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ErrorCollection(
            f"{len(errors)} problems in {case_file.path}",
            Location(file=str(case_file.path)),
            errors=errors,
        )


def _not_one_of(what: str, word: str, choices: list[str], where: Location) -> CriteriaError:
    """`what` is `word`, which is not one of `choices` (with the one it is like, if any)."""
    return CriteriaError(
        f"{what} '{word}' is not one of {', '.join(choices)}{word_suggestion(word, choices)}", where
    )


# --------------------------------------------------------------------------- running


def run_case(trial: CompiledCriteria, case: CriteriaCase) -> CaseResult:
    """Screen the case's patient as `evaluate` does and compare with what it expects."""
    from engine.screening import screen_patient
    from engine.sources import parse_bundle, read_bundle_file

    if case.bundle is not None:
        resources = read_bundle_file(case.bundle)
    else:
        assert case.patient is not None
        bundle = compact_bundle(case.patient, trial, case)
        import orjson

        resources = parse_bundle(orjson.dumps(bundle), f"{case.file}, case '{case.name}'")
    answers = {
        item: Attestation(item, answer, by="criteria test case", date=None)
        for item, answer in case.answers.items()
    }
    evaluation = screen_patient(trial, resources, case.as_of, answers).evaluation
    explanation = explain(evaluation)
    by_id = {criterion.id: criterion for criterion in explanation.criteria}
    differences: list[str] = []
    for criterion_id, expected in case.verdicts.items():
        explained = by_id.get(criterion_id)
        if explained is None:
            differences.append(f"no criterion {criterion_id} in {trial.source.path}")
            continue
        if explained.verdict is not expected:
            got = explained.verdict.value if explained.verdict else "not evaluated"
            lines = "\n".join(criterion_lines(explained))
            differences.append(
                f"- {criterion_id}: {expected.value}\n+ {criterion_id}: {got}\n{lines}"
            )
    if case.status is not None and evaluation.status is not case.status:
        differences.append(
            f"- status: {case.status.value}\n+ status: {evaluation.status.value} "
            f"({explanation.status_text})"
        )
    return CaseResult(case, tuple(differences))


def compact_bundle(
    patient: Mapping[str, Any], trial: CompiledCriteria, case: CriteriaCase
) -> dict[str, Any]:
    """A collection Bundle from a compact patient: `gender`, `birthDate` and lists of
    `conditions`, `observations`, `medications`, `procedures`, `allergies`, each with a
    `code` written `<system alias> <code>` (aliases from the mappings: snomed, loinc...)."""
    terminology = trial.terminology
    patient_id = str(patient.get("id") or "case-patient")
    subject = {"reference": f"Patient/{patient_id}"}

    def refuse(message: str, where: str) -> CriteriaError:
        return CriteriaError(
            f"case '{case.name}': {message}",
            Location(file=case.file, line=case.line, field=f"patient.{where}"),
        )

    def checked_date(value: object, where: str) -> str:
        """A compact date as FHIR writes it; CriteriaError for what is no FHIR date (a number,
        an impossible day: a case must not test a patient the data could never hold)."""
        text = value.isoformat() if isinstance(value, dt.date) else value
        try:
            parse_date_range(text, where)
        except DateProblem as problem:
            raise refuse(str(problem), where) from None
        return str(text)

    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": patient_id,
            **({"gender": str(patient["gender"])} if patient.get("gender") is not None else {}),
            **(
                {"birthDate": checked_date(patient["birthDate"], "birthDate")}
                if patient.get("birthDate") is not None
                else {}
            ),
        }
    ]

    def coded(item: Mapping[str, Any], kind: str) -> dict[str, Any]:
        text = str(item.get("code") or "")
        alias, _, code = text.partition(" ")
        if not code:
            raise refuse(f"{kind} code '{text}' is not '<system> <code>'", kind)
        return {"coding": [{"system": terminology.system_uri(alias), "code": code.strip()}]}

    def dated(item: Mapping[str, Any], kind: str = "item") -> str | None:
        key = "date" if item.get("date") is not None else "onset"
        value = item.get(key)
        return None if value is None else checked_date(value, f"{kind}.{key}")

    for number, item in enumerate(patient.get("conditions") or ()):
        condition: dict[str, Any] = {
            "resourceType": "Condition",
            "id": f"condition-{number + 1}",
            "subject": subject,
            "code": coded(item, "conditions"),
            "clinicalStatus": {"coding": [{"code": str(item.get("status", "active"))}]},
        }
        if (day := dated(item, "conditions")) is not None:
            condition["onsetDateTime"] = day
        resources.append(condition)
    for number, item in enumerate(patient.get("observations") or ()):
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"observation-{number + 1}",
            "status": str(item.get("status", "final")),
            "subject": subject,
            "code": coded(item, "observations"),
        }
        if (day := dated(item, "observations")) is not None:
            observation["effectiveDateTime"] = day
        value = str(item.get("value", "")).strip()
        amount, _, unit = value.partition(" ")
        try:
            quantity = float(amount)
        except ValueError:
            if value:
                observation["valueString"] = value
        else:
            if not math.isfinite(quantity):
                raise refuse(f"value '{value}' is not a finite number", "observations.value")
            observation["valueQuantity"] = {
                "value": quantity,
                "system": "http://unitsofmeasure.org",
                "code": unit or "1",
            }
        resources.append(observation)
    for number, item in enumerate(patient.get("medications") or ()):
        request: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": f"medication-{number + 1}",
            "status": str(item.get("status", "completed")),
            "intent": "order",
            "subject": subject,
            "medicationCodeableConcept": coded(item, "medications"),
        }
        if (day := dated(item, "medications")) is not None:
            request["authoredOn"] = day
        resources.append(request)
    for number, item in enumerate(patient.get("procedures") or ()):
        procedure: dict[str, Any] = {
            "resourceType": "Procedure",
            "id": f"procedure-{number + 1}",
            "status": str(item.get("status", "completed")),
            "subject": subject,
            "code": coded(item, "procedures"),
        }
        if (day := dated(item, "procedures")) is not None:
            procedure["performedDateTime"] = day
        resources.append(procedure)
    for number, item in enumerate(patient.get("allergies") or ()):
        allergy: dict[str, Any] = {
            "resourceType": "AllergyIntolerance",
            "id": f"allergy-{number + 1}",
            "patient": subject,
            "code": coded(item, "allergies"),
        }
        for key in ("criticality",):
            if item.get(key):
                allergy[key] = str(item[key])
        if item.get("category"):
            allergy["category"] = [str(item["category"])]
        resources.append(allergy)
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": resource} for resource in resources],
    }
