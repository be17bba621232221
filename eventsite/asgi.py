"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")
# Load Django before importing anything that touches models.
django.setup(set_prefix=False)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from monitor.routing import websocket_urlpatterns  # noqa: E402
from monitor.wire import DirectSocketMiddleware  # noqa: E402

from .serving import PooledThreadsHandler, skip_twisted_form_parsing  # noqa: E402

skip_twisted_form_parsing()
django_asgi_app = PooledThreadsHandler(threads=settings.WEB_THREADS)

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_FILES else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": DirectSocketMiddleware(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)
