"""The analytics worker against the real broker: durable work, then commit;
poison goes to the dead-letter topic with its reason, and the stream goes on."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiokafka import TopicPartition
from django.db import OperationalError

from monitor import kafka
from monitor.events import encode_event
from monitor.models import AnalyticsEvent, DeadLetter, EventMinuteCount
from monitor.workers import AnalyticsWorker

from .conftest import signup_event

pytestmark = pytest.mark.django_db(transaction=True)


class IsolatedWorker(AnalyticsWorker):
    group_id = f"analytics-test-{uuid.uuid4().hex[:8]}"


async def produce(topic: str, values: list[bytes]) -> None:
    await kafka.ensure_topics()
    producer = kafka.make_producer()
    await producer.start()
    try:
        for index, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(index % 3).encode())
    finally:
        await producer.stop()


async def run_until_consumed(worker: AnalyticsWorker, topic: str, count: int) -> dict:
    """Drive the worker's steps until ``count`` records were handled; return committed offsets."""
    assert await worker.start()
    try:
        handled = 0
        async with asyncio.timeout(30):
            while handled < count:
                batch = await worker.consumer.getmany(timeout_ms=200)
                if batch:
                    await worker.handle(batch)
                    handled += sum(len(records) for records in batch.values())
        partitions = worker.consumer.partitions_for_topic(topic)
        return {p: await worker.consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await worker.close()


async def read_all(topic: str, count: int) -> list:
    consumer = kafka.make_consumer(topic, group_id=None)
    await consumer.start()
    records = []
    try:
        async with asyncio.timeout(20):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


def test_it_records_valid_events_and_dead_letters_poison(topics) -> None:
    topic, dlq = topics
    valid = [signup_event(n) for n in range(20)]
    unknown = dict(signup_event(99), type="photo.teleported")
    poison = {
        b"{not json": "not JSON",
        b"\xff\xfe\x00": "not UTF-8",
        encode_event(unknown): "unknown event type",
        json.dumps({"specversion": "1.0"}).encode(): "missing",
    }
    values = [encode_event(event) for event in valid[:10]] + list(poison)
    values += [encode_event(event) for event in valid[10:]]
    asyncio.run(produce(topic, values))
    committed = asyncio.run(run_until_consumed(IsolatedWorker(), topic, len(values)))

    stored = set(AnalyticsEvent.objects.values_list("event_id", flat=True))
    assert stored == {uuid.UUID(event["id"]) for event in valid}
    assert sum(EventMinuteCount.objects.values_list("count", flat=True)) == 20
    # Every record, poison included, is done with.
    assert sum(offset or 0 for offset in committed.values()) == len(values)

    dead = asyncio.run(read_all(dlq, len(poison)))
    by_value = {record.value: dict(record.headers) for record in dead}
    assert set(by_value) == set(poison)
    for value, reason_word in poison.items():
        headers = by_value[value]
        assert reason_word in headers["dlq.reason"].decode()
        assert headers["dlq.topic"].decode() == topic
        assert int(headers["dlq.offset"]) >= 0


def committed_offsets(topic: str, group: str) -> dict:
    async def read() -> dict:
        consumer = kafka.make_consumer(group_id=group)
        await consumer.start()
        try:
            return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(3)}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_it_retries_while_the_database_is_down_then_commits(topics, settings) -> None:
    topic, _ = topics
    settings.WORKER_DB_RETRY_MAX_SECONDS = 1
    asyncio.run(produce(topic, [encode_event(signup_event(n)) for n in range(5)]))
    attempts = []

    class FlakyDatabase(IsolatedWorker):
        def consume_batch(self, records):
            attempts.append(len(records))
            if len(attempts) <= 3:
                raise OperationalError("database is down")
            super().consume_batch(records)

    asyncio.run(run_until_consumed(FlakyDatabase(), topic, 5))
    assert len(attempts) >= 4
    assert AnalyticsEvent.objects.count() == 5
    assert sum(o or 0 for o in committed_offsets(topic, FlakyDatabase.group_id).values()) == 5
    assert not DeadLetter.objects.exists()  # unavailable is not refused


def test_a_stop_while_the_database_is_down_commits_nothing(topics) -> None:
    topic, _ = topics
    asyncio.run(produce(topic, [encode_event(signup_event(n)) for n in range(5)]))

    class DownDatabase(IsolatedWorker):
        def consume_batch(self, records):
            self.request_stop()  # a SIGTERM arrives while the database is down
            raise OperationalError("database is down")

    worker = DownDatabase()

    async def run() -> None:
        assert await worker.start()
        try:
            async with asyncio.timeout(20):
                batch = {}
                while not batch:
                    batch = await worker.consumer.getmany(timeout_ms=200)
                await worker.handle(batch)
        finally:
            await worker.close()

    asyncio.run(run())
    assert all(offset in (None, 0) for offset in committed_offsets(topic, worker.group_id).values())
    assert not AnalyticsEvent.objects.exists()

    # A healthy worker in the same group then records all five, once.
    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 5))
    assert AnalyticsEvent.objects.count() == 5
