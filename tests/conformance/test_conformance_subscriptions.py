"""FHIR Subscriptions: R4 (http://hl7.org/fhir/R4/subscription.html) and the R4 Subscriptions
Backport IG (http://hl7.org/fhir/uv/subscriptions-backport/). A notification that names
nothing (R4 rest-hook without payload, Backport `empty`) makes the service ask the server
what changed and re-evaluate those patients; an `id-only` one names its focus. Every test
names the section it checks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine.service.notifications import (
    CHANGED,
    NotificationQueue,
    Target,
    notification_targets,
)

BASE = "http://fhir.example.org/r4"
RELEVANT = frozenset({"Patient", "Observation", "Condition"})


def backport_event_bundle(*parts: list[dict[str, Any]]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/s1"}},
        {"name": "type", "valueCode": "event-notification"},
    ]
    parameters += [{"name": "notification-event", "part": part} for part in parts]
    entries = [{"resource": {"resourceType": "Parameters", "parameter": parameters}}]
    return {"resourceType": "Bundle", "type": "history", "entry": entries}


def test_an_r4_rest_hook_without_payload_asks_what_changed() -> None:
    """R4 Subscription 2.46.7.1 (rest-hook): "If the payload is not present, then there is
    no body for the POST": the notification names nothing, so the server is asked."""
    assert notification_targets(None, None, RELEVANT, BASE) == [CHANGED]


def test_a_backport_empty_notification_asks_what_changed() -> None:
    """Subscriptions Backport, "Payload Types" `empty`: no focus, no resources; the event
    (or its absence) only says that something changed."""
    no_events = backport_event_bundle()
    assert notification_targets(no_events, None, RELEVANT, BASE) == [CHANGED]
    numbered_only = backport_event_bundle([{"name": "event-number", "valueString": "7"}])
    assert notification_targets(numbered_only, None, RELEVANT, BASE) == [CHANGED]


def test_a_backport_id_only_notification_names_its_focus() -> None:
    """Subscriptions Backport, "Payload Types" `id-only`: the focus reference, no resource;
    its patient is read (a Patient focus is the patient)."""
    event = [{"name": "focus", "valueReference": {"reference": f"{BASE}/Observation/o2"}}]
    patient = [{"name": "focus", "valueReference": {"reference": f"{BASE}/Patient/p4"}}]
    bundle = backport_event_bundle(event, patient)
    assert notification_targets(bundle, None, RELEVANT, BASE) == [
        Target("Observation/o2"),
        Target("Patient/p4"),
    ]


def test_what_changed_is_queried_and_each_patient_re_evaluated() -> None:
    """R4 3.1.1.5.2 (`_lastUpdated`): the queue turns `CHANGED` into the patients the server
    reports as changed since the last query, and re-evaluates each."""
    queries: list[str] = []
    evaluated: list[str] = []

    def find_changed() -> list[str]:
        queries.append("asked")
        return ["p1", "p2"]

    def re_evaluate(patient_id: str) -> list[str]:
        evaluated.append(patient_id)
        return ["candidate"]

    async def scenario() -> NotificationQueue:
        queue = NotificationQueue(re_evaluate, lambda reference: None, 1, find_changed)
        await queue.start()
        await queue.submit([CHANGED])
        await queue.drain()
        await queue.stop()
        return queue

    queue = asyncio.run(scenario())
    assert queries == ["asked"]
    assert sorted(evaluated) == ["p1", "p2"]
    assert queue.counts.failed == 0
