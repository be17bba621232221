from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from monitor.notifications import NotificationsWorker
from monitor.workers import run_until_stopped


class Command(BaseCommand):
    help = "Consume user-events in the 'notifications' group and store each user's notices."

    def handle(self, *args: Any, **options: Any) -> None:
        run_until_stopped(NotificationsWorker())
