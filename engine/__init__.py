"""trialsieve: FHIR-based clinical-trial eligibility engine."""

__version__ = "0.2.0"
