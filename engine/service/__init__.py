"""The trialsieve service: evaluation API, CDS Hooks, FHIR Subscription notifications.

`create_app(ServiceSettings(...))` builds the FastAPI app; `trialsieve serve` runs it with
uvicorn and `trialsieve subscribe` registers the Subscriptions that notify it (commands.py).
See docs/service.md.
"""

from engine.errors import ServiceConfigError
from engine.service.app import create_app
from engine.service.settings import ApiAuthSettings, SecretReference, ServiceSettings

__all__ = [
    "ApiAuthSettings",
    "SecretReference",
    "ServiceConfigError",
    "ServiceSettings",
    "create_app",
]
