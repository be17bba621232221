"""Fault injection on the real parts: the broker paused and restarted empty,
the analytics worker killed, the database locked. Each test is bounded in
time and ends by counting: no event lost, none counted twice."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid

import httpx
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet, Sum

from monitor.events import signing
from monitor.events.schema import encode_event
from monitor.kafka import clients as kafka
from monitor.models import AnalyticsEvent, EventMinuteCount, OutboxEvent
from tests.support.events import signups
from tests.support.stack import Poster, Processes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def wait_for(condition, timeout: float, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message or 'condition not met'} within {timeout}s; {state()}")
        time.sleep(0.2)


def state() -> str:
    """What the pipeline holds, for failure messages."""
    missing = emitted_ids() - recorded_ids()
    extra = recorded_ids() - emitted_ids()
    unsent = OutboxEvent.objects.filter(sent_at__isnull=True).count()
    rows = AnalyticsEvent.objects.filter(event_id__in=list(extra)[:3])
    shown = [(row.type, row.cloudevent_id, row.verified) for row in rows]
    return (
        f"{len(missing)} emitted but not recorded, {len(extra)} recorded but not emitted"
        f" (such as {shown}), {unsent} unsent in the outbox"
    )


@pytest.fixture(autouse=True)
def _own_topics(topics: tuple[str, str]) -> None:
    """Each test's processes on topics of its own, so that what it counts is
    its own: the session's stack (tests/conftest.py ``stack``) records the
    events of its topic into the same test database, possibly late."""


def ours() -> QuerySet[AnalyticsEvent]:
    """The analytics rows of this test's topic."""
    return AnalyticsEvent.objects.filter(topic=settings.KAFKA_EVENTS_TOPIC)


def recorded_ids() -> set[uuid.UUID]:
    return set(ours().values_list("event_id", flat=True))


def emitted_ids() -> set[uuid.UUID]:
    return set(OutboxEvent.objects.values_list("event_id", flat=True))


def assert_counted_once(expected: set[uuid.UUID]) -> None:
    assert recorded_ids() == expected
    assert ours().count() == len(expected)
    # Every row stored was counted once, in the same transaction.
    total = EventMinuteCount.objects.aggregate(total=Sum("count"))["total"]
    assert total == AnalyticsEvent.objects.count()


def test_posts_survive_broker_pauses_and_an_empty_restart(own_broker, processes: Processes) -> None:
    for name in ("web", "analytics", "relay"):
        processes.start(name)
    poster = Poster(processes.base_url, "steady")

    # Wave one: 400 posts; twice the broker is frozen for 60 posts (and at
    # least 1.5 s), mid-stream.
    for n in range(400):
        if n in (100, 250):
            own_broker.pause()
            paused_at = time.monotonic()
        poster.post(f"wave one #{n}")
        if n in (159, 309):
            time.sleep(max(0.0, 1.5 - (time.monotonic() - paused_at)))
            own_broker.resume()
    wait_for(lambda: recorded_ids() == emitted_ids(), 90, "wave one not fully recorded")
    assert len(emitted_ids()) == 401  # the sign-up and 400 posts

    # The broker goes away and comes back empty before wave two is published.
    own_broker.restart()
    for n in range(100):
        poster.post(f"wave two #{n}")
    wait_for(
        lambda: recorded_ids() == emitted_ids(),
        90,
        f"wave two not fully recorded: {len(emitted_ids() - recorded_ids())} missing\n"
        + processes.log("analytics")[-3000:],
    )
    expected = emitted_ids()
    assert len(expected) == 501
    assert_counted_once(expected)
    wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), 30)


async def _produce_stream(topic: str, events: list[bytes], per_second: float) -> None:
    producer = kafka.make_producer()
    await producer.start()
    try:
        started = time.monotonic()
        for index, value in enumerate(events):
            # Signed as the site signs its own: stored under their own ids.
            headers = [signing.sign(value)]
            await producer.send(topic, value, key=str(index % 7).encode(), headers=headers)
            ahead = index / per_second - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


def stream_in_background(events: list[dict], per_second: float) -> threading.Thread:
    """Produce ``events`` to the events topic at a steady rate from another thread."""
    asyncio.run(kafka.ensure_topics())
    values = [encode_event(event) for event in events]
    producer = threading.Thread(
        target=asyncio.run,
        args=(_produce_stream(settings.KAFKA_EVENTS_TOPIC, values, per_second),),
    )
    producer.start()
    return producer


def test_the_analytics_worker_killed_three_times_records_each_event_once(
    own_broker, processes: Processes
) -> None:
    processes.env["ANALYTICS_BATCH_SIZE"] = "100"
    events = signups(0, 5000)
    producer = stream_in_background(events, per_second=400)
    worker = processes.start("analytics")
    for kill in range(3):
        threshold = 1000 * (kill + 1)
        wait_for(lambda t=threshold: ours().count() >= t, 60, processes.log("analytics"))
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        worker = processes.start("analytics")
    producer.join(60)
    assert not producer.is_alive()

    expected = {uuid.UUID(event["id"]) for event in events}
    wait_for(lambda: ours().count() >= 5000, 90, processes.log("analytics")[-3000:])
    assert_counted_once(expected)

    def lag_is_zero() -> bool:
        report = asyncio.run(kafka.group_lag("analytics", settings.KAFKA_EVENTS_TOPIC))
        return sum(partition["lag"] for partition in report.values()) == 0

    wait_for(lag_is_zero, 30, "the analytics group did not catch up")


def test_a_sigterm_finishes_the_batch_commits_and_exits(own_broker, processes: Processes) -> None:
    processes.env["ANALYTICS_BATCH_SIZE"] = "50"
    events = signups(0, 3000)
    producer = stream_in_background(events, per_second=600)
    worker = processes.start("analytics")
    wait_for(lambda: ours().count() >= 500, 60, processes.log("analytics"))
    worker.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    assert worker.wait(10) == 0
    assert time.monotonic() - stopped < 10
    producer.join(60)

    # Everything committed is durable: the committed offsets never pass the rows.
    report = asyncio.run(kafka.group_lag("analytics", settings.KAFKA_EVENTS_TOPIC))
    committed = sum(partition["committed"] or 0 for partition in report.values())
    assert 0 < committed <= ours().count()
    processes.start("analytics")
    wait_for(lambda: ours().count() >= 3000, 60, processes.log("analytics")[-3000:])
    assert_counted_once({uuid.UUID(event["id"]) for event in events})


def _hold_database_lock(seconds: float, held: threading.Event) -> None:
    """Hold the database's write lock (SQLite) or an exclusive table lock (PostgreSQL)."""
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    table = AnalyticsEvent._meta.db_table
                    cursor.execute(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE')
                else:
                    # An IMMEDIATE transaction (settings) holds the write lock from here on.
                    cursor.execute("UPDATE monitor_eventminutecount SET count = count WHERE 0")
            held.set()
            time.sleep(seconds)
    finally:
        connection.close()


def test_a_locked_database_commits_nothing_past_durable_work(
    own_broker, processes: Processes
) -> None:
    processes.env["ANALYTICS_BATCH_SIZE"] = "50"
    processes.env["SQLITE_BUSY_TIMEOUT_SECONDS"] = "1"  # fail fast, so the retry path runs
    processes.env["WORKER_DB_RETRY_MAX_SECONDS"] = "1"
    events = signups(0, 3000)
    processes.start("analytics")
    producer = stream_in_background(events, per_second=500)
    wait_for(lambda: ours().count() >= 300, 60, processes.log("analytics"))

    held = threading.Event()
    locker = threading.Thread(target=_hold_database_lock, args=(4.0, held))
    locker.start()
    assert held.wait(10)
    samples = 0
    while locker.is_alive():
        # Committed offsets first, rows second: rows only grow, so a committed
        # offset past the rows would show here.
        report = asyncio.run(kafka.group_lag("analytics", settings.KAFKA_EVENTS_TOPIC))
        committed = sum(partition["committed"] or 0 for partition in report.values())
        rows = ours().count()
        assert committed <= rows
        samples += 1
    locker.join()
    assert samples >= 3
    producer.join(60)
    wait_for(lambda: ours().count() >= 3000, 60, processes.log("analytics")[-3000:])
    assert_counted_once({uuid.UUID(event["id"]) for event in events})
    if connection.vendor == "sqlite":
        assert "database write failed" in processes.log("analytics")


def test_posting_works_while_the_broker_is_down(own_broker, processes: Processes) -> None:
    for name in ("web", "analytics", "relay"):
        processes.start(name)
    poster = Poster(processes.base_url, "offline")
    wait_for(lambda: recorded_ids() == emitted_ids(), 30, "the sign-up was not recorded")

    own_broker.stop()
    for n in range(20):
        poster.post(f"while down #{n}")
    health = httpx.get(processes.base_url + "/healthz", timeout=10)
    assert health.status_code == 503
    body = health.json()
    assert body["broker"]["ok"] is False
    assert body["outbox"]["unsent"] >= 20
    assert OutboxEvent.objects.filter(sent_at__isnull=True).count() >= 20

    own_broker.start()  # back on the same port, empty
    wait_for(
        lambda: recorded_ids() == emitted_ids(),
        60,
        "events posted while the broker was down were not recorded",
    )
    assert_counted_once(emitted_ids())
    assert len(emitted_ids()) == 21
    wait_for(lambda: not OutboxEvent.objects.filter(sent_at__isnull=True).exists(), 30)
    assert httpx.get(processes.base_url + "/healthz", timeout=10).status_code == 200
