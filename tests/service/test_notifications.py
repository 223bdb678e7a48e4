"""Subscription notifications: what they name, the coalescing queue, re-evaluation written back
to sekmet, and `trialsieve subscribe` with sekmet's rest-hook delivery end to end.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
import typer
from fastapi.testclient import TestClient
from refusing_server import Refusal, refusing_server
from sekmet_server import SekmetServer
from service_support import (
    API_TOKEN,
    API_TOKEN_VARIABLE,
    AUTH,
    ROOT,
    ClientFactory,
    copy_patient,
    live_service,
    r5_notification,
    server_settings,
)
from typer.testing import CliRunner

from engine.cli.subscribe import subscribe
from engine.report.resources import RESEARCH_SUBJECT_SYSTEM, deterministic_id
from engine.service import create_app
from engine.service.notifications import NotificationQueue, Target, notification_targets
from engine.service.problems import ApiError
from engine.service.subscription_changes import SERVICE_WIDE
from engine.service.subscriptions import NOT_SUBSCRIBED, rest_hook_subscription
from engine.sources import RetryPolicy

BASE = "http://fhir.example.org/r4"
RELEVANT = frozenset({"Patient", "Observation", "Condition", "ResearchSubject"})


def observation(patient: str = "Patient/p1", identifier: str = "o1") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": identifier,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
        "subject": {"reference": patient},
    }


def backport(
    kind: str, *events: tuple[str, list[str]], resources: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/s1"}},
        {"name": "type", "valueCode": kind},
    ]
    for focus, contexts in events:
        parts = [{"name": "focus", "valueReference": {"reference": focus}}]
        parts += [
            {"name": "additional-context", "valueReference": {"reference": c}} for c in contexts
        ]
        parameters.append({"name": "notification-event", "part": parts})
    entries = [{"resource": {"resourceType": "Parameters", "parameter": parameters}}]
    entries += [{"resource": resource} for resource in resources]
    return {"resourceType": "Bundle", "type": "history", "entry": entries}


def targets(body: Any, path: str | None = None) -> list[str]:
    return [t.reference for t in notification_targets(body, path, RELEVANT, BASE)]


def test_what_notifications_name() -> None:
    assert targets(observation(), "Observation/o1") == ["Patient/p1"]
    assert targets(observation(f"{BASE}/Patient/p2")) == ["Patient/p2"]
    assert targets(observation("http://elsewhere.org/fhir/Patient/p2")) == []
    assert targets(observation("Group/g1")) == []
    assert targets({"resourceType": "Patient", "id": "p3"}, "Patient/p3") == ["Patient/p3"]
    assert (
        targets({"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"}})
        == []
    )
    assert targets(None, "Observation/o9") == ["Observation/o9"]
    assert targets(None, "Encounter/e9") == []
    assert targets(None) == ["*/changed"]  # no payload: the server is asked what changed
    own = {
        "resourceType": "ResearchSubject",
        "id": "r1",
        "identifier": [{"system": RESEARCH_SUBJECT_SYSTEM, "value": "NCT1/p1"}],
        "individual": {"reference": "Patient/p1"},
    }
    assert targets(own, "ResearchSubject/r1") == []
    other_study = {**own, "identifier": [{"system": "urn:other", "value": "x"}]}
    assert targets(other_study) == ["Patient/p1"]


def test_topic_based_notifications() -> None:
    full = backport(
        "event-notification",
        (f"{BASE}/Observation/o1", []),
        resources=(observation("Patient/p1"),),
    )
    assert targets(full) == ["Patient/p1"]
    id_only = backport(
        "event-notification",
        (f"{BASE}/Observation/o2", [f"{BASE}/Patient/p2"]),
        (f"{BASE}/Condition/c3", []),
        (f"{BASE}/Patient/p4", []),
    )
    assert targets(id_only) == ["Patient/p2", "Condition/c3", "Patient/p4"]
    assert targets(backport("handshake")) == []
    assert targets(backport("heartbeat")) == []
    r5 = r5_notification(
        {"fullUrl": f"{BASE}/Observation/o1", "resource": observation("Patient/p5")},
        notificationEvent=[{"eventNumber": 3, "focus": {"reference": "Observation/o1"}}],
    )
    assert targets(r5) == ["Patient/p5"]


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        {"no": "resourceType"},
        {"resourceType": "Bundle", "type": "searchset", "entry": []},
        {"resourceType": "Bundle", "type": "history", "entry": []},
        {
            "resourceType": "Bundle",
            "type": "history",
            "entry": [{"resource": {"resourceType": "Patient"}}],
        },
    ],
)
def test_malformed_notifications(body: Any) -> None:
    with pytest.raises(ApiError) as raised:
        notification_targets(body, None, RELEVANT, BASE)
    assert raised.value.status == 400


def _backport_with(change: Any) -> dict[str, Any]:
    body = backport("event-notification", (f"{BASE}/Observation/o1", [f"{BASE}/Patient/p1"]))
    change(body["entry"][0]["resource"])
    return body


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (_backport_with(lambda r: r.update(parameter=5)), "entry[0].resource.parameter"),
        (
            _backport_with(lambda r: r["parameter"][2].update(part=5)),
            "entry[0].resource.parameter[2].part",
        ),
        (r5_notification(notificationEvent=5), "entry[0].resource.notificationEvent"),
        (
            r5_notification(
                notificationEvent=[{"focus": {"reference": "Patient/p1"}, "additionalContext": {}}]
            ),
            "entry[0].resource.notificationEvent[0].additionalContext",
        ),
    ],
)
def test_a_repeating_element_that_is_not_an_array_is_400(body: Any, expression: str) -> None:
    """FHIR R4 JSON (2.6.2): an element that can repeat is an array. A notification whose
    Parameters.parameter, its part, or SubscriptionStatus.notificationEvent is not one is
    refused with 400 naming it (it was a 500)."""
    with pytest.raises(ApiError) as raised:
        notification_targets(body, None, RELEVANT, BASE)
    assert raised.value.status == 400
    assert raised.value.issues[0].expression == (expression,)
    assert "must be an array, found" in raised.value.issues[0].diagnostics


def test_path_and_body_must_agree() -> None:
    with pytest.raises(ApiError, match="the path names Observation/o2"):
        notification_targets(observation(), "Observation/o2", RELEVANT, BASE)


def test_queue_coalesces_per_patient() -> None:
    started = threading.Event()
    release = threading.Event()
    runs: list[str] = []

    def re_evaluate(patient_id: str) -> list[str]:
        runs.append(patient_id)
        started.set()
        release.wait(5)
        return ["candidate"]

    async def scenario() -> NotificationQueue:
        queue = NotificationQueue(re_evaluate, lambda reference: "p2", workers=2)
        await queue.start()
        await queue.submit([Target("Patient/p1")])
        await asyncio.to_thread(started.wait, 5)
        # While p1 runs: five more notices for p1 wait as one; p2 runs beside it.
        for _ in range(5):
            await queue.submit([Target("Patient/p1")])
        await queue.submit([Target("Observation/o7")])
        release.set()
        await queue.drain()
        await queue.stop()
        return queue

    queue = asyncio.run(scenario())
    assert sorted(runs) == ["p1", "p1", "p2"]
    assert queue.counts.received == 8
    assert queue.counts.coalesced == 4
    assert queue.counts.completed == 3
    assert queue.counts.failed == 0


def test_queue_counts_failures_and_goes_on() -> None:
    def re_evaluate(patient_id: str) -> list[str]:
        if patient_id == "bad":
            raise RuntimeError("boom")
        return ["ineligible"]

    async def scenario() -> NotificationQueue:
        queue = NotificationQueue(re_evaluate, lambda reference: None, workers=1)
        await queue.start()
        await queue.submit([Target("Patient/bad"), Target("Patient/good"), Target("Condition/c")])
        await queue.drain()
        await queue.stop()
        return queue

    queue = asyncio.run(scenario())
    assert (queue.counts.completed, queue.counts.failed) == (1, 1)
    assert isinstance(queue.counts.errors[0], RuntimeError)


def subject_on_server(sekmet: SekmetServer, patient_id: str) -> dict[str, Any] | None:
    subject_id = deterministic_id(RESEARCH_SUBJECT_SYSTEM, f"NCT05315778/{patient_id}")
    with sekmet.http() as http:
        response = http.get(f"ResearchSubject/{subject_id}")
    return response.json() if response.status_code == 200 else None


def test_a_notification_re_evaluates_and_writes_back(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    patient_id = f"service-notify-{uuid.uuid4().hex[:8]}"
    with sekmet.http() as http:
        copy_patient(http, "itp-relapsed-missing-labs", patient_id)
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    change = observation(f"Patient/{patient_id}", "o-1")
    for _ in range(3):  # duplicates
        response = api.put("/fhir-notify/Observation/o-1", json=change, headers=AUTH)
        assert response.status_code == 202, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    handshake = api.post("/fhir-notify", json=backport("handshake"), headers=AUTH)
    assert handshake.status_code == 200
    api.portal.call(api.app.state.notifications.drain)  # type: ignore[union-attr,attr-defined]
    counts = api.app.state.notifications.counts  # type: ignore[attr-defined]
    assert counts.failed == 0, counts.errors
    # Three when the worker finished each before the next arrived (the puts are slow on a
    # loaded machine), fewer when they were coalesced: test_queue_coalesces_per_patient
    # checks coalescing itself, deterministically.
    assert 1 <= counts.completed <= 3
    stored = subject_on_server(sekmet, patient_id)
    assert stored is not None
    assert stored["status"] == "potential-candidate"
    assert stored["meta"]["versionId"] == str(counts.completed)


def test_notifications_need_a_server(api: TestClient) -> None:
    response = api.put("/fhir-notify/Observation/o1", json=observation(), headers=AUTH)
    assert response.status_code == 409
    bad_path = api.put("/fhir-notify/observation/o1", json=observation(), headers=AUTH)
    assert bad_path.status_code in (400, 409)


def test_subscribe_and_sekmet_delivers(sekmet: SekmetServer) -> None:
    """`trialsieve subscribe` on sekmet; a created Observation reaches the service, which
    re-evaluates the patient and writes the result back.
    """
    patient_id = f"service-subscribe-{uuid.uuid4().hex[:8]}"
    with sekmet.http() as http:
        copy_patient(http, "itp-relapsed-candidate", patient_id)
    app = create_app(server_settings(sekmet.base_url, sekmet.token))
    commands = typer.Typer()
    commands.command()(subscribe)
    commands.command("version")(lambda: None)  # two commands: the first is named on the line
    subscribed = sorted(app.state.service.trials.resource_types - NOT_SUBSCRIBED)
    with live_service(app) as service_url:
        ids = [
            rest_hook_subscription(t, f"{service_url}/fhir-notify", [])["id"] for t in subscribed
        ]
        try:
            result = CliRunner().invoke(
                commands,
                [
                    "subscribe",
                    "--server",
                    sekmet.base_url,
                    "--public-url",
                    service_url,
                    "--token-env",
                    "SERVER_TOKEN",
                    "--notify-token-env",
                    API_TOKEN_VARIABLE,
                ],
                env={"SERVER_TOKEN": sekmet.token, API_TOKEN_VARIABLE: API_TOKEN},
            )
            assert result.exit_code == 0, result.output
            with sekmet.http() as http:
                for subscription_id in ids:
                    stored = http.get(f"Subscription/{subscription_id}").json()
                    assert stored["status"] == "active", stored
                    assert stored["channel"]["header"] == [f"Authorization: Bearer {API_TOKEN}"]
                response = http.post(
                    "Observation",
                    content=orjson.dumps(observation(f"Patient/{patient_id}", "ignored")),
                    headers={"Content-Type": "application/fhir+json"},
                )
                assert response.status_code == 201, response.text
            deadline = time.monotonic() + 15
            stored_subject = subject_on_server(sekmet, patient_id)
            while stored_subject is None and time.monotonic() < deadline:
                time.sleep(0.1)
                stored_subject = subject_on_server(sekmet, patient_id)
            assert stored_subject is not None, "no ResearchSubject written after the notification"
            assert stored_subject["individual"]["reference"] == f"Patient/{patient_id}"
        finally:
            with sekmet.http() as http:
                for subscription_id in ids:
                    http.delete(f"Subscription/{subscription_id}")


def test_a_notification_keeps_the_patients_attestations(
    service_client: ClientFactory, sekmet: SekmetServer, tmp_path: Path
) -> None:
    patient_id = f"service-attested-{uuid.uuid4().hex[:8]}"
    with sekmet.http() as http:
        copy_patient(http, "itp-relapsed-candidate", patient_id)
    shipped = (ROOT / "examples" / "attestations.yaml").read_text()
    attestations = tmp_path / "attestations.yaml"
    attestations.write_text(
        shipped.replace("patient: itp-relapsed-candidate", f"patient: {patient_id}")
        + f"  - patient: {patient_id}\n    trial: NCT00000000\n    by: Someone Else\n"
        "    answers: {not-an-item-of-this-trial: true}\n"
    )
    api = service_client(server_settings(sekmet.base_url, sekmet.token, attestations=attestations))
    change = observation(f"Patient/{patient_id}", "o-2")
    assert api.put("/fhir-notify/Observation/o-2", json=change, headers=AUTH).status_code == 202
    api.portal.call(api.app.state.notifications.drain)  # type: ignore[union-attr,attr-defined]
    stored = subject_on_server(sekmet, patient_id)
    assert stored is not None
    assert stored["status"] == "eligible"


def test_an_empty_notification_asks_the_server_what_changed(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    """R4 rest-hook without payload (R4 2.46.7.1): the service searches every type its trials
    read with `_lastUpdated` since its start, and re-evaluates the patients that changed."""
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    patient_id = f"service-empty-{uuid.uuid4().hex[:8]}"
    with sekmet.http() as http:
        copy_patient(http, "itp-relapsed-missing-labs", patient_id)
    response = api.post("/fhir-notify", content=b"", headers=AUTH)
    assert response.status_code == 202, response.text
    api.portal.call(api.app.state.notifications.drain)  # type: ignore[union-attr,attr-defined]
    counts = api.app.state.notifications.counts  # type: ignore[attr-defined]
    assert counts.failed == 0, counts.errors
    stored = subject_on_server(sekmet, patient_id)
    assert stored is not None
    assert stored["status"] == "potential-candidate"


def off_subscription(subscription_id: str, criteria: str) -> dict[str, Any]:
    """An R4 rest-hook Subscription without payload, `off` (the test notifies by hand)."""
    return {
        "resourceType": "Subscription",
        "id": subscription_id,
        "status": "off",
        "reason": "trialsieve test: per-Subscription change queries",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/unused"},
    }


def test_two_subscriptions_each_ask_with_their_criteria_since_their_last_event(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    """R4 2.46.7.1 (rest-hook without payload) and R4 3.1.1.5.2 (`_lastUpdated`): what
    changed is each Subscription's criteria since that Subscription's previous query. One
    Subscription asks for Observations of a code only patient `first` has, the other for
    every Condition; each keeps its own time, and `POST /fhir-notify?subscription=` re-evaluates
    what its Subscription finds."""
    tag = uuid.uuid4().hex[:8]
    observations = f"observations-{tag}"
    conditions = f"conditions-{tag}"
    first, second, third = (f"service-sub-{tag}-{n}" for n in ("1", "2", "3"))
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    service = api.app.state.service  # type: ignore[attr-defined]
    with sekmet.http() as http:
        for subscription_id, criteria in (
            (observations, "Observation?code=http://loinc.org|2106-3"),
            (conditions, "Condition?"),
        ):
            body = orjson.dumps(off_subscription(subscription_id, criteria))
            stored = http.put(
                f"Subscription/{subscription_id}",
                content=body,
                headers={"Content-Type": "application/fhir+json"},
            )
            assert stored.status_code in (200, 201), stored.text
        try:
            copy_patient(http, "itp-relapsed-candidate", first)  # has LOINC 2106-3
            copy_patient(http, "itp-relapsed-missing-labs", second)  # has not
            time.sleep(2.1)  # past the second of margin of the next queries
            by_code = service.find_changed(f"Subscription/{observations}")
            assert first in by_code and second not in by_code
            by_condition = service.find_changed(f"Subscription/{conditions}")
            assert {first, second} <= set(by_condition)
            copy_patient(http, "itp-relapsed-candidate", third)
            response = api.post(
                "/fhir-notify", params={"subscription": observations}, content=b"", headers=AUTH
            )
            assert response.status_code == 202, response.text
            api.portal.call(api.app.state.notifications.drain)  # type: ignore[union-attr,attr-defined]
            counts = api.app.state.notifications.counts  # type: ignore[attr-defined]
            assert counts.failed == 0, counts.errors
            assert subject_on_server(sekmet, third) is not None  # changed since its last query
            assert subject_on_server(sekmet, first) is None  # before it: not asked again
            assert subject_on_server(sekmet, second) is None  # not its criteria
            again = service.find_changed(f"Subscription/{conditions}")
            assert third in again and not {first, second} & set(again)
        finally:
            for subscription_id in (observations, conditions):
                http.delete(f"Subscription/{subscription_id}")


def test_a_notification_names_a_subscription_of_the_server(
    service_client: ClientFactory, sekmet: SekmetServer
) -> None:
    api = service_client(server_settings(sekmet.base_url, sekmet.token))
    for named in ("../Patient/p1", "http://elsewhere.org/fhir/Subscription/s1"):
        response = api.post("/fhir-notify", params={"subscription": named}, headers=AUTH)
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == ["subscription"]


def test_a_refused_change_query_keeps_the_others_and_the_time(
    service_client: ClientFactory, sekmet: SekmetServer, caplog: pytest.LogCaptureFixture
) -> None:
    """What changed, asked through a proxy that refuses every Condition search (400 with an
    OperationOutcome): the other types' changes are still found (their patients re-evaluated),
    the refusal is logged with its type and status, and the service-wide time does not move
    on, so the Conditions changed since are asked for again next time rather than lost."""
    patient_id = f"service-refused-{uuid.uuid4().hex[:8]}"
    refusals = {"Condition": Refusal(400, "Condition searches are not allowed")}
    with refusing_server(sekmet.base_url, refusals) as proxy:
        api = service_client(server_settings(proxy.base_url, sekmet.token))
        service = api.app.state.service  # type: ignore[attr-defined]
        with sekmet.http() as http:
            copy_patient(http, "itp-relapsed-missing-labs", patient_id)
        before = service._change_times.since(SERVICE_WIDE)
        with caplog.at_level(logging.WARNING):
            changed = service.find_changed()
        assert patient_id in changed  # its Patient and Observations changed too
        assert service._change_times.since(SERVICE_WIDE) == before
        refused = [r for r in caplog.records if r.getMessage() == "changes query refused"]
        assert [r.fields for r in refused] == [{"resource_type": "Condition", "http_status": 400}]
        del refusals["Condition"]  # the proxy answers every search from now on
        again = service.find_changed()
        assert patient_id in again  # asked from the same time: nothing lost
        assert service._change_times.since(SERVICE_WIDE) > before  # every query answered


FAKE_SERVER = "http://fhir.invalid/r4"


def test_a_change_query_its_server_says_is_not_complete_keeps_its_patients_and_the_time(
    service_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """R4 3.1.1.5.7 "Searching": a searchset entry with `search.mode` outcome holds an
    OperationOutcome about the search. With an error issue the results are not complete: the
    patients found are still re-evaluated, `changes query not complete` is logged with the
    type, and the time does not move on (the rest is asked for again next time). A warning
    changes nothing. Scripted answers (respx): one searchset per type."""
    api = service_client(server_settings(FAKE_SERVER, "token"))
    service = api.app.state.service  # type: ignore[attr-defined]

    def searchset(patient: str, severity: str | None) -> dict[str, Any]:
        entries: list[dict[str, Any]] = [
            {
                "resource": {
                    "resourceType": "Condition",
                    "id": f"c-{patient}",
                    "subject": {"reference": f"Patient/{patient}"},
                },
                "search": {"mode": "match"},
            }
        ]
        if severity is not None:
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": severity, "code": "incomplete", "diagnostics": "cut"}],
            }
            entries.append({"resource": outcome, "search": {"mode": "outcome"}})
        return {"resourceType": "Bundle", "type": "searchset", "entry": entries}

    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for severity, holds_time in (("error", True), ("warning", False), (None, False)):
        before = service._change_times.since(SERVICE_WIDE)
        caplog.clear()
        with respx.mock(assert_all_called=False) as mock:
            mock.get(url__regex=rf"{FAKE_SERVER}/Condition\b.*").mock(
                return_value=httpx.Response(200, json=searchset("p-changed", severity))
            )
            mock.get(url__regex=rf"{FAKE_SERVER}/\w+\?.*").mock(
                return_value=httpx.Response(200, json=empty)
            )
            with caplog.at_level(logging.WARNING):
                changed = service.find_changed()
        assert changed == ["p-changed"], severity
        after = service._change_times.since(SERVICE_WIDE)
        assert (after == before) is holds_time, severity
        said = [r.fields for r in caplog.records if r.getMessage() == "changes query not complete"]  # type: ignore[attr-defined]
        assert said == ([{"resource_type": "Condition"}] if holds_time else []), severity


def numbered_event(number: int, focus: str, kind: str = "event-notification") -> dict[str, Any]:
    """A Backport R4 id-only notification of Subscription s1 for one numbered event."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": "Subscription/s1"}},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(number)},
        {
            "name": "notification-event",
            "part": [
                {"name": "event-number", "valueString": str(number)},
                {"name": "focus", "valueReference": {"reference": focus}},
            ],
        },
    ]
    entry = {"resource": {"resourceType": "Parameters", "parameter": parameters}}
    return {"resourceType": "Bundle", "type": "history", "entry": [entry]}


@pytest.mark.parametrize(
    "events_answer", ["complete", "partial", "404", "501", "500", "not a bundle"]
)
def test_missed_events_are_recovered_from_events_else_from_what_changed(
    service_client: ClientFactory, caplog: pytest.LogCaptureFixture, events_answer: str
) -> None:
    """Subscriptions Backport, "Handling Errors": a notification for event 3 after event 1
    shows event 2 missed. The answer says so, and the recovery asks the Subscription's
    `$events` for event 2; when the server answers it with every missed event, those events
    are what is re-evaluated, else (404, 501, an answer that is not a notification, some
    events left out) the server is asked what changed for the Subscription (its criteria, read
    from the server, with `_lastUpdated`); so it is when `$events` fails (500: servers answer
    an operation they lack in many ways), else the gap would never be recovered. Scripted
    server (respx); the events are about Encounters, which no trial reads, so nothing is
    written."""
    fast = RetryPolicy(attempts=1, timeout=1.0, give_up_after=2.0)
    api = service_client(server_settings(FAKE_SERVER, "token", fhir_retry=fast))
    asked: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.url.path.removeprefix('/r4/')}?{request.url.query.decode()}")
        if request.url.path.endswith("/$events"):
            if events_answer in ("404", "501", "500"):
                return httpx.Response(int(events_answer), json={"resourceType": "OperationOutcome"})
            if events_answer == "not a bundle":
                return httpx.Response(200, json={"resourceType": "Patient", "id": "p1"})
            number = 2 if events_answer == "complete" else 5
            return httpx.Response(200, json=numbered_event(number, "Encounter/e2", "query-event"))
        if request.url.path.endswith("/Subscription/s1"):
            subscription = {"resourceType": "Subscription", "id": "s1", "criteria": "Encounter?"}
            return httpx.Response(200, json=subscription)
        return httpx.Response(404, json={"resourceType": "OperationOutcome"})

    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith=FAKE_SERVER).mock(side_effect=server)
        first = api.post("/fhir-notify", json=numbered_event(1, "Encounter/e1"), headers=AUTH)
        assert first.status_code == 200, first.text
        with caplog.at_level(logging.INFO):
            third = api.post("/fhir-notify", json=numbered_event(3, "Encounter/e3"), headers=AUTH)
            assert third.status_code == 202, third.text
            said = third.json()["issue"][0]["diagnostics"]
            assert "events 2 to 2 of the Subscription were not received" in said
            api.portal.call(api.app.state.notifications.drain)  # type: ignore[union-attr,attr-defined]
    assert "Subscription/s1/$events?eventsSinceNumber=2&eventsUntilNumber=2" in asked
    way = "$events" if events_answer == "complete" else "changes query"
    recovered = [r.fields for r in caplog.records if r.getMessage() == "missed events recovered"]  # type: ignore[attr-defined]
    assert recovered == [{"way": way, "events": 1, "targets": 0}]
    assert ("Subscription/s1?" in asked) is (way == "changes query")
    assert api.app.state.notifications.counts.failed == 0  # type: ignore[attr-defined]


def test_a_recovery_that_fails_is_tried_again_by_the_next_notification(
    service_client: ClientFactory,
) -> None:
    """Subscriptions Backport, "Recovering from Errors": when neither `$events` nor the
    question of what changed can be answered (the server fails), the missed events are not
    forgotten: the next notification of the Subscription finds them missing again."""
    fast = RetryPolicy(attempts=1, timeout=1.0, give_up_after=2.0)
    api = service_client(server_settings(FAKE_SERVER, "token", fhir_retry=fast))
    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith=FAKE_SERVER).mock(return_value=httpx.Response(503))
        for number in (1, 3):
            api.post("/fhir-notify", json=numbered_event(number, "Encounter/e"), headers=AUTH)
        api.portal.call(api.app.state.notifications.drain)  # type: ignore[union-attr,attr-defined]
        assert api.app.state.notifications.counts.failed == 1  # type: ignore[attr-defined]
        fourth = api.post("/fhir-notify", json=numbered_event(4, "Encounter/e"), headers=AUTH)
        api.portal.call(api.app.state.notifications.drain)  # type: ignore[union-attr,attr-defined]
    assert "events 2 to 3 of the Subscription were not received" in fourth.text
