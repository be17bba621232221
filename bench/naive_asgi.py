"""The tutorial way of WebSocket fan-out, as the baseline the product is compared to.

One Kafka reader per process (like the product's, same settings) and one
channel-layer ``group_send`` per event; every consumer in the group sends
that one event as its own frame. Frames have the product's format
(``{"type": "events", "events": [item]}``), so the same benchmark clients
count and check them. Serve with ``daphne bench.naive_asgi:application``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from django.core.asgi import get_asgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.naive_settings"
django_asgi_app = get_asgi_application()

from aiokafka import TopicPartition  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402

from monitor.events.schema import InvalidEvent, parse_event  # noqa: E402
from monitor.kafka import clients as kafka  # noqa: E402
from monitor.live.protocol import encode_item  # noqa: E402

logger = logging.getLogger(__name__)

GROUP = "naive-events"


class NaiveReader:
    """Reads the events topic from its end; one group_send per event."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def ensure_started(self, timeout: float = 10.0) -> None:
        if self._task is None or self._task.done():
            self.ready.clear()
            self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def _run(self) -> None:
        topic = settings.KAFKA_EVENTS_TOPIC
        consumer = kafka.make_consumer(
            group_id=None,
            auto_offset_reset="latest",
            fetch_max_wait_ms=settings.KAFKA_LIVE_FETCH_WAIT_MS,
        )
        await consumer.start()
        try:
            partitions = await kafka.wait_for_topic(consumer, topic, timeout=10)
            assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:
                await consumer.position(tp)
            self.ready.set()
            layer = get_channel_layer()
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        try:
                            parse_event(record.value, max_bytes=settings.MAX_EVENT_BYTES)
                        except InvalidEvent:
                            continue
                        item = encode_item(
                            record.topic, record.partition, record.offset, record.value
                        )
                        frame = '{"type":"events","events":[' + item + "]}"
                        await layer.group_send(GROUP, {"type": "event.message", "text": frame})
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("naive reader stopped")
        finally:
            await consumer.stop()


reader = NaiveReader()


class NaiveEventConsumer(AsyncWebsocketConsumer):
    groups = [GROUP]  # joined by Channels before connect()

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await reader.ensure_started()
        welcome = {"type": "welcome", "protocol": 1, "user": user.get_username()}
        await self.send(text_data=json.dumps(welcome))

    async def event_message(self, message: dict) -> None:
        await self.send(text_data=message["text"])


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([path("ws/events/", NaiveEventConsumer.as_asgi())]))
        ),
    }
)
