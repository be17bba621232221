"""The pages in a real browser (headless Chromium from the system packages)."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth.models import User

from monitor.models import OutboxEvent, Post
from tests.support.browser import ARTIFACTS, needs_chromium, sign_up
from tests.support.images import jpeg_bytes
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), needs_chromium]


def test_a_post_appears_live_on_the_dashboard_and_in_the_feed(
    browser, stack: Stack, tmp_path
) -> None:
    viewer, feed_page = sign_up(browser, stack, "viewer")
    User.objects.filter(username="viewer").update(is_staff=True)  # the dashboard is staff only
    dashboard = viewer.new_page()
    dashboard.goto("/dashboard/")
    dashboard.wait_for_selector('#stream-status[data-state="live"]', timeout=10_000)
    feed_page.wait_for_selector('#stream-status[data-state="live"]', timeout=10_000)

    poster, page = sign_up(browser, stack, "poster2")
    photo = tmp_path / "harbour.jpg"
    photo.write_bytes(jpeg_bytes())
    page.set_input_files("input[name=photo]", str(photo))
    page.fill("textarea[name=caption]", "harbour at dawn <b>bold?</b>")
    clicked = time.monotonic()
    page.click("form.post-form button[type=submit]")

    # Rows replayed from history (earlier tests' events) are marked data-replay.
    row = dashboard.wait_for_selector(
        '#tail tr[data-type="photo.posted"]:not([data-replay])', timeout=5_000
    )
    seen_after = time.monotonic() - clicked
    assert seen_after < 2.0, f"the dashboard showed the post after {seen_after:.2f}s"
    post = Post.objects.get()
    cells = [cell.inner_text() for cell in row.query_selector_all("td")]
    assert cells[1] == "photo.posted"
    assert cells[2] == "user-events"
    assert cells[3] == str(post.author_id)
    assert cells[4] == f"posts/{post.pk}"
    assert re.fullmatch(r"\d+@\d+", cells[5])
    assert re.fullmatch(r"-?\d+ ms", cells[6])
    # The counters come from the analytics worker, polled every few seconds.
    dashboard.wait_for_function(
        """document.querySelector('#counts tr[data-type="photo.posted"] .count')
           .textContent === '1'""",
        timeout=15_000,
    )
    # Both sign-ups happened before or while the dashboard watched: the table shows every event.
    shown = dashboard.eval_on_selector_all(
        "#tail tr.event", "rows => rows.map(r => r.dataset.eventId)"
    )
    assert {str(i) for i in OutboxEvent.objects.values_list("event_id", flat=True)} <= set(shown)

    card = feed_page.wait_for_selector("article.post >> text=harbour at dawn", timeout=5_000)
    # The caption is text, not markup.
    assert feed_page.locator("article.post .caption b").count() == 0
    assert "<b>bold?</b>" in card.inner_text()

    ARTIFACTS.mkdir(exist_ok=True)
    dashboard.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    feed_page.screenshot(path=str(ARTIFACTS / "feed.png"), full_page=True)
    viewer.close()
    poster.close()


def test_a_bad_upload_shows_a_message(browser, stack: Stack, tmp_path) -> None:
    context, page = sign_up(browser, stack, "uploader")
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image")
    page.set_input_files("input[name=photo]", str(fake))
    page.fill("textarea[name=caption]", "oops")
    with page.expect_response(lambda r: r.url.endswith("/posts/new/")) as response:
        page.click("form.post-form button[type=submit]")
    assert response.value.status == 400
    assert "not an image" in page.text_content(".errors")
    context.close()
