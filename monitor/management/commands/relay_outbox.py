"""``manage.py relay_outbox``: the outbox relay as a process of its own.

Runs :class:`~monitor.events.relay.OutboxRelay` until SIGINT or SIGTERM,
which let the round in hand finish. Several may run at once: on PostgreSQL
they share the due rows out, each published once; on SQLite a row may be
published by more than one (consumers deduplicate by event id).

Without ``KAFKA_BOOTSTRAP_SERVERS`` it uses the broker of the stack running
from ``VAR_DIR`` (``make run``), and stops with a one-line error if none is.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from monitor.events.relay import OutboxRelay
from monitor.management.running_stack import use_running_broker
from monitor.runtime.stopping import run_until_stopped


class Command(BaseCommand):
    help = "Publish outbox events that were not acknowledged by the broker yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")

    def handle(self, *args: Any, **options: Any) -> None:
        use_running_broker()
        run_until_stopped(OutboxRelay(interval=float(options["interval"])))
