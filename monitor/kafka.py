"""Kafka clients with safe settings, and topic set-up.

aiokafka's defaults favour throughput over safety (``acks=1``, automatic
offset commits); every client eventsite makes comes from here, with those
choices made explicitly.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)


def bootstrap_servers() -> str:
    servers = settings.KAFKA_BOOTSTRAP_SERVERS
    if not servers:
        raise ImproperlyConfigured(
            "KAFKA_BOOTSTRAP_SERVERS is not set; `manage.py runstack` starts an "
            "embedded broker and sets it for the processes it starts"
        )
    return servers


def connection_options() -> dict[str, Any]:
    """Options shared by every producer, consumer and admin client."""
    return {"bootstrap_servers": bootstrap_servers(), "client_id": "eventsite"}


def make_producer(**overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        **connection_options(),
        "acks": "all",
        "enable_idempotence": settings.KAFKA_ENABLE_IDEMPOTENCE,
        "linger_ms": settings.KAFKA_LINGER_MS,
        "max_request_size": settings.MAX_EVENT_BYTES + 64 * 1024,
        "request_timeout_ms": 10_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(*topics: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that never commits on its own: callers commit after durable work."""
    options: dict[str, Any] = {
        **connection_options(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 100,
        "max_partition_fetch_bytes": settings.KAFKA_MAX_FETCH_BYTES,
        "fetch_max_bytes": settings.KAFKA_MAX_FETCH_BYTES * 2,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def group_lag(group_id: str, topic: str) -> dict[int, dict[str, int | None]]:
    """Per partition: the log end offset, the group's committed offset and the lag.

    Uses a consumer's ``committed()`` (the embedded broker does not answer the
    admin client's ListConsumerGroupOffsets). A partition the group never
    committed has ``committed`` None and its whole log as lag.
    """
    consumer = make_consumer(group_id=group_id)
    await consumer.start()
    try:
        partitions = await wait_for_topic(consumer, topic, timeout=10)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        report: dict[int, dict[str, int | None]] = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            report[tp.partition] = {
                "end": ends[tp],
                "committed": committed,
                "lag": ends[tp] - (committed or 0),
            }
        return report
    finally:
        await consumer.stop()


async def ensure_topics() -> None:
    """Create the events topic and its dead-letter topic if they are missing."""
    admin = AIOKafkaAdminClient(**connection_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.KAFKA_EVENTS_TOPIC, settings.KAFKA_DLQ_TOPIC]
        missing = [
            NewTopic(
                name,
                num_partitions=settings.KAFKA_TOPIC_PARTITIONS,
                replication_factor=settings.KAFKA_TOPIC_REPLICATION,
            )
            for name in wanted
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
                logger.info("created topics %s", [topic.name for topic in missing])
            except TopicAlreadyExistsError:
                pass  # another process created them first
    finally:
        await admin.close()


async def wait_for_topic(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> set[int]:
    """The topic's partition ids, once the consumer's metadata knows them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return partitions
        if loop.time() > deadline:
            raise TimeoutError(f"topic {topic!r} has no partitions after {timeout}s")
        await consumer.topics()  # refreshes the cluster metadata
        await asyncio.sleep(0.1)


async def probe_broker(timeout: float = 3.0) -> None:
    """Raise if the broker does not answer a metadata request within ``timeout``."""
    client = AIOKafkaClient(**connection_options(), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
    finally:
        await client.close()
