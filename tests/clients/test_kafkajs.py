"""The article's kafkajs producer and consumer (tests/clients/node/, unchanged
but for the broker's address) and another service's kafkajs producer, against
the whole site: web, analytics and notifications on a broker of the test's own.

The article's producer writes plain text to ``user-events``; the other
service writes a CloudEvent of its own and forges one of the site's (a like
of a real post, claiming 77 likes, with a signature of a key the site never
gave). An operator's stream shows each marked for what it is; a user's shows
none of them; analytics stores both events, unverified, and sets the plain
text aside as a dead letter; the forged like changes no count and tells
nobody; and the article's consumer group reads the topic from its beginning
and is listed, with its lag, among the dashboard's consumer groups."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from websockets.asyncio.client import ClientConnection, connect

from monitor.kafka import clients as kafka
from monitor.models import (
    AnalyticsEvent,
    DeadLetter,
    Like,
    Notice,
    OutboxEvent,
    PostDayEngagement,
)
from tests.clients.conftest import NodeScripts
from tests.clients.dashboard import wait_for_groups
from tests.support.stack import Poster, Processes, Stack, make_token, signed_in_client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TOPIC = "user-events"  # the article's topic, and the site's by default
Items = list[dict[str, Any]]


def start_site(processes: Processes, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Stack:
    """Web, analytics and notifications on the test's broker, the site's
    events topic being the article's."""
    processes.env.update(KAFKA_EVENTS_TOPIC=TOPIC, KAFKA_DLQ_TOPIC=f"{TOPIC}.dlq")
    settings.KAFKA_EVENTS_TOPIC, settings.KAFKA_DLQ_TOPIC = TOPIC, f"{TOPIC}.dlq"
    asyncio.run(kafka.ensure_topics())
    monkeypatch.setitem(Processes.COMMANDS, "notifications", ["manage.py", "run_notifications"])
    processes.start("analytics")
    processes.start("notifications")
    processes.start("web")
    ws_url = processes.base_url.replace("http://", "ws://")
    return Stack(processes.base_url, ws_url, processes.env, processes.running)


def like(poster: Poster, post_id: int) -> int:
    """Like the post through the site, as its page does; the post's new like count."""
    response = poster.client.post(
        f"/posts/{post_id}/like/",
        data={"csrfmiddlewaretoken": poster.token},
        headers={"Referer": poster.base_url + "/", "Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    return int(response.json()["like_count"])


def like_count_on(client: httpx.Client, page: str, post_id: int) -> int:
    """The like count ``page`` shows on the post's card."""
    html = client.get(page).text
    card = re.search(rf'id="post-{post_id}".*?<span class="like-count">(\d+)</span>', html, re.S)
    assert card, f"post {post_id} is not on {page}"
    return int(card.group(1))


def wait_until_published(timeout: float = 15) -> None:
    """Return once the site has published every event it saved (no outbox row unsent)."""
    deadline = time.monotonic() + timeout
    while OutboxEvent.objects.filter(sent_at__isnull=True).exists():
        assert time.monotonic() < deadline, "the site's events were not published"
        time.sleep(0.1)


async def read_until(socket: ClientConnection, done: Callable[[Items], bool]) -> Items:
    """The stream's items until ``done`` accepts them (at most 20 s)."""
    items: Items = []
    async with asyncio.timeout(20):
        while not done(items):
            items.extend(json.loads(await socket.recv()).get("events", []))
    return items


def event_ids(items: Items) -> set[str]:
    return {item["event"]["id"] for item in items if "event" in item}


def posted(items: Items, post_id: int) -> bool:
    return any(
        item.get("event", {}).get("type") == "photo.posted"
        and item["event"]["data"]["post_id"] == post_id
        for item in items
    )


def watch(site: Stack, tokens: tuple[str, str], send: Callable[[], dict[str, Any]]) -> Any:
    """What an operator's and a user's streams (by their tokens) receive while
    ``send`` runs: (operator's items, user's items, what ``send`` returned).
    ``send`` writes its records and then posts a photo (``sent["marker"]``)."""

    async def run() -> tuple[Items, Items, dict[str, Any]]:
        url = f"{site.ws_url}/ws/events/"
        operator_token, user_token = tokens
        async with (
            connect(url, additional_headers={"Authorization": f"Bearer {operator_token}"}) as op,
            connect(url, additional_headers={"Authorization": f"Bearer {user_token}"}) as user,
        ):
            for socket in (op, user):
                assert json.loads(await socket.recv())["type"] == "welcome"
            sent = await asyncio.to_thread(send)
            wanted = {sent["order"], sent["like"]}

            def everything(items: Items) -> bool:
                plain = any(i.get("record", {}).get("value") == "User signed up" for i in items)
                return plain and wanted <= event_ids(items) and posted(items, sent["marker"])

            # The user's stream was sent the same batches while the operator's was read.
            seen = await read_until(op, everything)
            return seen, await read_until(user, lambda i: posted(i, sent["marker"])), sent

    return asyncio.run(run())


def dead_letter_reasons(letter: DeadLetter) -> dict[str, str]:
    """{group: why it refused the record} of a dead letter, whether each group's
    part is a row of its own or the letter names one group."""
    parts = getattr(letter, "groups", None)
    if parts is not None and hasattr(parts, "all"):
        return {part.group: part.reason for part in parts.all()}
    return {letter.group: letter.reason}  # a letter of one group


def test_the_article_s_clients_and_a_forger_against_the_whole_site(
    kafkajs: NodeScripts, processes: Processes, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    site = start_site(processes, monkeypatch, settings)
    broker = {"KAFKA_BOOTSTRAP_SERVERS": processes.env["KAFKA_BOOTSTRAP_SERVERS"]}
    # A new member's join takes the broker seconds: the consumer joins meanwhile.
    kafkajs.start("consumer.mjs", broker)
    author, liker = Poster(site.base_url, "author"), Poster(site.base_url, "liker")
    post_id = author.post("a real photo")
    assert like(liker, post_id) == 1
    assert like_count_on(author.client, "/", post_id) == 1
    tokens = (make_token("operator"), make_token("mallory", staff=False))
    wait_until_published()  # the streams start after the photo and the real like
    forged = {
        "FORGED_POST_ID": str(post_id),
        "FORGED_POST_AUTHOR_ID": str(User.objects.get(username="author").pk),
        "FORGED_USER_ID": str(User.objects.get(username="mallory").pk),
        "FORGED_USERNAME": "mallory",
    }

    def send() -> dict[str, Any]:
        kafkajs.run("producer.mjs", broker)
        sent = json.loads(kafkajs.run("foreign_producer.mjs", {**broker, **forged}))
        return {**sent, "marker": author.post("posted after them")}

    seen, user_seen, sent = watch(site, tokens, send)

    plain = next(i for i in seen if i.get("record", {}).get("value") == "User signed up")
    assert plain["topic"] == TOPIC and plain["verified"] is False
    assert plain["reason"].startswith("value is not JSON")
    assert plain["record"]["key"] is None and plain["record"]["encoding"] == "utf-8"
    events = {item["event"]["id"]: item for item in seen if "event" in item}
    order = events[sent["order"]]
    assert (order["event"]["type"], order["event"]["source"]) == ("order.placed", "/shop")
    assert order["verified"] is False and order["reason"] == "not one of the site's event types"
    forged = events[sent["like"]]
    assert forged["event"]["type"] == "photo.liked"
    assert forged["event"]["data"]["like_count"] == 77
    assert forged["verified"] is False
    assert forged["reason"] == "signed with an unknown key 'forger'"
    # A user's stream: the photo posted after them, and none of them.
    assert [item["event"]["type"] for item in user_seen] == ["photo.posted"]

    # The article's consumer group read the topic from its beginning.
    kafkajs.wait_for_line("consumer.mjs", "User signed up", timeout=40)
    operator = signed_in_client(site, "dashboard-operator", "a-long-pass-phrase-4", staff=True)
    state = wait_for_groups(
        operator,
        lambda groups: all(
            groups.get(name, {}).get("lag") == 0
            for name in ("analytics", "notifications", "seed-analytics")
        ),
        timeout=30,
    )
    seed = state["groups"]["seed-analytics"]
    assert seed["site"] is False and seed["empty"] is False and seed["topics"] == [TOPIC]
    assert seed["lag_seconds"] == 0 and {row["lag"] for row in seed["partitions"]} == {0}
    assert_stored_and_nobody_told(author, post_id, sent)


def assert_stored_and_nobody_told(author: Poster, post_id: int, sent: dict[str, Any]) -> None:
    """What the site made of the records, once analytics and notifications read them all."""
    rows = {row.cloudevent_id: row for row in AnalyticsEvent.objects.all()}
    order, forged = rows[sent["order"]], rows[sent["like"]]
    assert (order.type, order.source, order.verified) == ("order.placed", "/shop", False)
    assert (forged.type, forged.verified, forged.data["like_count"]) == ("photo.liked", False, 77)
    real_likes = [row for row in rows.values() if row.type == "photo.liked" and row.verified]
    assert [row.data["post_id"] for row in real_likes] == [post_id]

    (letter,) = DeadLetter.objects.filter(value=b"User signed up")
    assert letter.topic == TOPIC
    reasons = dead_letter_reasons(letter)
    assert reasons["analytics"].startswith("value is not JSON")

    # Only the real like counts: in the database, in engagement, on the pages.
    assert Like.objects.filter(post_id=post_id).count() == 1
    engagement = PostDayEngagement.objects.filter(post_id=post_id).aggregate(likes=Sum("likes"))
    assert engagement["likes"] == 1
    assert like_count_on(author.client, "/", post_id) == 1
    assert like_count_on(author.client, f"/posts/{post_id}/", post_id) == 1
    # The author was told of the real like only.
    notices = Notice.objects.filter(recipient__username="author")
    assert list(notices.values_list("text", flat=True)) == ["liker liked your photo"]
    assert not Notice.objects.filter(actor_name="mallory").exists()
