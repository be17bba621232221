"""Another service's producer and consumer group, written with confluent-kafka
(librdkafka), on the session's broker beside the running site: the producer
writes to a topic of its own, the group commits part of what it read and
stops, and the dashboard's consumer groups panel lists the group with its lag
on each partition, in records and in time.

The embedded broker reports the end of a partition as the first offset of
its last batch plus one, wrong once a producer writes several records in one
batch (as librdkafka does by default), and the dashboard shows that end as it
is: the panel's test writes one record a batch, and the last test, expected
to fail until the dashboard reads the exact end, shows the fault."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.clients.dashboard import wait_for_groups
from tests.support.stack import Stack, signed_in_client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MINUTE_MS = 60_000
# The broker holds a new member's join for half the group's session timeout.
SESSION_TIMEOUT_MS = 6000


def create_topic(servers: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": servers})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=10)


def produce(
    servers: str, topic: str, counts: dict[int, int], now_ms: int, *, batched: bool = False
) -> None:
    """``counts[p]`` records to each partition ``p``; the record at offset k
    written (by its timestamp) 10 - k minutes before ``now_ms``. One record a
    batch unless ``batched`` (then those of a partition go in one batch)."""
    batching = {"linger.ms": 200} if batched else {"batch.num.messages": 1}
    producer = Producer({"bootstrap.servers": servers, "acks": "all", **batching})
    failed: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failed.append(str(error))

    for partition, count in counts.items():
        for k in range(count):
            producer.produce(
                topic,
                value=f'{{"order": {k}, "partition": {partition}}}'.encode(),
                partition=partition,
                timestamp=now_ms - (10 - k) * MINUTE_MS,
                on_delivery=delivered,
            )
    assert producer.flush(10) == 0 and failed == [], failed


def consume_and_commit(servers: str, topic: str, group: str, upto: dict[int, int]) -> None:
    """A consumer of ``group`` reads ``topic`` until it has handled the first
    ``upto[p]`` records of each partition ``p``, commits that, and stops."""
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
        }
    )
    try:
        consumer.subscribe([topic])
        handled = dict.fromkeys(upto, 0)
        deadline = time.monotonic() + 20
        while any(handled[p] < upto[p] for p in upto):
            assert time.monotonic() < deadline, f"read only {handled} of {upto}"
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            partition, offset = message.partition(), message.offset()
            handled[partition] = max(handled[partition], min(offset + 1, upto[partition]))
        done = [TopicPartition(topic, p, n) for p, n in upto.items()]
        consumer.commit(offsets=done, asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, p) for p in upto], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == upto
    finally:
        consumer.close()


def test_another_services_group_is_listed_with_its_lag_in_records_and_in_time(
    stack: Stack,
) -> None:
    servers = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    topic, group = f"shop-orders-{uuid.uuid4().hex[:8]}", f"shop-billing-{uuid.uuid4().hex[:8]}"
    create_topic(servers, topic, partitions=2)
    produce(servers, topic, {0: 6, 1: 4}, int(time.time() * 1000))
    # It handled 3 of partition 0's six records and 1 of partition 1's four.
    consume_and_commit(servers, topic, group, {0: 3, 1: 1})

    operator = signed_in_client(stack, "shop-watcher", "a-long-pass-phrase-3", staff=True)
    state = wait_for_groups(operator, lambda groups: group in groups, timeout=15)

    found = state["groups"][group]
    assert found["site"] is False and found["empty"] is False
    assert found["topics"] == [topic]
    rows = {row["partition"]: row for row in found["partitions"]}
    assert [(r["committed"], r["end"], r["lag"]) for _, r in sorted(rows.items())] == [
        (3, 6, 3),
        (1, 4, 3),
    ]
    assert found["lag"] == 6
    # Its oldest record not handled: offset 3 of partition 0 (7 minutes old),
    # offset 1 of partition 1 (9 minutes old).
    assert 7 * 60 <= rows[0]["lag_seconds"] < 7 * 60 + 60
    assert 9 * 60 <= rows[1]["lag_seconds"] < 9 * 60 + 60
    assert found["lag_seconds"] == rows[1]["lag_seconds"]
    (shown,) = [t for t in state["topics"] if t["name"] == topic]
    assert shown["records"] == 10 and shown["role"] is None and shown["internal"] is False


def test_a_group_that_read_a_batch_of_several_records_is_shown_with_no_lag(
    stack: Stack,
) -> None:
    servers = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    topic, group = f"shop-batch-{uuid.uuid4().hex[:8]}", f"shop-all-{uuid.uuid4().hex[:8]}"
    create_topic(servers, topic, partitions=1)
    produce(servers, topic, {0: 6}, int(time.time() * 1000), batched=True)
    consume_and_commit(servers, topic, group, {0: 6})  # every record is there, and read

    operator = signed_in_client(stack, "batch-watcher", "a-long-pass-phrase-5", staff=True)
    state = wait_for_groups(operator, lambda groups: group in groups, timeout=15)

    (row,) = state["groups"][group]["partitions"]
    assert (row["committed"], row["end"], row["lag"]) == (6, 6, 0), row
    (shown,) = [t for t in state["topics"] if t["name"] == topic]
    assert shown["records"] == 6
