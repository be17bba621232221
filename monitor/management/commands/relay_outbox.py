from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from monitor.events.relay import OutboxRelay
from monitor.runtime.stopping import run_until_stopped


class Command(BaseCommand):
    help = "Publish outbox events that were not acknowledged by the broker yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")

    def handle(self, *args: Any, **options: Any) -> None:
        run_until_stopped(OutboxRelay(interval=float(options["interval"])))
