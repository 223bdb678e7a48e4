"""FHIR Subscription notifications: which patients changed, and a queue that re-evaluates them.

`notification_targets` reads what a server sent:

- an R4 rest-hook with payload: the changed resource (`PUT {endpoint}/{Type}/{id}`, or POSTed
  to the endpoint); without a body, the type and id of the path;
- a topic-based notification Bundle: R4 backport (`type: history`, first entry a Parameters)
  or R4B/R5 (`type: subscription-notification`, first entry a SubscriptionStatus); each event's
  focus (its resource when the Bundle carries it, else its `additional-context` Patient, else
  the reference) is a target; handshakes and heartbeats have none.

A notification that names nothing (an R4 rest-hook with no payload, the default of a
Subscription without `channel.payload`; a Backport `empty` event with no focus) is the target
`changed_in(subscription)`: the queue asks the server what changed for that Subscription since
its last such query (its criteria with `_lastUpdated=gt<time>`,
`engine.service.subscription_changes`; every type some trial reads when no Subscription is
named) and re-evaluates those patients. The Subscription is the one the notification's status
names (Backport Parameters `subscription`, SubscriptionStatus.subscription), or, for an R4
rest-hook without payload, the `subscription` query parameter of the notification URL. An
`id-only` event names its focus, whose patient is read. A target is a patient id, a resource
reference whose patient the queue reads first, or a `changed_in` target.
Resources trialsieve writes itself (ResearchStudy, its ResearchSubjects and DetectedIssues) and
types no trial reads are not targets, so the service's own writes never trigger it again.

`notification_events` reads the event numbers a topic-based notification shows; a gap in a
Subscription's numbers (`ChangeTimes.events_seen`) is events the service missed, and the
target `missed_target(...)` makes the queue recover them (`Service.find_missed`: the
Subscription's `$events`, else what changed for it; Subscriptions Backport, "Handling Errors").

`NotificationQueue` runs the work in the background: a target already waiting is not queued
twice, a patient is never worked on by two workers at once, and a notification that arrives
while its patient is being worked on queues one more run (which pulls the state after it).
Since every run pulls the current state and writes with deterministic ids, duplicate and
out-of-order notifications are harmless. `drain()` waits until nothing is left (for tests).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.report.resources import DETECTED_ISSUE_SYSTEM, RESEARCH_SUBJECT_SYSTEM
from engine.service.logs import CORRELATION_ID, elapsed_ms, log_event, new_job_id
from engine.service.problems import ApiError, check_fhir_id, found_text
from engine.service.subscription_changes import SERVICE_WIDE, EventCounts, MissedEvents
from engine.sources.bundle import json_kind
from engine.sources.references import is_fhir_id, reference_key

NOTIFICATION_BUNDLE_TYPES = ("history", "subscription-notification")
_PATIENT_FIELDS = ("subject", "patient", "individual")
_OWN_SYSTEMS = {
    "ResearchSubject": RESEARCH_SUBJECT_SYSTEM,
    "DetectedIssue": DETECTED_ISSUE_SYSTEM,
}
_EVENT_TYPES = ("event-notification", "query-event")
"""Notification types that carry events (`query-event`: the answer of `$events`)."""
_STATUS_FIELD = "entry[0].resource"
"""Where a notification Bundle's status (SubscriptionStatus, or the Backport Parameters) is."""


@dataclass(frozen=True, order=True)
class Target:
    """What a notification asks to re-evaluate: `Patient/{id}`, or a resource whose patient
    must be read first (`Observation/{id}`).
    """

    reference: str

    @property
    def patient_id(self) -> str | None:
        kind, _, identifier = self.reference.partition("/")
        return identifier if kind == "Patient" else None


CHANGED = Target("*/changed")
"""What changed on the server since the last query: a notification that names nothing and
no Subscription."""
_CHANGED_IN = "*/changed/"


def changed_in(subscription: str | None) -> Target:
    """What changed for `subscription` (`Subscription/{id}`) since its last query; CHANGED
    when the notification names no Subscription."""
    return Target(_CHANGED_IN + subscription) if subscription else CHANGED


_MISSED = "*/missed/"


def missed_target(missed: MissedEvents) -> Target:
    """The recovery of events a Subscription's notifications skipped (see `missed_of`)."""
    return Target(f"{_MISSED}{missed.first}/{missed.last}/{missed.subscription}")


def missed_of(target: Target) -> MissedEvents | None:
    """For a `missed_target`, the events to recover; else None."""
    if not target.reference.startswith(_MISSED):
        return None
    first, last, subscription = target.reference[len(_MISSED) :].split("/", 2)
    return MissedEvents(subscription, int(first), int(last))


def changed_subscription(target: Target) -> str | None:
    """For a `changed_in` target, its Subscription (SERVICE_WIDE for CHANGED); else None."""
    if target == CHANGED:
        return SERVICE_WIDE
    if target.reference.startswith(_CHANGED_IN):
        return target.reference[len(_CHANGED_IN) :]
    return None


def subscription_key(value: str | None, server_base: str) -> str | None:
    """`Subscription/{id}` of a reference to a Subscription of the configured server (relative,
    absolute under its base, or a bare id); None for none or another server's."""
    if not value:
        return None
    if "/" not in value and is_fhir_id(value):
        return f"Subscription/{value}"
    key = _local_reference(value, server_base)
    if key is None or not key.startswith("Subscription/"):
        return None
    return key


def notification_targets(
    body: Any,
    path_reference: str | None,
    relevant_types: Collection[str],
    server_base: str,
    subscription: str | None = None,
) -> list[Target]:
    """The targets of one notification (see the module docstring); 400 when it is malformed.

    `path_reference` is `Type/id` from the rest-hook path, `relevant_types` the types some
    trial reads, `server_base` the configured server (absolute references elsewhere are not
    this server's patients), `subscription` the Subscription the notification URL names
    (`?subscription=`: an R4 rest-hook without payload names none itself).
    """
    if body is None:
        if path_reference is None:
            # An R4 rest-hook without payload: ask the server what changed for the Subscription.
            return [changed_in(subscription)]
        resource_type = path_reference.split("/", 1)[0]
        if resource_type not in relevant_types or resource_type in _OWN_SYSTEMS:
            return []
        return [Target(path_reference)]
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise ApiError.of(400, "invalid", "the notification is not a FHIR resource (JSON object)")
    if body["resourceType"] == "Bundle" and body.get("type") in NOTIFICATION_BUNDLE_TYPES:
        return _bundle_targets(body, relevant_types, server_base)
    if body["resourceType"] == "Bundle":
        raise ApiError.of(
            400,
            "invalid",
            f"a Bundle of type {body.get('type')!r} is not a notification (history or "
            "subscription-notification)",
            "Bundle.type",
        )
    if path_reference is not None:
        found = f"{body['resourceType']}/{body.get('id')}"
        if found != path_reference:
            raise ApiError.of(
                400, "invalid", f"the path names {path_reference} but the body is {found}"
            )
    target = _resource_target(body, relevant_types, server_base)
    return [target] if target else []


def _resource_target(
    resource: Mapping[str, Any],
    relevant_types: Collection[str],
    server_base: str,
    at: str = "",
) -> Target | None:
    """The target of a notified resource (`at`: where it is in the notification, for the
    error): its patient; 400 when its id, or the patient reference it names, is no FHIR id."""
    resource_type = resource.get("resourceType")
    identifier = resource.get("id")
    if resource_type == "Patient" or identifier is not None:
        check_fhir_id(identifier, f"{at}id")
    if resource_type == "Patient":
        return Target(f"Patient/{identifier}")
    if resource_type not in relevant_types or is_own(resource):
        return None
    for field_name in _PATIENT_FIELDS:
        value = resource.get(field_name)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str):
            _check_local_reference(reference, f"{at}{field_name}.reference", server_base)
    patient = patient_of(resource, server_base)
    return Target(f"Patient/{patient}") if patient else None


def _check_local_reference(reference: str, field: str, server_base: str) -> None:
    """400 naming `field` when a reference to the configured server (relative, or absolute
    under its base) names no `Type/id` with a FHIR id (`Patient/../x`, `Patient/a b`)."""
    if _elsewhere(reference, server_base) or reference.startswith(("urn:", "#")):
        return
    if reference_key(reference) is None:
        raise ApiError.of(
            400,
            "invalid",
            f"{field} must be a reference Type/id with a FHIR id, found {reference[:70]!r}",
            field,
        )


def patient_of(resource: Mapping[str, Any], server_base: str) -> str | None:
    """The id of the configured server's patient a resource is about (subject, patient or
    individual), None when it is about none.
    """
    if resource.get("resourceType") == "Patient":
        identifier = resource.get("id")
        return identifier if isinstance(identifier, str) else None
    for field_name in _PATIENT_FIELDS:
        value = resource.get(field_name)
        reference = value.get("reference") if isinstance(value, dict) else None
        patient = _local_patient(reference, server_base)
        if patient is not None:
            return patient
    return None


def is_own(resource: Mapping[str, Any]) -> bool:
    """Whether trialsieve wrote the resource (its results and the ResearchStudy)."""
    resource_type = resource.get("resourceType")
    if resource_type == "ResearchStudy":
        return True
    system = _OWN_SYSTEMS.get(str(resource_type))
    identifiers = resource.get("identifier")
    return (
        system is not None
        and isinstance(identifiers, list)
        and any(isinstance(item, dict) and item.get("system") == system for item in identifiers)
    )


def _local_patient(reference: Any, server_base: str) -> str | None:
    """The id of a `Patient/{id}` reference on the configured server (relative or absolute)."""
    if not isinstance(reference, str):
        return None
    if "://" in reference and not reference.startswith(server_base.rstrip("/") + "/"):
        return None
    key = reference_key(reference)
    if key is None or not key.startswith("Patient/"):
        return None
    return key.split("/", 1)[1]


def _local_reference(reference: Any, server_base: str) -> str | None:
    if not isinstance(reference, str):
        return None
    if "://" in reference and not reference.startswith(server_base.rstrip("/") + "/"):
        return None
    return reference_key(reference)


def _bundle_targets(
    bundle: dict[str, Any], relevant_types: Collection[str], server_base: str
) -> list[Target]:
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise ApiError.of(400, "invalid", "the notification Bundle has no status entry", "entry[0]")
    first = entries[0].get("resource")
    if not isinstance(first, dict):
        raise ApiError.of(400, "invalid", "the notification Bundle has no status entry", "entry[0]")
    status = _status(first)
    if status is None:
        raise ApiError.of(
            400,
            "invalid",
            "the first entry of a notification Bundle must be a SubscriptionStatus or "
            f"Parameters, found {first.get('resourceType')}",
            "entry[0].resource",
        )
    notification_type, events = status
    if notification_type not in _EVENT_TYPES:
        return []  # handshake, heartbeat, query-status: nothing changed
    changed = changed_in(_checked_subscription(first, server_base))
    carried: dict[str, tuple[dict[str, Any], str]] = {}
    by_full_url: dict[str, str] = {}
    for index, entry in enumerate(entries[1:], start=1):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(resource.get("id"), str):
            entry_key = f"{resource.get('resourceType')}/{resource['id']}"
            carried[entry_key] = (resource, f"entry[{index}].resource.")
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str):
                by_full_url[full_url] = entry_key
    targets: list[Target] = []
    for event in events:
        key = _checked_focus(event, server_base, by_full_url)
        contexts = [reference for reference, _ in event.contexts]
        for reference, at in event.contexts:
            if isinstance(reference, str) and reference not in by_full_url:
                _check_local_reference(reference, at, server_base)
        target: Target | None = None
        if key is not None and key in carried:
            resource, at = carried[key]
            target = _resource_target(resource, relevant_types, server_base, at)
        elif key is not None and key.startswith("Patient/"):
            target = Target(key)
        else:
            patients = [p for p in (_local_patient(c, server_base) for c in contexts) if p]
            if patients:
                target = Target(f"Patient/{patients[0]}")
            elif key is not None and key.split("/", 1)[0] in relevant_types:
                target = Target(key)
        if target is None and (not event.has_focus or key == _ELSEWHERE) and not contexts:
            # a Backport `empty` event, or a focus this server cannot be asked about: ask the
            # server what changed
            target = changed
        if target is not None and target not in targets:
            targets.append(target)
    if not events:
        targets.append(changed)  # an event notification without events (empty)
    return targets


def notification_events(body: Any, server_base: str) -> EventCounts | None:
    """The event numbers a topic-based notification shows, for a Subscription it names:
    `eventsSinceSubscriptionStart` and each event's `eventNumber` (R4B/R5
    SubscriptionStatus; the Backport's R4 Parameters `events-since-subscription-start` and
    `notification-event.event-number`, kebab- or camelCase). None for anything else (a
    rest-hook resource, a notification naming no Subscription or no number). A number that is
    not a non-negative integer (an integer64: a JSON string of digits, or a number) is a 400
    naming it. Call after `notification_targets` accepted the body."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return None
    if body.get("type") not in NOTIFICATION_BUNDLE_TYPES:
        return None
    status = body["entry"][0]["resource"]
    subscription = _checked_subscription(status, server_base)
    if subscription is None:
        return None
    numbers: list[int] = []
    since_start: int | None = None
    if status.get("resourceType") == "SubscriptionStatus":
        if "eventsSinceSubscriptionStart" in status:
            since_start = _event_number(
                status["eventsSinceSubscriptionStart"],
                f"{_STATUS_FIELD}.eventsSinceSubscriptionStart",
            )
        for index, event in enumerate(_array(status, "notificationEvent", _STATUS_FIELD)):
            if isinstance(event, dict) and "eventNumber" in event:
                at = f"{_STATUS_FIELD}.notificationEvent[{index}].eventNumber"
                numbers.append(_event_number(event["eventNumber"], at))
        notification_type = status.get("type")
    else:
        notification_type = None
        for index, parameter in enumerate(_array(status, "parameter", _STATUS_FIELD)):
            if not isinstance(parameter, dict):
                continue
            at = f"{_STATUS_FIELD}.parameter[{index}]"
            name = parameter.get("name")
            if name == "type":
                notification_type = parameter.get("valueCode")
            elif name in ("events-since-subscription-start", "eventsSinceSubscriptionStart"):
                since_start = _parameter_number(parameter, at)
            elif name in ("notification-event", "notificationEvent"):
                for place, part in enumerate(_array(parameter, "part", at)):
                    if isinstance(part, dict) and part.get("name") in (
                        "event-number",
                        "eventNumber",
                    ):
                        numbers.append(_parameter_number(part, f"{at}.part[{place}]"))
    if not numbers and since_start is None:
        return None
    kind = notification_type if isinstance(notification_type, str) else None
    return EventCounts(subscription, kind, tuple(numbers), since_start)


def _parameter_number(parameter: Mapping[str, Any], at: str) -> int:
    """The event number of a Parameters parameter or part (its `value[x]`)."""
    for name, value in parameter.items():
        if name.startswith("value"):
            return _event_number(value, f"{at}.{name}")
    return _event_number(None, f"{at}.value[x]")


_MAX_EVENT_NUMBER = 2**63 - 1
"""integer64 (FHIR R5 datatypes): at most 9223372036854775807."""


def _event_number(value: Any, at: str) -> int:
    """An event number: a non-negative integer64, sent as a JSON string of digits (R5
    integer64, R4B and the Backport's `string`) or a JSON integer; 400 naming `at` otherwise."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
    if number is None or not 0 <= number <= _MAX_EVENT_NUMBER:
        shown = found_text(value, 30)
        raise ApiError.of(
            400, "invalid", f"{at} must be an event number (digits), found {shown}", at
        )
    return number


def _subscription_of(status: dict[str, Any]) -> tuple[Any, str] | None:
    """The Subscription reference a notification's status names, and where:
    SubscriptionStatus.subscription (R4B, R5) or the Backport Parameters' `subscription`;
    None when it names none."""
    if status.get("resourceType") == "SubscriptionStatus":
        if "subscription" not in status:
            return None
        return _reference(status["subscription"]), f"{_STATUS_FIELD}.subscription.reference"
    for index, parameter in enumerate(_array(status, "parameter", _STATUS_FIELD)):
        if isinstance(parameter, dict) and parameter.get("name") == "subscription":
            at = f"{_STATUS_FIELD}.parameter[{index}].valueReference.reference"
            return _reference(parameter.get("valueReference")), at
    return None


def _checked_subscription(status: dict[str, Any], server_base: str) -> str | None:
    """`Subscription/{id}` of the Subscription the status names, None when it names none;
    400 naming the element when it names something else (not a reference, another type, an
    id that is no FHIR id, another server's Subscription)."""
    named = _subscription_of(status)
    if named is None:
        return None
    reference, at = named
    if isinstance(reference, str) and _elsewhere(reference, server_base):
        return None  # another server's Subscription: as if none were named (every type)
    key = subscription_key(reference, server_base) if isinstance(reference, str) else None
    if key is None:
        shown = found_text(reference)
        raise ApiError.of(
            400,
            "invalid",
            f"{at} must be a reference to a Subscription of the configured server "
            f"(Subscription/{{id}}), found {shown}",
            at,
        )
    return key


@dataclass(frozen=True)
class _Event:
    """One event of a notification status: its focus reference (and where it is), whether
    the event names a focus at all, and its additional-context references (with where)."""

    focus: Any
    focus_at: str
    has_focus: bool
    contexts: tuple[tuple[Any, str], ...]


_ELSEWHERE = "*/elsewhere"
"""The focus of an event that is another server's resource."""


def _elsewhere(reference: str, server_base: str) -> bool:
    """An absolute reference that is not under the configured server's base."""
    return "://" in reference and not reference.startswith(server_base.rstrip("/") + "/")


def _checked_focus(event: _Event, server_base: str, by_full_url: Mapping[str, str]) -> str | None:
    """`Type/id` of an event's focus (None when the event has none, _ELSEWHERE for another
    server's resource); 400 naming the element when the focus is not a literal reference or
    names no `Type/id` with a FHIR id: the service acts on nothing it cannot name."""
    if not event.has_focus:
        return None
    focus, at = event.focus, event.focus_at
    if isinstance(focus, str) and focus in by_full_url:
        carried = by_full_url[focus]  # the fullUrl of a resource the Bundle carries
        named = reference_key(focus)
        if named is not None and named != carried:
            raise ApiError.of(
                400,
                "invalid",
                f"{at} names {named}, but the entry with that fullUrl is {carried}",
                at,
            )
        return carried
    if isinstance(focus, str) and _elsewhere(focus, server_base) and reference_key(focus):
        return _ELSEWHERE  # another server's resource: not one to read here
    key = _local_reference(focus, server_base)
    if key is None:
        shown = found_text(focus)
        if focus is None:
            shown = "no reference"
        raise ApiError.of(
            400,
            "invalid",
            f"{at} must be a reference to a resource of the configured server (Type/id, the "
            f"id a FHIR id), found {shown}",
            at,
        )
    return key


def _status(resource: dict[str, Any]) -> tuple[str | None, list[_Event]] | None:
    """(notification type, its events) of a SubscriptionStatus (R4B/R5) or a backport
    Parameters (R4, kebab- or camelCase names); None for neither.
    """
    if resource.get("resourceType") == "SubscriptionStatus":
        field = f"{_STATUS_FIELD}.notificationEvent"
        events = [
            _Event(
                _reference(event.get("focus")),
                f"{field}[{index}].focus.reference",
                "focus" in event,
                tuple(
                    (_reference(context), f"{field}[{index}].additionalContext[{place}].reference")
                    for place, context in enumerate(
                        _array(event, "additionalContext", f"{field}[{index}]")
                    )
                ),
            )
            for index, event in enumerate(_array(resource, "notificationEvent", _STATUS_FIELD))
            if isinstance(event, dict)
        ]
        return resource.get("type"), events
    if resource.get("resourceType") != "Parameters":
        return None
    notification_type: str | None = None
    parsed: list[_Event] = []
    for index, parameter in enumerate(_array(resource, "parameter", _STATUS_FIELD)):
        if not isinstance(parameter, dict):
            continue
        name = parameter.get("name")
        if name == "type":
            notification_type = parameter.get("valueCode")
        elif name in ("notification-event", "notificationEvent"):
            at = f"{_STATUS_FIELD}.parameter[{index}]"
            focus: Any = None
            focus_at = ""
            has_focus = False
            contexts: list[tuple[Any, str]] = []
            for place, part in enumerate(_array(parameter, "part", at)):
                if not isinstance(part, dict):
                    continue
                value_at = f"{at}.part[{place}].valueReference.reference"
                if part.get("name") == "focus":
                    focus, focus_at, has_focus = (
                        _reference(part.get("valueReference")),
                        value_at,
                        True,
                    )
                elif part.get("name") in ("additional-context", "additionalContext"):
                    contexts.append((_reference(part.get("valueReference")), value_at))
            parsed.append(_Event(focus, focus_at, has_focus, tuple(contexts)))
    return notification_type, parsed


def _array(resource: Mapping[str, Any], name: str, at: str) -> list[Any]:
    """The repeating element `name` of `resource` (at `at` in the notification): [] when
    absent; 400 naming it when it is not an array (FHIR R4 JSON, 2.6.2: an element that can
    repeat is always an array)."""
    value = resource.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        field = f"{at}.{name}"
        raise ApiError.of(
            400, "invalid", f"{field} must be an array, found {json_kind(value)}", field
        )
    return value


def _reference(value: Any) -> Any:
    return value.get("reference") if isinstance(value, dict) else None


# --------------------------------------------------------------------------- the queue


@dataclass
class QueueCounts:
    """What the queue did since it started (for tests and the ready check)."""

    received: int = 0
    coalesced: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[BaseException] = field(default_factory=list, repr=False)


ReEvaluate = Callable[[str], Sequence[str]]
"""Re-evaluate a patient (by id) for every trial, write back; the statuses written."""
FindPatient = Callable[[str], str | None]
"""The patient id of a resource reference (read from the server), None when it has none."""
FindChanged = Callable[[str], list[str]]
"""The ids of the patients whose data changed since the last call for a Subscription
(`Subscription/{id}`, or SERVICE_WIDE)."""
FindMissed = Callable[[MissedEvents], list[str]]
"""What the events a Subscription's notifications skipped were about: references
(`Patient/{id}`, `Observation/{id}`, or a `changed_in` target's) to re-evaluate."""


class NotificationQueue:
    """Background re-evaluations, coalesced per patient (see the module docstring).

    `re_evaluate` and `find_patient` are synchronous (they talk to the FHIR server) and run in
    worker threads. `start()` and `stop()` run in the app's lifespan.
    """

    def __init__(
        self,
        re_evaluate: ReEvaluate,
        find_patient: FindPatient,
        workers: int,
        find_changed: FindChanged | None = None,
        find_missed: FindMissed | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._re_evaluate = re_evaluate
        self._find_patient = find_patient
        self._find_changed = find_changed
        self._find_missed = find_missed
        self._worker_count = workers
        self._pending: dict[Target, str] = {}  # target -> job id, in arrival order
        self._running: set[Target] = set()
        self._changed: asyncio.Condition | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.counts = QueueCounts()
        self._counting = threading.Lock()

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._worker_count)]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def submit(self, targets: Iterable[Target]) -> int:
        """Queue targets; how many were new (a target already waiting is not queued twice)."""
        condition = self._condition()
        added = 0
        async with condition:
            for target in targets:
                self.counts.received += 1
                if target in self._pending:
                    self.counts.coalesced += 1
                    continue
                self._pending[target] = CORRELATION_ID.get() or new_job_id()
                added += 1
            condition.notify_all()
        return added

    async def drain(self) -> None:
        """Wait until no target is waiting or being worked on."""
        condition = self._condition()
        async with condition:
            await condition.wait_for(lambda: not self._pending and not self._running)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            raise RuntimeError("the notification queue is not started (app lifespan)")
        return self._changed

    def _next(self) -> Target | None:
        return next((target for target in self._pending if target not in self._running), None)

    async def _work(self) -> None:
        condition = self._condition()
        while True:
            async with condition:
                await condition.wait_for(lambda: self._next() is not None)
                target = self._next()
                assert target is not None
                job = self._pending.pop(target)
                self._running.add(target)
            follow_up: list[Target] = []
            try:
                follow_up = await asyncio.to_thread(self._run, target, job)
            finally:
                async with condition:
                    self._running.discard(target)
                    condition.notify_all()
            if follow_up:
                await self.submit(follow_up)

    def _run(self, target: Target, job: str) -> list[Target]:
        """One target, in a worker thread: a patient is re-evaluated, a resource is read for
        its patient (queued next). Failures are counted and logged without patient data.
        """
        token = CORRELATION_ID.set(job)
        started = time.perf_counter()
        try:
            patient_id = target.patient_id
            missed = missed_of(target)
            if missed is not None:
                recovered = self._find_missed(missed) if self._find_missed else []
                return [Target(reference) for reference in recovered]
            subscription = changed_subscription(target)
            if subscription is not None:
                changed = self._find_changed(subscription) if self._find_changed else []
                log_event(
                    logging.INFO,
                    "changes queried",
                    subscription=subscription != SERVICE_WIDE,
                    patients=len(changed),
                    duration_ms=elapsed_ms(started),
                )
                return [Target(f"Patient/{identifier}") for identifier in changed]
            if patient_id is None:
                found = self._find_patient(target.reference)
                log_event(
                    logging.INFO,
                    "notification resolved",
                    resource_type=target.reference.split("/", 1)[0],
                    found_patient=found is not None,
                    duration_ms=elapsed_ms(started),
                )
                return [Target(f"Patient/{found}")] if found else []
            statuses = self._re_evaluate(patient_id)
            with self._counting:
                self.counts.completed += 1
            log_event(
                logging.INFO,
                "patient re-evaluated",
                statuses=_counts(statuses),
                duration_ms=elapsed_ms(started),
            )
            return []
        except Exception as error:  # server faults and bugs alike: counted, logged, kept
            self._failed(error, started)
            return []
        finally:
            CORRELATION_ID.reset(token)

    def _failed(self, error: Exception, started: float) -> None:
        with self._counting:
            self.counts.failed += 1
            self.counts.errors.append(error)
        status = getattr(error, "status", None)
        log_event(
            logging.ERROR,
            "re-evaluation failed",
            error=type(error).__name__,
            http_status=status,
            duration_ms=elapsed_ms(started),
        )


def _counts(statuses: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts
