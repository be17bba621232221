"""manage.py prune_analytics: raw events go, the aggregates stay exact, and an
event redelivered after its raw row was pruned is not counted again."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.events.schema import Event, build_event
from monitor.management.commands.prune_analytics import horizon_for
from monitor.models import (
    AnalyticsEvent,
    AnalyticsHorizon,
    EventMinuteCount,
    PostDayEngagement,
    UserDayActivity,
)
from monitor.workers.analytics import record_batch
from monitor.workers.pruning import pruned_before
from monitor.workers.records import RecordedFrom
from tests.support.events import commented, liked, photo_event, signup_event, unliked
from tests.support.project import ROOT
from tests.support.stack import child_database_env

pytestmark = pytest.mark.django_db


def midnight(days_ago: int) -> datetime:
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_ago)


def record(events: list[Event], *, first_offset: int = 0) -> int:
    """Record the site's own events (verified)."""
    return record_batch(
        [
            RecordedFrom(event, "user-events", 0, first_offset + n, verified=True)
            for n, event in enumerate(events)
        ]
    )


def prune(*args: str) -> str:
    out = io.StringIO()
    call_command("prune_analytics", *args, stdout=out)
    return out.getvalue()


def aggregates() -> dict[str, Any]:
    return {
        "minutes": sorted(
            EventMinuteCount.objects.values_list("minute", "type", "source", "count")
        ),
        "user_days": sorted(UserDayActivity.objects.values_list("day", "actor", "count")),
        "post_days": sorted(
            PostDayEngagement.objects.values_list("day", "post_id", "likes", "unlikes", "comments")
        ),
    }


@pytest.fixture
def old_and_new() -> dict[str, list[Event]]:
    """Events 40 and 20 days old, and today's."""
    old = [signup_event(1, at=midnight(40)), liked(7, 1, midnight(40) + timedelta(hours=3))]
    middle = [photo_event(7, author_id=2, at=midnight(20)), commented(7, 3, midnight(20))]
    new = [signup_event(4, at=midnight(0) + timedelta(minutes=1))]
    assert record(old + middle + new) == 5
    return {"old": old, "middle": middle, "new": new}


def test_it_deletes_raw_events_older_than_the_retention_and_keeps_the_aggregates(
    old_and_new,
) -> None:
    before = aggregates()

    output = prune("--days", "30")

    horizon = midnight(30)
    assert pruned_before() == horizon
    kept = {str(event_id) for event_id in AnalyticsEvent.objects.values_list("event_id", flat=True)}
    assert kept == {event["id"] for event in old_and_new["middle"] + old_and_new["new"]}
    assert aggregates() == before
    assert f"Deleted 2 raw events from before {horizon:%Y-%m-%d} 00:00 UTC" in output
    assert "(retention 30 days) in 1 chunk." in output
    assert "The aggregates are unchanged" in output


def test_the_retention_comes_from_the_setting(old_and_new, settings) -> None:
    settings.ANALYTICS_RETENTION_DAYS = 10

    output = prune()

    assert "(retention 10 days)" in output
    assert AnalyticsEvent.objects.count() == 1


def test_a_dry_run_says_what_would_go_and_changes_nothing(old_and_new) -> None:
    output = prune("--days", "10", "--dry-run")

    assert output.startswith(
        f"Dry run: would delete 4 raw events from before {midnight(10):%Y-%m-%d} 00:00 UTC "
        "(retention 10 days). Nothing was changed."
    )
    assert AnalyticsEvent.objects.count() == 5
    assert pruned_before() is None


def test_it_deletes_in_chunks(old_and_new) -> None:
    out = io.StringIO()
    call_command("prune_analytics", "--days", "10", "--chunk-size", "3", stdout=out, verbosity=2)

    lines = out.getvalue().splitlines()
    assert lines[:2] == ["chunk 1: deleted 3 (3 so far)", "chunk 2: deleted 1 (4 so far)"]
    assert "Deleted 4 raw events" in lines[2] and "in 2 chunks." in lines[2]
    assert AnalyticsEvent.objects.count() == 1


def test_nothing_to_delete_is_said_plainly() -> None:
    assert "Deleted 0 raw events" in prune("--days", "5")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "the retention must be at least 1 day, got 0"),
        (["--days", "-3"], "the retention must be at least 1 day, got -3"),
        (["--chunk-size", "0"], "--chunk-size must be at least 1, got 0"),
    ],
)
def test_it_refuses_bad_arguments(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        prune(*args)
    assert pruned_before() is None


def test_an_event_redelivered_after_its_row_was_pruned_is_not_counted_again(
    old_and_new,
) -> None:
    prune("--days", "30")
    before = aggregates()

    again = record(old_and_new["old"] + old_and_new["middle"], first_offset=100)

    assert again == 0
    assert aggregates() == before
    assert AnalyticsEvent.objects.count() == 3
    assert not AnalyticsEvent.objects.filter(time__lt=midnight(30)).exists()


def test_events_after_the_horizon_are_still_recorded(old_and_new) -> None:
    prune("--days", "30")

    new = record([signup_event(9, at=midnight(30)), liked(7, 9, midnight(2))])

    assert new == 2
    assert UserDayActivity.objects.get(day=midnight(30).date(), actor="9").count == 1


def test_a_new_event_older_than_the_horizon_is_not_recorded() -> None:
    prune("--days", "30")

    assert record([signup_event(5, at=midnight(31)), signup_event(6, at=midnight(1))]) == 1

    assert list(UserDayActivity.objects.values_list("actor", flat=True)) == ["6"]
    assert list(AnalyticsEvent.objects.values_list("actor", flat=True)) == ["6"]


def test_the_horizon_never_moves_back(old_and_new) -> None:
    prune("--days", "10")

    output = prune("--days", "30")

    assert pruned_before() == midnight(10)
    assert f"An earlier prune set a later horizon, {midnight(10):%Y-%m-%d} 00:00 UTC" in output
    assert "Deleted 0 raw events" in output
    dry = prune("--days", "30", "--dry-run")
    assert f"from before {midnight(10):%Y-%m-%d}" in dry


def test_the_horizon_is_one_row_that_moves_on(old_and_new) -> None:
    prune("--days", "30")
    prune("--days", "25")

    assert list(AnalyticsHorizon.objects.values_list("pruned_before", flat=True)) == [midnight(25)]
    assert AnalyticsEvent.objects.count() == 3


def test_horizon_for_starts_whole_utc_days() -> None:
    now = datetime(2024, 5, 10, 23, 59, tzinfo=UTC)
    assert horizon_for(1, now=now) == datetime(2024, 5, 9, tzinfo=UTC)
    assert horizon_for(90, now=now) == datetime(2024, 2, 10, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_the_retention_setting_is_read_from_the_environment(old_and_new) -> None:
    env = {
        **os.environ,
        **child_database_env(),
        "EVENTSITE_ANALYTICS_RETENTION_DAYS": "25",
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "prune_analytics", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "would delete 2 raw events" in done.stdout
    assert "(retention 25 days)" in done.stdout


# --- A property: the aggregates equal a recount, and pruning keeps them -----------

USERS = range(1, 6)
DAYS = 8  # the events fall on the 8 days before today


class Feed:
    """A small social feed that turns drawn actions into the events its services would emit."""

    def __init__(self) -> None:
        self.users: set[int] = set()
        self.posts: dict[int, int] = {}  # post id: author
        self.likes: set[tuple[int, int]] = set()
        self.comments: dict[int, tuple[int, int]] = {}  # comment id: (post, author)
        self.follows: set[tuple[int, int]] = set()
        self.next_id = 1
        self.events: list[Event] = []

    def act(self, kind: str, user: int, other: int, at: datetime) -> None:
        """One event for one action; an action that cannot be done (a like of
        no post, deleting another's post) becomes the nearest one that can."""
        if user not in self.users:
            self.users.add(user)
            self.events.append(signup_event(user, at=at))
            return
        own = sorted(post for post, author in self.posts.items() if author == user)
        mine = sorted(n for n, (_, author) in self.comments.items() if author == user)
        if kind == "signup" or not self.posts or (kind == "delete" and not own):
            kind = "post"
        post = sorted(self.posts)[other % len(self.posts)] if self.posts else 0
        if kind == "post":
            self.posts[self.next_id] = user
            self.events.append(photo_event(self.next_id, author_id=user, at=at))
            self.next_id += 1
        elif kind == "like" and (user, post) in self.likes:
            self.likes.discard((user, post))
            self.events.append(unliked(post, user, at))
        elif kind == "like":
            self.likes.add((user, post))
            self.events.append(liked(post, user, at))
        elif kind == "uncomment" and mine:
            comment = mine[other % len(mine)]
            on_post, _ = self.comments.pop(comment)
            data = {"comment_id": comment, "user_id": user}
            self.events.append(self.simple("comment.deleted", user, on_post, at, **data))
        elif kind in ("comment", "uncomment"):
            self.comments[self.next_id] = (post, user)
            self.events.append(commented(post, user, at, text=f"comment {self.next_id}"))
            self.next_id += 1
        elif kind == "delete":
            gone = own[other % len(own)]
            del self.posts[gone]
            self.likes = {like for like in self.likes if like[1] != gone}
            self.events.append(self.simple("photo.deleted", user, gone, at, author_id=user))
        else:
            followee = USERS[other % len(USERS)]
            if followee == user:
                followee = USERS[(other + 1) % len(USERS)]
            pair = (user, followee)
            if pair in self.follows:
                self.follows.discard(pair)
                self.events.append(self.follow_event("user.unfollowed", user, followee, at))
            else:
                self.follows.add(pair)
                self.events.append(self.follow_event("user.followed", user, followee, at))

    @staticmethod
    def simple(type: str, user: int, post: int, at: datetime, **data: int) -> Event:
        return build_event(
            type=type,
            subject=f"posts/{post}",
            actor=str(user),
            data={"post_id": post, **data},
            source="/test",
            time=at,
        )

    @staticmethod
    def follow_event(type: str, follower: int, followee: int, at: datetime) -> Event:
        data: dict[str, Any] = {"follower_id": follower, "followee_id": followee}
        if type == "user.followed":
            data.update(follower=f"user{follower}", followee=f"user{followee}")
        return build_event(
            type=type,
            subject=f"users/{followee}",
            actor=str(follower),
            data=data,
            source="/test",
            time=at,
        )


actions = st.lists(
    st.tuples(
        st.sampled_from(["signup", "post", "like", "comment", "uncomment", "delete", "follow"]),
        st.sampled_from(USERS),
        st.integers(0, 20),  # which post, or which user to follow
        st.integers(1, DAYS),  # days ago
        st.integers(0, 86_399),  # second of the day
    ),
    min_size=20,
    max_size=80,
)


def recount() -> dict[str, Any]:
    """The aggregates, counted again from the raw events."""
    rows = list(
        AnalyticsEvent.objects.values_list("time", "type", "source", "actor", "data", "verified")
    )
    engagement: dict[tuple[date, int], list[int]] = {}
    for time, event_type, _, _, data, verified in rows:
        column = {"photo.liked": 0, "photo.unliked": 1, "comment.added": 2}.get(event_type)
        if column is not None and verified:
            engagement.setdefault((time.date(), data["post_id"]), [0, 0, 0])[column] += 1
    minutes = Counter(
        (time.replace(second=0, microsecond=0), kind, source) for time, kind, source, *_ in rows
    )
    user_days = Counter((time.date(), actor) for time, _, _, actor, *_ in rows if actor)
    return {
        "minutes": sorted((*key, n) for key, n in minutes.items()),
        "user_days": sorted((*key, n) for key, n in user_days.items()),
        "post_days": sorted((*key, *counts) for key, counts in engagement.items()),
    }


def daily_views() -> dict[str, Any]:
    """What the analytics page reads: active users and events per type per day."""
    active = Counter(
        day for day, _, _ in UserDayActivity.objects.values_list("day", "actor", "count")
    )
    per_type: Counter[tuple[date, str]] = Counter()
    for minute, kind, count in EventMinuteCount.objects.values_list("minute", "type", "count"):
        per_type[(minute.date(), kind)] += count
    return {"active": dict(active), "per_type": dict(per_type)}


def expected_daily(events: list[Event]) -> dict[str, Any]:
    times = [datetime.fromisoformat(event["time"].replace("Z", "+00:00")) for event in events]
    actors: dict[date, set[str]] = {}
    for time, event in zip(times, events, strict=True):
        actors.setdefault(time.date(), set()).add(event["actor"])
    per_type = Counter(
        (time.date(), event["type"]) for time, event in zip(times, events, strict=True)
    )
    return {"active": {day: len(who) for day, who in actors.items()}, "per_type": dict(per_type)}


def deliveries(draw: st.DrawFn, events: list[Event]) -> list[list[Event]]:
    """Each event once or twice (the second time later), cut into batches of random sizes."""
    keyed = [(float(n), event) for n, event in enumerate(events)]
    for n, event in enumerate(events):
        if draw(st.booleans()):
            keyed.append((n + draw(st.integers(0, 12)) + 0.5, event))
    ordered = [event for _, event in sorted(keyed, key=lambda pair: pair[0])]
    batches = []
    while ordered:
        size = draw(st.integers(1, 15))
        batches.append(ordered[:size])
        ordered = ordered[size:]
    return batches


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=actions, data=st.data())
def test_the_aggregates_equal_a_recount_and_survive_pruning_and_redelivery(
    steps: list[tuple[str, int, int, int, int]], data: st.DataObject
) -> None:
    with transaction.atomic():
        try:
            check_one_history(steps, data.draw)
        finally:
            transaction.set_rollback(True)  # each example starts from an empty database


def check_one_history(steps: list[tuple[str, int, int, int, int]], draw: st.DrawFn) -> None:
    assert not AnalyticsEvent.objects.exists() and not UserDayActivity.objects.exists()
    feed = Feed()
    for kind, user, other, days_ago, second in steps:
        feed.act(kind, user, other, midnight(days_ago) + timedelta(seconds=second))
    offset = 0
    for batch in deliveries(draw, feed.events):
        record(batch, first_offset=offset)
        offset += len(batch)

    assert {str(i) for i in AnalyticsEvent.objects.values_list("event_id", flat=True)} == {
        event["id"] for event in feed.events
    }
    assert aggregates() == recount()
    assert daily_views() == expected_daily(feed.events)
    before = aggregates()

    days = draw(st.integers(1, DAYS + 1), label="retention days")
    chunk = draw(st.integers(1, 7), label="chunk size")
    prune("--days", str(days), "--chunk-size", str(chunk))
    horizon = midnight(days)
    kept = {
        event["id"]
        for event in feed.events
        if datetime.fromisoformat(event["time"].replace("Z", "+00:00")) >= horizon
    }
    assert {str(i) for i in AnalyticsEvent.objects.values_list("event_id", flat=True)} == kept
    assert aggregates() == before

    again = draw(st.lists(st.sampled_from(feed.events), max_size=30), label="redelivered")
    for batch in deliveries(draw, again):
        assert record(batch, first_offset=offset) == 0
        offset += len(batch)
    assert aggregates() == before
    assert {str(i) for i in AnalyticsEvent.objects.values_list("event_id", flat=True)} == kept
    assert daily_views() == expected_daily(feed.events)
