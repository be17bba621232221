"""The Django app that holds the whole event monitor, under the label ``monitor``."""

from __future__ import annotations

from django.apps import AppConfig


class MonitorConfig(AppConfig):
    name = "monitor"
    verbose_name = "Event monitor"
    default_auto_field = "django.db.models.BigAutoField"
