"""Screen one patient for one trial: the one per-patient path every front end takes.

    screening = screen_patient(trial, resources, as_of, answers)

builds the patient's record from their resources (from any source: a Bundle file, an NDJSON
partition, a FHIR server, a CDS Hooks prefetch), evaluates the compiled criteria as of a day
with the attestation answers, and returns a `Screening`: the `PatientEvaluation` and the
report built from it, in the form each front end needs (the validated transaction Bundle
`evaluate` writes and the service answers with; a ResearchSubject and DetectedIssue for a
cohort's result lines). `screen_record` is its second half, for a record already built (a
cohort pre-filter evaluates part of the criteria on part of the record).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from engine.attestations import Attestation
from engine.evaluate import CompiledCriteria, Outcome, PatientEvaluation, SubjectStatus
from engine.evaluate import evaluate_patient as _evaluate_patient
from engine.record import PatientRecord, build_record
from engine.report import detected_issue, research_subject, transaction_bundle, validate_bundle
from engine.sources.base import PatientResources


@dataclass(frozen=True)
class Screening:
    """One patient screened for one trial: the record, the evaluation, the report from it."""

    record: PatientRecord
    evaluation: PatientEvaluation

    @property
    def patient_id(self) -> str:
        return self.evaluation.patient_id

    @property
    def status(self) -> SubjectStatus:
        return self.evaluation.status

    @cached_property
    def transaction_bundle(self) -> dict[str, Any]:
        """The transaction Bundle (ResearchStudy, ResearchSubject, DetectedIssue), validated
        against the FHIR R4 models; raises `OutputValidationError` for an invalid one."""
        bundle = transaction_bundle(self.evaluation)
        validate_bundle(bundle)
        return bundle

    def research_subject(self, study_reference: str) -> dict[str, Any]:
        """The ResearchSubject alone, referring to the study as given (not validated)."""
        return research_subject(self.evaluation, study_reference)

    def detected_issue(self) -> dict[str, Any]:
        """The DetectedIssue alone (not validated)."""
        return detected_issue(self.evaluation)


def screen_patient(
    trial: CompiledCriteria,
    resources: PatientResources,
    as_of: dt.date,
    answers: Mapping[str, Attestation] | None = None,
) -> Screening:
    """Build the record from one patient's resources and evaluate the trial as of a day.

    `answers` maps manual item ids to a person's answers for this patient. Raises
    `InputError` (and the other `TrialsieveError`s) for resources a record cannot be built of.
    """
    record = build_record(resources, trial.terminology)
    return screen_record(trial, record, as_of, answers)


def screen_record(
    trial: CompiledCriteria,
    record: PatientRecord,
    as_of: dt.date,
    answers: Mapping[str, Attestation] | None = None,
    *,
    only: Container[str] | None = None,
    decided: Mapping[str, Outcome] | None = None,
) -> Screening:
    """Evaluate the trial on a record already built (`only` and `decided`: see
    `engine.evaluate.evaluate_patient`, for a cohort pre-filter)."""
    evaluation = _evaluate_patient(trial, record, as_of, answers, only=only, decided=decided)
    return Screening(record, evaluation)
