"""More than one topic on the stream: ``KAFKA_WATCH_TOPICS`` adds topics to the
events topic; their records come with their topic, a filter picks topics, a
resume names a watched topic's partitions (``orders/0:4``), and a topic
created after the web process started is read from its beginning."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import TopicPartition
from django.core.exceptions import ImproperlyConfigured
from pytest_django import Settings
from websockets.asyncio.client import connect

from monitor.kafka import clients as kafka
from monitor.live.items import parse_position_key, position_key, watched_topics
from monitor.live.replay_plan import BadReplay, ReplayRequest
from tests.support.stack import Processes, make_token

ORDERS = "orders"
LATER = "payments"


def order(n: int) -> bytes:
    return json.dumps(
        {"specversion": "1.0", "id": f"order-{n}", "source": "/shop", "type": "order.placed"}
    ).encode()


def test_the_events_topic_comes_first_and_a_bad_name_is_refused(settings: Settings) -> None:
    settings.KAFKA_EVENTS_TOPIC = "user-events"
    settings.KAFKA_WATCH_TOPICS = ["orders", "user-events", "payments.v2"]
    assert watched_topics() == ["user-events", "orders", "payments.v2"]
    settings.KAFKA_WATCH_TOPICS = ["orders/eu"]
    with pytest.raises(ImproperlyConfigured, match="not a topic name"):
        watched_topics()


def test_a_position_names_its_topic_unless_it_is_the_events_topic(settings: Settings) -> None:
    settings.KAFKA_EVENTS_TOPIC = "user-events"
    for part, key in [
        (TopicPartition("user-events", 2), "2"),
        (TopicPartition("orders", 0), "orders/0"),
        (TopicPartition("a.b-c_d", 11), "a.b-c_d/11"),
    ]:
        assert position_key(part) == key and parse_position_key(key) == part
    request = ReplayRequest.from_query({"since": ["0:17,orders/1:4"]})
    assert request is not None and request.since == {
        TopicPartition("user-events", 0): 17,
        TopicPartition("orders", 1): 4,
    }
    for bad in ("or:ders/1:4", "orders/x:4", "orders/-1:4", "a b/0:1"):
        with pytest.raises(BadReplay):
            ReplayRequest.from_query({"since": [bad]})


async def produce(topic: str, values: list[bytes]) -> None:
    producer = kafka.make_producer()
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def frames(url: str, token: str, until: str, timeout: float = 20) -> list[dict[str, Any]]:
    """Every frame until an item whose JSON holds ``until``."""
    got: list[dict[str, Any]] = []
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        async with asyncio.timeout(timeout):
            while not any(until in json.dumps(item) for f in got for item in f.get("events", [])):
                got.append(json.loads(await ws.recv()))
    return got


def items_of(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for frame in got for item in frame.get("events", [])]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_watched_topics_stream_filter_and_resume(processes: Processes, settings: Settings) -> None:
    processes.env["KAFKA_WATCH_TOPICS"] = f"{ORDERS},{LATER}"
    processes.env["STREAM_RECENT_EVENTS"] = "0"  # every resume reads the broker
    settings.KAFKA_WATCH_TOPICS = [ORDERS, LATER]
    asyncio.run(kafka.ensure_topics([ORDERS]))
    processes.start("web")
    token = make_token("watcher")
    url = processes.base_url.replace("http", "ws") + "/ws/events/"

    async def scenario() -> tuple[list[dict[str, Any]], ...]:
        everything = asyncio.create_task(frames(url, token, "order-3"))
        only_orders = asyncio.create_task(frames(f"{url}?topics={ORDERS}", token, "order-3"))
        await asyncio.sleep(1.5)
        await produce(ORDERS, [order(1), order(2), order(3)])
        both, orders = await everything, await only_orders
        # A topic created after the web process started is found and read whole.
        await kafka.ensure_topics([LATER])
        await produce(LATER, [order(100)])
        later = await frames(f"{url}?topics={LATER}&history=5", token, "order-100", timeout=40)
        # A resume from after order-1 gets orders 2 and 3 again, nothing before.
        first = next(i for i in items_of(both) if i.get("event", {}).get("id") == "order-1")
        since = f"{ORDERS}/{first['partition']}:{first['offset']}"
        resumed = await frames(f"{url}?topics={ORDERS}&since={since}", token, "order-3")
        return both, orders, later, resumed

    both, orders, later, resumed = asyncio.run(scenario())
    welcome = both[0]
    assert welcome["type"] == "welcome" and welcome["topics"][1:] == [ORDERS, LATER]
    assert any(key.startswith(f"{ORDERS}/") for key in welcome["positions"])
    seen = [i["event"]["id"] for i in items_of(both) if i["topic"] == ORDERS]
    assert seen == ["order-1", "order-2", "order-3"]
    assert {i["topic"] for i in items_of(orders)} == {ORDERS}
    assert [i["event"]["id"] for i in items_of(later)] == ["order-100"]
    assert [i["event"]["id"] for i in items_of(resumed)] == ["order-2", "order-3"]
