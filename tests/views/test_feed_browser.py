"""The social feed in a real browser (headless Chromium from the system
packages): two people, each in their own browser context, see each other's
posts, likes, comments and deletes live; profiles and follows; phone width
and the keyboard."""

from __future__ import annotations

import json
import time

import pytest

from monitor.models import Comment, Follow, Like, Post
from tests.support.browser import ARTIFACTS, needs_chromium, sign_up
from tests.support.images import jpeg_bytes
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), needs_chromium]

LIVE = '#stream-status[data-state="live"]'
CAPTION = '<script>document.title="pwned"</script><b>bold</b>'
COMMENT = "<img src=x onerror=\"document.title='owned'\"> nice <i>light</i>"
WAIT_MS = 10_000  # generous: two shared cores, other test runs beside this one


def open_feed(browser, stack: Stack, username: str, **context):
    """A new user's page on the feed, once it is live."""
    browser_context, page = sign_up(browser, stack, username)
    if context.get("viewport"):
        page.set_viewport_size(context["viewport"])
    page.wait_for_selector(LIVE, timeout=WAIT_MS)
    return browser_context, page


def post_photo(page, stack: Stack, tmp_path, caption: str) -> Post:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes(size=(320, 240), color="darkorange"))
    page.set_input_files("input[name=photo]", str(photo))
    page.fill("textarea[name=caption]", caption)
    page.click("form.post-form button[type=submit]")
    page.wait_for_url(stack.base_url + "/")
    page.wait_for_selector(LIVE, timeout=WAIT_MS)
    return Post.objects.get(caption=caption)


def text_of(page, selector: str) -> str | None:
    return page.evaluate(
        "s => { const e = document.querySelector(s); return e && e.textContent; }", selector
    )


def wait_for_text(page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.textContent === t; }",
        arg=[selector, text],
        timeout=WAIT_MS,
    )


class ReceivedEvents:
    """The events a page's WebSockets receive, as the browser gets them."""

    def __init__(self, page) -> None:
        self.page = page
        self.events: list[dict] = []
        page.on("websocket", lambda socket: socket.on("framereceived", self.take))

    def take(self, payload: str | bytes) -> None:
        frame = json.loads(payload)
        if frame.get("type") == "events":
            self.events.extend(item["event"] for item in frame["events"])

    def wait_for(self, type: str, subject: str) -> None:
        deadline = time.monotonic() + WAIT_MS / 1000
        while not any(e["type"] == type and e["subject"] == subject for e in self.events):
            assert time.monotonic() < deadline, f"no {type} for {subject} reached the page"
            self.page.wait_for_timeout(50)
        # A frame is handled as it arrives: one more turn of the page's event loop.
        self.page.evaluate("() => new Promise(done => setTimeout(done, 0))")


def test_two_people_see_each_others_posts_likes_comments_and_deletes_live(
    browser, stack: Stack, tmp_path
) -> None:
    alice_context, alice = open_feed(browser, stack, "feed-alice")
    bob_context, bob = open_feed(browser, stack, "feed-bob")
    bob_received = ReceivedEvents(bob)
    bob.reload()  # a new socket, watched from its start
    bob.wait_for_selector(LIVE, timeout=WAIT_MS)
    bob_title = bob.title()

    post = post_photo(alice, stack, tmp_path, CAPTION)
    # From here on alice's page is never reloaded: this mark would be lost.
    alice.evaluate("window.notReloaded = true")
    card = f'article.post[data-post-id="{post.pk}"]'

    # Bob sees the post appear, its caption as text.
    bob.wait_for_selector(card, timeout=WAIT_MS)
    assert text_of(bob, f"{card} .caption") == CAPTION
    assert bob.locator(f"{card} .caption *").count() == 0
    assert bob.title() == bob_title
    expected_src = post.thumbnail.url if post.thumbnail else post.photo.url
    assert bob.get_attribute(f"{card} img.photo", "src") == expected_src
    assert bob.locator(f"{card} .delete-post").count() == 0  # not his post
    assert alice.locator(f"{card} .delete-post").count() == 1

    # Bob likes it: alice sees the count rise; bob's own like counts once.
    bob.click(f"{card} .like-button")
    bob.wait_for_selector(f'{card} .like-button[aria-pressed="true"]', timeout=WAIT_MS)
    wait_for_text(alice, f"{card} .like-count", "1")
    assert alice.get_attribute(f"{card} .like-button", "aria-pressed") == "false"
    bob_received.wait_for("photo.liked", f"posts/{post.pk}")  # his answer, then his event
    assert text_of(bob, f"{card} .like-count") == "1"
    assert bob.get_attribute(f"{card} .like-button", "aria-pressed") == "true"

    # Bob comments, with markup: both see it once, as text.
    bob.fill(f"{card} .comment-form input[name=text]", COMMENT)
    bob.press(f"{card} .comment-form input[name=text]", "Enter")
    wait_for_text(alice, f"{card} li.comment .comment-text", COMMENT)
    wait_for_text(alice, f"{card} .comment-count a", "1 comment")
    wait_for_text(bob, f"{card} li.comment .comment-text", COMMENT)
    bob_received.wait_for("comment.added", f"posts/{post.pk}")
    assert bob.input_value(f"{card} .comment-form input[name=text]") == ""
    for page in (alice, bob):
        assert page.locator(f"{card} li.comment").count() == 1
        assert page.locator(f"{card} li.comment img, {card} li.comment i").count() == 0
    assert alice.locator(f"{card} li.comment .delete-comment").count() == 0  # bob's comment
    assert bob.locator(f"{card} li.comment .delete-comment").count() == 1
    assert text_of(bob, f"{card} .like-count") == "1"

    ARTIFACTS.mkdir(exist_ok=True)
    alice.screenshot(path=str(ARTIFACTS / "feed-social.png"), full_page=True)

    # Bob unlikes: the count drops live for alice.
    bob.click(f"{card} .like-button")
    wait_for_text(alice, f"{card} .like-count", "0")
    assert bob.get_attribute(f"{card} .like-button", "aria-pressed") == "false"
    assert not Like.objects.exists()

    # Bob deletes his comment: it goes for alice too.
    bob.click(f"{card} li.comment .delete-comment button")
    alice.wait_for_selector(f"{card} li.comment", state="detached", timeout=WAIT_MS)
    wait_for_text(alice, f"{card} .comment-count a", "0 comments")
    assert not Comment.objects.exists()

    # Alice deletes the post: it disappears for bob.
    alice.once("dialog", lambda dialog: dialog.accept())
    alice.click(f"{card} .delete-post button")
    bob.wait_for_selector(card, state="detached", timeout=WAIT_MS)
    alice.wait_for_selector(card, state="detached", timeout=WAIT_MS)
    assert not Post.objects.filter(pk=post.pk).exists()
    # Nothing ran from the caption or the comment, and alice never reloaded.
    assert bob.title() == alice.title() == bob_title
    assert alice.evaluate("window.notReloaded") is True
    alice_context.close()
    bob_context.close()


def test_a_profile_shows_the_posts_and_follows_work(browser, stack: Stack, tmp_path) -> None:
    carol_context, carol = open_feed(browser, stack, "profile-carol")
    first = post_photo(carol, stack, tmp_path, "first <b>light</b>")
    second = post_photo(carol, stack, tmp_path, "second")
    dave_context, dave = open_feed(browser, stack, "profile-dave")

    # The feed's author link leads to the profile.
    dave.click(f'article.post[data-post-id="{second.pk}"] .author')
    dave.wait_for_url(stack.base_url + "/users/profile-carol/")
    tiles = dave.eval_on_selector_all(".tiles a.tile", "tiles => tiles.map(t => t.id)")
    assert tiles == [f"tile-{second.pk}", f"tile-{first.pk}"]  # newest first
    assert text_of(dave, "#post-count") == "2"
    assert text_of(dave, "#follower-count") == "0"

    dave.click(".follow-form button")
    wait_for_text(dave, "#follower-count", "1")
    assert text_of(dave, "#follower-noun") == "follower"
    assert text_of(dave, ".follow-form button") == "Unfollow"
    ARTIFACTS.mkdir(exist_ok=True)
    dave.screenshot(path=str(ARTIFACTS / "profile.png"), full_page=True)
    assert Follow.objects.filter(follower__username="profile-dave").count() == 1

    dave.click(".follow-form button")
    wait_for_text(dave, "#follower-count", "0")
    assert text_of(dave, ".follow-form button") == "Follow"
    assert not Follow.objects.exists()

    # One's own profile, from the navigation: no follow button.
    carol.click("text=My profile")
    carol.wait_for_url(stack.base_url + "/users/profile-carol/")
    assert carol.locator(".follow-form").count() == 0
    carol_context.close()
    dave_context.close()


def test_phone_width_and_the_keyboard(browser, stack: Stack, tmp_path) -> None:
    erin_context, erin = open_feed(browser, stack, "phone-erin")
    post = post_photo(erin, stack, tmp_path, "on a small screen")
    frank_context, frank = open_feed(
        browser, stack, "phone-frank", viewport={"width": 375, "height": 740}
    )
    card = f'article.post[data-post-id="{post.pk}"]'
    frank.wait_for_selector(card, timeout=WAIT_MS)
    assert frank.evaluate("document.documentElement.scrollWidth") <= 375

    # Like by keyboard: focus the button, press Enter; focus stays on it.
    frank.focus(f"{card} .like-button")
    frank.keyboard.press("Enter")
    frank.wait_for_selector(f'{card} .like-button[aria-pressed="true"]', timeout=WAIT_MS)
    assert frank.evaluate("document.activeElement.classList.contains('like-button')")
    # Tab to the comment field, type, Enter.
    frank.focus(f"{card} .comment-form input[name=text]")
    frank.keyboard.type("typed, not clicked")
    frank.keyboard.press("Enter")
    wait_for_text(erin, f"{card} li.comment .comment-text", "typed, not clicked")
    wait_for_text(erin, f"{card} .like-count", "1")
    frank.screenshot(path=str(ARTIFACTS / "feed-phone.png"), full_page=True)
    erin_context.close()
    frank_context.close()
