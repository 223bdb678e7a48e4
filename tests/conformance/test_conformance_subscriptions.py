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
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from service_support import AUTH, ClientFactory, r5_notification

from engine.errors import ServiceConfigError
from engine.service.notifications import (
    CHANGED,
    NotificationQueue,
    Target,
    changed_in,
    missed_target,
    notification_events,
    notification_targets,
)
from engine.service.problems import ApiError
from engine.service.subscription_changes import (
    BACKPORT_FILTER_CRITERIA,
    SERVICE_WIDE,
    ChangeQuery,
    ChangeTimes,
    EventCounts,
    MissedEvents,
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
    r5 = r5_notification(subscription={"reference": "Subscription/s2"})
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


def through_a_queue(
    make_queue: Callable[[Callable[[str], list[str]]], NotificationQueue],
    *batches: list[Target],
) -> tuple[NotificationQueue, list[str]]:
    """Each batch of targets submitted and drained in turn through the queue `make_queue`
    makes with a re-evaluation that records its patient: the stopped queue and the patients
    re-evaluated."""
    evaluated: list[str] = []

    def re_evaluate(patient_id: str) -> list[str]:
        evaluated.append(patient_id)
        return ["candidate"]

    async def scenario() -> NotificationQueue:
        queue = make_queue(re_evaluate)
        await queue.start()
        for batch in batches:
            await queue.submit(batch)
            await queue.drain()
        await queue.stop()
        return queue

    return asyncio.run(scenario()), evaluated


def test_what_changed_is_queried_and_each_patient_re_evaluated() -> None:
    """R4 3.1.1.5.2 (`_lastUpdated`): the queue turns a `changed_in` target into the patients
    the server reports as changed for that Subscription since its last query, and
    re-evaluates each."""
    queries: list[str] = []

    def find_changed(subscription: str) -> list[str]:
        queries.append(subscription)
        return ["p1", "p2"]

    queue, evaluated = through_a_queue(
        lambda re_evaluate: NotificationQueue(re_evaluate, lambda reference: None, 1, find_changed),
        [changed_in("Subscription/s1")],
        [CHANGED],
    )
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


FOCUS_AT = "entry[0].resource.parameter[2].part[0].valueReference.reference"


@pytest.mark.parametrize(
    ("focus", "expression"),
    [
        ({"reference": "Patient/../x"}, FOCUS_AT),
        ({"reference": "Observation/a b"}, FOCUS_AT),
        ({"reference": "Patient/" + "x" * 65}, FOCUS_AT),
        ({"reference": "urn:uuid:4d0b58d2-7bd4-4b43-9d5f-8aa0c4a1e6d5"}, FOCUS_AT),
        ({"reference": "Observation?code=718-7"}, FOCUS_AT),
        ({"reference": 5}, FOCUS_AT),
        ({"display": "a focus without a reference"}, FOCUS_AT),
    ],
)
def test_an_event_focus_that_names_no_resource_is_400(focus: Any, expression: str) -> None:
    """Subscriptions Backport, "Notifications" (`notification-event.focus`, a Reference to the
    resource the event is about) and FHIR R4 datatypes (`id`: [A-Za-z0-9\\-\\.]{1,64}): a focus
    the service would act on (read from the server, re-evaluate its patient) must name a
    `Type/id` of the configured server. One that does not (a path out, an id that is no FHIR
    id, a search, a `urn:uuid` no entry carries, no reference at all) is a 400 naming the
    element, never read as an `empty` event nor sent to the server."""
    bundle = backport_event_bundle([{"name": "focus", "valueReference": focus}])
    with pytest.raises(ApiError) as raised:
        notification_targets(bundle, None, RELEVANT, BASE)
    assert raised.value.status == 400
    (issue,) = raised.value.issues
    assert issue.expression == (expression,)
    assert issue.diagnostics.startswith(expression)


def test_a_focus_and_its_entry_must_agree() -> None:
    """Subscriptions Backport, "Payload Types" `full-resource`: the Bundle carries the focus
    resource in an entry; a focus whose fullUrl entry holds another resource type (or id)
    than the focus names is a 400, and so is a carried focus resource whose id or patient
    reference is no FHIR id."""
    focus = [{"name": "focus", "valueReference": {"reference": f"{BASE}/Observation/o1"}}]
    bundle = backport_event_bundle(focus)
    condition = {"resourceType": "Condition", "id": "o1", "subject": {"reference": "Patient/p1"}}
    bundle["entry"].append({"fullUrl": f"{BASE}/Observation/o1", "resource": condition})
    with pytest.raises(ApiError) as raised:
        notification_targets(bundle, None, RELEVANT, BASE)
    assert "is Condition/o1" in raised.value.issues[0].diagnostics
    bad_subject = {
        "resourceType": "Observation",
        "id": "o1",
        "subject": {"reference": "Patient/../p"},
    }
    bundle["entry"][1] = {"fullUrl": f"{BASE}/Observation/o1", "resource": bad_subject}
    with pytest.raises(ApiError) as raised:
        notification_targets(bundle, None, RELEVANT, BASE)
    assert raised.value.issues[0].expression == ("entry[1].resource.subject.reference",)


def test_a_rest_hook_resource_whose_id_is_no_fhir_id_is_400() -> None:
    """R4 Subscription 2.46.7.1 (rest-hook with payload: the resource is the body) and R4
    datatypes `id`: a Patient with an id that is no FHIR id (or none), or a resource whose
    patient reference names none, is a 400 naming the element."""
    for body, expression in [
        ({"resourceType": "Patient", "id": "../x"}, "id"),
        ({"resourceType": "Patient"}, "id"),
        (
            {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/a b"}},
            "subject.reference",
        ),
    ]:
        with pytest.raises(ApiError) as raised:
            notification_targets(body, None, RELEVANT, BASE)
        assert raised.value.issues[0].expression == (expression,), body


def test_a_subscription_reference_that_names_no_subscription_is_400() -> None:
    """Subscriptions Backport, "Notifications": `subscription` is a Reference(Subscription);
    one to another type or with an id that is no FHIR id is a 400 naming it (another
    server's Subscription is still read as none named: every type is searched)."""
    for reference in ("Patient/p1", "Subscription/../x", "Subscription/a b"):
        bundle = backport_event_bundle()
        bundle["entry"][0]["resource"]["parameter"][0]["valueReference"]["reference"] = reference
        with pytest.raises(ApiError) as raised:
            notification_targets(bundle, None, RELEVANT, BASE)
        assert raised.value.issues[0].expression == (
            "entry[0].resource.parameter[0].valueReference.reference",
        )


def test_a_bad_focus_is_answered_400_before_anything_is_queued(
    service_client: ClientFactory,
) -> None:
    """The service answers a bad focus with a 400 OperationOutcome naming the element
    (the server that sent it sees why), and queues nothing."""
    api = service_client(fhir_server="http://127.0.0.1:9/r4")
    focus = [{"name": "focus", "valueReference": {"reference": "Patient/../../admin"}}]
    answer = api.post("/fhir-notify", json=backport_event_bundle(focus), headers=AUTH)
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["expression"] == [FOCUS_AT]
    assert api.app.state.notifications.counts.received == 0  # type: ignore[attr-defined]


# ------------------------------------------------------------- missed events (Handling Errors)


def counts(numbers: tuple[int, ...], since: int | None, kind: str = "event-notification") -> Any:
    return EventCounts("Subscription/s1", kind, numbers, since)


def test_a_gap_in_the_event_numbers_is_missed_events(tmp_path: Path) -> None:
    """Subscriptions Backport, "Handling Errors", "Missing Event": "the client tracks the
    `eventsSinceSubscriptionStart` of each received notification (per `Subscription`). When
    the client received event 23, they were aware that the last notification it received was
    a single notification for event 21" - event 22 was missed. A heartbeat's count shows
    missed events too ("Broken Communication"); a duplicate or a late notification does not;
    a handshake starts the count again. The numbers are kept in the state file: events missed
    while the service was down are found by the first notification after its restart."""
    state = tmp_path / "state.json"
    times = ChangeTimes(dt.datetime(2026, 11, 30, tzinfo=dt.UTC), state)
    assert times.events_seen(counts((21,), 21)) is None  # the first: nothing to compare with
    assert times.events_seen(counts((23,), 23)) == MissedEvents("Subscription/s1", 22, 22)
    assert times.events_seen(counts((24, 25), 25)) is None
    assert times.events_seen(counts((22,), 22)) is None  # late: already recovered
    assert times.events_seen(counts((), 28, "heartbeat")) == MissedEvents("Subscription/s1", 26, 28)
    assert times.events_seen(counts((30, 32), 32)) == MissedEvents("Subscription/s1", 29, 31)
    assert times.events_seen(counts((), 0, "handshake")) is None
    assert times.events_seen(counts((1,), 1)) is None
    restarted = ChangeTimes(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), state)
    assert restarted.events_seen(counts((4,), 4)) == MissedEvents("Subscription/s1", 2, 3)
    restarted.rewind_events(MissedEvents("Subscription/s1", 2, 3))  # the recovery failed
    assert restarted.events_seen(counts((5,), 5)) == MissedEvents("Subscription/s1", 2, 4)


def test_event_numbers_are_read_from_every_notification_shape() -> None:
    """Subscriptions Backport, "Notifications": R4 Parameters `events-since-subscription-start`
    and `notification-event.event-number` (strings); R4B/R5 SubscriptionStatus
    `eventsSinceSubscriptionStart` and `notificationEvent.eventNumber` (R5 integer64, a JSON
    string). A number that is no non-negative integer is a 400 naming it."""
    r4 = backport_event_bundle(
        [
            {"name": "event-number", "valueString": "7"},
            {"name": "focus", "valueReference": {"reference": "Patient/p1"}},
        ]
    )
    r4["entry"][0]["resource"]["parameter"].append(
        {"name": "events-since-subscription-start", "valueString": "7"}
    )
    assert notification_events(r4, BASE) == EventCounts(
        "Subscription/s1", "event-notification", (7,), 7
    )
    r5 = r5_notification(
        subscription={"reference": "Subscription/s2"},
        eventsSinceSubscriptionStart="9",
        notificationEvent=[{"eventNumber": "8"}, {"eventNumber": 9}],
    )
    assert notification_events(r5, BASE) == EventCounts(
        "Subscription/s2", "event-notification", (8, 9), 9
    )
    for bad in ("-1", "7.5", "x", "", True, None, "9" * 20):
        r5["entry"][0]["resource"]["eventsSinceSubscriptionStart"] = bad
        with pytest.raises(ApiError) as raised:
            notification_events(r5, BASE)
        assert raised.value.issues[0].expression == (
            "entry[0].resource.eventsSinceSubscriptionStart",
        ), bad


def test_missed_events_are_recovered_in_the_queue() -> None:
    """Subscriptions Backport, "Recovering from Errors": the client recovers the missed events
    (what it found is re-evaluated: patients, resources whose patient is read)."""
    recovered: list[MissedEvents] = []

    def find_missed(missed: MissedEvents) -> list[str]:
        recovered.append(missed)
        return ["Patient/p7", "Observation/o8"]

    queue, evaluated = through_a_queue(
        lambda re_evaluate: NotificationQueue(
            re_evaluate, lambda reference: "p8", 1, lambda subscription: [], find_missed
        ),
        [missed_target(MissedEvents("Subscription/s1", 22, 24))],
    )
    assert recovered == [MissedEvents("Subscription/s1", 22, 24)]
    assert sorted(evaluated) == ["p7", "p8"]
    assert queue.counts.failed == 0
