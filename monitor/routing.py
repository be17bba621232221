from __future__ import annotations

from django.urls import path

from .notice_stream import NoticeStreamConsumer
from .streams import EventStreamConsumer

websocket_urlpatterns = [
    path("ws/events/", EventStreamConsumer.as_asgi()),
    path("ws/notices/", NoticeStreamConsumer.as_asgi()),
]
