"""The analytics worker against the real broker: durable work, then commit;
poison goes to the dead-letter topic with its reason, and the stream goes on."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from django.db import OperationalError

from monitor.events.schema import encode_event
from monitor.kafka import clients as kafka
from monitor.models import AnalyticsEvent, DeadLetter, EventMinuteCount
from monitor.workers.analytics import AnalyticsWorker
from monitor.workers.base import FinishBatchOnRevoke
from monitor.workers.records import event_key
from tests.support.events import signup_event
from tests.support.kafka import committed_offsets, produce, read_all
from tests.support.workers import IsolatedWorker, run_until_consumed

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_records_valid_events_and_dead_letters_poison(topics) -> None:
    topic, dlq = topics
    valid = [signup_event(n) for n in range(20)]
    # A CloudEvent of a type the site does not know is no poison: it is counted.
    unknown = dict(signup_event(99), type="photo.teleported")
    poison = {
        b"{not json": "not JSON",
        b"\xff\xfe\x00": "not UTF-8",
        json.dumps({"specversion": "1.0"}).encode(): "missing",
    }
    values = [encode_event(event) for event in valid[:10]] + list(poison)
    values += [encode_event(event) for event in [*valid[10:], unknown]]
    asyncio.run(produce(topic, values))
    committed = asyncio.run(run_until_consumed(IsolatedWorker(), topic, len(values)))

    stored = set(AnalyticsEvent.objects.values_list("event_id", flat=True))
    # Unsigned, so none is the site's own: each is stored under its unverified key.
    assert stored == {event_key(event, verified=False) for event in [*valid, unknown]}
    assert sum(EventMinuteCount.objects.values_list("count", flat=True)) == 21
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


async def first_batch(worker: AnalyticsWorker) -> dict:
    async with asyncio.timeout(20):
        batch: dict = {}
        while not batch:
            batch = await worker.consumer.getmany(timeout_ms=200)
        return batch


def test_a_cluster_replaced_while_the_batch_is_written_is_not_committed_to(
    topics, monkeypatch
) -> None:
    topic, _ = topics
    asyncio.run(produce(topic, [encode_event(signup_event(n)) for n in range(5)]))
    written = threading.Event()

    class SlowCheck(IsolatedWorker):
        def consume_batch(self, records):
            super().consume_batch(records)
            written.set()

    async def replaced_once_the_batch_is_written(client) -> str:
        # The cluster id asked for alongside the write answers only after it.
        assert await asyncio.to_thread(written.wait, 10)
        return "a-new-empty-cluster"

    worker = SlowCheck()

    async def run() -> None:
        assert await worker.start()
        monkeypatch.setattr(kafka, "fetch_cluster_id", replaced_once_the_batch_is_written)
        try:
            batch = await first_batch(worker)
            with pytest.raises(kafka.BrokerReplaced):
                await worker.handle(batch)
        finally:
            await worker.close()

    asyncio.run(run())
    assert written.is_set()
    assert all(offset in (None, 0) for offset in committed_offsets(topic, worker.group_id).values())


def test_no_batch_read_after_a_cluster_change_is_committed(topics, settings, monkeypatch) -> None:
    topic, _ = topics
    settings.ANALYTICS_BATCH_SIZE = 2
    asyncio.run(produce(topic, [encode_event(signup_event(n)) for n in range(12)]))
    committed: list[int] = []

    class Counting(IsolatedWorker):
        async def commit(self, batch):
            await super().commit(batch)
            committed.append(sum(len(records) for records in batch.values()))

    worker = Counting()
    real_fetch = kafka.fetch_cluster_id
    checks = 0

    async def replaced_from_the_third_check(client) -> str | None:
        nonlocal checks
        checks += 1
        return await real_fetch(client) if checks <= 2 else "a-new-empty-cluster"

    async def run() -> None:
        assert await worker.start()
        monkeypatch.setattr(kafka, "fetch_cluster_id", replaced_from_the_third_check)
        try:
            async with asyncio.timeout(30):
                with pytest.raises(kafka.BrokerReplaced):
                    await worker.consume()
        finally:
            await worker.close()

    asyncio.run(run())
    assert len(committed) == 2
    offsets = committed_offsets(topic, worker.group_id)
    assert sum(offset or 0 for offset in offsets.values()) == sum(committed)


def test_a_failed_batch_ends_the_loop_even_if_no_record_follows(topics, monkeypatch) -> None:
    topic, _ = topics
    asyncio.run(produce(topic, [encode_event(signup_event(n)) for n in range(3)]))

    async def replaced(client) -> str:
        return "a-new-empty-cluster"

    worker = IsolatedWorker()

    async def run() -> None:
        assert await worker.start()
        monkeypatch.setattr(kafka, "fetch_cluster_id", replaced)
        try:
            async with asyncio.timeout(15):
                with pytest.raises(kafka.BrokerReplaced):
                    await worker.consume()
        finally:
            await worker.close()

    asyncio.run(run())
    assert all(offset in (None, 0) for offset in committed_offsets(topic, worker.group_id).values())


def test_no_batch_is_committed_after_one_that_could_not_be_made_durable(topics, settings) -> None:
    topic, _ = topics
    settings.ANALYTICS_BATCH_SIZE = 2
    asyncio.run(produce(topic, [encode_event(signup_event(n)) for n in range(12)]))
    next_batch_split = threading.Event()

    class DownOnce(IsolatedWorker):
        loop: asyncio.AbstractEventLoop
        splits = 0
        writes = 0

        def split(self, batch):
            self.splits += 1
            if self.splits == 2:
                next_batch_split.set()
            return super().split(batch)

        def consume_batch(self, records):
            self.writes += 1
            if self.writes == 1:
                # The next batch is validated, and waits for this one, when a
                # SIGTERM arrives while the database is down.
                assert next_batch_split.wait(10)
                stopped = threading.Event()

                def sigterm() -> None:
                    self.request_stop()
                    stopped.set()

                self.loop.call_soon_threadsafe(sigterm)
                assert stopped.wait(10)
                raise OperationalError("database is down")
            super().consume_batch(records)

    worker = DownOnce()

    async def run() -> None:
        worker.loop = asyncio.get_running_loop()
        assert await worker.start()
        try:
            async with asyncio.timeout(30):
                await worker.consume()
        finally:
            await worker.close()

    asyncio.run(run())
    assert worker.splits == 2
    assert worker.writes == 1  # the batch after the one not made durable is dropped
    assert all(offset in (None, 0) for offset in committed_offsets(topic, worker.group_id).values())
    assert not AnalyticsEvent.objects.exists()


def test_a_rebalance_waits_for_the_batch_in_hand() -> None:
    worker = IsolatedWorker()
    listener = FinishBatchOnRevoke(worker)
    events: list[str] = []

    async def run() -> None:
        release = asyncio.Event()

        async def batch_in_hand() -> bool:
            await release.wait()
            events.append("batch committed")
            return True

        worker.in_hand = asyncio.create_task(batch_in_hand())
        revoked = asyncio.create_task(listener.on_partitions_revoked(set()))
        await asyncio.sleep(0.1)
        assert not revoked.done()
        release.set()
        await revoked
        events.append("partitions revoked")

    asyncio.run(run())
    assert events == ["batch committed", "partitions revoked"]
