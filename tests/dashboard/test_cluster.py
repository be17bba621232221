"""What /dashboard/state.json tells of the whole cluster, against the real broker:
every topic, every consumer group (another service's too), each group's lag in
records and in time, and what that costs the broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import TopicPartition

from monitor.dashboard import lag, overview
from monitor.dashboard.lag import Offsets
from monitor.dashboard.record_times import RecordTimes, _rounds
from monitor.kafka import clients as kafka
from tests.support.kafka import commit_as

pytestmark = pytest.mark.django_db

STATE_URL = "/dashboard/state.json"
MINUTE_MS = 60_000


@pytest.fixture(scope="module", autouse=True)
def _kafka_state() -> Iterator[None]:
    yield
    overview.kafka_state.close()


@pytest.fixture
def staff_client(client, django_user_model):
    staff = django_user_model.objects.create_user(
        username="operator", password="pw-operator-123", is_staff=True
    )
    client.force_login(staff)
    return client


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def produce_aged(topic: str, records: dict[int, list[int]]) -> None:
    """Create ``topic`` (3 partitions) and send, to each partition, one record
    per age given (in ms before now), oldest first."""
    await kafka.ensure_topics_with({topic: 3})
    producer = kafka.make_producer()
    await producer.start()
    now_ms = int(time.time() * 1000)
    try:
        for partition, ages in records.items():
            for n, age in enumerate(ages):
                await producer.send_and_wait(
                    topic, b"plain text %d" % n, partition=partition, timestamp_ms=now_ms - age
                )
    finally:
        await producer.stop()


def state(client) -> dict[str, Any]:
    overview.kafka_state.forget()
    body = client.get(STATE_URL).json()
    assert body["broker"] == {"ok": True}
    return body


def group_named(body: dict[str, Any], group: str) -> dict[str, Any]:
    (found,) = [g for g in body["groups"] if g["group"] == group]
    return found


def test_another_services_group_appears_with_its_lag_in_records_and_in_time(
    topics, staff_client
) -> None:
    topic = name("seed-photos")
    group = name("seed-analytics")
    asyncio.run(kafka.ensure_topics())
    # Partition 0: five records, the third of them ten minutes old; partition 1:
    # three, the second five minutes old; partition 2 holds nothing.
    asyncio.run(
        produce_aged(
            topic,
            {
                0: [12 * MINUTE_MS, 11 * MINUTE_MS, 10 * MINUTE_MS, MINUTE_MS, 0],
                1: [6 * MINUTE_MS, 5 * MINUTE_MS, 0],
            },
        )
    )
    asyncio.run(commit_as(group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 1}))

    body = state(staff_client)

    seed = group_named(body, group)
    assert seed["site"] is False and seed["empty"] is False
    assert seed["topics"] == [topic]
    assert seed["lag"] == 5
    rows = {row["partition"]: row for row in seed["partitions"]}
    assert [(r["committed"], r["end"], r["lag"]) for r in rows.values()] == [
        (2, 5, 3),
        (1, 3, 2),
        (None, 0, 0),  # never committed there, and nothing to read: no lag
    ]
    assert 600 <= rows[0]["lag_seconds"] < 630
    assert 300 <= rows[1]["lag_seconds"] < 330
    assert rows[2]["lag_seconds"] == 0
    assert seed["lag_seconds"] == rows[0]["lag_seconds"]
    # The site's groups are there too, marked as the site's, on the events topic.
    analytics = group_named(body, "analytics")
    assert analytics["site"] is True
    assert topics[0] in analytics["topics"]


def test_it_lists_every_topic_marking_the_sites_the_watched_and_internal_ones(
    topics, staff_client, settings
) -> None:
    events, dlq = topics
    other, watched = name("billing"), name("orders")
    settings.KAFKA_WATCH_TOPICS = [watched]
    asyncio.run(kafka.ensure_topics())
    asyncio.run(produce_aged(other, {1: [0, 0]}))
    asyncio.run(produce_aged(watched, {0: [0]}))

    body = state(staff_client)

    async def cluster_topics() -> set[str]:
        admin = kafka.make_admin()
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    listed = {topic["name"]: topic for topic in body["topics"]}
    assert set(listed) >= asyncio.run(cluster_topics()) >= {events, dlq, other, watched}
    # The site's topics first, then the other watched ones.
    assert [topic["name"] for topic in body["topics"][:3]] == [events, dlq, watched]
    marks = {
        name: (topic["role"], topic["watched"])
        for name, topic in listed.items()
        if name in (events, dlq, other, watched)
    }
    assert marks == {
        events: ("events", True),
        dlq: ("dead letters", False),
        watched: (None, True),
        other: (None, False),
    }
    assert listed[other]["records"] == 2 and listed[other]["internal"] is False
    assert listed[other]["partitions"][1] == {"partition": 1, "start": 0, "end": 2}
    assert all(topic["internal"] == topic["name"].startswith("__") for topic in body["topics"])


def test_a_group_with_no_committed_offset_is_shown_as_empty_with_no_lag_made_up(
    staff_client,
) -> None:
    topic = name("idle-topic")
    group = name("idle-group")
    asyncio.run(produce_aged(topic, {0: [0]}))
    # The broker lists the group, and answers "none" (-1) for its offset: as for
    # a group whose offsets expired while it stayed registered.
    asyncio.run(commit_as(group, {TopicPartition(topic, 0): -1}))

    body = state(staff_client)

    idle = group_named(body, group)
    assert idle["empty"] is True and idle["partitions"] == []
    assert idle["lag"] is None and idle["lag_seconds"] is None
    assert idle["lag_unknown"] == "no committed offsets: what it would read is not known"


def test_record_times_fetch_each_record_once_and_give_up_after_their_budget(topics) -> None:
    topic = name("times")
    asyncio.run(produce_aged(topic, {0: [3 * MINUTE_MS, 2 * MINUTE_MS], 1: [MINUTE_MS]}))
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    wanted = {(tp0, 0), (tp0, 1), (tp1, 0)}
    times = RecordTimes()

    async def scenario() -> tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any], int]:
        consumer = kafka.make_consumer(group_id=None)
        await consumer.start()
        fetches = 0
        getmany = consumer.getmany

        async def counted(*partitions: TopicPartition, **options: Any) -> Any:
            nonlocal fetches
            fetches += 1
            return await getmany(*partitions, **options)

        consumer.getmany = counted
        try:
            first = await times.read(consumer, wanted, cluster="c1", budget=5)
            counted_first, fetches = fetches, 0
            again = await times.read(consumer, wanted, cluster="c1", budget=5)
            assert fetches == 0, "records whose time is known were fetched again"
            # Another cluster's records at the same offsets are other records;
            # and a read with no time left answers why.
            other = await times.read(consumer, {(tp1, 0)}, cluster="c2", budget=0)
            return first, again, other, counted_first
        finally:
            await consumer.stop()

    first, again, other, fetches = asyncio.run(scenario())

    now_ms = time.time() * 1000
    assert set(first) == wanted and first == again
    assert 3 * MINUTE_MS <= now_ms - first[(tp0, 0)] < 3.5 * MINUTE_MS
    assert 2 * MINUTE_MS <= now_ms - first[(tp0, 1)] < 2.5 * MINUTE_MS
    assert MINUTE_MS <= now_ms - first[(tp1, 0)] < 1.5 * MINUTE_MS
    assert fetches >= 2  # partition 0 is wanted at two offsets: two rounds
    assert other == {(tp1, 0): "not read within 0 s"}


def test_rounds_take_one_offset_per_partition_lowest_first() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    assert list(_rounds({(a, 7), (a, 3), (b, 5)})) == [{a: 3, b: 5}, {a: 7}]
    assert list(_rounds(set())) == []


def test_where_another_services_group_would_start_is_not_guessed() -> None:
    tp = TopicPartition("t", 0)
    holding = Offsets(start=4, end=9)

    theirs = lag.partition_lag(tp, holding, None, site=False)
    ours = lag.partition_lag(tp, holding, None, site=True)

    assert theirs["lag"] is None
    assert (
        theirs["lag_unknown"] == "no committed offset: where this group starts is its own setting"
    )
    assert ours["lag"] == 5  # the site's workers start at the earliest record
    assert lag.partition_lag(tp, Offsets(4, 4), None, site=False)["lag"] == 0


def test_a_lag_in_time_not_read_makes_the_groups_unknown_and_says_why() -> None:
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    rows = [
        lag.partition_lag(tp0, Offsets(0, 5), 2, site=False),
        lag.partition_lag(tp1, Offsets(0, 3), 1, site=False),
    ]
    now_ms = 1_000_000
    known = {(tp0, 2): now_ms - 90_000, (tp1, 1): "not read within 0.8 s"}
    lag.add_lag_time(rows[0], 2, known, now_ms)
    lag.add_lag_time(rows[1], 1, known, now_ms)

    report = lag.group_report("seed", rows, site=False)

    assert rows[0]["lag_seconds"] == 90.0
    assert report["lag"] == 5
    assert report["lag_seconds"] is None
    assert report["lag_seconds_unknown"] == "t partition 1: not read within 0.8 s"
