"""The dashboard's data: /dashboard/state.json (offsets, lag, dead letters,
watchers) against the real broker, /dashboard/rates.json from the analytics
tables, who may see them, and presence across web processes."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitor.dashboard import lag, overview
from monitor.dashboard.lag import Offsets
from monitor.dashboard.rates import event_rates, seen_types
from monitor.events.schema import EVENT_TYPES, Event
from monitor.kafka import clients as kafka
from monitor.kafka.embedded import free_port
from monitor.live.presence import Presence, watcher_joined, watcher_left, watching_count
from monitor.models import AnalyticsEvent, DeadLetter, WatcherHeartbeat
from monitor.workers.analytics import record_batch
from monitor.workers.records import RecordedFrom
from tests.support.events import photo_event, signup_event
from tests.support.kafka import commit_as

pytestmark = pytest.mark.django_db

STATE_URL = "/dashboard/state.json"
RATES_URL = "/dashboard/rates.json"


@pytest.fixture(scope="module", autouse=True)
def _kafka_state() -> Iterator[None]:
    yield
    overview.kafka_state.close()


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="operator", password="pw-operator-123", is_staff=True
    )


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


# --- state.json: Kafka --------------------------------------------------------


async def produce(per_partition: dict[str, dict[int, int]]) -> None:
    """Produce that many records to each partition of each topic."""
    await kafka.ensure_topics()
    producer = kafka.make_producer()
    await producer.start()
    try:
        for topic, counts in per_partition.items():
            for partition, count in counts.items():
                for n in range(count):
                    await producer.send_and_wait(topic, b"record %d" % n, partition=partition)
    finally:
        await producer.stop()


def on_topic(group: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    """The group's partitions of ``topic``, without their lag in time."""
    return [
        {key: value for key, value in row.items() if key != "lag_seconds"}
        for row in group["partitions"]
        if row["topic"] == topic
    ]


def test_it_reports_offsets_and_the_lag_of_each_group(topics, staff_client, monkeypatch) -> None:
    topic, dlq = topics
    group = f"dashboard-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(overview, "CONSUMER_GROUPS", ("analytics", group))
    asyncio.run(produce({topic: {0: 5, 1: 3}, dlq: {1: 2}}))
    asyncio.run(commit_as(group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 3}))

    response = staff_client.get(STATE_URL)

    assert response.status_code == 200
    body = response.json()
    assert body["broker"] == {"ok": True}
    # The events topic first, then its dead letters; every other topic follows.
    assert body["topics"][:2] == [
        {
            "name": topic,
            "role": "events",
            "watched": True,
            "internal": False,
            "records": 8,
            "partitions": [
                {"partition": 0, "start": 0, "end": 5},
                {"partition": 1, "start": 0, "end": 3},
                {"partition": 2, "start": 0, "end": 0},
            ],
        },
        {
            "name": dlq,
            "role": "dead letters",
            "watched": False,
            "internal": False,
            "records": 2,
            "partitions": [
                {"partition": 0, "start": 0, "end": 0},
                {"partition": 1, "start": 0, "end": 2},
                {"partition": 2, "start": 0, "end": 0},
            ],
        },
    ]
    analytics, tested = body["groups"][:2]
    assert (analytics["group"], analytics["site"]) == ("analytics", True)
    assert (tested["group"], tested["site"]) == (group, True)
    # The analytics group never committed on this topic: all of it is lag.
    assert on_topic(analytics, topic) == [
        {"topic": topic, "partition": 0, "committed": None, "end": 5, "lag": 5},
        {"topic": topic, "partition": 1, "committed": None, "end": 3, "lag": 3},
        {"topic": topic, "partition": 2, "committed": None, "end": 0, "lag": 0},
    ]
    assert tested["topics"] == [topic] and tested["empty"] is False
    assert tested["lag"] == 3
    assert on_topic(tested, topic) == [
        {"topic": topic, "partition": 0, "committed": 2, "end": 5, "lag": 3},
        {"topic": topic, "partition": 1, "committed": 3, "end": 3, "lag": 0},
        {"topic": topic, "partition": 2, "committed": None, "end": 0, "lag": 0},
    ]
    # The oldest record it has not committed was written just now.
    assert 0 <= tested["lag_seconds"] < 30
    assert [row["lag_seconds"] for row in tested["partitions"][1:]] == [0, 0]
    generated = datetime.fromisoformat(body["generated_at"].replace("Z", "+00:00"))
    assert abs((timezone.now() - generated).total_seconds()) < 10


def test_a_lag_the_broker_cannot_give_is_unknown_and_says_why_never_0() -> None:
    tps = [TopicPartition("t", 0), TopicPartition("t", 1)]
    rows = [
        lag.partition_lag(tps[0], Offsets(start=0, end=1), 8, site=True),
        lag.partition_lag(tps[1], Offsets(start=0, end=4), 3, site=True),
    ]
    for row, resumes_at in zip(rows, (8, 3), strict=True):
        lag.add_lag_time(row, resumes_at, {(tps[1], 3): 1_000}, now_ms=4_000)

    report = lag.group_report("analytics", rows, site=True)

    assert report == {
        "group": "analytics",
        "site": True,
        "topics": ["t"],
        "empty": False,
        "lag": None,
        "lag_unknown": "t partition 0: the broker reports end 1 below committed 8",
        "lag_seconds": None,
        "lag_seconds_unknown": "t partition 0: its lag in records is unknown",
        "partitions": [
            {
                "topic": "t",
                "partition": 0,
                "committed": 8,
                "end": 1,
                "lag": None,
                "lag_unknown": "the broker reports end 1 below committed 8",
                "lag_seconds": None,
            },
            {
                "topic": "t",
                "partition": 1,
                "committed": 3,
                "end": 4,
                "lag": 1,
                "lag_seconds": 3.0,
            },
        ],
    }


def test_state_says_the_lag_is_unknown_when_the_real_broker_reports_an_end_below_the_commit(
    topics, staff_client, monkeypatch
) -> None:
    topic, _ = topics
    group = f"dashboard-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(overview, "CONSUMER_GROUPS", (group,))
    asyncio.run(produce({topic: {0: 1, 1: 2}}))
    # As the embedded broker was seen to do: a group committed past the end reported.
    asyncio.run(commit_as(group, {TopicPartition(topic, 0): 8, TopicPartition(topic, 1): 2}))
    overview.kafka_state.forget()

    reported = staff_client.get(STATE_URL).json()["groups"][0]

    assert reported["group"] == group
    assert reported["lag"] is None
    assert reported["lag_unknown"] == (
        f"{topic} partition 0: the broker reports end 1 below committed 8"
    )
    assert reported["lag_seconds"] is None
    assert reported["partitions"][0] == {
        "topic": topic,
        "partition": 0,
        "committed": 8,
        "end": 1,
        "lag": None,
        "lag_unknown": "the broker reports end 1 below committed 8",
        "lag_seconds": None,
    }
    assert reported["partitions"][1]["lag"] == 0


def test_state_carries_the_live_reader_of_the_process_that_answers(staff_client) -> None:
    reader = staff_client.get(STATE_URL).json()["live_reader"]

    # Nobody watches through this process: no reader runs, and that is fine.
    assert reader["ok"] is True and reader["running"] is False
    assert reader["behind"] is None and reader["reason"] is None


def test_requests_share_one_read_of_the_broker(topics, staff_client, monkeypatch) -> None:
    topic, _ = topics
    asyncio.run(produce({topic: {0: 1}}))
    reads = []
    fetch = overview.kafka_state._fetch

    async def counted_fetch(target):
        reads.append(target)
        await asyncio.sleep(0.3)  # long enough for every request to arrive meanwhile
        return await fetch(target)

    monkeypatch.setattr(overview.kafka_state, "_fetch", counted_fetch)
    overview.kafka_state.forget()
    answers: list[overview.KafkaReport] = []
    threads = [
        threading.Thread(target=lambda: answers.append(overview.kafka_state.read()))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(reads) == 1
    assert len(answers) == 8 and all(answer is answers[0] for answer in answers)
    assert answers[0].topics[0]["name"] == topic
    assert answers[0].topics[0]["partitions"][0]["end"] == 1

    # Within max_age a new record is not seen yet; once the answer is old it is.
    asyncio.run(produce({topic: {0: 1}}))
    assert overview.kafka_state.read().topics[0]["partitions"][0]["end"] == 1
    overview.kafka_state.forget()
    assert overview.kafka_state.read().topics[0]["partitions"][0]["end"] == 2
    assert len(reads) == 2


def test_it_answers_quickly_with_the_database_parts_when_the_broker_is_down(
    staff_client, settings
) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nothing listens there
    DeadLetter.objects.create(topic="t", partition=0, offset=1)

    started = time.monotonic()
    response = staff_client.get(STATE_URL)
    first = time.monotonic() - started
    started = time.monotonic()
    again = staff_client.get(STATE_URL)
    second = time.monotonic() - started

    assert response.status_code == 200
    body = response.json()
    assert body["broker"]["ok"] is False
    assert body["broker"]["error"]
    assert body["topics"] == [] and body["groups"] == []
    assert body["dead_letters"]["count"] == 1
    assert body["watching"] == 0
    assert first < 3
    # The failure is remembered for a while instead of tried again per request.
    assert again.json()["broker"] == body["broker"]
    assert second < 0.5


def test_a_frozen_broker_costs_one_bounded_wait(
    own_broker, staff_client, settings, monkeypatch
) -> None:
    settings.KAFKA_BOOTSTRAP_SERVERS = own_broker.bootstrap_servers
    assert staff_client.get(STATE_URL).json()["broker"] == {"ok": True}
    state = overview.kafka_state
    reads = []
    original = state._read_from_broker
    monkeypatch.setattr(state, "_read_from_broker", lambda t: reads.append(t) or original(t))
    own_broker.pause()
    try:
        state.forget()
        started = time.monotonic()
        body = staff_client.get(STATE_URL).json()
        waited = time.monotonic() - started
        again = staff_client.get(STATE_URL).json()
    finally:
        own_broker.resume()

    assert body["broker"] == {"ok": False, "error": "no answer from the broker within 2s"}
    # Bounded by the timeout (with room for a loaded machine), and paid once:
    # the next request within the retry interval is answered without a read.
    assert waited < state.timeout * 3
    assert again["broker"] == body["broker"] and len(reads) == 1


# --- state.json: the database parts -------------------------------------------


def dead_letter(offset: int, *, redriven: bool = False) -> DeadLetter:
    return DeadLetter.objects.create(
        topic="user-events",
        partition=0,
        offset=offset,
        redriven_at=timezone.now() if redriven else None,
    )


def test_it_counts_dead_letters_and_links_to_their_admin_list(staff_client) -> None:
    dead_letter(1, redriven=True)
    dead_letter(2, redriven=True)
    dead_letter(3)

    assert staff_client.get(STATE_URL).json()["dead_letters"] == {
        "count": 3,
        "unredriven": 1,
        "url": "/admin/monitor/deadletter/",
    }


def monitor_queries(queries: CaptureQueriesContext) -> list[str]:
    """The statements that read the app's tables (not the session and user lookups)."""
    return [query["sql"] for query in queries.captured_queries if "monitor_" in query["sql"]]


def test_state_reads_the_database_in_two_queries(staff_client) -> None:
    dead_letter(1)
    staff_client.get(STATE_URL)  # the Kafka clients are connected
    with CaptureQueriesContext(connection) as queries:
        assert staff_client.get(STATE_URL).status_code == 200
    assert len(monitor_queries(queries)) == 2


# --- rates.json ---------------------------------------------------------------

NOW = datetime(2024, 5, 6, 7, 8, 25, tzinfo=UTC)  # 10 s buckets: the last one ends 07:08:20
START = NOW.replace(minute=3, second=20)  # five minutes before 07:08:20


def foreign_event(event_type: str, *, at: datetime) -> Event:
    """Another service's CloudEvent: not one of the site's types, not signed."""
    return cast(
        Event,
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/billing",
            "type": event_type,
            "time": at.isoformat(),
            "data": {"amount": 12},
        },
    )


def store(*events: Event) -> None:
    record_batch(
        [
            RecordedFrom(event=event, topic="user-events", partition=0, offset=n)
            for n, event in enumerate(events)
        ]
    )


def at(minute: int, second: float) -> datetime:
    return NOW.replace(minute=minute, second=0) + timedelta(seconds=second)


def test_it_buckets_events_per_second_with_every_bucket_present() -> None:
    store(
        signup_event(1, at=at(3, 19.9)),  # just before the window
        signup_event(2, at=at(3, 20)),  # the window's first instant
        signup_event(3, at=at(3, 25)),
        signup_event(4, at=at(3, 29.999)),
        photo_event(1, at=at(5, 0)),
        photo_event(2, at=at(8, 10.5)),
        photo_event(3, at=at(8, 19.999)),  # the last complete bucket's last instant
        photo_event(4, at=at(8, 20)),  # the bucket in progress: not charted yet
    )

    rates = event_rates(minutes=5, now=NOW)

    start = int(START.timestamp())
    assert (rates["minutes"], rates["bucket_seconds"]) == (5, 10)
    assert (rates["start"], rates["end"]) == (start, start + 300)
    assert rates["buckets"] == [start + 10 * n for n in range(30)]
    assert set(rates["series"]) == EVENT_TYPES
    signups = [0.0] * 30
    signups[0] = 0.3
    photos = [0.0] * 30
    photos[10] = 0.1  # 07:05:00 is 100 s into the window
    photos[29] = 0.2
    expected = {event_type: [0.0] * 30 for event_type in EVENT_TYPES}
    assert rates["series"] == {**expected, "photo.posted": photos, "user.signed_up": signups}


def test_its_counters_come_from_the_minute_counts_and_the_last_minute() -> None:
    store(
        signup_event(1, at=at(3, 19.9)),
        signup_event(2, at=at(7, 24)),  # 61 s before NOW
        signup_event(3, at=at(7, 25)),  # exactly 60 s before NOW
        photo_event(1, at=at(8, 24)),
        photo_event(2, at=at(8, 20)),
    )
    # Raw events pruned later still count in the totals.
    AnalyticsEvent.objects.filter(time__lt=at(7, 0)).delete()

    counters = event_rates(minutes=15, now=NOW)["counters"]
    none = dict.fromkeys(EVENT_TYPES, 0)  # every known type is listed

    assert counters == {
        "total": 5,
        "by_type": {**none, "photo.posted": 2, "user.signed_up": 3},
        "last_minute": 3,
        "last_minute_by_type": {**none, "photo.posted": 2, "user.signed_up": 1},
        "sources_by_type": {"photo.posted": {"/test": 2}, "user.signed_up": {"/test": 3}},
    }


def test_counters_hold_every_type_recorded_with_its_sources() -> None:
    store(
        signup_event(1, at=at(8, 0)),
        signup_event(2, at=at(8, 1), source="/legacy-signups"),
        foreign_event("invoice.paid", at=at(8, 2)),
        foreign_event("invoice.paid", at=at(8, 3)),
    )

    counters = event_rates(minutes=15, now=NOW)["counters"]

    assert counters["by_type"]["invoice.paid"] == 2
    assert counters["by_type"]["user.signed_up"] == 2
    assert counters["sources_by_type"] == {
        "invoice.paid": {"/billing": 2},
        "user.signed_up": {"/test": 1, "/legacy-signups": 1},
    }
    assert seen_types() == {"invoice.paid": 2, "user.signed_up": 2}


@pytest.mark.parametrize(("minutes", "width"), [(5, 10), (15, 30), (60, 60)])
def test_each_window_has_its_own_bucket_width(minutes: int, width: int) -> None:
    store(photo_event(1, at=NOW - timedelta(minutes=minutes) + timedelta(seconds=width + 1)))

    rates = event_rates(minutes=minutes, now=NOW)

    assert rates["bucket_seconds"] == width
    assert len(rates["buckets"]) == minutes * 60 // width
    assert rates["buckets"] == list(range(rates["start"], rates["end"], width))
    assert rates["end"] <= NOW.timestamp() < rates["end"] + width
    assert sum(rates["series"]["photo.posted"]) == pytest.approx(1 / width, abs=1e-4)


def test_the_endpoint_charts_events_as_they_arrive(staff_client) -> None:
    moment = timezone.now() - timedelta(seconds=30)
    store(*(photo_event(n, at=moment) for n in range(3)), signup_event(1, at=moment))

    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(RATES_URL, {"minutes": "5"})

    assert response.status_code == 200
    body = response.json()
    assert len(monitor_queries(queries)) == 2
    index = (int(moment.timestamp()) - body["start"]) // body["bucket_seconds"]
    assert body["series"]["photo.posted"][index] == 0.3
    assert body["series"]["user.signed_up"][index] == 0.1
    assert body["counters"]["total"] == 4
    assert body["counters"]["last_minute"] == 4
    assert staff_client.get(RATES_URL).json()["minutes"] == 15


@pytest.mark.parametrize("minutes", ["7", "abc", "", "05", "15.0"])
def test_it_refuses_other_windows(staff_client, minutes: str) -> None:
    response = staff_client.get(RATES_URL, {"minutes": minutes})
    assert response.status_code == 400
    assert "minutes must be one of 5, 15, 60" in response.json()["error"]


# --- who may see it -------------------------------------------------------------


def test_staff_see_the_dashboard_and_its_data(staff_client) -> None:
    page = staff_client.get("/dashboard/")
    assert page.status_code == 200
    assert page.context["page"]["site_types"] == sorted(EVENT_TYPES)
    assert page.context["page"]["seen_types"] == {}  # nothing recorded yet
    assert 'id="dashboard-data"' in page.content.decode()
    assert staff_client.get(STATE_URL).status_code == 200
    assert staff_client.get(RATES_URL).status_code == 200


def test_others_are_told_it_is_for_staff_only(client, user) -> None:
    client.force_login(user)
    page = client.get("/dashboard/")
    assert page.status_code == 403
    assert "for staff only" in page.content.decode()
    for url in (STATE_URL, RATES_URL):
        response = client.get(url)
        assert response.status_code == 403
        assert "for staff only" in response.json()["error"]


def test_every_signed_in_user_may_see_it_when_the_setting_is_off(client, user, settings) -> None:
    settings.DASHBOARD_STAFF_ONLY = False
    client.force_login(user)
    assert client.get("/dashboard/").status_code == 200
    assert client.get(STATE_URL).status_code == 200
    assert client.get(RATES_URL).status_code == 200


def test_anonymous_users_are_sent_to_log_in(client) -> None:
    page = client.get("/dashboard/")
    assert page.status_code == 302
    assert page["Location"] == "/accounts/login/?next=/dashboard/"
    for url in (STATE_URL, RATES_URL):
        response = client.get(url)
        assert response.status_code == 401
        assert response.json()["error"]


# --- presence -------------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    try:
        while not await sync_to_async(condition)():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)
    finally:
        # The check ran in asgiref's thread: its connection must not outlive the test.
        await sync_to_async(close_connection)()


def close_connection() -> None:
    connection.close()


def row_exists(process: str) -> Callable[[], bool]:
    return lambda: WatcherHeartbeat.objects.filter(process=process).exists()


@pytest.mark.django_db(transaction=True)
def test_it_counts_distinct_watchers_across_processes(settings) -> None:
    settings.PRESENCE_HEARTBEAT_SECONDS = 1
    web1, web2 = Presence("web-1"), Presence("web-2")

    async def scenario() -> None:
        web1.joined(1)
        web1.joined(2)
        web1.joined(2)  # a second tab
        web2.joined(2)
        web2.joined(3)
        await until(lambda: watching_count() == 3)

        web2.left(2)
        web2.left(3)
        await until(lambda: not row_exists("web-2")())
        # Its heartbeat ends once it has also closed its database connection.
        await until(lambda: not web2.beating)
        await until(lambda: watching_count() == 2)

        web1.left(2)  # user 2 still watches in the other tab
        first_beat = timezone.now()
        await until(lambda: WatcherHeartbeat.objects.get(process="web-1").beat_at > first_beat)
        await until(lambda: watching_count() == 2)

        web1.left(2)
        web1.left(1)
        await until(lambda: not row_exists("web-1")())
        await until(lambda: watching_count() == 0)

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_the_module_api_records_this_process(staff_client) -> None:
    from monitor.live.presence import presence

    async def join() -> None:
        await watcher_joined(41)
        await watcher_joined(42)
        await until(lambda: watching_count() == 2)

    async def leave() -> None:
        await watcher_left(41)
        await watcher_left(42)
        await watcher_left(43)  # never joined: ignored
        await until(lambda: not row_exists(presence.process_id)())

    asyncio.run(join())
    assert staff_client.get(STATE_URL).json()["watching"] == 2
    asyncio.run(leave())
    assert staff_client.get(STATE_URL).json()["watching"] == 0


def test_a_process_that_stopped_beating_no_longer_counts(settings) -> None:
    settings.PRESENCE_HEARTBEAT_SECONDS = 5
    now = timezone.now()
    WatcherHeartbeat.objects.create(
        process="crashed", user_ids=[7, 8], beat_at=now - timedelta(seconds=16)
    )
    WatcherHeartbeat.objects.create(
        process="alive", user_ids=[8, 9], beat_at=now - timedelta(seconds=14)
    )
    assert watching_count() == 2
