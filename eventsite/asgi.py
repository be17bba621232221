"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")
# Load Django before importing anything that touches models.
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from monitor.live.routing import websocket_urlpatterns  # noqa: E402
from monitor.live.socket_auth import StreamAuthMiddleware  # noqa: E402
from monitor.live.wire import DirectSocketMiddleware  # noqa: E402

from .serving import PooledThreadsHandler, skip_twisted_form_parsing  # noqa: E402

skip_twisted_form_parsing()
django_asgi_app = PooledThreadsHandler(threads=settings.WEB_THREADS)

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_FILES else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": DirectSocketMiddleware(
            # A token, or the session cookie from the site's own pages only.
            StreamAuthMiddleware(URLRouter(websocket_urlpatterns))
        ),
    }
)
