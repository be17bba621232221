"""/dashboard/ in a real browser, with what other services put on the topic:
records that are not CloudEvents, forged events of the site's types, other
services' events; the type list built from what is seen, the topic and kind
filters; and every consumer group and topic in the Kafka panels."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiokafka import TopicPartition
from django.conf import settings

from monitor.events.schema import build_event, encode_event
from monitor.events.signing import SIGNATURE_HEADER
from monitor.kafka import clients as kafka
from tests.dashboard.test_dashboard_browser import LIVE, open_dashboard
from tests.support.browser import ARTIFACTS, needs_chromium
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), needs_chromium]

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]  # key, value, headers
ROWS = "#tail tr.event"


def off_the_loop(coroutine: Any) -> Any:
    """Run ``coroutine`` on a thread of its own (Playwright's loop runs on this one)."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result(30)


async def put(records: list[Record]) -> list[tuple[int, int]]:
    """Send ``records`` to the events topic as another service would (no
    signature of the site's); returns where each one went (partition, offset)."""
    producer = kafka.make_producer()
    await producer.start()
    try:
        placed = []
        for key, value, headers in records:
            sent = await producer.send_and_wait(
                settings.KAFKA_EVENTS_TOPIC, value, key=key, headers=headers
            )
            placed.append((sent.partition, sent.offset))
        return placed
    finally:
        await producer.stop()


def cloudevent(event_type: str, source: str, **attributes: Any) -> bytes:
    return json.dumps(
        {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source, "type": event_type}
        | attributes
    ).encode()


def row_at(page, position: tuple[int, int]):
    partition, offset = position
    return page.wait_for_selector(
        f'{ROWS}[data-partition="{partition}"][data-offset="{offset}"]', timeout=10_000
    )


def marked(row, kind: str) -> tuple[str, str, str]:
    """A row's badge of ``kind``: its visible text, its title, its hidden text."""
    badge = row.query_selector(f".badge.{kind}")
    assert badge is not None, f"no {kind} badge"
    hidden = badge.query_selector(".visually-hidden")
    return (
        badge.evaluate("node => node.firstChild.textContent"),
        badge.get_attribute("title"),
        hidden.text_content() if hidden else "",
    )


def test_records_and_unverified_events_show_with_their_marks(browser, stack: Stack) -> None:
    viewer, page = open_dashboard(browser, stack.base_url, "any-record-viewer")
    binary = bytes(range(250, 256)) + bytes(range(40))
    forged = build_event(
        type="photo.posted",
        subject="posts/999",
        actor="999",
        data={
            "post_id": 999,
            "author_id": 999,
            "author": "mallory",
            "caption": "a forged post",
            "photo_url": "/media/photos/999.jpg",
        },
        source=settings.EVENT_SOURCE,
    )
    text, raw, fake, invoice = off_the_loop(
        put(
            [
                (b"k-1", b"plain text, not <b>JSON</b>", [("origin", b"seed-script")]),
                (None, binary, []),
                (b"999", encode_event(forged), [(SIGNATURE_HEADER, b"v1=nobody:00ff")]),
                (
                    b"7",
                    cloudevent(
                        "invoice.paid", "/billing", subject="invoices/7", data={"cents": 1200}
                    ),
                    [],
                ),
            ]
        )
    )

    # A record that is not a CloudEvent: marked, with why, and previewed as text.
    row = row_at(page, text)
    assert row.get_attribute("data-kind") == "record"
    label, title, hidden = marked(row, "raw")
    assert label == "not a CloudEvent" and title and hidden == ": " + title
    assert row.query_selector("td.topic").inner_text() == settings.KAFKA_EVENTS_TOPIC
    assert row.query_selector("td.summary").inner_text() == "key k-1 · plain text, not <b>JSON</b>"
    row.click()
    detail = page.wait_for_selector("#tail tr.detail")
    facts = detail.query_selector(".facts").inner_text()
    assert f"Not a CloudEvent\n{title}" in facts
    assert "Key\nk-1" in facts and "origin: seed-script" in facts
    assert "Size\n27 bytes" in facts
    assert re.search(r"Broker timestamp\n\d{4}-\d\d-\d\dT", facts)
    assert f"{settings.KAFKA_EVENTS_TOPIC} · partition {text[0]} · offset {text[1]}" in facts
    assert detail.query_selector("pre.value").inner_text() == "plain text, not <b>JSON</b>"
    assert page.locator("#tail b").count() == 0
    row.click()

    # Bytes that are not text: in base64, and said so.
    row = row_at(page, raw)
    assert row.query_selector("td.summary").inner_text().startswith("(binary, base64) ")
    row.click()
    value = page.wait_for_selector("#tail tr.detail pre.value")
    assert base64.b64decode(value.inner_text()) == binary
    assert value.get_attribute("aria-label") == "Record value preview (base64)"
    row.click()

    # A forged event of the site's own type: shown as the site's are, marked unverified.
    row = row_at(page, fake)
    assert row.get_attribute("data-verified") == "false"
    assert row.query_selector("td.summary").inner_text() == "mallory: a forged post"
    label, title, hidden = marked(row, "unverified")
    assert label == "unverified" and title and hidden == ": " + title
    row.click()
    assert f"Verified\nno: {title}" in page.inner_text("#tail tr.detail .facts")
    row.click()

    # Another service's event: a summary of what it is, the envelope in full.
    row = row_at(page, invoice)
    assert row.get_attribute("data-type") == "invoice.paid"
    assert (
        row.query_selector("td.summary").inner_text() == "invoice.paid from /billing · invoices/7"
    )
    assert marked(row, "unverified")[1]
    row.click()
    envelope = json.loads(page.inner_text("#tail tr.detail pre.json"))
    assert envelope["data"] == {"cents": 1200}
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-any-record.png"), full_page=True)
    viewer.close()


def test_types_seen_topics_and_kinds_filter_the_tail(browser, stack: Stack) -> None:
    viewer, page = open_dashboard(browser, stack.base_url, "type-list-viewer")
    event_type = f"shipment.sent.{uuid.uuid4().hex[:6]}"
    off_the_loop(
        put(
            [
                (None, cloudevent(event_type, "/shipping", subject="parcels/1"), []),
                (None, b"a line of a log", []),
                (None, cloudevent(event_type, "/shipping", subject="parcels/2"), []),
            ]
        )
    )

    # A type no one declared is in the list once seen, with how many.
    option = page.wait_for_selector(f'#type-options label[data-type="{event_type}"]')
    page.wait_for_function(
        f"document.querySelector('#type-options label[data-type=\"{event_type}\"] .type-count')"
        ".textContent === '2'"
    )
    assert "2 shown in this page" in option.get_attribute("title")
    page.check(f'input[name="types"][value="{event_type}"]')
    page.wait_for_function(f"new URLSearchParams(location.search).get('types') === '{event_type}'")
    only_that_type = (
        f"[...document.querySelectorAll('{ROWS}')].map(r => r.dataset.type).join() === "
        f"'{event_type},{event_type}'"
    )
    page.wait_for_function(only_that_type)

    # Records that are not CloudEvents only.
    page.uncheck(f'input[name="types"][value="{event_type}"]')
    page.select_option("#filter-show", "records")
    page.wait_for_function("new URLSearchParams(location.search).get('show') === 'records'")
    page.wait_for_selector(f'{ROWS}[data-kind="record"]')
    kinds = page.eval_on_selector_all(ROWS, "rows => rows.map(r => r.dataset.kind)")
    assert set(kinds) == {"record"}
    page.select_option("#filter-show", "")

    # The topic filter: another topic shows nothing of this one; this one all of it.
    page.fill("#filter-topic", "elsewhere")
    page.wait_for_function("new URLSearchParams(location.search).get('topics') === 'elsewhere'")
    page.wait_for_selector(LIVE)
    page.wait_for_timeout(500)
    assert page.locator(ROWS).count() == 0
    assert page.is_visible("#tail-empty")
    page.fill("#filter-topic", settings.KAFKA_EVENTS_TOPIC)
    page.wait_for_selector(f'{ROWS}[data-type="{event_type}"]')
    topics = page.eval_on_selector_all(ROWS, "rows => rows.map(r => r.dataset.topic)")
    assert set(topics) == {settings.KAFKA_EVENTS_TOPIC}

    # Any type is taken, from the URL or typed in, seen or not.
    page.goto("/dashboard/?types=never.seen.type")
    page.wait_for_selector(LIVE)
    assert page.is_checked('input[name="types"][value="never.seen.type"]')
    assert page.inner_text('label[data-type="never.seen.type"] .type-count') == "not seen"
    page.fill("#filter-type", "also.never.seen")
    page.click("#add-type")
    page.wait_for_function(
        "new URLSearchParams(location.search).get('types') === 'also.never.seen,never.seen.type'"
    )
    page.wait_for_selector(LIVE)
    assert page.is_hidden("#filter-error")
    viewer.close()


def test_the_kafka_panels_list_every_group_and_topic(browser, stack: Stack) -> None:
    group = f"seed-analytics-{uuid.uuid4().hex[:6]}"
    topic = settings.KAFKA_EVENTS_TOPIC

    async def lag_one_record() -> None:
        """Another service's group, one record behind on partition 0."""
        tp = TopicPartition(topic, 0)
        producer = kafka.make_producer()
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, b"one more", partition=0)
        finally:
            await producer.stop()
        consumer = kafka.make_consumer(group_id=group)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.commit({tp: sent.offset})
        finally:
            await consumer.stop()

    off_the_loop(lag_one_record())
    viewer, page = open_dashboard(browser, stack.base_url, "groups-viewer")

    theirs = page.wait_for_selector(f'#groups tr[data-group="{group}"]', timeout=15_000)
    assert theirs.query_selector(".badge.site") is None
    page.wait_for_selector('#groups tr[data-group="analytics"] .badge.site')
    lagging = page.query_selector_all(f'#groups tr[data-group="{group}"] td.lag-time')
    ages = [cell.inner_text() for cell in lagging]
    assert any(re.fullmatch(r"\d+(\.\d)? s|\d+ ms|\d+ min( \d+ s)?", age) for age in ages), ages
    watched = page.wait_for_selector(f'#topics tr[data-topic="{topic}"]')
    badges = watched.eval_on_selector_all(".badge", "all => all.map(b => b.firstChild.textContent)")
    assert badges == ["site events", "watched"]
    names = page.eval_on_selector_all("#topics tr", "rows => rows.map(r => r.dataset.topic)")
    assert f"{topic}.dlq" in names or settings.KAFKA_DLQ_TOPIC in names
    viewer.close()
