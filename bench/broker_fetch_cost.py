"""What a consumer's fetches cost the embedded broker, by what the partition holds.

For each case ``BATCHESxRECORDS[@WAIT_MS]`` it starts an empty embedded
broker (Tansu), creates a topic of one partition and writes ``BATCHES``
record batches of ``RECORDS`` records each (about 420 bytes a record, the
size of an envelope; one ``send_batch`` per batch, so the broker stores
exactly those batches). Then one consumer, fetching with
``fetch_max_wait_ms`` = ``WAIT_MS`` (5, as the site's live readers, unless
given):

- sits at the partition's real end for ``--seconds`` with nothing new to
  read (an idle reader that has read everything): the broker's CPU over
  that time, the fetch requests per second, and the broker's CPU per fetch;
- then reads the last ``--catch-up`` records (20; a reader a little behind
  catching up), for at most 30 s: how many it got, in how long, and the
  broker's CPU.

It also shows the end offset the broker reports (marked wrong unless it is
the number of records written). It prints a table, and last one JSON line
with every case.

Idle CPU per fetch that grows with the batches held would mean each fetch
walks the stored batches; a catch-up that grows with them means that
reading does. Either way fewer, larger batches help, and only a bounded log
(rolling the broker or the topic) keeps the cost flat over time.

    python -m bench.broker_fetch_cost --cases 10000x1,50000x1,100000x1,1000x100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from django.conf import settings

from monitor.kafka import clients as kafka
from monitor.kafka.embedded import EmbeddedBroker

from .report import _columns

logger = logging.getLogger("bench.broker_fetch_cost")

TOPIC = "fetch-cost"
VALUE = b"x" * 420
DEFAULT_CASES = (
    "0x1,5000x1,8192x1,8193x1,10000x1,20000x1,100000x1,100x100,1000x100,3000x100,100000x1@50"
)
# Batches in flight at once while filling: enough to keep the broker busy.
FILL_WINDOW = 200
# The catch-up read (of the last --catch-up records) stops after this long.
CATCH_UP_SECONDS = 30.0


@dataclass
class Case:
    batches: int
    records: int
    wait_ms: int
    fill_s: float = 0.0
    end_offset: int = -1  # the partition's end as the broker reports it
    broker_cpu_pct: float = 0.0
    fetches_per_s: float = 0.0
    cpu_us_per_fetch: float = 0.0
    broker_rss_mb: float = 0.0
    catch_up_records: int = 0  # of the last --catch-up records, read within CATCH_UP_SECONDS
    catch_up_s: float = 0.0
    catch_up_cpu_s: float = 0.0

    @property
    def stored(self) -> int:
        """Records written, so the end offset a correct broker reports."""
        return self.batches * self.records

    @classmethod
    def parse(cls, text: str) -> Case:
        shape, _, wait = text.partition("@")
        batches, _, records = shape.partition("x")
        return cls(int(batches), int(records or 1), int(wait or 5))


async def fill(case: Case) -> None:
    """Write ``case.batches`` batches of ``case.records`` records to partition 0."""
    await kafka.ensure_topics([TOPIC])
    # Room for every record of a batch: a fuller batch would refuse the rest.
    room = case.records * (len(VALUE) + 64) + 1024
    producer = kafka.make_producer(
        client_id="fetch-cost", enable_idempotence=False, linger_ms=0, max_batch_size=room
    )
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        for _ in range(case.batches):
            batch = producer.create_batch()
            for _ in range(case.records):
                if batch.append(key=None, value=VALUE, timestamp=None) is None:
                    raise RuntimeError(f"a batch took fewer than {case.records} records")
            pending.append(await producer.send_batch(batch, TOPIC, partition=0))
            if len(pending) >= FILL_WINDOW:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def count_fetches(consumer: AIOKafkaConsumer) -> list[int]:
    """A one-element list that counts the fetch requests ``consumer`` sends from now on."""
    counter = [0]
    client = consumer._client
    send = client.send

    async def counting_send(node_id: int, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, FetchRequest):
            counter[0] += 1
        return await send(node_id, request, **kwargs)

    client.send = counting_send
    return counter


async def idle_fetches(
    consumer: AIOKafkaConsumer, case: Case, seconds: float, broker: psutil.Process
) -> None:
    """Sit at the partition's real end (as a consumer that has read everything) for
    ``seconds``, fetching with nothing to read; fills in the case's idle figures."""
    partition = TopicPartition(TOPIC, 0)
    case.end_offset = (await consumer.end_offsets([partition]))[partition]
    consumer.seek(partition, case.stored)
    await consumer.getmany(timeout_ms=500)  # settle: the first fetches find the end
    fetches = count_fetches(consumer)
    before, started = cpu_seconds(broker), time.monotonic()
    while time.monotonic() - started < seconds:
        got = await consumer.getmany(timeout_ms=200)
        if any(got.values()):
            raise RuntimeError("a consumer at the end received records")
    elapsed, used = time.monotonic() - started, cpu_seconds(broker) - before
    case.broker_cpu_pct = used / elapsed * 100
    case.fetches_per_s = fetches[0] / elapsed
    case.cpu_us_per_fetch = used / fetches[0] * 1e6 if fetches[0] else float("nan")
    case.broker_rss_mb = broker.memory_info().rss / 1024 / 1024


async def catch_up(
    consumer: AIOKafkaConsumer, case: Case, broker: psutil.Process, records: int
) -> None:
    """Read the last ``records`` records, as a reader a little behind does, within
    CATCH_UP_SECONDS; fills in how many it got, how long it took and the broker's CPU."""
    partition = TopicPartition(TOPIC, 0)
    wanted = min(records, case.stored)
    consumer.seek(partition, case.stored - wanted)
    before, started = cpu_seconds(broker), time.monotonic()
    while case.catch_up_records < wanted and time.monotonic() - started < CATCH_UP_SECONDS:
        got = await consumer.getmany(timeout_ms=500)
        case.catch_up_records += sum(len(records) for records in got.values())
    case.catch_up_s = time.monotonic() - started
    case.catch_up_cpu_s = cpu_seconds(broker) - before


async def measure(case: Case, seconds: float, catch_up_records: int, workdir: Path) -> Case:
    broker = EmbeddedBroker(log=workdir / "broker.log").start()
    try:
        assert broker.process is not None
        process = psutil.Process(broker.process.pid)
        # The project's own clients (monitor.kafka.clients), pointed at this broker.
        settings.KAFKA_BOOTSTRAP_SERVERS = broker.bootstrap_servers
        settings.KAFKA_TOPIC_PARTITIONS = 1
        started = time.monotonic()
        await fill(case)
        case.fill_s = time.monotonic() - started
        consumer = kafka.make_consumer(group_id=None, fetch_max_wait_ms=case.wait_ms)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(TOPIC, 0)])
            await idle_fetches(consumer, case, seconds, process)
            await catch_up(consumer, case, process, catch_up_records)
        finally:
            await consumer.stop()
    finally:
        broker.stop()
    logger.info("%s", case)
    return case


def table(cases: list[Case]) -> str:
    rows = [
        (
            "batches",
            "records/batch",
            "fetch wait ms",
            "broker CPU %",
            "fetches/s",
            "CPU us/fetch",
            "broker MB",
            "fill s",
            "end reported",
            "catch-up: records",
            "s",
            "broker CPU s",
        )
    ]
    for case in cases:
        rows.append(
            (
                f"{case.batches:,}",
                str(case.records),
                str(case.wait_ms),
                f"{case.broker_cpu_pct:.1f}",
                f"{case.fetches_per_s:.0f}",
                f"{case.cpu_us_per_fetch:.0f}",
                f"{case.broker_rss_mb:.0f}",
                f"{case.fill_s:.0f}",
                f"{case.end_offset:,}" + ("" if case.end_offset == case.stored else " (wrong)"),
                f"{case.catch_up_records}",
                f"{case.catch_up_s:.1f}",
                f"{case.catch_up_cpu_s:.1f}",
            )
        )
    return "\n".join(_columns(rows))


def main(argv: list[str] | None = None) -> int:
    # The Kafka clients come from monitor.kafka.clients, which reads the settings.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventsite.settings")
    parser = argparse.ArgumentParser(prog="python -m bench.broker_fetch_cost")
    parser.add_argument("--cases", default=DEFAULT_CASES, help="BATCHESxRECORDS[@WAIT_MS],...")
    parser.add_argument("--seconds", type=float, default=15.0, help="idle fetching per case")
    parser.add_argument("--catch-up", type=int, default=20, help="records read behind the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    cases = [Case.parse(text) for text in args.cases.split(",") if text.strip()]
    with tempfile.TemporaryDirectory(prefix="eventsite-fetch-cost-") as workdir:
        for case in cases:
            asyncio.run(measure(case, args.seconds, args.catch_up, Path(workdir)))
    print(table(cases))
    print(json.dumps([asdict(case) | {"stored": case.stored} for case in cases]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
