"""The WebSocket endpoints' URLs: the top of the live path (eventsite/asgi.py mounts them)."""

from __future__ import annotations

from django.urls import path

from monitor.live.event_socket import EventStreamConsumer
from monitor.live.notice_socket import NoticeStreamConsumer

websocket_urlpatterns = [
    path("ws/events/", EventStreamConsumer.as_asgi()),
    path("ws/notices/", NoticeStreamConsumer.as_asgi()),
]
