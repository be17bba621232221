"""Likes, comments, follows and deletes: the services in monitor/feed/services.py,
their endpoints, and the feed, post and profile pages (Django's test client)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.models import Max
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from monitor.events.schema import parse_event
from monitor.feed.services import (
    comment_add,
    comment_delete,
    follow,
    like_photo,
    post_create,
    post_delete,
    unfollow,
    unlike_photo,
)
from monitor.models import Comment, Follow, Like, OutboxEvent, Post
from tests.support.images import jpeg_bytes

pytestmark = pytest.mark.django_db

JSON = {"Accept": "application/json"}
MARKUP = '<script>document.title="pwned"</script><b>bold</b>'
ESCAPED = b"&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;"


@pytest.fixture
def alice(user: User) -> User:
    return user


@pytest.fixture
def bob(django_user_model: Any) -> User:
    return django_user_model.objects.create_user(username="bob", password="pw-bob-123")


def make_post(author: User, caption: str = "harbour") -> Post:
    photo = SimpleUploadedFile("p.jpg", jpeg_bytes(), "image/jpeg")
    return post_create(author=author, photo=photo, caption=caption)


@pytest.fixture
def post(alice: User) -> Post:
    return make_post(alice)


@pytest.fixture
def as_bob(client: Client, bob: User) -> Client:
    client.force_login(bob)
    return client


@pytest.fixture
def as_alice(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


class Outbox:
    """The events saved from the moment it was made."""

    def __init__(self) -> None:
        self.after = OutboxEvent.objects.aggregate(last=Max("id"))["last"] or 0

    def events(self) -> list[dict[str, Any]]:
        rows = OutboxEvent.objects.filter(id__gt=self.after).order_by("id")
        events = [json.loads(bytes(row.payload)) for row in rows]
        for row, event in zip(rows, events, strict=True):
            parse_event(bytes(row.payload))  # a valid envelope for its type
            assert row.event_type == event["type"]
            assert row.key == event["actor"]
        return events

    def one(self) -> dict[str, Any]:
        events = self.events()
        assert len(events) == 1, [event["type"] for event in events]
        return events[0]


@pytest.fixture
def outbox(post: Post, bob: User) -> Outbox:
    """The outbox from after the fixtures' own events."""
    return Outbox()


# --- Services ------------------------------------------------------------------


def test_it_likes_a_photo_once_with_one_event(post: Post, bob: User, outbox: Outbox) -> None:
    first = like_photo(user=bob, post=post)
    second = like_photo(user=bob, post=post)

    assert second is None
    assert Like.objects.filter(user=bob, post=post).count() == 1
    event = outbox.one()
    assert event == first
    assert event["type"] == "photo.liked"
    assert event["subject"] == f"posts/{post.pk}"
    assert event["actor"] == str(bob.pk)
    assert event["data"] == {
        "post_id": post.pk,
        "post_author_id": post.author_id,
        "user_id": bob.pk,
        "username": "bob",
        "like_count": 1,
    }


def test_it_counts_every_like_in_the_event(
    post: Post, alice: User, bob: User, outbox: Outbox
) -> None:
    like_photo(user=bob, post=post)
    like_photo(user=alice, post=post)

    assert [event["data"]["like_count"] for event in outbox.events()] == [1, 2]


def test_it_unlikes_with_one_event(post: Post, bob: User) -> None:
    like_photo(user=bob, post=post)
    outbox = Outbox()

    event = unlike_photo(user=bob, post=post)

    assert not Like.objects.exists()
    assert outbox.one() == event
    assert event["type"] == "photo.unliked"
    assert event["subject"] == f"posts/{post.pk}"
    assert event["actor"] == str(bob.pk)
    assert event["data"] == {
        "post_id": post.pk,
        "post_author_id": post.author_id,
        "user_id": bob.pk,
        "username": "bob",
        "like_count": 0,
    }


def test_unliking_what_was_not_liked_does_nothing(post: Post, alice: User, bob: User) -> None:
    like_photo(user=alice, post=post)
    outbox = Outbox()

    assert unlike_photo(user=bob, post=post) is None

    assert Like.objects.filter(user=alice).count() == 1
    assert outbox.events() == []


def test_it_adds_a_comment_with_its_event(post: Post, bob: User, outbox: Outbox) -> None:
    event = comment_add(author=bob, post=post, text="  lovely light  ")

    comment = Comment.objects.get()
    assert (comment.post, comment.author, comment.text) == (post, bob, "lovely light")
    assert outbox.one() == event
    assert event["type"] == "comment.added"
    assert event["subject"] == f"posts/{post.pk}"
    assert event["actor"] == str(bob.pk)
    assert event["data"] == {
        "comment_id": comment.pk,
        "post_id": post.pk,
        "post_author_id": post.author_id,
        "user_id": bob.pk,
        "username": "bob",
        "text": "lovely light",
        "comment_count": 1,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "Write a comment."), ("  \n ", "Write a comment."), ("x" * 1001, "at most 1,000")],
    ids=["empty", "blank", "too-long"],
)
def test_it_refuses_a_bad_comment(
    post: Post, bob: User, outbox: Outbox, text: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        comment_add(author=bob, post=post, text=text)

    assert not Comment.objects.exists()
    assert outbox.events() == []


def test_a_comment_of_exactly_the_limit_is_taken(post: Post, bob: User) -> None:
    comment_add(author=bob, post=post, text="x" * 1000)

    assert len(Comment.objects.get().text) == 1000


def test_it_deletes_ones_own_comment_with_its_event(post: Post, bob: User) -> None:
    comment_add(author=bob, post=post, text="first")
    comment_add(author=bob, post=post, text="second")
    comment = Comment.objects.get(text="first")
    outbox = Outbox()

    event = comment_delete(user=bob, comment=comment)

    assert list(Comment.objects.values_list("text", flat=True)) == ["second"]
    assert outbox.one() == event
    assert event["type"] == "comment.deleted"
    assert event["subject"] == f"posts/{post.pk}"
    assert event["actor"] == str(bob.pk)
    assert event["data"] == {
        "comment_id": comment.pk,
        "post_id": post.pk,
        "user_id": bob.pk,
        "comment_count": 1,
    }


def test_it_refuses_to_delete_someone_elses_comment(post: Post, alice: User, bob: User) -> None:
    comment_add(author=bob, post=post, text="mine")
    outbox = Outbox()

    with pytest.raises(PermissionDenied):
        comment_delete(user=alice, comment=Comment.objects.get())

    assert Comment.objects.count() == 1
    assert outbox.events() == []


def media_files(post: Post) -> list[Path]:
    return [Path(file.path) for file in (post.photo, post.thumbnail) if file.name]


@pytest.fixture
def post_with_files(post: Post) -> Post:
    if not post.thumbnail:  # posts stored before thumbnails existed have none
        post.thumbnail.save("t.jpg", ContentFile(jpeg_bytes(size=(16, 12))))
    assert len(media_files(post)) == 2
    return post


def test_it_deletes_ones_own_post_and_then_its_files(
    post_with_files: Post,
    alice: User,
    bob: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    post = post_with_files
    post_id = post.pk
    like_photo(user=bob, post=post)
    comment_add(author=bob, post=post, text="nice")
    files = media_files(post)
    outbox = Outbox()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        event = post_delete(user=alice, post=post)
        # Until the transaction commits, the files stay.
        assert all(path.is_file() for path in files)
    for callback in callbacks:
        callback()

    assert not any(path.exists() for path in files)
    assert not Post.objects.filter(pk=post_id).exists()
    assert not Like.objects.exists()
    assert not Comment.objects.exists()
    assert outbox.one() == event
    assert event["type"] == "photo.deleted"
    assert event["subject"] == f"posts/{post_id}"
    assert event["actor"] == str(alice.pk)
    assert event["data"] == {"post_id": post_id, "author_id": alice.pk}


def test_it_refuses_to_delete_someone_elses_post(
    post_with_files: Post, bob: User, django_capture_on_commit_callbacks: Any
) -> None:
    outbox = Outbox()

    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(PermissionDenied):
            post_delete(user=bob, post=post_with_files)

    assert Post.objects.filter(pk=post_with_files.pk).exists()
    assert all(path.is_file() for path in media_files(post_with_files))
    assert outbox.events() == []


def test_actions_on_a_deleted_post_raise_does_not_exist(post: Post, alice: User, bob: User) -> None:
    stale = Post.objects.get(pk=post.pk)
    post_delete(user=alice, post=post)
    outbox = Outbox()

    for action in (
        lambda: like_photo(user=bob, post=stale),
        lambda: unlike_photo(user=bob, post=stale),
        lambda: comment_add(author=bob, post=stale, text="hello?"),
        lambda: post_delete(user=alice, post=stale),
    ):
        with pytest.raises(Post.DoesNotExist):
            action()
    assert outbox.events() == []


def test_it_follows_once_with_one_event(alice: User, bob: User, outbox: Outbox) -> None:
    first = follow(follower=bob, followee=alice)
    assert follow(follower=bob, followee=alice) is None

    assert Follow.objects.filter(follower=bob, followee=alice).count() == 1
    event = outbox.one()
    assert event == first
    assert event["type"] == "user.followed"
    assert event["subject"] == f"users/{alice.pk}"
    assert event["actor"] == str(bob.pk)
    assert event["data"] == {
        "follower_id": bob.pk,
        "follower": "bob",
        "followee_id": alice.pk,
        "followee": "alice",
    }


def test_it_unfollows_with_one_event_and_only_once(alice: User, bob: User) -> None:
    follow(follower=bob, followee=alice)
    outbox = Outbox()

    first = unfollow(follower=bob, followee=alice)
    assert unfollow(follower=bob, followee=alice) is None

    assert not Follow.objects.exists()
    event = outbox.one()
    assert event == first
    assert event["type"] == "user.unfollowed"
    assert event["subject"] == f"users/{alice.pk}"
    assert event["actor"] == str(bob.pk)
    assert event["data"] == {"follower_id": bob.pk, "followee_id": alice.pk}


def test_it_refuses_to_follow_oneself(alice: User, outbox: Outbox) -> None:
    with pytest.raises(ValidationError, match="cannot follow yourself"):
        follow(follower=alice, followee=alice)

    assert not Follow.objects.exists()
    assert outbox.events() == []


# --- Endpoints -------------------------------------------------------------------


def test_like_and_unlike_answer_json_with_the_count(
    as_bob: Client, post: Post, alice: User, outbox: Outbox
) -> None:
    like_photo(user=alice, post=post)

    liked = as_bob.post(reverse("post_like", args=[post.pk]), headers=JSON)
    again = as_bob.post(reverse("post_like", args=[post.pk]), headers=JSON)
    unliked = as_bob.post(reverse("post_unlike", args=[post.pk]), headers=JSON)

    assert liked.status_code == again.status_code == unliked.status_code == 200
    events = outbox.events()
    assert [event["type"] for event in events] == ["photo.liked", "photo.liked", "photo.unliked"]
    assert liked.json() == {
        "post_id": post.pk,
        "liked": True,
        "like_count": 2,
        "at": events[1]["time"],  # the time of the event that set the count
    }
    assert again.json()["like_count"] == 2
    assert again.json()["at"] > liked.json()["at"]
    assert unliked.json() == {
        "post_id": post.pk,
        "liked": False,
        "like_count": 1,
        "at": events[2]["time"],
    }


def test_a_form_post_redirects_back_to_the_post(as_bob: Client, post: Post) -> None:
    response = as_bob.post(reverse("post_like", args=[post.pk]), {"next": "/?page=2"})

    assert response.status_code == 302
    assert response.url == f"/?page=2#post-{post.pk}"
    assert Like.objects.count() == 1


def test_it_ignores_a_next_address_on_another_site(as_bob: Client, post: Post) -> None:
    response = as_bob.post(reverse("post_like", args=[post.pk]), {"next": "https://evil.example/"})

    assert response.status_code == 302
    assert response.url == f"/#post-{post.pk}"


def test_commenting_answers_json_with_the_comment(
    as_bob: Client, post: Post, bob: User, outbox: Outbox
) -> None:
    response = as_bob.post(reverse("post_comment", args=[post.pk]), {"text": MARKUP}, headers=JSON)

    assert response.status_code == 201
    comment = Comment.objects.get()
    event = outbox.one()
    assert response.json() == {
        "post_id": post.pk,
        "comment": {
            "id": comment.pk,
            "post_id": post.pk,
            "user_id": bob.pk,
            "username": "bob",
            "text": MARKUP,
        },
        "comment_count": 1,
        "at": event["time"],
    }


def test_commenting_without_javascript_redirects_to_the_comment(as_bob: Client, post: Post) -> None:
    response = as_bob.post(reverse("post_comment", args=[post.pk]), {"text": "hi", "next": "/"})

    assert response.status_code == 302
    assert response.url == f"/#comment-{Comment.objects.get().pk}"


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "Write a comment."), ("   ", "Write a comment."), ("y" * 1001, "at most 1,000")],
    ids=["empty", "blank", "too-long"],
)
def test_a_bad_comment_is_a_400_with_a_message(
    as_bob: Client, post: Post, outbox: Outbox, text: str, message: str
) -> None:
    url = reverse("post_comment", args=[post.pk])

    as_json = as_bob.post(url, {"text": text}, headers=JSON)
    as_page = as_bob.post(url, {"text": text})

    assert as_json.status_code == as_page.status_code == 400
    assert message in as_json.json()["error"]
    assert message.encode() in as_page.content
    assert not Comment.objects.exists()
    assert outbox.events() == []


def test_deleting_a_comment_answers_json(as_bob: Client, post: Post, bob: User) -> None:
    comment_add(author=bob, post=post, text="oops")
    comment = Comment.objects.get()
    outbox = Outbox()

    response = as_bob.post(reverse("comment_delete", args=[comment.pk]), headers=JSON)

    assert response.status_code == 200
    assert response.json() == {
        "post_id": post.pk,
        "comment_id": comment.pk,
        "comment_count": 0,
        "at": outbox.one()["time"],
    }
    assert not Comment.objects.exists()


def test_deleting_a_post_answers_json(as_alice: Client, post: Post, outbox: Outbox) -> None:
    response = as_alice.post(reverse("post_delete", args=[post.pk]), headers=JSON)

    assert response.status_code == 200
    assert response.json() == {"post_id": post.pk, "deleted": True}
    assert outbox.one()["type"] == "photo.deleted"


def test_deleting_a_post_from_its_page_redirects_to_the_feed(as_alice: Client, post: Post) -> None:
    page = reverse("post_detail", args=[post.pk])

    response = as_alice.post(reverse("post_delete", args=[post.pk]), {"next": page})

    assert response.status_code == 302
    assert response.url == reverse("feed")
    assert not Post.objects.exists()


def test_follow_and_unfollow_answer_json_with_the_follower_count(
    as_bob: Client, alice: User, outbox: Outbox
) -> None:
    followed = as_bob.post(reverse("user_follow", args=["alice"]), headers=JSON)
    unfollowed = as_bob.post(reverse("user_unfollow", args=["alice"]), headers=JSON)

    assert followed.status_code == unfollowed.status_code == 200
    assert followed.json() == {"username": "alice", "following": True, "follower_count": 1}
    assert unfollowed.json() == {"username": "alice", "following": False, "follower_count": 0}
    assert [event["type"] for event in outbox.events()] == ["user.followed", "user.unfollowed"]


def test_following_without_javascript_redirects_to_the_profile(as_bob: Client, alice: User) -> None:
    response = as_bob.post(reverse("user_follow", args=["alice"]))

    assert response.status_code == 302
    assert response.url == reverse("profile", args=["alice"])
    assert Follow.objects.filter(followee=alice).count() == 1


def test_following_oneself_is_a_400(as_alice: Client, outbox: Outbox) -> None:
    response = as_alice.post(reverse("user_follow", args=["alice"]), headers=JSON)

    assert response.status_code == 400
    assert response.json() == {"error": "You cannot follow yourself."}
    assert not Follow.objects.exists()
    assert outbox.events() == []


def someone_elses(kind: str, post: Post, bob: User) -> str:
    """As alice: the address to delete bob's comment, or alice's post as bob."""
    if kind == "comment":
        comment_add(author=bob, post=post, text="bob's")
        return reverse("comment_delete", args=[Comment.objects.get().pk])
    return reverse("post_delete", args=[post.pk])


@pytest.mark.parametrize("kind", ["comment", "post"])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "page"])
def test_deleting_someone_elses_is_a_403_and_changes_nothing(
    client: Client, post: Post, alice: User, bob: User, kind: str, as_json: bool
) -> None:
    url = someone_elses(kind, post, bob)
    client.force_login(bob if kind == "post" else alice)
    outbox = Outbox()

    response = client.post(url, headers=JSON if as_json else {})

    assert response.status_code == 403
    if as_json:
        assert response.json() == {"error": f"You can delete only your own {kind}s."}
    else:
        assert f"You can delete only your own {kind}s.".encode() in response.content
    assert Post.objects.count() == 1
    assert Comment.objects.count() == (1 if kind == "comment" else 0)
    assert outbox.events() == []


ACTIONS = [
    ("post_like", "post"),
    ("post_unlike", "post"),
    ("post_comment", "post"),
    ("post_delete", "post"),
    ("comment_delete", "comment"),
    ("user_follow", "user"),
    ("user_unfollow", "user"),
]


@pytest.mark.parametrize(("name", "target"), ACTIONS)
def test_a_missing_target_is_a_404(as_bob: Client, outbox: Outbox, name: str, target: str) -> None:
    response = as_bob.post(
        reverse(name, args=["nobody" if target == "user" else 999_999]),
        {"text": "hello"},
        headers=JSON,
    )

    assert response.status_code == 404
    assert "does not exist" in response.json()["error"] or "no user" in response.json()["error"]
    assert outbox.events() == []


def action_url(name: str, target: str, post: Post, bob: User) -> str:
    if target == "user":
        return reverse(name, args=["alice"])
    if target == "comment":
        comment_add(author=bob, post=post, text="c")
        return reverse(name, args=[Comment.objects.get().pk])
    return reverse(name, args=[post.pk])


@pytest.mark.parametrize(("name", "target"), ACTIONS)
def test_a_get_is_a_405(as_bob: Client, post: Post, bob: User, name: str, target: str) -> None:
    url = action_url(name, target, post, bob)
    outbox = Outbox()

    response = as_bob.get(url, headers=JSON)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert "only POST" in response.json()["error"]
    assert outbox.events() == []


@pytest.mark.parametrize(("name", "target"), ACTIONS)
def test_signed_out_actions_are_refused(
    client: Client, post: Post, bob: User, name: str, target: str
) -> None:
    url = action_url(name, target, post, bob)
    outbox = Outbox()

    as_json = client.post(url, {"text": "x"}, headers=JSON)
    as_page = client.post(url, {"text": "x"})

    assert as_json.status_code == 401
    assert as_json.json() == {"error": "Sign in first."}
    assert as_page.status_code == 302
    assert as_page.url.startswith(reverse("login"))
    assert outbox.events() == []


def test_an_action_needs_the_csrf_token(bob: User, post: Post, outbox: Outbox) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)

    response = client.post(reverse("post_like", args=[post.pk]), headers=JSON)

    assert response.status_code == 403
    assert not Like.objects.exists()
    assert outbox.events() == []


# --- Pages -----------------------------------------------------------------------


def test_the_feed_shows_counts_likes_and_the_latest_comments(
    as_bob: Client, post: Post, alice: User, bob: User
) -> None:
    like_photo(user=alice, post=post)
    like_photo(user=bob, post=post)
    for n in range(5):
        comment_add(author=alice, post=post, text=f"comment {n}")
    comment_add(author=bob, post=post, text="bob was here")

    html = as_bob.get(reverse("feed")).content.decode()

    start = html.index(f'id="post-{post.pk}"')
    card = html[start : html.index("</article>", start)]
    assert '<span class="like-count">2</span>' in card
    assert 'aria-pressed="true"' in card  # bob likes it
    assert f'action="{reverse("post_unlike", args=[post.pk])}"' in card
    assert "6 comments" in card
    # The latest three, oldest first; only bob's own has a delete button.
    assert "comment 2" not in card
    positions = [card.index(text) for text in ("comment 3", "comment 4", "bob was here")]
    assert positions == sorted(positions)
    bobs = Comment.objects.get(text="bob was here")
    assert reverse("comment_delete", args=[bobs.pk]) in card
    assert card.count('class="delete-comment"') == 1
    # Not bob's post: no delete button for it.
    assert reverse("post_delete", args=[post.pk]) not in card
    assert f'href="{reverse("profile", args=["alice"])}"' in card


def test_the_feed_costs_the_same_queries_however_many_posts(
    as_bob: Client, alice: User, bob: User
) -> None:
    def feed_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert as_bob.get(reverse("feed")).status_code == 200
        return len(queries)

    def add_posts(n: int) -> None:
        for _ in range(n):
            post = make_post(alice)
            like_photo(user=bob, post=post)
            comment_add(author=bob, post=post, text="nice")

    add_posts(2)
    few = feed_queries()
    add_posts(6)

    assert feed_queries() == few


def test_the_feed_shows_the_thumbnail_when_there_is_one(as_bob: Client, post: Post) -> None:
    html = as_bob.get(reverse("feed")).content.decode()

    expected = post.thumbnail.url if post.thumbnail else post.photo.url
    assert f'src="{expected}"' in html


def test_the_feed_offers_ones_own_post_for_deletion(as_alice: Client, post: Post) -> None:
    html = as_alice.get(reverse("feed")).content.decode()

    assert f'action="{reverse("post_delete", args=[post.pk])}"' in html
    assert 'aria-pressed="false"' in html


def test_pages_show_captions_and_comments_as_text(as_bob: Client, alice: User, bob: User) -> None:
    post = make_post(alice, caption=MARKUP)
    comment_add(author=bob, post=post, text=MARKUP)

    for url in (
        reverse("feed"),
        reverse("post_detail", args=[post.pk]),
        reverse("profile", args=["alice"]),
    ):
        response = as_bob.get(url)
        assert response.status_code == 200
        assert MARKUP.encode() not in response.content, url
        assert b"<b>bold</b>" not in response.content, url
    assert as_bob.get(reverse("feed")).content.count(ESCAPED) == 2


def test_the_feed_pages_through_older_posts(as_bob: Client, alice: User) -> None:
    posts = [make_post(alice, caption=f"post {n}") for n in range(21)]

    first = as_bob.get(reverse("feed")).content.decode()
    second = as_bob.get(reverse("feed") + "?page=2").content.decode()

    assert first.count('class="post"') == 20
    assert 'href="?page=2"' in first
    assert 'data-live-new="true"' in first
    assert f'id="post-{posts[0].pk}"' in second
    assert second.count('class="post"') == 1
    assert 'data-live-new="false"' in second


def test_a_post_page_shows_all_its_comments(as_bob: Client, post: Post, alice: User) -> None:
    for n in range(5):
        comment_add(author=alice, post=post, text=f"comment {n}")

    html = as_bob.get(reverse("post_detail", args=[post.pk])).content.decode()

    assert all(f"comment {n}" in html for n in range(5))
    assert f'data-subject="posts/{post.pk}"' in html
    assert as_bob.get(reverse("post_detail", args=[999_999])).status_code == 404


def test_the_profile_shows_posts_newest_first_counts_and_a_follow_button(
    as_bob: Client, alice: User, bob: User
) -> None:
    older, newer = make_post(alice, "older"), make_post(alice, "newer")
    make_post(bob, "bob's own")
    follow(follower=bob, followee=alice)

    html = as_bob.get(reverse("profile", args=["alice"])).content.decode()

    assert html.index(f'id="tile-{newer.pk}"') < html.index(f'id="tile-{older.pk}"')
    assert "bob&#x27;s own" not in html
    assert '<strong id="post-count">2</strong> posts' in html
    assert '<strong id="follower-count">1</strong>' in html
    assert '<span id="follower-noun">follower</span>' in html
    assert '<strong id="following-count">0</strong>' in html
    assert f'action="{reverse("user_unfollow", args=["alice"])}"' in html
    assert ">Unfollow</button>" in html


def test_ones_own_profile_has_no_follow_button(as_alice: Client, alice: User) -> None:
    html = as_alice.get(reverse("profile", args=["alice"])).content.decode()

    assert "follow-form" not in html
    assert f'href="{reverse("profile", args=["alice"])}">My profile</a>' in html


def test_the_profile_pages_through_photos(as_bob: Client, alice: User) -> None:
    for n in range(25):
        make_post(alice, caption=f"post {n}")

    first = as_bob.get(reverse("profile", args=["alice"])).content.decode()
    second = as_bob.get(reverse("profile", args=["alice"]) + "?page=2").content.decode()

    assert first.count('class="tile"') == 24
    assert second.count('class="tile"') == 1
    assert as_bob.get(reverse("profile", args=["nobody"])).status_code == 404
