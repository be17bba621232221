"""Sending outbox rows: only acknowledgements from the cluster the rows were
sent to count, and the topics are made sure of before a producer's first send
and again on a new cluster. The broker here is a fake (a producer whose
acknowledgements the test decides, and a cluster id it sets), so that a
broker replaced in the middle of one send can be staged exactly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import transaction

from monitor.events import signing
from monitor.events.emit import emit_event
from monitor.events.sending import publish_rows
from monitor.kafka import clients as kafka
from monitor.models import OutboxEvent

pytestmark = pytest.mark.django_db(transaction=True)


class FakeBroker:
    """The cluster id the broker answers with (an exception: it does not answer),
    and the topic lists it was asked to make sure of."""

    def __init__(self) -> None:
        self.cluster: str | Exception = "cluster-1"
        self.topic_checks: list[list[str]] = []

    async def fetch_cluster_id(self, client: Any) -> str:
        if isinstance(self.cluster, Exception):
            raise self.cluster
        return self.cluster

    async def ensure_topics(self, names: list[str]) -> None:
        self.topic_checks.append(list(names))


class FakeProducer:
    """Acknowledges every record except those whose key is in ``refuse``; after
    each send, ``during_send`` (if set) runs, to change the broker meanwhile."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse
        self.during_send: Any = None
        self.sent: list[tuple[str, bytes]] = []
        self.headers: list[list[tuple[str, bytes]]] = []
        self.values: list[bytes] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key))
        self.headers.append(headers)
        self.values.append(value)
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key.decode() in self.refuse:
            delivery.set_exception(RuntimeError("not acknowledged"))
        else:
            delivery.set_result(None)
        if self.during_send is not None:
            self.during_send()
        return delivery


@pytest.fixture
def broker(monkeypatch, settings) -> FakeBroker:
    settings.KAFKA_EVENTS_TOPIC = "events"
    settings.KAFKA_DLQ_TOPIC = "events.dlq"
    fake = FakeBroker()
    monkeypatch.setattr(kafka, "fetch_cluster_id", fake.fetch_cluster_id)
    monkeypatch.setattr(kafka, "ensure_topics", fake.ensure_topics)
    return fake


def saved_rows(count: int, settings: Any) -> list[OutboxEvent]:
    settings.EVENTS_PUBLISH_EAGERLY = False
    with transaction.atomic():
        for n in range(count):
            emit_event(
                type="user.signed_up",
                subject=f"users/{n}",
                actor=str(n),
                data={"user_id": n, "username": f"user{n}"},
            )
    return list(OutboxEvent.objects.order_by("id"))


def publish(producer: FakeProducer, rows: list[OutboxEvent]) -> list[str]:
    return asyncio.run(publish_rows(producer, rows))  # type: ignore[arg-type]


def ids_of(rows: list[OutboxEvent]) -> list[str]:
    return [str(row.event_id) for row in rows]


def test_it_makes_sure_of_the_topics_before_a_producers_first_send_only(broker, settings) -> None:
    rows = saved_rows(3, settings)
    producer = FakeProducer()
    assert publish(producer, rows[:2]) == ids_of(rows[:2])
    assert publish(producer, rows[2:]) == ids_of(rows[2:])
    assert broker.topic_checks == [["events", "events.dlq"]]
    assert [key for _, key in producer.sent] == [b"0", b"1", b"2"]  # keyed by actor
    publish(FakeProducer(), rows)
    assert len(broker.topic_checks) == 2  # a new producer checks again


def test_a_failed_record_leaves_only_itself_unsent(broker, settings) -> None:
    rows = saved_rows(3, settings)
    assert publish(FakeProducer(refuse=frozenset({"1"})), rows) == ids_of([rows[0], rows[2]])
    attempts = dict(OutboxEvent.objects.values_list("key", "attempts"))
    assert attempts == {"0": 0, "1": 1, "2": 0}
    assert "not acknowledged" in OutboxEvent.objects.get(key="1").last_error


def test_every_record_sent_carries_the_site_s_signature(broker, settings) -> None:
    rows = saved_rows(3, settings)
    producer = FakeProducer()
    assert publish(producer, rows) == ids_of(rows)
    assert producer.values == [bytes(row.payload) for row in rows]
    for value, headers in zip(producer.values, producer.headers, strict=True):
        assert signing.check(value, headers) is None
        assert signing.check(value + b" ", headers) == "signature does not match"


def test_acknowledgements_from_a_broker_replaced_during_the_send_do_not_count(
    broker, settings
) -> None:
    rows = saved_rows(2, settings)
    producer = FakeProducer()
    assert publish(producer, rows[:1]) == ids_of(rows[:1])

    def replace_the_broker() -> None:
        broker.cluster = "cluster-2"

    producer.during_send = replace_the_broker
    assert publish(producer, rows) == []
    assert list(OutboxEvent.objects.values_list("attempts", flat=True)) == [1, 1]
    assert "replaced" in OutboxEvent.objects.first().last_error  # type: ignore[union-attr]

    # The next send makes sure of the topics on the new cluster first, and counts.
    producer.during_send = None
    assert publish(producer, rows) == ids_of(rows)
    assert len(broker.topic_checks) == 2


def test_a_broker_that_cannot_say_which_cluster_it_is_keeps_the_acknowledgements(
    broker, settings
) -> None:
    rows = saved_rows(2, settings)
    producer = FakeProducer()

    def lose_the_broker() -> None:
        broker.cluster = ConnectionError("no broker answered")

    producer.during_send = lose_the_broker
    assert publish(producer, rows) == ids_of(rows)
    assert list(OutboxEvent.objects.values_list("attempts", flat=True)) == [0, 0]
