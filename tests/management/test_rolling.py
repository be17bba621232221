"""Rolling the embedded broker over: only once the site's groups have processed
everything it holds, with the same topics afterwards, positions that go on
from where the old cluster ended, and nothing an outside producer was told
was written lost, however the roll falls between its writes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError
from django.conf import settings
from pytest_django import Settings

from monitor.events.epochs import bases_of, follow_cluster, follows
from monitor.kafka import clients as kafka
from monitor.kafka.clients import ClusterWatch
from monitor.kafka.embedded import EmbeddedBroker, free_port
from monitor.kafka.front import BrokerFront
from monitor.management.rolling import Roller, RollPolicy

pytestmark = [pytest.mark.timeout(180), pytest.mark.django_db(transaction=True)]

GROUP = "rolling-test-group"


@pytest.fixture
def fronted(settings: Settings) -> Iterator[tuple[EmbeddedBroker, int]]:
    """A broker of its own behind a front's port, which the settings name."""
    port = free_port()
    broker = EmbeddedBroker(advertised=f"127.0.0.1:{port}").start()
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{port}"
    try:
        yield broker, port
    finally:
        broker.stop()


@asynccontextmanager
async def roller_for(
    broker: EmbeddedBroker, port: int, roll_records: int, check_seconds: float = 0.2
) -> AsyncIterator[Roller]:
    front = BrokerFront("127.0.0.1", port, broker.host, broker.port)
    await front.start()
    await kafka.ensure_topics()
    policy = RollPolicy(
        roll_records=roll_records, roll_mb=100_000, groups=(GROUP,), check_seconds=check_seconds
    )
    roller = Roller(broker, front, policy)
    stop = asyncio.Event()
    task = asyncio.create_task(roller.run(stop))
    try:
        yield roller
    finally:
        stop.set()
        await task
        await front.stop()


class Group:
    """A consumer group of the site's: reads the events topic, commits what it read."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """As the site's workers do (monitor.workers.base): a batch read from a new
        cluster is dropped, and reading starts over there from its beginning."""
        consumer = kafka.make_consumer(
            settings.KAFKA_EVENTS_TOPIC, group_id=GROUP, session_timeout_ms=6000
        )
        watch = ClusterWatch()
        await consumer.start()
        try:
            await watch.join(consumer)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                if batch and await watch.moved(consumer):
                    for tp in consumer.assignment():
                        committed = await consumer.committed(tp)
                        if committed is None:
                            await consumer.seek_to_beginning(tp)
                        else:
                            consumer.seek(tp, committed)
                    continue
                self.values += [r.value for records in batch.values() for r in records]
                if batch:
                    with contextlib.suppress(CommitFailedError):  # rejoining: read again
                        await consumer.commit()
        finally:
            await kafka.stop_quietly(consumer, timeout=2)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def produce(values: list[bytes], pause: float = 0.0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, linger_ms=0)
    await producer.start()
    try:
        for value in values:
            await (await producer.send(settings.KAFKA_EVENTS_TOPIC, value, key=value[-1:]))
            if pause:
                await asyncio.sleep(pause)
    finally:
        await producer.stop()


async def eventually(condition: object, timeout: float, message: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, message
        await asyncio.sleep(0.1)


def test_it_rolls_over_once_the_groups_are_done_and_positions_go_on(
    fronted: tuple[EmbeddedBroker, int],
) -> None:
    broker, port = fronted
    first_cluster = broker.cluster_id

    async def scenario() -> None:
        async with roller_for(broker, port, roll_records=20) as roller:
            await kafka.ensure_topics_with({"orders": 2})  # another service's topic
            values = [b"event %d" % n for n in range(90)]
            await produce(values)
            await asyncio.sleep(1.5)
            assert roller.rolls == 0, "rolled over before the group had read anything"
            group = Group()
            group.start()
            await eventually(lambda: roller.rolls >= 1, 30, "never rolled over")
            await eventually(lambda: len(group.values) >= 90, 30, "the group lost events")
            await group.stop()
            assert sorted(group.values) == sorted(values)
            topics = await roller._topics()
            assert topics["orders"] == 2
            assert topics[settings.KAFKA_EVENTS_TOPIC] == settings.KAFKA_TOPIC_PARTITIONS

    asyncio.run(scenario())
    assert broker.cluster_id != first_cluster
    assert follows(broker.cluster_id, first_cluster)
    bases = bases_of(broker.cluster_id)[settings.KAFKA_EVENTS_TOPIC]
    assert sum(bases.values()) == 90  # every record of the first cluster, by partition


def test_positions_go_on_across_a_roll_over(fronted: tuple[EmbeddedBroker, int]) -> None:
    broker, port = fronted

    async def scenario() -> tuple[str | None, dict[int, list[int]]]:
        async with roller_for(broker, port, roll_records=10) as roller:
            group = Group()
            group.start()
            await produce([b"before %d" % n for n in range(40)])
            await eventually(lambda: roller.rolls >= 1, 30, "never rolled over")
            await produce([b"after %d" % n for n in range(40)])
            await eventually(lambda: len(group.values) >= 80, 30, "the group lost events")
            await group.stop()
            return await read_positions()

    async def read_positions() -> tuple[str | None, dict[int, list[int]]]:
        """The cluster read, and per partition where its log begins, then each
        record's position."""
        consumer = kafka.make_consumer(group_id=None, shifted=True)
        await consumer.start()
        try:
            watch = ClusterWatch()
            await watch.join(consumer)
            await follow_cluster(consumer, watch)
            topic = settings.KAFKA_EVENTS_TOPIC
            tps = [TopicPartition(topic, p) for p in range(settings.KAFKA_TOPIC_PARTITIONS)]
            consumer.assign(tps)
            begins = await consumer.beginning_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            seen: dict[int, list[int]] = {tp.partition: [begins[tp]] for tp in tps}
            for _ in range(20):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        seen[record.partition].append(record.offset)
            return watch.cluster_id, seen
        finally:
            await consumer.stop()

    cluster, seen = asyncio.run(scenario())
    bases = bases_of(cluster)[settings.KAFKA_EVENTS_TOPIC]
    assert bases, "read a cluster that did not follow another"
    for partition, (begin, *offsets) in seen.items():
        assert begin == bases[partition]  # the new cluster starts where the old ended
        assert offsets == list(range(begin, begin + len(offsets)))  # and goes on by one


def test_no_acknowledged_write_is_lost_however_the_roll_falls(
    fronted: tuple[EmbeddedBroker, int],
) -> None:
    broker, port = fronted
    count = 1000

    async def scenario() -> tuple[int, list[bytes], list[bytes]]:
        async with roller_for(broker, port, roll_records=40, check_seconds=0.1) as roller:
            group = Group()
            group.start()
            acknowledged: list[bytes] = []
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, linger_ms=5
            )
            await producer.start()
            try:
                for n in range(count):
                    value = b"steady %d" % n
                    delivery = await producer.send(settings.KAFKA_EVENTS_TOPIC, value)
                    delivery.add_done_callback(
                        lambda done, value=value: (
                            acknowledged.append(value) if not done.exception() else None
                        )
                    )
                    await asyncio.sleep(0.01)
                await producer.flush()
            finally:
                await producer.stop()
            await eventually(
                lambda: set(acknowledged) <= set(group.values),
                60,
                f"acknowledged, never read: {len(set(acknowledged) - set(group.values))}"
                f" of {len(acknowledged)}, {roller.rolls} roll-overs",
            )
            await group.stop()
            return roller.rolls, acknowledged, group.values

    rolls, acknowledged, read = asyncio.run(scenario())
    assert rolls >= 2, rolls
    assert len(acknowledged) == count
    assert set(read) == set(acknowledged)


def test_a_group_that_is_behind_holds_the_roll_back(fronted: tuple[EmbeddedBroker, int]) -> None:
    broker, port = fronted
    first_cluster = broker.cluster_id

    async def scenario() -> None:
        async with roller_for(broker, port, roll_records=5) as roller:
            await produce([b"unread %d" % n for n in range(30)])
            for _ in itertools.repeat(None, 15):
                await asyncio.sleep(0.2)
                assert roller.rolls == 0
            assert await roller.behind(await roller.ends(exact=True)) == 30

    asyncio.run(scenario())
    assert broker.cluster_id == first_cluster
