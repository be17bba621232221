from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from monitor.runtime.stopping import run_until_stopped
from monitor.workers.base import AnalyticsWorker


class Command(BaseCommand):
    help = "Consume user-events in the 'analytics' group and store them in the database."

    def handle(self, *args: Any, **options: Any) -> None:
        run_until_stopped(AnalyticsWorker())
