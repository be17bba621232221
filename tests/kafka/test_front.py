"""The embedded broker's front: every byte passes both ways, writes can be held
(and are then neither written nor acknowledged), and dropping the connections
makes clients send what was held again, exactly once."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from monitor.kafka.embedded import EmbeddedBroker, free_port
from monitor.kafka.front import BrokerFront

pytestmark = pytest.mark.timeout(120)

TOPICS = ("through", "held", "dropped", "after-garbage")


@pytest.fixture
def fronted() -> Iterator[tuple[EmbeddedBroker, int]]:
    """A broker of its own that advertises a front's port (the front is the test's)."""
    port = free_port()
    broker = EmbeddedBroker(advertised=f"127.0.0.1:{port}").start()
    try:
        yield broker, port
    finally:
        broker.stop()


@asynccontextmanager
async def front_for(broker: EmbeddedBroker, port: int) -> AsyncIterator[BrokerFront]:
    """The front, with the tests' topics made through it."""
    front = BrokerFront("127.0.0.1", port, broker.host, broker.port)
    await front.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1) for name in TOPICS])
    finally:
        await admin.close()
    try:
        yield front
    finally:
        await front.stop()


@asynccontextmanager
async def producer_at(port: int) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer that sends each record at once, through the front."""
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", linger_ms=0)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def read_values(address: str, topic: str, count: int, timeout: float = 20) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=address, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(values) < count and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            values += [record.value for records in batch.values() for record in records]
        # Anything more would be a record written twice.
        batch = await consumer.getmany(timeout_ms=500)
        values += [record.value for records in batch.values() for record in records]
    finally:
        await consumer.stop()
    return values


def test_records_pass_through_the_front_both_ways(fronted: tuple[EmbeddedBroker, int]) -> None:
    broker, port = fronted

    async def scenario() -> list[bytes]:
        async with front_for(broker, port) as front, producer_at(port) as producer:
            for n in range(200):
                await producer.send("through", f"record {n}".encode() * 50)
            await producer.flush()
            assert front.connections >= 1
            return await read_values(f"127.0.0.1:{port}", "through", 200)

    values = asyncio.run(scenario())
    assert sorted(values) == sorted(f"record {n}".encode() * 50 for n in range(200))


def test_held_writes_are_not_acknowledged_until_let_go(fronted: tuple[EmbeddedBroker, int]) -> None:
    broker, port = fronted

    async def scenario() -> None:
        address = f"127.0.0.1:{port}"
        async with front_for(broker, port) as front, producer_at(port) as producer:
            await (await producer.send("held", b"before"))
            async with front.hold_writes():
                assert await front.writes_settled(2.0)
                delivery = await producer.send("held", b"while held")
                await asyncio.sleep(1.0)
                assert not delivery.done(), "a held write was acknowledged"
                # Everything but writes still flows: reading, metadata.
                assert await read_values(address, "held", 1, timeout=5) == [b"before"]
                assert await end_offset(address, "held") == 1
            await asyncio.wait_for(delivery, 10)
            assert sorted(await read_values(address, "held", 2)) == [b"before", b"while held"]

    asyncio.run(scenario())


def test_dropped_connections_send_held_writes_again_exactly_once(
    fronted: tuple[EmbeddedBroker, int],
) -> None:
    broker, port = fronted

    async def scenario() -> None:
        address = f"127.0.0.1:{port}"
        async with front_for(broker, port) as front, producer_at(port) as producer:
            await (await producer.send("dropped", b"first"))
            async with front.hold_writes():
                deliveries = [await producer.send("dropped", b"held %d" % n) for n in range(5)]
                await asyncio.sleep(0.5)
                assert not any(delivery.done() for delivery in deliveries)
                front.drop_all()
                assert front.connections == 0
                await asyncio.sleep(0.5)
            await asyncio.wait_for(asyncio.gather(*deliveries), 20)
            values = await read_values(address, "dropped", 6)
            assert sorted(values) == sorted([b"first", *(b"held %d" % n for n in range(5))])

    asyncio.run(scenario())


def test_bytes_that_are_not_kafka_close_only_their_connection(
    fronted: tuple[EmbeddedBroker, int],
) -> None:
    broker, port = fronted

    async def scenario() -> None:
        async with front_for(broker, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(struct.pack(">i", -5) + b"garbage")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the front
            writer.close()
            async with producer_at(port) as producer:  # the others are served still
                await (await producer.send("after-garbage", b"fine"))

    asyncio.run(scenario())


def test_a_client_connecting_while_the_broker_is_down_is_closed_not_hung(
    fronted: tuple[EmbeddedBroker, int],
) -> None:
    broker, port = fronted

    async def scenario() -> None:
        async with front_for(broker, port):
            await asyncio.to_thread(broker.stop)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()

    asyncio.run(scenario())
    with socket.socket() as probe:  # the front let go of its port
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


async def end_offset(address: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=address, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        ends = await consumer.end_offsets([tp])
        return int(ends[tp])
    finally:
        await consumer.stop()
