"""Scale-out with real processes on the production settings: analytics
workers sharing a consumer group (one of them killed), web processes each
streaming every event to their own clients, and outbox relays running side
by side (each row published once on PostgreSQL, where they claim rows with
SKIP LOCKED; at least once on SQLite, and counted once by the consumers).
Each test is bounded in time and ends by counting."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from aiokafka import TopicPartition
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Sum
from websockets.asyncio.client import connect

from monitor.events import signing
from monitor.events.schema import encode_event, parse_event
from monitor.kafka import clients as kafka
from monitor.kafka.embedded import free_port
from monitor.management.processes import daphne_command
from monitor.models import AnalyticsEvent, EventMinuteCount
from monitor.security.tokens import token_create
from tests.support.events import signups
from tests.support.images import jpeg_bytes
from tests.support.postgres import connect_or_skip, postgres_server_url
from tests.support.project import ROOT
from tests.support.stack import Processes, wait_for_http

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ASSIGNED = re.compile(r"analytics: partitions assigned \[(.*)\]")
RELAYED = re.compile(r"relayed (\d+) outbox events")


def wait_for(condition: Callable[[], Any], timeout: float, message: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {message()}")
        time.sleep(0.2)


@pytest.fixture
def production(processes: Processes, settings: Any) -> Processes:
    """``processes``, whose product processes load ``eventsite.production``:
    a strong secret key, explicit hosts, and plain HTTP (no SSL redirect);
    this test signs what it produces with the same event signing key."""
    settings.EVENT_SIGNING_KEYS = "scale:" + secrets.token_urlsafe(40)
    processes.env.update(
        {
            "DJANGO_SETTINGS_MODULE": "eventsite.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
            "EVENT_SIGNING_KEYS": settings.EVENT_SIGNING_KEYS,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "EVENTSITE_SSL_REDIRECT": "false",
            "EVENTSITE_SERVE_FILES": "true",
        }
    )
    return processes


def start(processes: Processes, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with the group's environment, logging to ``name``.log;
    the group stops it by PID at the end."""
    log = open(processes.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        argv, cwd=ROOT, env=processes.env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    processes.running[name] = process
    return process


def start_web(processes: Processes, name: str) -> str:
    """A daphne process of its own, on a free port; returns its base URL."""
    port = free_port()
    process = start(processes, name, daphne_command("-b", "127.0.0.1", "-p", str(port)))
    base_url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base_url}/healthz", process, timeout=30)
    return base_url


def assert_serves_production(base_url: str) -> None:
    """The production settings mark the CSRF cookie Secure; the base settings do not."""
    response = httpx.get(base_url + "/accounts/login/", timeout=10)
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("csrftoken=") and "; secure" in cookie.lower(), cookie


def post_photo(base_url: str, token: str, caption: str) -> str:
    """POST /api/posts/ with a token; returns the ``photo.posted`` event's id."""
    response = httpx.post(
        base_url + "/api/posts/",
        data={"caption": caption},
        files={"photo": ("p.jpg", jpeg_bytes(), "image/jpeg")},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["event_id"])


async def produce(events: list[dict], per_second: float | None = None) -> None:
    """Send ``events``, keyed by actor, at ``per_second`` (or at once)."""
    producer = kafka.make_producer()
    await producer.start()
    try:
        started = time.monotonic()
        for index, event in enumerate(events):
            value = encode_event(event)  # signed as the site signs its own
            await producer.send(
                settings.KAFKA_EVENTS_TOPIC,
                value,
                key=event["actor"].encode(),
                headers=[signing.sign(value)],
            )
            if per_second:
                ahead = index / per_second - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic_ids(topic: str) -> list[str]:
    """Every event id on ``topic``, from the beginning to its current end."""
    consumer = kafka.make_consumer(group_id=None)
    await consumer.start()
    try:
        partitions = await kafka.wait_for_topic(consumer, topic, timeout=10)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        ids: list[str] = []
        async with asyncio.timeout(30):
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    ids.extend(parse_event(record.value)["id"] for record in records)
        return ids
    finally:
        await consumer.stop()


# --- a. Analytics workers sharing a group ------------------------------------


def assignments(log: str) -> list[set[int]]:
    """The partitions a worker's log says it was given, each rebalance in turn."""
    return [
        {int(p) for p in re.findall(r"partition=(\d+)", match)} for match in ASSIGNED.findall(log)
    ]


def latest_assignment(processes: Processes, name: str) -> set[int]:
    found = assignments(processes.log(name))
    return found[-1] if found else set()


def test_two_analytics_workers_split_the_partitions_and_survive_one_killed(
    production: Processes, settings
) -> None:
    partitions = 4
    settings.KAFKA_TOPIC_PARTITIONS = partitions
    production.env["KAFKA_TOPIC_PARTITIONS"] = str(partitions)
    production.env["ANALYTICS_BATCH_SIZE"] = "50"
    asyncio.run(kafka.ensure_topics())
    command = [sys.executable, "manage.py", "run_analytics"]
    start(production, "analytics-a", command)
    victim = start(production, "analytics-b", command)

    every = set(range(partitions))

    def split_between_both() -> bool:
        a = latest_assignment(production, "analytics-a")
        b = latest_assignment(production, "analytics-b")
        return bool(a) and bool(b) and not a & b and a | b == every

    wait_for(
        split_between_both,
        30,
        lambda: (
            "the partitions were not split between the two workers: "
            f"{assignments(production.log('analytics-a'))} / "
            f"{assignments(production.log('analytics-b'))}"
        ),
    )
    taken_by_victim = latest_assignment(production, "analytics-b")

    count = 600
    events = signups(0, count)
    started = time.monotonic()
    producer = threading.Thread(target=asyncio.run, args=(produce(events, per_second=100),))
    producer.start()
    try:
        wait_for(
            lambda: AnalyticsEvent.objects.count() >= 150,
            30,
            lambda: production.log("analytics-b")[-2000:],
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = AnalyticsEvent.objects.count()
    finally:
        producer.join(60)
    assert not producer.is_alive()
    assert killed_at < count, "the worker was killed after the stream ended"

    # The survivor is given the dead member's partitions once its session times out.
    wait_for(
        lambda: latest_assignment(production, "analytics-a") == every,
        30,
        lambda: f"the survivor's assignments: {assignments(production.log('analytics-a'))}",
    )
    wait_for(
        lambda: AnalyticsEvent.objects.count() >= count,
        60,
        lambda: f"{AnalyticsEvent.objects.count()} of {count} recorded",
    )
    elapsed = time.monotonic() - started

    expected = {uuid.UUID(event["id"]) for event in events}
    recorded = list(AnalyticsEvent.objects.values_list("event_id", flat=True))
    assert len(recorded) == count and set(recorded) == expected
    assert EventMinuteCount.objects.aggregate(total=Sum("count"))["total"] == count
    # Events were keyed onto the victim's partitions: the takeover had work to do.
    assert AnalyticsEvent.objects.filter(partition__in=taken_by_victim).exists()
    print(
        f"{count} events, worker killed at {killed_at} recorded, "
        f"all recorded once after {elapsed:.1f}s; partitions {sorted(taken_by_victim)} moved"
    )


# --- b. Web processes, each with its own clients -----------------------------


@dataclass
class Received:
    """What one WebSocket client was sent: events in arrival order, and gaps."""

    events: list[dict]
    gaps: list[dict]


async def listen(url: str, token: str, expected: set[str], ready: asyncio.Event) -> Received:
    """Open /ws/events/ with ``token``, then collect events until every id in
    ``expected`` came (and a moment more, for any duplicate)."""
    headers = {"Authorization": f"Bearer {token}"}
    events: list[dict] = []
    gaps: list[dict] = []
    ws_url = url.replace("http://", "ws://", 1) + "/ws/events/"
    async with connect(ws_url, additional_headers=headers) as websocket:
        try:
            welcome = json.loads(await asyncio.wait_for(websocket.recv(), 10))
            assert welcome["type"] == "welcome", welcome
        finally:
            ready.set()  # welcomed, or failed: the scenario goes on to see which
        deadline = None
        async with asyncio.timeout(60):
            while deadline is None or asyncio.get_running_loop().time() < deadline:
                try:
                    raw = await asyncio.wait_for(websocket.recv(), 0.5)
                except TimeoutError:
                    continue
                frame = json.loads(raw)
                if frame["type"] == "events":
                    events.extend(frame["events"])
                elif frame["type"] == "gap":
                    gaps.append(frame)
                if deadline is None and expected <= {item["event"]["id"] for item in events}:
                    deadline = asyncio.get_running_loop().time() + 1.0
    return Received(events, gaps)


def test_two_web_processes_each_stream_every_event_to_their_own_clients(
    production: Processes,
) -> None:
    production.env["EVENTSITE_PUBLISH_EAGERLY"] = "true"  # no relay runs here
    urls = [start_web(production, "web-a"), start_web(production, "web-b")]
    for url in urls:
        assert_serves_production(url)
    tokens = [
        token_create(  # operators, who see every event
            user=User.objects.create_user(username=f"watcher{n}", password=None, is_staff=True),
            name="scale",
        )[1]
        for n in range(6)
    ]
    poster = token_create(
        user=User.objects.create_user(username="scale-poster", password=None), name="post"
    )[1]
    produced = signups(5000, 300)

    async def scenario() -> tuple[list[Received], set[str]]:
        expected = {event["id"] for event in produced}
        readies = [asyncio.Event() for _ in tokens]
        # Three clients on each process.
        clients = [
            asyncio.create_task(listen(urls[n % 2], token, expected, readies[n]))
            for n, token in enumerate(tokens)
        ]
        async with asyncio.timeout(20):
            await asyncio.gather(*(ready.wait() for ready in readies))
        for client in clients:
            if client.done():
                client.result()  # raises what made it fail
        # Posts through one web process (published eagerly from it) and
        # events straight to the topic, interleaved.
        for n in range(3):
            expected.add(await asyncio.to_thread(post_photo, urls[0], poster, f"scale #{n}"))
        await produce(produced[:150])
        expected.add(await asyncio.to_thread(post_photo, urls[0], poster, "in the middle"))
        await produce(produced[150:])
        return list(await asyncio.gather(*clients)), expected

    started = time.monotonic()
    received, expected = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    sequences = []
    for n, client in enumerate(received):
        where = f"client {n} on web-{'ab'[n % 2]}"
        assert client.gaps == [], where
        ids = Counter(item["event"]["id"] for item in client.events)
        assert set(ids) == expected, f"{where} missed {len(expected - set(ids))}"
        assert max(ids.values()) == 1, f"{where} got duplicates"
        per_partition: dict[int, list[int]] = defaultdict(list)
        for item in client.events:
            per_partition[item["partition"]].append(item["offset"])
        for partition, offsets in per_partition.items():
            assert offsets == sorted(offsets), f"{where}: partition {partition} out of order"
        sequences.append(dict(per_partition))
    # Every client, on either process, saw each partition in the same order.
    assert all(sequence == sequences[0] for sequence in sequences)
    print(f"{len(expected)} events to 6 clients on 2 web processes in {elapsed:.1f}s")


# --- c. Outbox relays side by side --------------------------------------------


@dataclass
class OwnDatabase:
    """A database of the test's own, with the schema migrated, read with plain SQL."""

    url: str
    open: Callable[[], Any]

    def query(self, sql: str) -> list[tuple]:
        with self.open() as connection:
            cursor = connection.cursor()
            cursor.execute(sql)
            return list(cursor.fetchall())

    def outbox(self) -> dict[uuid.UUID, bool]:
        """Each outbox row's event id, and whether it is marked sent."""
        rows = self.query("SELECT event_id, sent_at IS NOT NULL FROM monitor_outboxevent")
        return {uuid.UUID(str(event_id)): bool(sent) for event_id, sent in rows}

    def analytics_ids(self) -> list[uuid.UUID]:
        rows = self.query("SELECT event_id FROM monitor_analyticsevent")
        return [uuid.UUID(str(event_id)) for (event_id,) in rows]


@pytest.fixture(params=["postgresql", "sqlite"])
def own_database(request, production: Processes, tmp_path: Path) -> Iterator[OwnDatabase]:
    """A fresh database, migrated, that ``production``'s processes use; on
    PostgreSQL it is created on the server and dropped at the end."""
    admin = None
    if request.param == "sqlite":
        path = tmp_path / "own.sqlite3"
        database = OwnDatabase(f"sqlite:///{path}", lambda: closing(sqlite3.connect(path)))
    else:
        server = postgres_server_url()
        admin = connect_or_skip(server)
        name = f"eventsite_scaleout_{uuid.uuid4().hex[:12]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        url = urlsplit(server)._replace(path="/" + name).geturl()
        database = OwnDatabase(url, lambda: psycopg.connect(url))
    try:
        production.env["DATABASE_URL"] = database.url
        manage(production, "migrate", "--noinput")
        yield database
    finally:
        production.stop_all()  # before the database goes
        if admin is not None:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()


def manage(processes: Processes, *args: str) -> str:
    """Run a management command with the group's environment; returns its output."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=processes.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def make_token(processes: Processes, username: str) -> str:
    """A new user and API token, made by the processes' own settings and database."""
    script = (
        "from django.contrib.auth.models import User\n"
        "from monitor.security.tokens import token_create\n"
        f"user = User.objects.create_user(username={username!r})\n"
        "print(token_create(user=user, name='scale-out')[1])\n"
    )
    output = manage(processes, "shell", "-c", script)
    return next(word for word in reversed(output.split()) if word.startswith("es_"))


def test_two_relays_at_once_publish_every_outbox_row(
    own_database: OwnDatabase, production: Processes
) -> None:
    on_postgresql = own_database.url.startswith("postgres")
    # The relays alone publish, each row as soon as it is committed: the two
    # relays contend for every row.
    production.env["EVENTSITE_PUBLISH_EAGERLY"] = "false"
    production.env["OUTBOX_RELAY_AFTER_SECONDS"] = "0"
    token = make_token(production, "relay-poster")
    url = start_web(production, "web")
    assert_serves_production(url)
    relay = [sys.executable, "manage.py", "relay_outbox", "--interval", "0.2"]
    start(production, "relay-a", relay)
    start(production, "relay-b", relay)
    start(production, "analytics", [sys.executable, "manage.py", "run_analytics"])

    count = 300 if on_postgresql else 150
    started = time.monotonic()
    with ThreadPoolExecutor(3) as posters:
        posted = set(posters.map(lambda n: post_photo(url, token, f"relay #{n}"), range(count)))
    wait_for(
        lambda: all(own_database.outbox().values()),
        60,
        lambda: f"{list(own_database.outbox().values()).count(False)} rows still unsent",
    )
    elapsed = time.monotonic() - started
    outbox = own_database.outbox()
    assert len(outbox) == count and {uuid.UUID(i) for i in posted} == set(outbox)

    on_kafka = Counter(
        uuid.UUID(i) for i in asyncio.run(read_topic_ids(settings.KAFKA_EVENTS_TOPIC))
    )
    assert set(on_kafka) == set(outbox)
    duplicates = sum(on_kafka.values()) - len(on_kafka)
    relayed = [
        sum(map(int, RELAYED.findall(production.log(name)))) for name in ("relay-a", "relay-b")
    ]
    print(
        f"{count} rows on {'PostgreSQL' if on_postgresql else 'SQLite'} in {elapsed:.1f}s: "
        f"relayed {relayed[0]} + {relayed[1]}, {duplicates} duplicates on Kafka"
    )
    if on_postgresql:
        # SKIP LOCKED: each row claimed, published and marked by one relay.
        assert duplicates == 0, f"{duplicates} events published twice"
        assert sum(relayed) == count
        assert all(relayed), f"one relay did all the work: {relayed}"
    else:
        # No row locks: at least once, and the duplicates are the consumers' to drop.
        assert sum(relayed) >= count

    wait_for(
        lambda: len(own_database.analytics_ids()) >= count,
        60,
        lambda: f"{len(own_database.analytics_ids())} of {count} recorded",
    )
    recorded = own_database.analytics_ids()
    assert len(recorded) == count and set(recorded) == set(outbox)


@pytest.mark.parametrize("own_database", ["postgresql"], indirect=True)
def test_a_relay_passes_over_rows_another_transaction_holds(
    own_database: OwnDatabase, production: Processes
) -> None:
    production.env["EVENTSITE_PUBLISH_EAGERLY"] = "false"
    production.env["OUTBOX_RELAY_AFTER_SECONDS"] = "0"
    token = make_token(production, "held-poster")
    url = start_web(production, "web")
    held = uuid.UUID(post_photo(url, token, "the oldest row, held"))
    with psycopg.connect(own_database.url) as holder:
        # As another relay's claim would: the row stays locked until commit.
        holder.execute("SELECT 1 FROM monitor_outboxevent WHERE event_id = %s FOR UPDATE", (held,))
        start(
            production, "relay", [sys.executable, "manage.py", "relay_outbox", "--interval", "0.2"]
        )
        others = {uuid.UUID(post_photo(url, token, f"later #{n}")) for n in range(20)}

        def others_sent() -> bool:
            outbox = own_database.outbox()
            return all(outbox[event_id] for event_id in others)

        wait_for(others_sent, 20, lambda: production.log("relay")[-2000:])
        assert own_database.outbox()[held] is False
    # Released: the relay takes the row on its next round.
    wait_for(lambda: own_database.outbox()[held], 20, lambda: production.log("relay")[-2000:])
    on_kafka = Counter(
        uuid.UUID(i) for i in asyncio.run(read_topic_ids(settings.KAFKA_EVENTS_TOPIC))
    )
    assert on_kafka == Counter({held, *others})
