"""The sink stage: where results go (files, FHIR servers)."""

from typing import TYPE_CHECKING

from engine.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from engine.errors import SinkError
    from engine.sinks.fhir_server import FhirServerSink, WrittenEntry, server_transaction
    from engine.sinks.files import to_json, write_json, write_text

__all__ = [
    "FhirServerSink",
    "SinkError",
    "WrittenEntry",
    "server_transaction",
    "to_json",
    "write_json",
    "write_text",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FhirServerSink": "engine.sinks.fhir_server",
        "SinkError": "engine.errors",
        "WrittenEntry": "engine.sinks.fhir_server",
        "server_transaction": "engine.sinks.fhir_server",
        "to_json": "engine.sinks.files",
        "write_json": "engine.sinks.files",
        "write_text": "engine.sinks.files",
    },
)
