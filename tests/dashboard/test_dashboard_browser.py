"""/dashboard/ in a real browser (headless Chromium from the system packages):
history then live rows, filters in the URL, pause and resume, a server
restart with resume, phone width and the keyboard, and which part is down."""

from __future__ import annotations

import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
from aiokafka import TopicPartition
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Sum

from monitor.feed.services import post_create
from monitor.kafka import clients as kafka
from monitor.management.processes import stop_processes
from monitor.models import EventMinuteCount, OutboxEvent
from tests.support.browser import ARTIFACTS, needs_chromium, sign_up
from tests.support.images import jpeg_bytes
from tests.support.stack import Poster, Processes, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), needs_chromium]

LIVE = '#stream-status[data-state="live"]'
EVENT_ROWS = "#tail tr.event"
# The ids of the rows of CloudEvents (records that are not CloudEvents have none).
ROW_IDS = "rows => rows.filter(row => row.dataset.eventId).map(row => row.dataset.eventId)"


def open_dashboard(browser, base_url: str, username: str, **context):
    """A new staff user's browser page on the dashboard, once it is live."""
    # bypass_csp: see test_pages_browser.sign_up.
    viewer = browser.new_context(base_url=base_url, bypass_csp=True, **context)
    page = viewer.new_page()
    page.goto("/accounts/signup/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "a-long-pass-phrase-9")
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")
    User.objects.filter(username=username).update(is_staff=True)
    page.goto("/dashboard/")
    page.wait_for_selector(LIVE, timeout=15_000)
    return viewer, page


def row_ids(page) -> list[str]:
    return page.eval_on_selector_all(EVENT_ROWS, ROW_IDS)


def event_ids(**filters) -> list[str]:
    return [
        str(i) for i in OutboxEvent.objects.filter(**filters).values_list("event_id", flat=True)
    ]


def post_photo(poster: Poster, caption: str) -> str:
    """Post a photo over HTTP; returns the id of its event."""
    subject = f"posts/{poster.post(caption)}"
    for row in OutboxEvent.objects.filter(event_type="photo.posted").order_by("-id"):
        if json.loads(bytes(row.payload))["subject"] == subject:
            return str(row.event_id)
    raise AssertionError(f"no event for {subject}")


def test_it_shows_history_at_once_then_a_new_post_within_a_second(
    browser, stack: Stack, tmp_path
) -> None:
    poster, form = sign_up(browser, stack, "dash-poster")
    form.set_input_files("input[name=photo]", str(_photo(tmp_path)))
    form.fill("textarea[name=caption]", "posted before anyone watched")
    form.click("form.post-form button[type=submit]")
    form.wait_for_url(stack.base_url + "/")
    earlier = event_ids(event_type="photo.posted")
    assert len(earlier) == 1

    viewer, dashboard = sign_up(browser, stack, "dash-viewer")
    User.objects.filter(username="dash-viewer").update(is_staff=True)
    opened = time.monotonic()
    dashboard.goto("/dashboard/")
    history_row = dashboard.wait_for_selector(
        f'{EVENT_ROWS}[data-event-id="{earlier[0]}"]', timeout=5_000
    )
    shown_after = time.monotonic() - opened
    assert shown_after < 3.0, f"history took {shown_after:.2f}s to show"
    assert history_row.get_attribute("data-replay") == "true"
    dashboard.wait_for_selector(LIVE, timeout=10_000)

    form.goto("/posts/new/")
    form.set_input_files("input[name=photo]", str(_photo(tmp_path)))
    form.fill("textarea[name=caption]", 'live <img src=x onerror="document.title=1"> now')
    clicked = time.monotonic()
    form.click("form.post-form button[type=submit]")
    row = dashboard.wait_for_selector(
        f'{EVENT_ROWS}[data-type="photo.posted"]:not([data-replay])', timeout=5_000
    )
    seen_after = time.monotonic() - clicked
    to_screen_ms = int(row.query_selector("td.latency").inner_text().split()[0])
    # From the click: the upload, the post, Kafka, the fan-out and the render.
    assert seen_after < 1.0, f"the row appeared {seen_after:.2f}s after the click"
    assert to_screen_ms < 1000, f"the event reached the screen {to_screen_ms} ms after it happened"

    # Captions are text, not markup.
    summary = row.query_selector("td.summary").inner_text()
    assert summary == 'dash-poster: live <img src=x onerror="document.title=1"> now'
    assert dashboard.locator("#tail img").count() == 0
    assert dashboard.title() != "1"
    # Newest on top, every event of the session in the table exactly once.
    ids = row_ids(dashboard)
    assert ids[0] == row.get_attribute("data-event-id")
    assert set(event_ids()) <= set(ids)
    assert len(ids) == len(set(ids))

    row.click()
    detail = dashboard.wait_for_selector("#tail tr.detail pre.json")
    envelope = json.loads(detail.inner_text())
    assert envelope["id"] == ids[0]
    assert envelope["data"]["caption"].startswith("live <img")
    facts = dashboard.inner_text("#tail tr.detail .facts")
    assert "Kafka position" in facts and "Event → server send" in facts
    dashboard.wait_for_function(
        "document.getElementById('latency').textContent.includes('ms')", timeout=3_000
    )
    # Counters and rates come from the analytics worker, polled every 5 s: they
    # match the database's counts (this test's four events, and any of earlier
    # tests the worker is still recording).
    deadline = time.monotonic() + 20
    while True:
        recorded = EventMinuteCount.objects.aggregate(total=Sum("count"))["total"] or 0
        shown = dashboard.text_content("#total")
        if recorded >= 4 and shown == str(recorded):
            break
        assert time.monotonic() < deadline, f"counters show {shown}, recorded {recorded}"
        time.sleep(0.5)
    photos = EventMinuteCount.objects.filter(type="photo.posted").aggregate(n=Sum("count"))["n"]
    assert photos >= 2
    assert dashboard.text_content('#counts tr[data-type="photo.posted"] .count') == str(photos)
    assert dashboard.locator("#rates-chart .uplot").count() == 1
    dashboard.click("label[for=minutes-60]")
    dashboard.wait_for_function("location.search === '?minutes=60'")
    dashboard.wait_for_selector("#rates-chart .uplot")
    ARTIFACTS.mkdir(exist_ok=True)
    dashboard.screenshot(path=str(ARTIFACTS / "dashboard-desktop.png"), full_page=True)
    viewer.close()
    poster.close()


def test_filters_run_on_the_server_and_live_in_the_url(browser, stack: Stack) -> None:
    poster = Poster(stack.base_url, "filter-poster")
    viewer, page = open_dashboard(browser, stack.base_url, "filter-viewer")

    # Any type may be typed in, seen yet or not; it joins the list, checked.
    page.fill("#filter-type", "photo.posted")
    page.keyboard.press("Enter")
    page.wait_for_function("location.search === '?types=photo.posted'")
    assert page.is_checked('input[name="types"][value="photo.posted"]')
    page.keyboard.press("Escape")  # out of the field: keys are shortcuts again
    page.wait_for_selector(LIVE)
    poster.post("a gull over the harbour")
    poster.post("snow on the pass")
    page.wait_for_function("document.querySelectorAll('#tail tr.event').length >= 2")
    assert set(page.eval_on_selector_all(EVENT_ROWS, "rows => rows.map(r => r.dataset.type)")) == {
        "photo.posted"
    }

    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "filter-text"
    page.keyboard.type("HARBOUR")
    page.keyboard.press("Enter")
    page.wait_for_function("new URLSearchParams(location.search).get('text') === 'HARBOUR'")
    harbour = post_photo(poster, "harbour lights")
    poster.post("nothing to see")
    page.wait_for_selector(f'{EVENT_ROWS}[data-event-id="{harbour}"]')
    time.sleep(0.5)  # the other post would have arrived by now
    summaries = page.eval_on_selector_all(
        f"{EVENT_ROWS} td.summary", "cells => cells.map(c => c.textContent)"
    )
    assert summaries and all("harbour" in text.lower() for text in summaries), summaries
    # The history replayed for the new filter holds the earlier match too.
    assert any("gull over the harbour" in text for text in summaries), summaries

    url = page.url
    assert parse_qs(urlsplit(url).query) == {"types": ["photo.posted"], "text": ["HARBOUR"]}
    shared = viewer.new_page()
    shared.goto(url)
    shared.wait_for_selector(LIVE, timeout=10_000)
    checked = shared.eval_on_selector_all(
        'input[name="types"]:checked', "boxes => boxes.map(box => box.value)"
    )
    assert checked == ["photo.posted"]
    assert shared.input_value("#filter-text") == "HARBOUR"
    shared.wait_for_selector(f'{EVENT_ROWS}[data-event-id="{harbour}"]', timeout=5_000)
    shared_summaries = shared.eval_on_selector_all(
        f"{EVENT_ROWS} td.summary", "cells => cells.map(c => c.textContent)"
    )
    assert len(shared_summaries) == 2 and all("harbour" in t for t in shared_summaries)
    viewer.close()


def test_pause_holds_rows_and_resume_shows_them(browser, stack: Stack) -> None:
    poster = Poster(stack.base_url, "pause-poster")
    viewer, page = open_dashboard(browser, stack.base_url, "pause-viewer")
    before = row_ids(page)

    page.keyboard.press("p")
    assert page.get_attribute("#pause", "aria-pressed") == "true"
    posted = [post_photo(poster, f"while paused {n}") for n in range(3)]
    page.wait_for_selector('#pause[data-pending="3"]', timeout=5_000)
    assert page.inner_text("#pause") == "Resume (3 new)"
    assert row_ids(page) == before

    page.click("#pause")
    assert page.get_attribute("#pause", "aria-pressed") == "false"
    assert row_ids(page)[:3] == posted[::-1]
    assert row_ids(page)[3:] == before

    page.keyboard.press("c")
    assert row_ids(page) == []
    assert page.is_visible("#tail-empty")
    viewer.close()


def test_it_resumes_after_a_server_restart_without_losses_or_duplicates(
    browser, processes: Processes, settings
) -> None:
    # Events are published by the relay, which goes on while the web process is down.
    settings.EVENTS_PUBLISH_EAGERLY = False
    processes.start("web")
    processes.start("relay")
    viewer, page = open_dashboard(browser, processes.base_url, "restart-viewer")
    author = User.objects.create_user(username="restart-author", password="pw-author-123")

    def post(n: int) -> None:
        photo = SimpleUploadedFile("p.jpg", jpeg_bytes(), content_type="image/jpeg")
        post_create(author=author, photo=photo, caption=f"restart #{n}")

    for n in range(5):
        post(n)
    page.wait_for_function(
        "document.querySelectorAll('#tail tr.event').length >= 6", timeout=15_000
    )

    stop_processes([processes.running["web"]])
    page.wait_for_selector('#stream-status[data-state="reconnecting"]', timeout=10_000)
    for n in range(5, 15):
        post(n)
        time.sleep(0.2)
    processes.start("web")
    for n in range(15, 20):
        post(n)
        time.sleep(0.1)

    expected = set(event_ids())
    assert len(expected) == 21  # the viewer's sign-up and 20 posts
    deadline = time.monotonic() + 30
    while not expected <= set(row_ids(page)):
        if time.monotonic() > deadline:
            missing = expected - set(row_ids(page))
            status = page.text_content("#stream-status")
            pytest.fail(f"{len(missing)} events never shown (stream: {status})")
        time.sleep(0.2)
    page.wait_for_selector(LIVE)
    time.sleep(1)  # a duplicate would have arrived by now
    ids = row_ids(page)
    assert len(ids) == len(set(ids)), "the page shows some events twice"
    assert set(ids) == expected
    assert page.inner_text("#duplicates") == "0"
    assert page.inner_text("#gaps") == "0"
    viewer.close()


def test_phone_width_and_keyboard(browser, stack: Stack) -> None:
    Poster(stack.base_url, "phone-poster").post("a photo with a rather long caption " * 4)
    viewer, page = open_dashboard(
        browser, stack.base_url, "phone-viewer", viewport={"width": 375, "height": 740}
    )
    page.wait_for_selector(EVENT_ROWS)
    page.wait_for_timeout(500)  # the chart and the polled panels settle
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 375px"

    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.matches('#tail tr.event')"):
            break
    else:
        pytest.fail("Tab never reached a row of the tail")
    focused = page.evaluate("document.activeElement.dataset.eventId")
    assert focused == row_ids(page)[0]
    page.keyboard.press("Enter")
    assert page.get_attribute(f'{EVENT_ROWS}[data-event-id="{focused}"]', "aria-expanded") == "true"
    assert json.loads(page.inner_text("#tail tr.detail pre.json"))["id"] == focused
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"an expanded row makes the page scroll sideways by {overflow}px"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)

    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.eventId") == row_ids(page)[1]
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    assert (
        page.get_attribute(f'{EVENT_ROWS}[data-event-id="{focused}"]', "aria-expanded") == "false"
    )
    assert page.locator("#tail tr.detail").count() == 0
    viewer.close()


async def _commit(group: str, partition: int, offset: int) -> None:
    consumer = kafka.make_consumer(group_id=group)
    await consumer.start()
    try:
        tp = TopicPartition(django_settings.KAFKA_EVENTS_TOPIC, partition)
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


def test_it_names_the_part_that_is_down_and_never_makes_up_a_lag(
    browser, own_broker, processes: Processes
) -> None:
    processes.env["LIVE_READER_MAX_BEHIND_SECONDS"] = "2"
    processes.start("web")
    viewer, page = open_dashboard(browser, processes.base_url, "down-viewer")
    page.wait_for_selector('#broker[data-ok="true"]', timeout=15_000)
    page.wait_for_selector('#live-reader[data-state="live"]', timeout=15_000)
    assert page.inner_text("#live-reader").startswith("Keeping up")
    assert page.is_hidden("#site-down")

    # A group committed past the end the broker reports: its lag is unknown, and why.
    # (On a thread of its own: Playwright's loop runs on this one.)
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _commit("analytics", 0, 1000)).result(30)
    unknown = page.wait_for_selector(
        '#groups tr[data-group="analytics"] td.lag-unknown', timeout=15_000
    )
    assert unknown.inner_text() == "unknown"
    assert re.fullmatch(
        r"the broker reports end \d+ below committed 1000", unknown.get_attribute("title")
    )

    # The broker frozen: the page says the broker, and the live reader without it.
    own_broker.pause()
    try:
        page.wait_for_selector('#broker[data-ok="false"]', timeout=20_000)
        assert page.inner_text("#broker") == "Down"
        page.wait_for_selector('#live-reader[data-state="error"]', timeout=20_000)
        assert page.inner_text("#live-reader").startswith("No broker")
        page.wait_for_function(
            "document.getElementById('stream-status').textContent.startsWith('Broker unavailable')",
            timeout=20_000,
        )
        assert page.is_hidden("#site-down")
    finally:
        own_broker.resume()
    page.wait_for_selector('#broker[data-ok="true"]', timeout=30_000)

    # The web process gone: the page says the site, and blames nothing behind it.
    stop_processes([processes.running["web"]])
    banner = page.wait_for_selector("#site-down:not([hidden])", timeout=15_000)
    assert banner.inner_text().startswith("The site cannot be reached")
    assert page.inner_text("#broker") == "Unknown"
    assert page.inner_text("#live-reader") == "–"
    assert "Broker" not in page.inner_text("#stream-status")
    assert "cannot be reached" in page.inner_text("#state-note")
    viewer.close()


def _photo(tmp_path):
    path = tmp_path / f"photo-{time.monotonic_ns()}.jpg"
    path.write_bytes(jpeg_bytes())
    return path
