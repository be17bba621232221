"""The naive analytics consumer, as the baseline: one save() and one offset commit per event.

Run as ``python -m bench.naive_analytics --topic T --group G --seconds S --limit N``
with the stack's environment. It reads the topic from the beginning in its
own consumer group, and for each record: validates it, saves one
``AnalyticsEvent`` (autocommit: one transaction per row) and commits that
record's offset. It stops after ``--limit`` events or ``--seconds``, and prints
one JSON line: events processed and the seconds from the first record read
to the last commit (and its CPU seconds). It keeps no per-minute counts (the product does), so it
is measured doing less work than the product.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--limit", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")
    import django

    django.setup()
    print(json.dumps(asyncio.run(consume(args.topic, args.group, args.seconds, args.limit))))


async def consume(topic: str, group: str, seconds: float, limit: int) -> dict[str, float]:
    from aiokafka import TopicPartition
    from asgiref.sync import sync_to_async
    from django.conf import settings

    from monitor.events.schema import parse_event, parse_time
    from monitor.kafka import clients as kafka
    from monitor.models import AnalyticsEvent

    def save(event: dict, record) -> None:  # type: ignore[no-untyped-def]
        AnalyticsEvent.objects.create(
            event_id=event["id"],
            type=event["type"],
            source=event["source"],
            subject=event["subject"],
            actor=event["actor"],
            time=parse_time(event["time"]),
            data=event["data"],
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )

    consumer = kafka.make_consumer(topic, group_id=group, auto_offset_reset="earliest")
    await consumer.start()
    processed = 0
    started = 0.0
    try:
        while processed < limit:
            record = await asyncio.wait_for(consumer.getone(), 30)
            if not started:
                started = time.perf_counter()
            event = parse_event(record.value, max_bytes=settings.MAX_EVENT_BYTES)
            await sync_to_async(save)(event, record)
            tp = TopicPartition(record.topic, record.partition)
            await consumer.commit({tp: record.offset + 1})
            processed += 1
            if time.perf_counter() - started >= seconds:
                break
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"processed": processed, "seconds": elapsed, "cpu_seconds": time.process_time()}


if __name__ == "__main__":
    main()
