from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from monitor.runtime.stopping import run_until_stopped
from monitor.workers.notifications import NotificationsWorker


class Command(BaseCommand):
    help = "Consume user-events in the 'notifications' group and store each user's notices."

    def handle(self, *args: Any, **options: Any) -> None:
        run_until_stopped(NotificationsWorker())
