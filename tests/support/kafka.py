"""Records on a real broker, through the product's own client settings
(``monitor.kafka.clients``): put records on a topic, read them back, and see
what a consumer group committed.

Each helper opens its own client and stops it before returning, so a test
never leaves a connection behind. Producing waits for every acknowledgement."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from django.conf import settings

from monitor.events import signing
from monitor.events.schema import Event, encode_event
from monitor.kafka import clients as kafka


async def produce(topic: str, values: list[bytes]) -> None:
    """Send ``values`` to ``topic`` in order, spread over three keys (so over
    several partitions), creating the project's topics first if missing."""
    await kafka.ensure_topics()
    producer = kafka.make_producer()
    await producer.start()
    try:
        for index, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(index % 3).encode())
    finally:
        await producer.stop()


async def produce_events(events: list[Event], *, pause: float = 0.0) -> None:
    """Send ``events`` to the events topic as the product does (keyed by actor,
    so one actor's events stay in order, and signed with the site's key),
    ``pause`` seconds apart."""
    await kafka.ensure_topics()
    producer = kafka.make_producer()
    await producer.start()
    try:
        for event in events:
            value = encode_event(event)
            await producer.send_and_wait(
                settings.KAFKA_EVENTS_TOPIC,
                value,
                key=event["actor"].encode(),
                headers=[signing.sign(value)],
            )
            if pause:
                await asyncio.sleep(pause)
    finally:
        await producer.stop()


async def read_all(topic: str, count: int) -> list[Any]:
    """The first ``count`` records (aiokafka ``ConsumerRecord``) of ``topic``,
    read from the beginning without a group; fails after 20 s without them."""
    consumer = kafka.make_consumer(topic, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(20):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


def committed_offsets(topic: str, group: str) -> dict[int, int | None]:
    """{partition: offset} that ``group`` committed on partitions 0 to 2 of
    ``topic``; None for a partition it never committed."""

    async def read() -> dict[int, int | None]:
        consumer = kafka.make_consumer(group_id=group)
        await consumer.start()
        try:
            return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(3)}
        finally:
            await consumer.stop()

    return asyncio.run(read())


async def commit_as(group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group``, as any service's consumer would."""
    consumer = kafka.make_consumer(group_id=group)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()
