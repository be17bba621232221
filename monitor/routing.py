from __future__ import annotations

from django.urls import path

from .streams import EventStreamConsumer

websocket_urlpatterns = [
    path("ws/events/", EventStreamConsumer.as_asgi()),
]
