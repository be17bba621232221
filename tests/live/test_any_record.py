"""Every record on the topic reaches an operator's stream, marked for what it
is; a user who is not staff gets only the site's own public events.

Against the real stack (daphne and the analytics worker on the session's
embedded broker), with records another service could write: a CloudEvent of
a type the site does not know, a plain-text record, a JSON record without an
envelope, bytes, and a forged event of one of the site's types."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.conf import settings
from websockets.asyncio.client import connect

from monitor.events import signing
from monitor.events.schema import encode_event
from monitor.kafka import clients as kafka
from tests.support.events import photo_event, signup_event, social_event
from tests.support.stack import Stack, make_token

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ORDER = {
    "specversion": "1.0",
    "id": "A234-1234-1234",
    "source": "/shop",
    "type": "order.placed",
    "data": {"order": 17, "total": "12.50"},
}


async def produce_mixed(marker: str) -> None:
    """Seven records, sent in order on one key (so to one partition): five that
    another service could write, and two of the site's own, signed."""
    posted = photo_event(9100, caption=f"signed {marker}")
    forged = social_event(
        "photo.liked", actor=666, post_id=9100, at=None, like_count=77, username="mallory"
    )
    signup = signup_event(9101)
    records: list[tuple[str, bytes, list[tuple[str, bytes]]]] = [
        ("order", json.dumps({**ORDER, "id": f"order-{marker}"}).encode(), []),
        ("text", f"User signed up {marker}".encode(), [("origin", b"seed-script")]),
        ("plain_json", json.dumps({"user": marker}).encode(), []),
        ("binary", b"\x00\xff\xfe" + marker.encode(), []),
        ("forged", encode_event(forged), []),
        ("signup", encode_event(signup), []),
        ("posted", encode_event(posted), []),
    ]
    await kafka.ensure_topics()
    producer = kafka.make_producer()
    await producer.start()
    try:
        for name, value, headers in records:
            if name in ("signup", "posted"):
                headers = [signing.sign(value)]
            await producer.send_and_wait(
                settings.KAFKA_EVENTS_TOPIC, value, key=b"mixed", headers=headers
            )
    finally:
        await producer.stop()


async def read_items(url: str, token: str, until: str, timeout: float = 15) -> list[dict[str, Any]]:
    """Every item received until one whose JSON contains ``until``."""
    items: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers) as websocket:
        assert json.loads(await websocket.recv())["type"] == "welcome"
        async with asyncio.timeout(timeout):
            while not any(until in json.dumps(item) for item in items):
                frame = json.loads(await websocket.recv())
                items.extend(frame.get("events", []))
    return items


def scenario(stack: Stack, tokens: dict[str, str], marker: str) -> dict[str, list[dict[str, Any]]]:
    """What each token's stream got while the mixed records were produced."""
    url = f"{stack.ws_url}/ws/events/"

    async def run() -> dict[str, list[dict[str, Any]]]:
        readers = {
            name: asyncio.create_task(read_items(url, token, f"signed {marker}"))
            for name, token in tokens.items()
        }
        await asyncio.sleep(1.0)  # each is welcomed
        await produce_mixed(marker)
        return {name: await task for name, task in readers.items()}

    return asyncio.run(run())


def test_an_operator_sees_every_record_marked_for_what_it_is(stack: Stack) -> None:
    got = scenario(stack, {"operator": make_token("operator-all")}, "m1")["operator"]
    first = next(item for item in got if item.get("event", {}).get("id") == "order-m1")
    last = next(item for item in got if "signed m1" in json.dumps(item))
    mine = [
        item
        for item in got
        if item["partition"] == first["partition"]
        and first["offset"] <= item["offset"] <= last["offset"]
    ]
    by_kind: dict[str, dict[str, Any]] = {}
    for item in mine:
        if "record" in item:
            by_kind[item["record"]["value"][:4]] = item
        else:
            by_kind[item["event"]["type"]] = item

    order = by_kind["order.placed"]
    assert order["verified"] is False and order["reason"] == "not one of the site's event types"
    assert order["event"]["source"] == "/shop" and isinstance(order["timestamp"], int)

    text = by_kind["User"]
    assert text["reason"].startswith("value is not JSON")
    assert text["record"] == {
        "size": len(b"User signed up m1"),
        "value": "User signed up m1",
        "encoding": "utf-8",
        "truncated": False,
        "key": "mixed",
        "headers": {"origin": "seed-script"},
    }
    plain = by_kind['{"us']
    assert plain["reason"] == "value is not a CloudEvent: no specversion"
    binary = next(i for i in mine if i.get("record", {}).get("encoding") == "base64")
    assert binary["reason"].startswith("value is not UTF-8")
    assert binary["record"]["size"] == 5

    forged = by_kind["photo.liked"]
    assert forged["verified"] is False and forged["reason"] == "not signed by this site"
    posted = by_kind["photo.posted"]
    assert posted["verified"] is True and "reason" not in posted
    # Every record, in the order written, each once.
    assert [item["offset"] for item in mine] == list(range(first["offset"], first["offset"] + 7))


def test_a_user_who_is_not_staff_gets_only_the_site_s_public_events(stack: Stack) -> None:
    tokens = {
        "user": make_token("plain-user", staff=False),
        "operator": make_token("operator-two"),
    }
    got = scenario(stack, tokens, "m2")
    # The operator got them (the order, the text and JSON records, the photo;
    # the bytes, the forged like and the sign-up carry no "m2" in their text).
    assert len([item for item in got["operator"] if "m2" in json.dumps(item)]) == 4
    # The user's stream: the signed photo only; no foreign event, raw record,
    # forged like or sign-up (not on the public feed), though all came before it.
    assert [item["event"]["type"] for item in got["user"]] == ["photo.posted"]
    assert got["user"][0]["verified"] is True


def test_an_operator_filters_by_a_type_the_site_does_not_know_and_by_kind(stack: Stack) -> None:
    token = make_token("operator-filter")
    url = f"{stack.ws_url}/ws/events/"

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        orders = asyncio.create_task(read_items(f"{url}?types=order.placed", token, "order-m3"))
        records = asyncio.create_task(read_items(f"{url}?kind=record", token, "signed up m3"))
        await asyncio.sleep(1.0)
        await produce_mixed("m3")
        return await orders, await records

    orders, records = asyncio.run(run())
    assert {item["event"]["type"] for item in orders} == {"order.placed"}
    assert all("record" in item and "event" not in item for item in records)
    assert any(item["record"]["value"] == "User signed up m3" for item in records)
