"""Consumer-group workers driven step by step from a test, so it decides when a
batch is read, handled and committed."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import TopicPartition

from monitor.workers.analytics import AnalyticsWorker
from monitor.workers.base import BatchWorker


class IsolatedWorker(AnalyticsWorker):
    """The analytics worker in a consumer group of this test run's own, so no
    other run's (or the product's) committed offsets are shared with it."""

    group_id = f"analytics-test-{uuid.uuid4().hex[:8]}"


async def run_until_consumed(worker: BatchWorker, topic: str, count: int) -> dict[int, int | None]:
    """Drive the worker's steps until ``count`` records were handled; return the
    offsets it committed ({partition: offset}, None where it committed none).
    Fails after 30 s; the worker is closed either way."""
    assert await worker.start()
    consumer = worker.consumer
    assert consumer is not None
    try:
        handled = 0
        async with asyncio.timeout(30):
            while handled < count:
                batch = await consumer.getmany(timeout_ms=200)
                if batch:
                    await worker.handle(batch)
                    handled += sum(len(records) for records in batch.values())
        partitions = consumer.partitions_for_topic(topic)
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        await worker.close()
