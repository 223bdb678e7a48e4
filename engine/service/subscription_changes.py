"""What changed since a Subscription's last event: its criteria, and the time of its last query.

A notification that names nothing (an R4 rest-hook without payload, a Backport `empty` or
`id-only`-less event) asks the service to find what changed. R4 (2.46.7.1) and the
Subscriptions Backport IG ("Payload Types", `empty`) leave that to the subscriber: the query is
the Subscription's own criteria with `_lastUpdated=gt<time of its previous query>` (R4
3.1.1.5.2).

- `change_queries` turns a Subscription resource into the searches to run: R4 `criteria`
  (`Observation?code=...`); the Backport's filter criteria (`_criteria` extensions
  `backport-filter-criteria`, one search each); R4B/R5 `filterBy` (resource type, parameter,
  value). Types no trial reads are left out; a Subscription with nothing usable (a topic
  without filters) gives None: every type the trials read is searched instead.
- `ChangeTimes` keeps, per Subscription (`Subscription/{id}` on the configured server; "" for
  notifications that name none), the time of the last successful query, and the highest
  event number its notifications have shown (`events_seen`: a gap in the numbers is events
  the service missed); thread-safe, and kept in a JSON file when one is configured (`serve
  --notification-state FILE`), so that a restarted service asks from where it stopped
  instead of from its start, and sees the events it missed while it was down.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from engine.atomic_write import write_atomically
from engine.errors import Location, ServiceConfigError

BACKPORT_FILTER_CRITERIA = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"
)
"""Subscriptions Backport IG: the extension on `Subscription.criteria` holding a filter."""
SERVICE_WIDE = ""
"""The key of notifications that name no Subscription."""
_SEARCH = re.compile(r"(?P<type>[A-Z][A-Za-z]{1,63})\?(?P<query>[^#\s]*)")


@dataclass(frozen=True)
class ChangeQuery:
    """One search for changes: a resource type and its criteria parameters (no `_lastUpdated`)."""

    resource_type: str
    parameters: tuple[tuple[str, str], ...] = ()

    def url(self, since: str, page_size: int) -> str:
        """`Type?criteria&_lastUpdated=gt<since>&_count=N`, relative to the server's base."""
        replaced = ("_lastUpdated", "_count")
        parameters = [(name, value) for name, value in self.parameters if name not in replaced]
        parameters += [("_lastUpdated", f"gt{since}"), ("_count", str(page_size))]
        return f"{self.resource_type}?{urlencode(parameters)}"


def change_queries(
    subscription: Mapping[str, Any], relevant_types: Collection[str]
) -> list[ChangeQuery] | None:
    """The searches a Subscription's criteria make (see the module docstring); None when its
    criteria give none (then every relevant type is searched)."""
    searches: list[str] = []
    criteria = subscription.get("criteria")
    if isinstance(criteria, str) and _SEARCH.fullmatch(criteria.strip()):
        searches.append(criteria.strip())  # R4: the criteria is a search
    extension_holder = subscription.get("_criteria")
    for extension in (extension_holder or {}).get("extension") or ():
        if (
            isinstance(extension, dict)
            and extension.get("url") == BACKPORT_FILTER_CRITERIA
            and isinstance(extension.get("valueString"), str)
        ):
            searches.append(extension["valueString"].strip())
    for filter_by in subscription.get("filterBy") or ():
        if not isinstance(filter_by, dict) or not isinstance(filter_by.get("resourceType"), str):
            continue
        parameter, value = filter_by.get("filterParameter"), filter_by.get("value")
        query = urlencode([(parameter, value)]) if parameter and value else ""
        searches.append(f"{filter_by['resourceType']}?{query}")
    queries: list[ChangeQuery] = []
    for search in searches:
        match = _SEARCH.fullmatch(search)
        if match is None:
            continue  # not a `Type?query` search (an absolute URL is never followed)
        resource_type = match["type"]
        parameters = tuple(parse_qsl(match["query"], keep_blank_values=False))
        change_query = ChangeQuery(resource_type, parameters)
        if resource_type in relevant_types and change_query not in queries:
            queries.append(change_query)
    if not queries and not searches:
        return None
    return queries


def timestamp(moment: dt.datetime) -> str:
    """A FHIR instant to the second, in UTC (`2026-11-30T00:12:34Z`)."""
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class EventCounts:
    """What a topic-based notification's status says about event numbers (Subscriptions
    Backport, "Notifications"): the Subscription, the notification type, the numbers of the
    events it carries (`eventNumber`, `event-number`) and `eventsSinceSubscriptionStart`."""

    subscription: str
    notification_type: str | None
    numbers: tuple[int, ...]
    since_start: int | None


@dataclass(frozen=True)
class MissedEvents:
    """Event numbers of a Subscription that no notification brought: `first` to `last`."""

    subscription: str
    first: int
    last: int


EVENT_NUMBERS_KEY = "eventNumbers"
"""The state file's object of the highest event number seen per Subscription."""


class ChangeTimes:
    """The time of each Subscription's last successful query for changes, and the highest
    event number seen in its notifications (see the module docstring); a Subscription never
    queried starts at `started`."""

    def __init__(self, started: dt.datetime, state_file: Path | None = None) -> None:
        self._started = started
        self._file = state_file
        self._lock = threading.Lock()
        self._times: dict[str, dt.datetime] = {}
        self._numbers: dict[str, int] = {}
        if state_file:
            self._times, self._numbers = _read_state(state_file)

    def since(self, subscription: str) -> dt.datetime:
        """When `subscription` (or SERVICE_WIDE) was last queried, else the start."""
        with self._lock:
            return self._times.get(subscription, self._started)

    def queried(self, subscription: str, at: dt.datetime) -> None:
        """Record a successful query that began at `at` (never moving a time backwards)."""
        with self._lock:
            known = self._times.get(subscription)
            if known is not None and known >= at:
                return
            self._times[subscription] = at
            self._write()

    def events_seen(self, counts: EventCounts) -> MissedEvents | None:
        """Record the event numbers of a notification; the events before them that no
        notification brought, when there are any (Subscriptions Backport, "Handling Errors",
        "Missing Event": the client tracks `eventsSinceSubscriptionStart` per Subscription).

        The highest number the notification shows (an event's number, or the count of events
        since the Subscription started, which a heartbeat carries too) is compared with the
        highest seen before: the numbers between that the notification does not carry were
        missed. A handshake starts the count again (a Subscription created anew); a
        notification whose numbers are not above those seen (a duplicate, or one arriving late)
        changes nothing. The first notification of a Subscription the service has no number
        for sets it (nothing to compare with: the state file keeps it across restarts).
        """
        shown = [*counts.numbers, *([counts.since_start] if counts.since_start is not None else [])]
        if not shown:
            return None
        highest = max(shown)
        with self._lock:
            known = self._numbers.get(counts.subscription)
            if counts.notification_type == "handshake" or known is None:
                self._numbers[counts.subscription] = highest
                self._write()
                return None
            if highest <= known:
                return None
            self._numbers[counts.subscription] = highest
            self._write()
        carried = set(counts.numbers)
        first = known + 1
        while first in carried:
            first += 1
        last = highest
        while last in carried:
            last -= 1
        return MissedEvents(counts.subscription, first, last) if first <= last else None

    def rewind_events(self, missed: MissedEvents) -> None:
        """Forget the events of `missed` as seen (their recovery failed), so that the next
        notification of the Subscription finds the gap again."""
        with self._lock:
            known = self._numbers.get(missed.subscription)
            if known is not None and known >= missed.first:
                self._numbers[missed.subscription] = missed.first - 1
                self._write()

    def _write(self) -> None:
        """Write the state file (under the lock), when one is configured."""
        if self._file is None:
            return
        document: dict[str, Any] = {
            key: timestamp(moment) for key, moment in sorted(self._times.items())
        }
        if self._numbers:
            document[EVENT_NUMBERS_KEY] = dict(sorted(self._numbers.items()))
        write_atomically(self._file, orjson.dumps(document, option=orjson.OPT_INDENT_2))


def _read_state(path: Path) -> tuple[dict[str, dt.datetime], dict[str, int]]:
    """The times and event numbers of a state file (`{"Subscription/abc":
    "2026-11-30T00:12:34Z", ..., "eventNumbers": {"Subscription/abc": 23}}`); none when it
    does not exist yet; ServiceConfigError when it cannot be read."""
    where = Location(file=str(path))
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}, {}
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ServiceConfigError(f"cannot read the notification state: {reason}", where) from None
    except orjson.JSONDecodeError as error:
        raise ServiceConfigError(f"the notification state is not JSON: {error}", where) from None
    if not isinstance(document, dict):
        raise ServiceConfigError("the notification state must be a JSON object", where)
    numbers = document.pop(EVENT_NUMBERS_KEY, {})
    if not isinstance(numbers, dict) or not all(
        isinstance(number, int) and not isinstance(number, bool) and number >= 0
        for number in numbers.values()
    ):
        raise ServiceConfigError(
            f"the notification state's {EVENT_NUMBERS_KEY!r} must map Subscriptions to "
            "event numbers (non-negative integers)",
            where,
        )
    times: dict[str, dt.datetime] = {}
    for key, value in document.items():
        try:
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ServiceConfigError(
                f"the notification state's time for {key!r} is not an instant: {value!r}", where
            ) from None
        if moment.tzinfo is None:
            raise ServiceConfigError(
                f"the notification state's time for {key!r} has no time zone", where
            )
        times[str(key)] = moment
    return times, {str(key): number for key, number in numbers.items()}
