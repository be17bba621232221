"""Notices: events -> notices (monitor.workers.notifications), the worker against the
real broker, /notices/ and its mark-read, and /ws/notices/ with real
WebSocket clients against a running server (monitor.live.notice_socket)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone
from websockets.asyncio.client import connect

from monitor.dashboard import overview
from monitor.events import signing
from monitor.events.schema import build_event, encode_event
from monitor.kafka import clients as kafka
from monitor.live.notice_poller import NoticePoller, PollCursor, notice_frames
from monitor.management.processes import stop_processes
from monitor.models import DeadLetter, Notice
from monitor.workers.notifications import NotificationsWorker, notice_for, store_notices
from monitor.workers.records import RecordedFrom, split_records
from tests.support.events import photo_event, signup_event
from tests.support.kafka import committed_offsets
from tests.support.stack import Processes, Stack
from tests.support.workers import run_until_consumed

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def liked(post_id: int, author_id: int, user_id: int, username: str) -> dict:
    return build_event(
        type="photo.liked",
        subject=f"posts/{post_id}",
        actor=str(user_id),
        data={
            "post_id": post_id,
            "post_author_id": author_id,
            "user_id": user_id,
            "username": username,
        },
        source="/test",
        time=AT,
    )


def commented(post_id: int, author_id: int, user_id: int, username: str, text: str) -> dict:
    return build_event(
        type="comment.added",
        subject=f"posts/{post_id}",
        actor=str(user_id),
        data={
            "comment_id": 1,
            "post_id": post_id,
            "post_author_id": author_id,
            "user_id": user_id,
            "username": username,
            "text": text,
        },
        source="/test",
        time=AT,
    )


def followed(follower: User, followee_id: int, followee: str = "someone") -> dict:
    return build_event(
        type="user.followed",
        subject=f"users/{followee_id}",
        actor=str(follower.pk),
        data={
            "follower_id": follower.pk,
            "follower": follower.username,
            "followee_id": followee_id,
            "followee": followee,
        },
        source="/test",
    )


def records(*events: dict) -> list[RecordedFrom]:
    """The site's own events (verified), as the worker reads them."""
    return [
        RecordedFrom(event, "user-events", 0, offset, verified=True)
        for offset, event in enumerate(events)
    ]


def signed(value: bytes) -> list[tuple[str, bytes]]:
    return [signing.sign(value)]


# A signature of the right form that no key of the site's makes.
WRONG_SIGNATURE = [(signing.SIGNATURE_HEADER, b"v1=s0:" + b"0" * 64)]


async def produce_with_headers(topic: str, records: list[tuple[bytes, list]]) -> None:
    """Send each (value, headers) to ``topic`` in order, spread over three keys."""
    await kafka.ensure_topics()
    producer = kafka.make_producer()
    await producer.start()
    try:
        for index, (value, headers) in enumerate(records):
            await producer.send_and_wait(topic, value, key=str(index % 3).encode(), headers=headers)
    finally:
        await producer.stop()


def produce_signed(topic: str, values: list[bytes]) -> None:
    """Send ``values`` as the site does, each signed with its key."""
    asyncio.run(produce_with_headers(topic, [(value, signed(value)) for value in values]))


def as_read(value: bytes, offset: int, headers: list) -> ConsumerRecord:
    return ConsumerRecord(
        "user-events", 0, offset, 0, 0, None, value, None, -1, len(value), headers
    )


def texts(user: User) -> list[str]:
    return list(Notice.objects.filter(recipient=user).order_by("id").values_list("text", flat=True))


@pytest.fixture
def ana(django_user_model) -> User:
    return django_user_model.objects.create_user(username="ana", password="pw-ana-12345")


@pytest.fixture
def ben(django_user_model) -> User:
    return django_user_model.objects.create_user(username="ben", password="pw-ben-12345")


# --- Events to notices -------------------------------------------------------


@pytest.mark.django_db
def test_it_tells_the_post_author_about_a_like(ana, ben) -> None:
    event = liked(7, ben.pk, ana.pk, "ana")
    assert store_notices(records(event)) == 1
    notice = Notice.objects.get()
    assert notice.recipient == ben
    assert notice.text == "ana liked your photo"
    assert (notice.kind, notice.actor_name, notice.subject) == ("photo.liked", "ana", "posts/7")
    assert notice.event_id == uuid.UUID(event["id"])
    assert notice.created_at == AT
    assert notice.read_at is None


@pytest.mark.django_db
def test_it_quotes_the_first_80_characters_of_a_comment(ana, ben) -> None:
    long_text = "What a view!\n\n" + "x" * 100
    store_notices(records(commented(7, ben.pk, ana.pk, "ana", "lovely   light")))
    store_notices(records(commented(7, ben.pk, ana.pk, "ana", long_text)))
    short, cut = texts(ben)
    assert short == "ana commented: lovely light"
    quoted = cut.removeprefix("ana commented: ")
    assert quoted == ("What a view! " + "x" * 100)[:80] + "…"


@pytest.mark.django_db
def test_it_tells_the_followee_about_a_follow(ana, ben) -> None:
    store_notices(records(followed(ana, ben.pk, "ben")))
    notice = Notice.objects.get()
    assert (notice.recipient, notice.text) == (ben, "ana started following you")
    assert (notice.kind, notice.subject) == ("user.followed", f"users/{ben.pk}")


@pytest.mark.django_db
def test_nobody_is_told_about_their_own_like_or_comment(ana) -> None:
    own = records(liked(7, ana.pk, ana.pk, "ana"), commented(7, ana.pk, ana.pk, "ana", "me!"))
    assert store_notices(own) == 0
    assert not Notice.objects.exists()


@pytest.mark.django_db
def test_a_recipient_that_no_longer_exists_is_skipped(ana, ben) -> None:
    gone = ben.pk + 1000
    batch = records(
        liked(7, gone, ana.pk, "ana"),
        followed(ana, gone),
        commented(8, ben.pk, ana.pk, "ana", "hi"),
    )
    assert store_notices(batch) == 1
    assert texts(ben) == ["ana commented: hi"]
    assert Notice.objects.count() == 1


@pytest.mark.django_db
def test_events_that_concern_nobody_make_no_notice(ana, ben) -> None:
    unliked = dict(liked(7, ben.pk, ana.pk, "ana"), type="photo.unliked")
    for event in (signup_event(ana.pk), photo_event(7, author_id=ben.pk), unliked):
        assert notice_for(event) is None
    assert store_notices(records(signup_event(ana.pk), unliked)) == 0


@pytest.mark.django_db
def test_the_same_batch_twice_stores_each_notice_once(ana, ben) -> None:
    like, follow = liked(7, ben.pk, ana.pk, "ana"), followed(ben, ana.pk, "ana")
    batch = records(like, follow, like)  # a duplicate inside the batch too
    worker = NotificationsWorker()
    worker.consume_batch(batch)
    Notice.objects.filter(recipient=ben).update(read_at=timezone.now())
    worker.consume_batch(batch)
    assert texts(ben) == ["ana liked your photo"]
    assert texts(ana) == ["ben started following you"]
    # The redelivery left the notice as it was, read.
    assert Notice.objects.get(recipient=ben).read_at is not None


@pytest.mark.django_db
def test_only_a_signed_like_tells_the_author(ana, ben, caplog) -> None:
    value = encode_event(liked(7, ben.pk, ana.pk, "ana"))
    forged = encode_event(liked(8, ben.pk, ana.pk, "ana"))
    batch = {
        TopicPartition("user-events", 0): [
            as_read(forged, 0, []),
            as_read(forged, 1, WRONG_SIGNATURE),
            as_read(value, 2, signed(value)),
        ]
    }
    valid, dead = split_records(batch, max_bytes=1 << 20)
    assert dead == []  # a forgery is no dead letter

    with caplog.at_level("DEBUG", logger="monitor.workers.notifications"):
        assert store_notices(valid) == 1

    assert texts(ben) == ["ana liked your photo"]
    assert Notice.objects.get().subject == "posts/7"
    assert "2 unverified events skipped" in caplog.text


@pytest.mark.django_db
def test_an_unsigned_or_wrongly_signed_like_tells_nobody(ana, ben) -> None:
    value = encode_event(liked(7, ben.pk, ana.pk, "ana"))
    for offset, headers in enumerate(([], WRONG_SIGNATURE)):
        batch = {TopicPartition("user-events", 0): [as_read(value, offset, headers)]}
        valid, dead = split_records(batch, max_bytes=1 << 20)
        assert [record.verified for record in valid] == [False] and dead == []
        assert store_notices(valid) == 0
    assert not Notice.objects.exists()


# --- The worker against the broker -------------------------------------------


class IsolatedNotifications(NotificationsWorker):
    group_id = f"notifications-test-{uuid.uuid4().hex[:8]}"


def test_the_worker_is_a_consumer_group_the_dashboard_shows() -> None:
    assert NotificationsWorker.group_id == "notifications"
    assert NotificationsWorker.group_id in overview.CONSUMER_GROUPS


@pytest.mark.django_db(transaction=True)
def test_the_worker_stores_notices_commits_and_dead_letters_poison(topics, ana, ben) -> None:
    topic, _ = topics
    events = [
        liked(7, ben.pk, ana.pk, "ana"),
        commented(7, ben.pk, ana.pk, "ana", "<b>nice</b>"),
        followed(ben, ana.pk, "ana"),
        liked(9, ana.pk, ana.pk, "ana"),  # her own photo: nobody is told
        signup_event(ana.pk),
    ]
    forged = encode_event(liked(8, ben.pk, ana.pk, "ana"))
    values = [encode_event(event) for event in events]
    sent = [(value, signed(value)) for value in values] + [(b"{not json", [])]
    sent += [(forged, []), (forged, WRONG_SIGNATURE)]  # forgeries: skipped, not dead
    values = [value for value, _ in sent]
    asyncio.run(produce_with_headers(topic, sent))
    committed = asyncio.run(run_until_consumed(IsolatedNotifications(), topic, len(values)))

    assert sum(offset or 0 for offset in committed.values()) == len(values)
    # (Across partitions, in no particular order.)
    assert sorted(texts(ben)) == ["ana commented: <b>nice</b>", "ana liked your photo"]
    assert texts(ana) == ["ben started following you"]
    (part,) = DeadLetter.objects.get().groups.all()
    assert part.group == IsolatedNotifications.group_id
    assert "not JSON" in part.reason

    # Every record delivered again (read by a group that has committed nothing): nothing new.
    class ReadsEverythingAgain(NotificationsWorker):
        group_id = f"notifications-again-{uuid.uuid4().hex[:8]}"

    asyncio.run(run_until_consumed(ReadsEverythingAgain(), topic, len(values)))
    assert Notice.objects.count() == 3


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_run_notifications_stores_once_across_a_restart(
    processes: Processes, monkeypatch, settings, ana, ben
) -> None:
    monkeypatch.setitem(Processes.COMMANDS, "notifications", ["manage.py", "run_notifications"])
    first = [liked(7, ben.pk, ana.pk, "ana"), followed(ben, ana.pk, "ana")]
    produce_signed(settings.KAFKA_EVENTS_TOPIC, [encode_event(e) for e in first])
    worker = processes.start("notifications")
    wait_for(lambda: Notice.objects.count() == 2, 60, lambda: processes.log("notifications"))
    stopped = time.monotonic()
    stop_processes([worker])
    assert worker.returncode == 0, processes.log("notifications")
    assert time.monotonic() - stopped < 10

    # The same events again (a producer's retry), and a new one.
    again = [*first, commented(7, ben.pk, ana.pk, "ana", "again")]
    produce_signed(settings.KAFKA_EVENTS_TOPIC, [encode_event(e) for e in again])
    processes.start("notifications")
    topic = settings.KAFKA_EVENTS_TOPIC
    wait_for(
        lambda: sum(o or 0 for o in committed_offsets(topic, "notifications").values()) == 5,
        60,
        lambda: processes.log("notifications"),
    )
    assert texts(ben) == ["ana liked your photo", "ana commented: again"]
    assert texts(ana) == ["ben started following you"]


def wait_for(condition, timeout: float, describe=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {describe()[-3000:]}")
        time.sleep(0.2)


# --- /notices/ and mark-read ---------------------------------------------------


def make_notice(recipient: User, text: str, *, read: bool = False, **fields) -> Notice:
    return Notice.objects.create(
        recipient=recipient,
        event_id=uuid.uuid4(),
        kind=fields.pop("kind", "photo.liked"),
        actor_name=fields.pop("actor_name", "someone"),
        subject=fields.pop("subject", "posts/1"),
        text=text,
        created_at=fields.pop("created_at", timezone.now()),
        read_at=timezone.now() if read else None,
        **fields,
    )


async def in_a_thread(function, *args, **kwargs):
    """``function`` in a worker thread, whose database connection is closed after it."""

    def call():
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return await sync_to_async(call, thread_sensitive=False)()


def signed_in(user: User, **options) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_notices_page_shows_only_ones_own_and_marks_them_read(ana, ben) -> None:
    make_notice(ana, "old news", read=True)
    make_notice(ana, "ben liked your photo <script>alert(1)</script>")
    make_notice(ben, "ana started following you")

    page = signed_in(ana).get("/notices/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "old news" in html
    assert "ben liked your photo &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "ana started following you" not in html
    assert html.count('class="notice unread"') == 1  # shown as new this once
    assert not Notice.objects.filter(recipient=ana, read_at__isnull=True).exists()
    assert Notice.objects.filter(recipient=ben, read_at__isnull=True).count() == 1
    again = signed_in(ana).get("/notices/").content.decode()
    assert 'class="notice unread"' not in again


@pytest.mark.django_db
def test_the_notices_page_needs_a_signed_in_user() -> None:
    response = Client().get("/notices/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.django_db
def test_mark_all_read_is_a_post_with_csrf(ana, ben) -> None:
    for n in range(3):
        make_notice(ana, f"notice {n}")
    theirs = make_notice(ben, "not ana's")
    client = signed_in(ana, enforce_csrf_checks=True)
    assert client.post("/notices/read/").status_code == 403  # no CSRF token

    token = client.get("/notices/").context["csrf_token"]
    Notice.objects.filter(recipient=ana).update(read_at=None)
    response = client.post("/notices/read/", {"csrfmiddlewaretoken": str(token)})
    assert response.status_code == 302 and response["Location"] == "/notices/"
    assert not Notice.objects.filter(recipient=ana, read_at__isnull=True).exists()
    theirs.refresh_from_db()
    assert theirs.read_at is None


@pytest.mark.django_db
def test_mark_read_up_to_a_notice_answers_json(ana) -> None:
    first, second, third = (make_notice(ana, f"notice {n}") for n in range(3))
    client = signed_in(ana)
    answer = client.post(
        "/notices/read/", {"up_to": str(second.pk)}, headers={"Accept": "application/json"}
    )
    assert answer.status_code == 200
    assert answer.json() == {"marked": 2, "unread": 1}
    assert list(Notice.objects.filter(read_at__isnull=True)) == [third]


@pytest.mark.django_db
def test_mark_read_refuses_bad_input_with_a_message(ana) -> None:
    make_notice(ana, "still unread")
    json_accept = {"Accept": "application/json"}
    bad = signed_in(ana).post("/notices/read/", {"up_to": "-3"}, headers=json_accept)
    assert bad.status_code == 400 and "up_to" in bad.json()["error"]
    assert signed_in(ana).get("/notices/read/").status_code == 405
    anonymous = Client().post("/notices/read/", headers=json_accept)
    assert anonymous.status_code == 401 and anonymous.json()["error"]
    assert Notice.objects.filter(read_at__isnull=True).count() == 1


@pytest.mark.django_db
def test_every_page_of_a_signed_in_user_loads_the_notices_script(ana) -> None:
    html = signed_in(ana).get("/").content.decode()
    assert 'id="notices-toggle"' in html and "monitor/notices.js" in html
    assert "monitor/notices.js" not in Client().get("/accounts/login/").content.decode()


# --- The poller, in-process ----------------------------------------------------


def test_each_notice_frame_carries_the_unread_count_as_of_itself() -> None:
    mine = [Notice(pk=n, recipient_id=1, text="x", created_at=AT) for n in (1, 2, 3)]
    read = Notice(pk=4, recipient_id=2, text="x", created_at=AT, read_at=AT)
    frames = [json.loads(f) for f in notice_frames([*mine, read], {1: 5})]
    assert [f["unread"] for f in frames] == [3, 4, 5, 0]
    assert frames[0]["notice"]["id"] == 1 and frames[3]["notice"]["read"] is True


class FakeSocket:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.received: list[int] = []

    async def deliver(self, notice_id: int, frame: str) -> None:
        self.received.append(json.loads(frame)["notice"]["id"])


@pytest.mark.django_db(transaction=True)
def test_a_poll_sends_each_notice_once_to_its_recipient_even_when_committed_late(ana, ben) -> None:
    """Ids can commit out of order (two workers on PostgreSQL): a notice whose
    id is below one already sent still arrives, once, within the reorder window."""
    poller = NoticePoller()
    to_ana, to_ben = FakeSocket(ana.pk), FakeSocket(ben.pk)
    poller.sockets = {ana.pk: {to_ana}, ben.pk: {to_ben}}  # type: ignore[dict-item]
    cursor = PollCursor(0)

    async def in_database(function, *args):
        return await in_a_thread(function, *args)

    def poll(now: float) -> int:
        return asyncio.run(poller.poll_once(cursor, in_database, now=now))

    first, late, third = (make_notice(ana, f"n{n}") for n in range(3))
    late_id = late.pk
    late.delete()
    make_notice(ben, "for ben")
    assert poll(0.0) == 3
    assert to_ana.received == [first.pk, third.pk]
    assert len(to_ben.received) == 1

    make_notice(ana, "late", id=late_id)  # committed after a higher id was sent
    assert poll(0.5) == 1
    assert poll(1.0) == 0  # looked at again, not sent again
    assert to_ana.received == [first.pk, third.pk, late_id]
    assert len(to_ben.received) == 1


@pytest.mark.django_db(transaction=True)
def test_the_poller_starts_with_the_first_socket_and_stops_after_the_last(
    ana, ben, settings
) -> None:
    settings.NOTICES_POLL_MS = 50
    poller = NoticePoller()
    to_ana, to_ben = FakeSocket(ana.pk), FakeSocket(ben.pk)

    async def scenario() -> None:
        assert not poller.running
        async with asyncio.timeout(3):
            await poller.add(to_ana)  # type: ignore[arg-type]
            assert poller.running
            await poller.add(to_ben)  # type: ignore[arg-type]
            notice = await in_a_thread(make_notice, ben, "for ben")
            while not to_ben.received:
                await asyncio.sleep(0.02)
            assert to_ben.received == [notice.pk] and to_ana.received == []
            poller.remove(to_ana)  # type: ignore[arg-type]
            await asyncio.sleep(0.2)
            assert poller.running  # ben is still there
            poller.remove(to_ben)  # type: ignore[arg-type]
            while poller.running:
                await asyncio.sleep(0.02)
            # The stopped poller closes its database connection on its way out.
            await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))

    asyncio.run(scenario())


# --- /ws/notices/ against a running server ---------------------------------------


def session_headers(user: User) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}


async def next_frame(websocket, timeout: float) -> dict:
    async with asyncio.timeout(timeout):
        return json.loads(await websocket.recv())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_notice_reaches_its_recipient_within_a_second_and_nobody_else(
    stack: Stack, ana, ben
) -> None:
    ana_headers, ben_headers = session_headers(ana), session_headers(ben)

    async def scenario() -> tuple[dict, float, list[dict], dict]:
        url = stack.ws_url + "/ws/notices/"
        async with (
            connect(url, origin=stack.origin, additional_headers=ana_headers) as to_ana,
            connect(url, origin=stack.origin, additional_headers=ben_headers) as to_ben,
        ):
            # The first connection starts the process's poller: the welcome still comes at once.
            assert (await next_frame(to_ana, 3))["type"] == "welcome"
            assert (await next_frame(to_ben, 3))["type"] == "welcome"
            stored = time.monotonic()
            await in_a_thread(make_notice, ana, "ben liked your photo", actor_name="ben")
            frame = await next_frame(to_ana, 5)
            elapsed = time.monotonic() - stored
            # Ben's socket stays quiet for ana's notice...
            quiet: list[dict] = []
            try:
                quiet.append(await next_frame(to_ben, 1.5))
            except TimeoutError:
                pass
            # ...and carries his own.
            await in_a_thread(make_notice, ben, "ana started following you", kind="user.followed")
            own = await next_frame(to_ben, 5)
            return frame, elapsed, quiet, own

    frame, elapsed, quiet, own = asyncio.run(scenario())
    assert frame["type"] == "notice"
    assert frame["notice"]["text"] == "ben liked your photo"
    assert frame["notice"]["actor"] == "ben" and frame["notice"]["read"] is False
    assert frame["unread"] == 1
    assert elapsed < 2.0, f"the notice took {elapsed:.2f}s to reach its recipient"
    assert quiet == []
    assert own["notice"]["text"] == "ana started following you" and own["unread"] == 1


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_welcome_has_the_unread_count_and_the_latest_ten(stack: Stack, ana, ben) -> None:
    for n in range(12):
        make_notice(ana, f"notice {n}", read=n < 4)
    make_notice(ben, "for ben")

    headers = session_headers(ana)

    async def welcome() -> dict:
        async with connect(
            stack.ws_url + "/ws/notices/",
            origin=stack.origin,
            additional_headers=headers,
        ) as websocket:
            frame = await next_frame(websocket, 10)
            await websocket.send(json.dumps({"type": "ping"}))
            assert (await next_frame(websocket, 5))["type"] == "pong"
            await websocket.send("{nope")
            assert (await next_frame(websocket, 5))["code"] == "malformed"
            return frame

    frame = asyncio.run(welcome())
    assert frame["type"] == "welcome"
    assert frame["unread"] == 8
    assert [n["text"] for n in frame["notices"]] == [f"notice {n}" for n in range(11, 1, -1)]
    assert [n["read"] for n in frame["notices"]] == [False] * 8 + [True] * 2


@pytest.mark.e2e
def test_an_anonymous_notice_socket_is_closed_with_4401(stack: Stack) -> None:
    async def attempt() -> tuple[dict, int | None]:
        async with connect(stack.ws_url + "/ws/notices/", origin=stack.origin) as websocket:
            frame = await next_frame(websocket, 10)
            await websocket.wait_closed()
            return frame, websocket.close_code

    frame, code = asyncio.run(attempt())
    assert frame["type"] == "error" and frame["code"] == "unauthenticated"
    assert "sign in" in frame["message"]
    assert code == 4401
