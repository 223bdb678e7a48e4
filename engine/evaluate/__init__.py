"""The evaluate stage: compiled criteria, three-valued outcomes, patient status."""

from engine.evaluate.compile import CompiledCriteria, CompiledCriterion, compile_criteria
from engine.evaluate.outcome import Outcome, Truth, UnknownReason
from engine.evaluate.patient import (
    CriterionResult,
    CriterionVerdict,
    PatientEvaluation,
    SubjectStatus,
    VitalStatus,
    evaluate_patient,
    status_given_vital,
    subject_status,
    vital_status,
)

__all__ = [
    "CompiledCriteria",
    "CompiledCriterion",
    "CriterionResult",
    "CriterionVerdict",
    "Outcome",
    "PatientEvaluation",
    "SubjectStatus",
    "Truth",
    "UnknownReason",
    "VitalStatus",
    "compile_criteria",
    "evaluate_patient",
    "status_given_vital",
    "subject_status",
    "vital_status",
]
