"""Run the notifications worker (group ``notifications``) until SIGINT or SIGTERM.

Each batch's notices are stored once per event and recipient before its
offsets are committed (:mod:`monitor.workers.notifications`). A stop signal
only asks the worker to stop: the batch in hand is finished and committed first.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from monitor.runtime.stopping import run_until_stopped
from monitor.workers.notifications import NotificationsWorker


class Command(BaseCommand):
    help = "Consume user-events in the 'notifications' group and store each user's notices."

    def handle(self, *args: Any, **options: Any) -> None:
        run_until_stopped(NotificationsWorker())
