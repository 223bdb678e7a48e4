"""The sink stage: where results go (files, FHIR servers)."""

from engine.sinks.fhir_server import FhirServerSink, WrittenEntry, server_transaction
from engine.sinks.files import SinkError, to_json, write_json

__all__ = [
    "FhirServerSink",
    "SinkError",
    "WrittenEntry",
    "server_transaction",
    "to_json",
    "write_json",
]
