"""Sending outbox rows to Kafka: the step the eager publisher and the relay share.

:func:`publish_rows` sends rows with a producer the caller owns and returns
the event ids the broker acknowledged; the caller marks those sent (in the
outbox table), and the others stay due for the relay. Before a producer's
first send, and again once the broker turned out to be a new cluster, it
makes sure the topics exist there.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

from aiokafka import AIOKafkaProducer
from asgiref.sync import sync_to_async
from django.conf import settings

from monitor.events import outbox, signing
from monitor.kafka import clients as kafka
from monitor.models import OutboxEvent

logger = logging.getLogger(__name__)

# How long making sure of the topics may take before the send counts as failed.
TOPIC_CHECK_TIMEOUT_SECONDS = 10.0


@dataclass
class _ProducerCluster:
    """The cluster one producer sends to, and whether the topics were made
    sure of on that cluster."""

    watch: kafka.ClusterWatch = field(default_factory=kafka.ClusterWatch)
    topics_ready: bool = False


_clusters: WeakKeyDictionary[AIOKafkaProducer, _ProducerCluster] = WeakKeyDictionary()


async def publish_rows(producer: AIOKafkaProducer, rows: list[OutboxEvent]) -> list[str]:
    """Send rows and wait for every acknowledgement; return the acknowledged event ids.

    Records are sent concurrently (the producer batches them), each keyed by
    its row's key; a failure of one leaves the others acknowledged. Rows not
    acknowledged get a failed attempt recorded, through the caller's
    database thread (so inside the caller's transaction, if it holds one).
    Acknowledgements that came from a broker replaced during the send are
    not trusted: those rows count as failed too. Raises if the broker cannot
    be reached to make sure of the topics, or a record cannot be queued.
    """
    cluster = await _ready_to_send(producer, rows)
    acknowledged, failed, error = await _send_and_wait(producer, rows)
    if acknowledged and await _broker_moved(producer, cluster):
        # Sent before the broker came back empty, acknowledged after: such
        # retried batches are not reliably readable on the new cluster. Leave
        # them unsent; the relay sends them again and consumers deduplicate.
        failed, acknowledged = failed + acknowledged, []
        error = "the broker was replaced by an empty one during the send"
    if failed:
        logger.warning("%d events not acknowledged: %s", len(failed), error)
        # Thread-sensitive: the relay's claimed rows are locked by the
        # transaction open on the caller's thread.
        await sync_to_async(outbox.record_failure)(failed, error)
    return acknowledged


async def _ready_to_send(producer: AIOKafkaProducer, rows: list[OutboxEvent]) -> _ProducerCluster:
    """The producer's cluster, with the topics made sure of on it.

    The embedded broker acknowledges records for a topic that does not exist
    yet, and such records can be lost when the topic is then created; so the
    topics are created before a producer's first send, and again on a
    cluster that replaced the one they were made on (or when the cluster is
    not known).
    """
    cluster = _clusters.get(producer)
    if cluster is None:
        cluster = _clusters[producer] = _ProducerCluster()
    if cluster.topics_ready and cluster.watch.cluster_id is not None:
        return cluster
    await cluster.watch.join(producer)
    topics = {row.topic for row in rows} | {settings.KAFKA_EVENTS_TOPIC, settings.KAFKA_DLQ_TOPIC}
    await asyncio.wait_for(kafka.ensure_topics(sorted(topics)), TOPIC_CHECK_TIMEOUT_SECONDS)
    cluster.topics_ready = True
    return cluster


async def _send_and_wait(
    producer: AIOKafkaProducer, rows: list[OutboxEvent]
) -> tuple[list[str], list[str], str]:
    """(acknowledged event ids, failed event ids, the last failure's description)."""
    deliveries = []
    for row in rows:
        value = bytes(row.payload)
        delivery = await producer.send(
            row.topic, value, key=row.key.encode(), headers=[signing.sign(value)]
        )
        deliveries.append((str(row.event_id), delivery))
    acknowledged: list[str] = []
    failed: list[str] = []
    error = ""
    for event_id, delivery in deliveries:
        try:
            await delivery
            acknowledged.append(event_id)
        except Exception as exc:  # noqa: BLE001 - any send failure leaves the row unsent
            failed.append(event_id)
            error = f"{type(exc).__name__}: {exc}"
    return acknowledged, failed, error


async def _broker_moved(producer: AIOKafkaProducer, cluster: _ProducerCluster) -> bool:
    """Whether the broker is now another cluster than the one the rows were
    sent to; then the topics must be made sure of again before the next send."""
    try:
        moved = await cluster.watch.moved(producer)
    except Exception:  # noqa: BLE001 - cannot tell: the acknowledgements stand
        return False
    if moved:
        cluster.topics_ready = False
    return moved
