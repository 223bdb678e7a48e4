"""The report stage: ResearchSubject + DetectedIssue (FHIR R4) from a patient evaluation."""

from engine.errors import OutputValidationError
from engine.report.resources import (
    detected_issue,
    narrative,
    research_study,
    research_subject,
    summary_line,
    transaction_bundle,
)
from engine.report.validate import validate_bundle, validate_resource

__all__ = [
    "OutputValidationError",
    "detected_issue",
    "narrative",
    "research_study",
    "research_subject",
    "summary_line",
    "transaction_bundle",
    "validate_bundle",
    "validate_resource",
]
