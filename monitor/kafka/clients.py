"""Kafka clients with safe settings, topic set-up, and the cluster a client talks to.

The ground floor under every component that touches Kafka (the publisher
and relay, the workers, the live readers, the dashboard). aiokafka's
defaults favour throughput over safety (``acks=1``, automatic offset
commits); every client eventsite makes comes from here, with those choices
made explicitly, with the connection's security settings, and with
aiokafka changed so that topics are never auto-created and a broker that
came back as a new cluster can be told (:mod:`monitor.kafka.patches`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from monitor.kafka import patches
from monitor.kafka.shift import ShiftedConsumer

logger = logging.getLogger(__name__)

patches.apply()


def _inner(client: AIOKafkaConsumer | AIOKafkaProducer) -> AIOKafkaClient:
    return client.client if isinstance(client, AIOKafkaProducer) else client._client


def cluster_id(client: AIOKafkaConsumer | AIOKafkaProducer) -> str | None:
    """The cluster id from the client's latest metadata (None before the first)."""
    return patches.cluster_id_of(_inner(client).cluster)


async def fetch_cluster_id(client: AIOKafkaConsumer | AIOKafkaProducer) -> str | None:
    """Ask the broker now for its cluster id (one metadata round trip)."""
    return patches.cluster_id_of(await _inner(client).fetch_all_metadata())


def known_topics(client: AIOKafkaConsumer | AIOKafkaProducer) -> set[str]:
    """Every topic in the client's latest metadata, internal ones included."""
    return set(_inner(client).cluster.topics(exclude_internal_topics=False))


async def refresh_metadata(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Ask the broker now for the cluster metadata, so that the client knows
    topics and partitions created since its last refresh; raise if no broker answers."""
    if not await _inner(client).force_metadata_update():
        raise KafkaConnectionError("no broker answered a metadata request")


class BrokerReplaced(Exception):
    """The broker came back as a new, empty cluster: positions must start over."""


class ClusterWatch:
    """The cluster a client works with, and whether the broker is still that cluster.

    A broker that restarts empty (the embedded broker keeps nothing) comes
    back at the same address as a new cluster, whose logs start again at
    offset 0: positions, acknowledgements and topics from before mean
    nothing there. The metadata is asked for afresh each time: a client does
    not refresh it by itself when a broker restarts on the same address.
    """

    def __init__(self, cluster_id: str | None = None) -> None:
        self.cluster_id = cluster_id

    async def join(self, client: AIOKafkaConsumer | AIOKafkaProducer) -> str | None:
        """Ask the broker now which cluster it is, and watch that one."""
        self.cluster_id = await fetch_cluster_id(client)
        return self.cluster_id

    async def moved(self, client: AIOKafkaConsumer | AIOKafkaProducer) -> bool:
        """Ask the broker now; True if it is another cluster than the one
        watched, which is watched from then on. Raises if no broker answers."""
        current = await fetch_cluster_id(client)
        moved = current != self.cluster_id and None not in (current, self.cluster_id)
        self.cluster_id = current if current is not None else self.cluster_id
        return moved


async def stop_quietly(
    *clients: AIOKafkaConsumer | AIOKafkaProducer | None, timeout: float | None = None
) -> None:
    """Stop the clients (None is skipped) together, within ``timeout`` seconds if
    given. A client that fails to stop, or takes too long, is dropped all the same:
    a frozen or replaced broker must not hold up whoever is letting go of it."""
    stops = [client.stop() for client in clients if client is not None]
    if not stops:
        return
    results = asyncio.gather(*stops, return_exceptions=True)
    try:
        for result in await asyncio.wait_for(results, timeout):
            if isinstance(result, Exception):
                logger.debug("a Kafka client failed to stop: %s", result)
    except TimeoutError:
        logger.debug("Kafka clients did not stop within %ss", timeout)


def bootstrap_servers() -> str:
    servers = settings.KAFKA_BOOTSTRAP_SERVERS
    if not servers:
        raise ImproperlyConfigured(
            "KAFKA_BOOTSTRAP_SERVERS is not set; `manage.py runstack` starts an "
            "embedded broker and sets it for the processes it starts"
        )
    return servers


def security_options() -> dict[str, Any]:
    """The aiokafka keyword arguments for the ``KAFKA_SECURITY_*``, ``KAFKA_SASL_*`` and
    ``KAFKA_SSL_*`` settings (checked together when the settings load).

    ``security_protocol`` always; with SSL or SASL_SSL a new ``ssl_context`` that
    trusts ``KAFKA_SSL_CAFILE`` (the system's CAs when empty) and presents the client
    certificate if one is set; with SASL_PLAINTEXT or SASL_SSL the mechanism and the
    credentials (aiokafka names them ``sasl_plain_*`` for SCRAM too).
    """
    protocol = settings.KAFKA_SECURITY_PROTOCOL
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=settings.KAFKA_SSL_CAFILE or None,
            certfile=settings.KAFKA_SSL_CERTFILE or None,
            keyfile=settings.KAFKA_SSL_KEYFILE or None,
            # A callable, so that OpenSSL never prompts on the terminal for a key password.
            password=lambda: settings.KAFKA_SSL_KEY_PASSWORD,
        )
        # Off, the certificate must still be signed by a trusted CA; only its name is not checked.
        context.check_hostname = settings.KAFKA_SSL_CHECK_HOSTNAME
        options["ssl_context"] = context
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        options["sasl_mechanism"] = settings.KAFKA_SASL_MECHANISM
        options["sasl_plain_username"] = settings.KAFKA_SASL_USERNAME
        options["sasl_plain_password"] = settings.KAFKA_SASL_PASSWORD
    return options


def connection_options() -> dict[str, Any]:
    """Options shared by every producer, consumer and admin client: where the
    brokers are, and how to connect to them securely (:func:`security_options`)."""
    return {
        "bootstrap_servers": bootstrap_servers(),
        "client_id": "eventsite",
        **security_options(),
    }


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


def make_consumer(
    *topics: str,
    group_id: str | None,
    shifted: bool = False,
    **overrides: Any,
) -> Any:
    """A consumer that never commits on its own: callers commit after durable work.
    ``shifted``: a :class:`~monitor.kafka.shift.ShiftedConsumer`, whose offsets are
    positions on the stream."""
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
    if shifted:
        return ShiftedConsumer(*topics, **options)
    return AIOKafkaConsumer(*topics, **options)


def make_admin(**overrides: Any) -> AIOKafkaAdminClient:
    """An admin client with the connection's settings (:func:`connection_options`)."""
    return AIOKafkaAdminClient(**{**connection_options(), **overrides})


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


async def ensure_topics(names: Iterable[str] | None = None) -> None:
    """Create topics that are missing: by default the events topic and its dead-letter topic."""
    wanted = list(names or [settings.KAFKA_EVENTS_TOPIC, settings.KAFKA_DLQ_TOPIC])
    await ensure_topics_with(dict.fromkeys(wanted, settings.KAFKA_TOPIC_PARTITIONS))


async def ensure_topics_with(partitions: dict[str, int]) -> None:
    """Create the topics of ``partitions`` that are missing, each with its number of partitions."""
    admin = make_admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=count,
                replication_factor=settings.KAFKA_TOPIC_REPLICATION,
            )
            for name, count in partitions.items()
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
        partitions: set[int] | None = consumer.partitions_for_topic(topic)
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
