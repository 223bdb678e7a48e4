"""FHIR Subscriptions: R4 (http://hl7.org/fhir/R4/subscription.html) and the R4 Subscriptions
Backport IG (http://hl7.org/fhir/uv/subscriptions-backport/). A notification that names
nothing (R4 rest-hook without payload, Backport `empty`) makes the service ask the server
what changed for that Subscription (its criteria, `_lastUpdated` since its previous query) and
re-evaluate those patients; an `id-only` one names its focus. Every test names the section it
checks. Against a server: tests/service/test_notifications.py (two Subscriptions, different
criteria and times, on sekmet).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from engine.errors import ServiceConfigError
from engine.service.notifications import (
    CHANGED,
    NotificationQueue,
    Target,
    changed_in,
    notification_targets,
)
from engine.service.subscription_changes import (
    BACKPORT_FILTER_CRITERIA,
    SERVICE_WIDE,
    ChangeQuery,
    ChangeTimes,
    change_queries,
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
    no body for the POST": the notification names nothing, so the server is asked, for the
    Subscription the notification URL names (`channel.endpoint` `.../fhir-notify?subscription=
    {id}`), else for every type the trials read."""
    assert notification_targets(None, None, RELEVANT, BASE) == [CHANGED]
    named = notification_targets(None, None, RELEVANT, BASE, "Subscription/s9")
    assert named == [changed_in("Subscription/s9")]


def test_a_backport_empty_notification_asks_what_changed() -> None:
    """Subscriptions Backport, "Payload Types" `empty`: no focus, no resources; the event
    (or its absence) only says that something changed, for the Subscription the status names
    (Parameters `subscription`, "Notifications": SubscriptionStatus.subscription)."""
    changed = changed_in("Subscription/s1")
    no_events = backport_event_bundle()
    assert notification_targets(no_events, None, RELEVANT, BASE) == [changed]
    numbered_only = backport_event_bundle([{"name": "event-number", "valueString": "7"}])
    assert notification_targets(numbered_only, None, RELEVANT, BASE) == [changed]
    r5 = {
        "resourceType": "Bundle",
        "type": "subscription-notification",
        "entry": [
            {
                "resource": {
                    "resourceType": "SubscriptionStatus",
                    "type": "event-notification",
                    "subscription": {"reference": "Subscription/s2"},
                }
            }
        ],
    }
    assert notification_targets(r5, None, RELEVANT, BASE) == [changed_in("Subscription/s2")]
    elsewhere = backport_event_bundle()
    parameters = elsewhere["entry"][0]["resource"]["parameter"]
    parameters[0]["valueReference"]["reference"] = "http://other.example.org/Subscription/s1"
    assert notification_targets(elsewhere, None, RELEVANT, BASE) == [CHANGED]


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
    """R4 3.1.1.5.2 (`_lastUpdated`): the queue turns a `changed_in` target into the patients
    the server reports as changed for that Subscription since its last query, and
    re-evaluates each."""
    queries: list[str] = []
    evaluated: list[str] = []

    def find_changed(subscription: str) -> list[str]:
        queries.append(subscription)
        return ["p1", "p2"]

    def re_evaluate(patient_id: str) -> list[str]:
        evaluated.append(patient_id)
        return ["candidate"]

    async def scenario() -> NotificationQueue:
        queue = NotificationQueue(re_evaluate, lambda reference: None, 1, find_changed)
        await queue.start()
        await queue.submit([changed_in("Subscription/s1")])
        await queue.drain()
        await queue.submit([CHANGED])
        await queue.drain()
        await queue.stop()
        return queue

    queue = asyncio.run(scenario())
    assert queries == ["Subscription/s1", SERVICE_WIDE]
    assert sorted(evaluated) == ["p1", "p1", "p2", "p2"]
    assert queue.counts.failed == 0


def query_of(change: ChangeQuery) -> tuple[str, list[tuple[str, str]]]:
    url = urlsplit(change.url("2026-11-30T00:00:00Z", 50))
    return url.path, parse_qsl(url.query)


def test_the_query_is_the_subscriptions_criteria_since_its_last_event() -> None:
    """R4 Subscription.criteria ("The rules that the server should use to determine when to
    generate notifications", a search `Type?params`) with `_lastUpdated=gt<time>` (R4
    3.1.1.5.2, the search parameter every resource has) and a page size."""
    subscription = {
        "resourceType": "Subscription",
        "criteria": "Observation?code=http://loinc.org|777-3",
    }
    (change,) = change_queries(subscription, RELEVANT) or []
    assert query_of(change) == (
        "Observation",
        [
            ("code", "http://loinc.org|777-3"),
            ("_lastUpdated", "gt2026-11-30T00:00:00Z"),
            ("_count", "50"),
        ],
    )


def test_backport_filter_criteria_and_r5_filters_are_queries() -> None:
    """Subscriptions Backport, "Topic-Based Subscription" filters: the criteria is the topic's
    canonical URL, each filter a `backport-filter-criteria` extension holding a search (one
    query each); R5 Subscription.filterBy (resourceType, filterParameter, value). A topic
    without filters names no search: every type the trials read is searched (None)."""
    backport = {
        "resourceType": "Subscription",
        "criteria": "http://example.org/SubscriptionTopic/encounter-start",
        "_criteria": {
            "extension": [
                {"url": BACKPORT_FILTER_CRITERIA, "valueString": "Condition?patient=Patient/p1"},
                {"url": BACKPORT_FILTER_CRITERIA, "valueString": "Encounter?patient=Patient/p1"},
            ]
        },
    }
    queries = change_queries(backport, RELEVANT)
    assert queries == [
        ChangeQuery("Condition", (("patient", "Patient/p1"),))
    ]  # Encounter: no trial reads it
    r5 = {
        "resourceType": "Subscription",
        "filterBy": [{"resourceType": "Observation", "filterParameter": "code", "value": "777-3"}],
    }
    assert change_queries(r5, RELEVANT) == [ChangeQuery("Observation", (("code", "777-3"),))]
    topic_only = {"resourceType": "Subscription", "criteria": backport["criteria"]}
    assert change_queries(topic_only, RELEVANT) is None
    absolute = {"resourceType": "Subscription", "criteria": "http://evil.example.org/Observation?"}
    assert change_queries(absolute, RELEVANT) is None  # never followed


def test_each_subscription_keeps_its_own_time(tmp_path: Path) -> None:
    """R4 3.1.1.5.2: `_lastUpdated` since the previous query of the same Subscription: each
    keeps its own time (a Subscription never asked starts at the service's start), times never
    go backwards, concurrent notifications included, and a state file keeps them across a
    restart."""
    start = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    state = tmp_path / "notification-state.json"
    times = ChangeTimes(start, state)
    later = start + dt.timedelta(minutes=5)
    times.queried("Subscription/a", later)
    assert times.since("Subscription/a") == later
    assert times.since("Subscription/b") == start
    moments = [start + dt.timedelta(seconds=second) for second in range(200)]
    threads = [
        threading.Thread(target=times.queried, args=("Subscription/b", moment))
        for moment in reversed(moments)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert times.since("Subscription/b") == moments[-1]
    restarted = ChangeTimes(start + dt.timedelta(days=1), state)
    assert restarted.since("Subscription/a") == later
    assert restarted.since("Subscription/b") == moments[-1]
    assert restarted.since(SERVICE_WIDE) == start + dt.timedelta(days=1)
    state.write_text('{"Subscription/a": "yesterday"}')
    with pytest.raises(ServiceConfigError, match="not an instant"):
        ChangeTimes(start, state)
