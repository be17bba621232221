"""Notices in a real browser (headless Chromium from the system packages): a
follow over HTTP goes through the outbox, Kafka and the notifications worker,
and the followee's counter and list change live."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from monitor.management.processes import stop_processes
from monitor.models import Notice
from tests.support.browser import ARTIFACTS, needs_chromium, sign_up
from tests.support.images import jpeg_bytes
from tests.support.project import ROOT
from tests.support.stack import Poster, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), needs_chromium]

LIVE = '.notices-menu[data-state="live"]'
COUNT = "#notices-count"


@pytest.fixture
def notifications_worker(stack: Stack, tmp_path):
    """`manage.py run_notifications` against the stack's broker and database."""
    log = tmp_path / "notifications.log"
    with open(log, "wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "run_notifications"],
            cwd=ROOT,
            env=stack.env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    yield log
    stop_processes([worker])


def test_a_follow_shows_up_live_in_the_followees_counter_and_list(
    browser, stack: Stack, notifications_worker
) -> None:
    context, page = sign_up(browser, stack, "notice-ana")
    page.wait_for_selector(LIVE, timeout=10_000)
    assert not page.is_visible(COUNT)  # nothing unread yet

    follower = Poster(stack.base_url, "notice-ben")
    followed_at = time.monotonic()
    response = follower.client.post(
        "/users/notice-ana/follow/",
        data={"csrfmiddlewaretoken": follower.token},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    try:
        page.wait_for_function(
            f"document.querySelector('{COUNT}').textContent === '1'", timeout=30_000
        )
    except Exception:
        print(notifications_worker.read_text(errors="replace")[-3000:])
        raise
    print(f"follow to counter: {time.monotonic() - followed_at:.2f}s")
    assert page.is_visible(COUNT)

    # The counter opens the list, by keyboard too.
    page.focus("#notices-toggle")
    page.keyboard.press("Enter")
    page.wait_for_selector("#notices-panel", state="visible")
    assert page.get_attribute("#notices-toggle", "aria-expanded") == "true"
    item = page.locator("#notices-list li.notice").first
    assert item.locator(".text").inner_text() == "notice-ben started following you"
    assert "unread" in (item.get_attribute("class") or "")
    assert item.locator(".text").get_attribute("href") == "/users/notice-ben/"
    page.keyboard.press("Escape")
    page.wait_for_selector("#notices-panel", state="hidden")
    assert page.evaluate("document.activeElement.id") == "notices-toggle"

    # Notice text is text, never markup.
    ana = User.objects.get(username="notice-ana")
    Notice.objects.create(
        recipient=ana,
        event_id=uuid.uuid4(),
        kind="comment.added",
        actor_name="notice-ben",
        subject="posts/1",
        text='notice-ben commented: <img src=x onerror="window.owned=1">',
        created_at=timezone.now(),
    )
    page.wait_for_function(f"document.querySelector('{COUNT}').textContent === '2'", timeout=5_000)
    page.keyboard.press(" ")
    page.wait_for_selector("#notices-panel", state="visible")
    newest = page.locator("#notices-list li.notice").first
    assert newest.locator(".text").inner_text().endswith('<img src=x onerror="window.owned=1">')
    assert page.locator("#notices-panel img").count() == 0
    assert page.evaluate("window.owned") is None
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "notices.png"))

    # Mark all read: the counter goes away, and so do the unread marks.
    page.click("#notices-read-all")
    page.wait_for_selector(COUNT, state="hidden")
    assert page.locator("#notices-list li.notice.unread").count() == 0
    assert not Notice.objects.filter(recipient=ana, read_at__isnull=True).exists()

    # "See all notices" leads to /notices/, which lists them as text.
    page.click("#notices-panel >> text=See all notices")
    page.wait_for_url(stack.base_url + "/notices/")
    listed = page.locator("#notice-page-list li.notice .text").all_inner_texts()
    assert listed == [
        'notice-ben commented: <img src=x onerror="window.owned=1">',
        "notice-ben started following you",
    ]
    page.wait_for_selector(LIVE, timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "notices-page.png"))

    # The other user was told nothing.
    assert not Notice.objects.filter(recipient__username="notice-ben").exists()
    context.close()


def test_a_like_and_a_comment_reach_the_author_live_as_counts_and_notices(
    browser, stack: Stack, notifications_worker, tmp_path
) -> None:
    """A user posts, a second likes and comments, and the first sees the live
    notices and the live counts without reloading."""
    context, page = sign_up(browser, stack, "notice-cleo")
    page.wait_for_selector(LIVE, timeout=10_000)
    page.wait_for_selector('#stream-status[data-state="live"]', timeout=10_000)
    caption = '<script>document.title="pwned"</script>dunes at noon'
    photo = tmp_path / "dunes.jpg"
    photo.write_bytes(jpeg_bytes())
    page.set_input_files("input[name=photo]", str(photo))
    page.fill("textarea[name=caption]", caption)
    page.click("form.post-form button[type=submit]")
    page.wait_for_url(stack.base_url + "/")
    post = User.objects.get(username="notice-cleo").posts.get()
    card = f"#post-{post.pk}"
    page.wait_for_selector(card)
    page.wait_for_selector('#stream-status[data-state="live"]', timeout=10_000)
    assert page.locator(f"{card} .caption").inner_text() == caption  # text, not markup

    fan = Poster(stack.base_url, "notice-dan")
    liked = fan.client.post(
        f"/posts/{post.pk}/like/",
        data={"csrfmiddlewaretoken": fan.token},
        headers={"Accept": "application/json"},
    )
    assert liked.status_code == 200, liked.text
    commented = fan.client.post(
        f"/posts/{post.pk}/comments/",
        data={"csrfmiddlewaretoken": fan.token, "text": "<b>love</b> the light"},
        headers={"Accept": "application/json"},
    )
    assert commented.status_code in (200, 201), commented.text

    # Counts come with the events on the live stream; notices through the worker.
    page.wait_for_function(
        f"document.querySelector('{card} .like-count').textContent === '1'", timeout=10_000
    )
    page.wait_for_selector(f"{card} li.comment .comment-text", timeout=10_000)
    assert page.locator(f"{card} li.comment .comment-text").inner_text() == "<b>love</b> the light"
    page.wait_for_function(f"document.querySelector('{COUNT}').textContent === '2'", timeout=30_000)
    page.click("#notices-toggle")
    page.wait_for_selector("#notices-panel", state="visible")
    texts = page.locator("#notices-list li.notice .text").all_inner_texts()
    assert sorted(texts) == [
        "notice-dan commented: <b>love</b> the light",
        "notice-dan liked your photo",
    ]
    assert page.evaluate("document.title") != "pwned"
    page.screenshot(path=str(ARTIFACTS / "notices-like-comment.png"), full_page=True)
    context.close()
