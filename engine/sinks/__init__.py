"""The sink stage: where results go (files, FHIR servers)."""

from engine.errors import SinkError
from engine.sinks.fhir_server import FhirServerSink, WrittenEntry, server_transaction
from engine.sinks.files import to_json, write_json

__all__ = [
    "FhirServerSink",
    "SinkError",
    "WrittenEntry",
    "server_transaction",
    "to_json",
    "write_json",
]
