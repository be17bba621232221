"""Run the analytics worker (group ``analytics``) until SIGINT or SIGTERM.

Each batch is stored once by event id, with its aggregates, before its
offsets are committed (:mod:`monitor.workers.analytics`). A stop signal only
asks the worker to stop: the batch in hand is finished and committed first.

Without ``KAFKA_BOOTSTRAP_SERVERS`` it uses the broker of the stack running
from ``VAR_DIR`` (``make run``), and stops with a one-line error if none is.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from monitor.management.running_stack import use_running_broker
from monitor.runtime.stopping import run_until_stopped
from monitor.workers.analytics import AnalyticsWorker


class Command(BaseCommand):
    help = "Consume user-events in the 'analytics' group and store them in the database."

    def handle(self, *args: Any, **options: Any) -> None:
        use_running_broker()
        run_until_stopped(AnalyticsWorker())
