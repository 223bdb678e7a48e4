"""The rest-hook Subscriptions that send a FHIR server's changes to the service.

`register_subscriptions` puts one R4 rest-hook Subscription per resource type the trials read
on a server (`trialsieve subscribe` does it from the command line); each notifies the
service's `/fhir-notify` with the full changed resource, and its id is derived from endpoint
and type, so that registering again updates it in place.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.sources import FhirServerClient

NOTIFY_PATH = "/fhir-notify"
NOT_SUBSCRIBED = frozenset({"Medication", "ResearchSubject"})
"""Medications are not patient data; ResearchSubjects are what the service itself writes."""


@dataclass(frozen=True)
class RegisteredSubscription:
    """A Subscription as the server stored it: id, criteria and status (with its error)."""

    id: str
    criteria: str
    status: str


def rest_hook_subscription(resource_type: str, endpoint: str, headers: list[str]) -> dict[str, Any]:
    """An R4 rest-hook Subscription for every change of a type, with the full resource as
    payload; its id is derived from endpoint and type, so registering again updates it.
    """
    derived = uuid.uuid5(uuid.NAMESPACE_URL, f"{endpoint}|{resource_type}")
    subscription_id = f"trialsieve-{derived}"
    subscription: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": subscription_id,
        "status": "requested",
        "reason": f"trialsieve: re-evaluate trial eligibility when a patient's {resource_type} "
        "changes",
        "criteria": f"{resource_type}?",
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
        },
    }
    if headers:
        subscription["channel"]["header"] = headers
    return subscription


def register_subscriptions(
    client: FhirServerClient,
    resource_types: Iterable[str],
    endpoint: str,
    headers: list[str],
) -> list[RegisteredSubscription]:
    """PUT a Subscription for each type (but `NOT_SUBSCRIBED`), in name order, and read each
    back; raises `ServerError` when the server refuses or fails."""
    registered = []
    for resource_type in sorted(set(resource_types) - NOT_SUBSCRIBED):
        subscription = rest_hook_subscription(resource_type, endpoint, headers)
        client.json("PUT", f"Subscription/{subscription['id']}", body=subscription)
        stored = client.read("Subscription", subscription["id"]) or {}
        status = str(stored.get("status", "unknown"))
        if stored.get("error"):
            status += f": {stored['error']}"
        registered.append(
            RegisteredSubscription(subscription["id"], subscription["criteria"], status)
        )
    return registered
