"""Run the embedded broker, bounded: what ``runstack`` starts when no broker is configured.

The broker (Tansu, :mod:`monitor.kafka.embedded`) listens on a free port of
its own, behind a front on ``--port`` (:mod:`monitor.kafka.front`), which
is the address it advertises: every client connects through the front.
A :class:`~monitor.management.rolling.Roller` rolls the broker over when it
holds ``EMBEDDED_KAFKA_ROLL_RECORDS`` records in a partition or uses
``EMBEDDED_KAFKA_ROLL_MB`` of memory, once the site's consumer groups have
processed all it holds. If the broker process ends on its own, this
command ends too (with status 1), for the supervisor to start it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitor.events.epochs import begin_after_restart
from monitor.kafka import clients as kafka
from monitor.kafka.embedded import EmbeddedBroker, new_cluster_id
from monitor.kafka.front import BrokerFront
from monitor.management.processes import killed_with_parent
from monitor.management.rolling import BrokerDied, Roller, RollPolicy
from monitor.workers import groups

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the embedded Kafka-compatible broker, rolled over before it holds too much."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, required=True, help="where clients connect")

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = str(options["host"]), int(options["port"])
        settings.KAFKA_BOOTSTRAP_SERVERS = f"{host}:{port}"
        try:
            asyncio.run(self.serve(host, port))
        except BrokerDied as exc:
            raise CommandError(str(exc)) from None

    async def serve(self, host: str, port: int) -> None:
        broker = EmbeddedBroker(
            host=host,
            log=settings.VAR_DIR / "broker.log",
            before_exec=killed_with_parent(),
            advertised=f"{host}:{port}",
        )
        front = BrokerFront(host, port, host, broker.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        cluster = new_cluster_id()
        # Positions go on from where the broker's last life ended.
        bases = await database_sync_to_async(begin_after_restart)(cluster)
        await asyncio.to_thread(broker.start, 20.0, cluster)
        try:
            async with front.hold_writes():  # no record before its topic exists
                await front.start()
                await kafka.ensure_topics()
            self.stdout.write(
                f"embedded broker on {host}:{port} (cluster {cluster}, pid {broker.pid});"
                f" positions go on from {bases.get(settings.KAFKA_EVENTS_TOPIC, {})}"
            )
            policy = RollPolicy(
                roll_records=settings.EMBEDDED_KAFKA_ROLL_RECORDS,
                roll_mb=settings.EMBEDDED_KAFKA_ROLL_MB,
                groups=groups.ALL,
            )
            roller = Roller(broker, front, policy)
            await roller.run(stop)
            await roller.record_final_ends()
        finally:
            with contextlib.suppress(Exception):
                await front.stop()
            await asyncio.to_thread(broker.stop)
