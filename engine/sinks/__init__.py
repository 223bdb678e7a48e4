"""The sink stage: where results go (files now; FHIR servers later)."""

from engine.sinks.files import SinkError, to_json, write_json

__all__ = ["SinkError", "to_json", "write_json"]
