"""The Django app that holds the whole event monitor, under the label ``monitor``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class MonitorConfig(AppConfig):
    name = "monitor"
    verbose_name = "Event monitor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        checks.register(check_signing_keys)


def check_signing_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A malformed ``EVENT_SIGNING_KEYS`` stops every command at start, with the
    reason, rather than the first event the site sends."""
    from monitor.events.signing import signing_keys

    try:
        signing_keys()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="eventsite.E001")]
    return []
