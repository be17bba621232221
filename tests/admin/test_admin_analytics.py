"""The admin's analytics page (monitor/admin_analytics/): figures from the
aggregates record_batch keeps, filters, who may see it, and the CSV export."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.test import AsyncRequestFactory

from monitor.admin_analytics import export
from monitor.admin_analytics.export import EXPORT_COLUMNS, csv_cell, csv_response
from monitor.admin_analytics.filters import Filters
from monitor.admin_analytics.report import build_report
from monitor.events.schema import Event, build_event, format_time
from monitor.models import AnalyticsEvent, Post, PostDayEngagement, UserDayActivity
from monitor.workers.analytics import record_batch
from monitor.workers.records import RecordedFrom
from tests.support.browser import ARTIFACTS, needs_chromium
from tests.support.events import commented, liked, photo_event, signup_event, unliked
from tests.support.stack import Stack

pytestmark = pytest.mark.django_db

PAGE = "/admin/monitor/analyticsevent/analytics/"
EXPORT = "/admin/monitor/analyticsevent/analytics/events.csv"
DAY1 = datetime(2024, 5, 6, 9, 30, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
RANGE = {"from": "2024-05-06", "to": "2024-05-07"}


def record(*events: Event) -> int:
    """Record the site's own events (verified)."""
    return record_batch(
        [
            RecordedFrom(event, "user-events", 0, offset, verified=True)
            for offset, event in enumerate(events)
        ]
    )


@pytest.fixture
def people(django_user_model) -> dict[str, User]:
    return {
        name: django_user_model.objects.create_user(username=name, password="pw-123-long")
        for name in ("bob", "carol")
    }


@pytest.fixture
def feed(people) -> dict[str, object]:
    """Two days of activity: bob's post (still there) and two posts since deleted."""
    bob, carol = people["bob"].pk, people["carol"].pk
    post = Post.objects.create(author=people["bob"], photo="photos/a.jpg", caption="<b>sunset</b>")
    events = [
        signup_event(bob, at=DAY1),
        signup_event(carol, at=DAY1 + timedelta(minutes=1)),
        photo_event(post.pk, author_id=bob, at=DAY1 + timedelta(minutes=2)),
        liked(post.pk, carol, DAY1 + timedelta(minutes=3)),
        commented(post.pk, carol, DAY1 + timedelta(minutes=4)),
        liked(999, bob, DAY1 + timedelta(minutes=5)),
        liked(post.pk, bob, DAY2),
        unliked(post.pk, carol, DAY2 + timedelta(minutes=1)),
        commented(post.pk, bob, DAY2 + timedelta(minutes=2)),
        photo_event(998, author_id=carol, at=DAY2 + timedelta(minutes=3)),
        commented(998, carol, DAY2 + timedelta(minutes=4)),
        photo_event(997, author_id=77, at=DAY2 + timedelta(hours=2)),  # no such user
    ]
    assert record(*events) == len(events)
    return {"post": post, "bob": bob, "carol": carol, "events": events}


def test_it_shows_the_figures_of_the_range_to_staff(admin_client, feed) -> None:
    response = admin_client.get(PAGE, RANGE)

    assert response.status_code == 200
    report = response.context["report"]
    assert report.days == [date(2024, 5, 6), date(2024, 5, 7)]
    assert report.active == [2, 3]  # bob and carol; then also actor 77
    assert report.active_in_range == 3
    assert report.posts == [1, 2]
    assert report.likes == [2, 1]
    assert report.comments == [1, 2]
    assert report.totals["photo.unliked"] == 1
    assert report.totals["user.signed_up"] == 2
    assert report.totals["user.followed"] == 0
    # Top posts: likes - unlikes + comments; bob's post links to its admin page.
    post = feed["post"]
    assert [(r["post_id"], r["score"]) for r in report.top_posts] == [
        (post.pk, 3),
        (998, 1),
        (999, 1),
    ]
    top = report.top_posts[0]
    assert (top["likes_in_range"], top["unlikes_in_range"], top["comments_in_range"]) == (2, 1, 2)
    assert top["url"] == f"/admin/monitor/post/{post.pk}/change/"
    assert report.top_posts[1]["url"] is None and report.top_posts[1]["post"] is None
    # Most active: carol, bob, then actor 77, who is no user.
    users = [(r["actor"], r["events"], r["active_days"]) for r in report.top_users]
    assert users == [(str(feed["carol"]), 6, 2), (str(feed["bob"]), 5, 2), ("77", 1, 1)]
    assert report.top_users[0]["url"] == f"/admin/auth/user/{feed['carol']}/change/"
    assert report.top_users[2]["user"] is None
    html = response.content.decode()
    assert "&lt;b&gt;sunset&lt;/b&gt;" in html and "<b>sunset" not in html  # text, not HTML
    assert ">bob</a>" in html and "actor 77" in html
    assert 'id="analytics-data"' in html and "admin-analytics.js" in html
    assert "uPlot.iife.min.js" in html
    assert f'href="{EXPORT}?from=2024-05-06&amp;to=2024-05-07"' in html


def test_its_chart_figures_are_in_the_page_as_json(admin_client, feed) -> None:
    response = admin_client.get(PAGE, RANGE)

    data = response.context["chart_data"]
    midnight = int(datetime(2024, 5, 6, tzinfo=UTC).timestamp())
    assert data["days"] == [midnight, midnight + 86_400]
    assert (data["active"], data["posts"], data["likes"]) == ([2, 3], [1, 2], [2, 1])
    rates = data["rates"]
    assert rates["unit"] == "minute"  # two days: per minute
    assert len(rates["buckets"]) == 2 * 24 * 60
    assert rates["buckets"][0] == midnight
    assert sum(rates["series"]["photo.liked"]) == 3
    assert rates["series"]["photo.liked"][9 * 60 + 33] == 1  # 09:33 on day 1
    assert "user.followed" not in rates["series"]  # no events of it
    html = response.content.decode()
    start = html.index('<script id="analytics-data" type="application/json">')
    embedded = html[start:].split(">", 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded) == json.loads(json.dumps(data))


def test_its_queries_are_a_handful_whatever_the_data(
    admin_client, feed, django_assert_max_num_queries
) -> None:
    record(*[liked(post, post % 7, DAY1 + timedelta(seconds=post)) for post in range(200)])
    admin_client.get(PAGE, RANGE)  # the session and the user, once

    with django_assert_max_num_queries(12) as queries:
        response = admin_client.get(PAGE, {"from": "2023-06-01", "to": "2024-05-31"})

    assert response.status_code == 200
    aggregates = [q["sql"] for q in queries.captured_queries if "GROUP BY" in q["sql"]]
    assert len(aggregates) == 6


@pytest.mark.parametrize(
    ("days", "unit", "buckets"), [(1, "minute", 1440), (3, "hour", 72), (93, "day", 93)]
)
def test_the_rates_bucket_grows_with_the_range(days: int, unit: str, buckets: int) -> None:
    record(liked(1, 2, DAY1))
    filters = Filters(DAY1.date(), DAY1.date() + timedelta(days=days - 1))

    report = build_report(filters)

    assert report.rate_unit == unit
    assert len(report.rate_buckets) == buckets
    assert sum(report.rates["photo.liked"]) == 1


def test_it_defaults_to_the_last_30_days(admin_client) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    record(
        signup_event(1, at=today + timedelta(minutes=1)),
        signup_event(2, at=today - timedelta(days=29)),
        signup_event(3, at=today - timedelta(days=30)),  # one day too old
    )

    response = admin_client.get(PAGE)

    report = response.context["report"]
    assert (report.filters.first, report.filters.last) == (
        (today - timedelta(days=29)).date(),
        today.date(),
    )
    assert report.active_in_range == 2
    assert report.totals["user.signed_up"] == 2


def test_a_type_filter_narrows_the_rates_but_not_the_activity(admin_client, feed) -> None:
    response = admin_client.get(PAGE, {**RANGE, "type": ["photo.liked", "comment.added"]})

    report = response.context["report"]
    assert report.filters.types == ("comment.added", "photo.liked")
    assert set(report.rates) == {"comment.added", "photo.liked"}
    assert report.totals == {"comment.added": 3, "photo.liked": 3}
    assert report.active == [2, 3]  # every type
    assert report.posts == [1, 2]
    html = response.content.decode()
    assert 'value="photo.liked" checked' in html and 'value="photo.posted" checked' not in html
    assert "type=comment.added&amp;type=photo.liked" in html  # the export link keeps them


def test_a_date_filter_narrows_every_figure(admin_client, feed) -> None:
    response = admin_client.get(PAGE, {"from": "2024-05-07", "to": "2024-05-07"})

    report = response.context["report"]
    assert report.active == [3]
    assert report.likes == [1]
    # Bob's post: his like and comment, carol's unlike; a tie goes by post id.
    assert [(r["post_id"], r["score"]) for r in report.top_posts] == [
        (feed["post"].pk, 1),
        (998, 1),
    ]
    assert {r["actor"]: r["events"] for r in report.top_users} == {
        str(feed["bob"]): 2,
        str(feed["carol"]): 3,
        "77": 1,
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2024-13-01"}, "'from' must be a date as YYYY-MM-DD"),
        ({"to": "06/05/2024"}, "'to' must be a date as YYYY-MM-DD"),
        ({"from": "2024-5-6"}, "'from' must be a date as YYYY-MM-DD"),
        ({"from": "1969-12-31", "to": "1970-01-01"}, "'from' must be between 1970-01-01"),
        ({"from": "2024-05-08", "to": "2024-05-07"}, "'from' (2024-05-08) is after 'to'"),
        ({"from": "2023-01-01", "to": "2024-01-02"}, "The range has 367 days; at most 366"),
        ({**RANGE, "type": "t" * 101}, "A 'type' is at most 100 characters"),
        ({**RANGE, "source": "/" + "s" * 255}, "A 'source' is at most 255 characters"),
        ({**RANGE, "source": "/a\x00b"}, "A 'source' cannot hold a NUL character"),
        ({**RANGE, "source": [f"/s{n}" for n in range(101)]}, "At most 100 values of 'source'"),
    ],
)
def test_bad_filters_answer_400_with_a_message(admin_client, params, message) -> None:
    page = admin_client.get(PAGE, params)
    assert page.status_code == 400
    assert message in page.content.decode().replace("&#x27;", "'")
    assert "report" not in page.context

    as_json = admin_client.get(PAGE, params, headers={"Accept": "application/json"})
    assert as_json.status_code == 400
    assert message in as_json.json()["error"]

    export = admin_client.get(EXPORT, params)
    assert export.status_code == 400
    assert message in export.content.decode()


def test_a_range_of_366_days_is_fine(admin_client) -> None:
    response = admin_client.get(PAGE, {"from": "2023-01-02", "to": "2024-01-02"})
    assert response.status_code == 200
    assert response.context["report"].filters.days == 366


def test_it_is_linked_from_the_admin_index_and_the_event_list(admin_client) -> None:
    assert f'href="{PAGE}"' in admin_client.get("/admin/").content.decode()
    events = admin_client.get("/admin/monitor/analyticsevent/").content.decode()
    assert f'href="{PAGE}"' in events


def test_it_turns_away_who_is_not_staff(client, django_user_model) -> None:
    for path in (PAGE, EXPORT):
        anonymous = client.get(path)
        assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    plain = django_user_model.objects.create_user(username="plain", password="pw-plain-123")
    client.force_login(plain)
    for path in (PAGE, EXPORT):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_staff_without_the_view_permission_are_refused(client, django_user_model) -> None:
    staff = django_user_model.objects.create_user(
        username="desk", password="pw-desk-123", is_staff=True
    )
    client.force_login(staff)
    assert client.get(PAGE).status_code == 403
    assert client.get(EXPORT).status_code == 403
    assert PAGE not in client.get("/admin/").content.decode()

    staff.user_permissions.add(Permission.objects.get(codename="view_analyticsevent"))
    assert client.get(PAGE).status_code == 200


# --- CSV ------------------------------------------------------------------------


def exported(response) -> list[list[str]]:
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    text = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.reader(io.StringIO(text)))


def test_the_export_has_the_events_of_the_range_oldest_first(admin_client, feed) -> None:
    response = admin_client.get(EXPORT, {"from": "2024-05-07", "to": "2024-05-07"})

    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        'attachment; filename="events-2024-05-07-2024-05-07.csv"'
    )
    header, *rows = exported(response)
    assert tuple(header) == EXPORT_COLUMNS
    day2 = [event for event in feed["events"] if event["time"] >= format_time(DAY2)]
    assert [row[2] for row in rows] == [event["id"] for event in day2]
    first, stored = rows[0], AnalyticsEvent.objects.get(event_id=day2[0]["id"])
    assert json.loads(first.pop()) == day2[0]["data"]  # PostgreSQL may order the keys
    assert first == [
        format_time(stored.time),
        "photo.liked",
        day2[0]["id"],
        str(feed["bob"]),
        f"posts/{feed['post'].pk}",
        "/test",
        "true",
        "user-events",
        "0",
        str(stored.offset),
    ]
    assert json.loads(rows[-1][10]) == day2[-1]["data"]


def test_the_export_keeps_to_the_types(admin_client, feed) -> None:
    response = admin_client.get(EXPORT, {**RANGE, "type": "comment.added"})

    _, *rows = exported(response)
    assert [row[1] for row in rows] == ["comment.added"] * 3


def test_cells_that_a_spreadsheet_would_run_get_an_apostrophe(admin_client) -> None:
    event = build_event(
        type="comment.added",
        subject='=HYPERLINK("http://evil.example","x")',
        actor="@SUM(1+1)",
        source="+cmd|' /C calc'!A0",
        data={
            "comment_id": 1,
            "post_id": 5,
            "post_author_id": 1,
            "user_id": 9,
            "username": "=1+1",
            "text": "-2+3",
        },
        time=DAY1,
    )
    record(event)

    _, row = exported(admin_client.get(EXPORT, RANGE))

    assert row[3] == "'@SUM(1+1)"
    assert row[4] == '\'=HYPERLINK("http://evil.example","x")'
    assert row[5] == "'+cmd|' /C calc'!A0"
    assert row[10].startswith("{")  # JSON: never a formula, kept as it is
    assert json.loads(row[10])["username"] == "=1+1"


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cell_escapes_each_formula_start(start: str) -> None:
    assert csv_cell(start + "1") == "'" + start + "1"


@pytest.mark.parametrize("value", ["", "plain", "a=b", "1-2", "'quoted", " =padded"])
def test_csv_cell_leaves_other_text_alone(value: str) -> None:
    assert csv_cell(value) == value


def test_the_export_is_streamed_in_chunks(admin_client, monkeypatch) -> None:
    monkeypatch.setattr(export, "EXPORT_CHUNK_ROWS", 2)
    record(*[signup_event(n, at=DAY1 + timedelta(seconds=n)) for n in range(5)])

    response = admin_client.get(EXPORT, RANGE)

    assert response.streaming
    assert not response.has_header("Content-Length")
    parts = [part.decode() for part in response.streaming_content]
    assert [part.count("\r\n") for part in parts] == [3, 2, 1]  # header + 2, 2, 1
    assert parts[0].startswith("time,type,id,")


def test_served_asynchronously_the_export_reads_one_chunk_at_a_time(monkeypatch) -> None:
    monkeypatch.setattr(export, "EXPORT_CHUNK_ROWS", 2)
    record(*[signup_event(n, at=DAY1 + timedelta(seconds=n)) for n in range(3)])
    request = AsyncRequestFactory().get(EXPORT)

    response = csv_response(request, AnalyticsEvent.objects.all(), name="all")

    assert response.is_async  # not read whole into memory under daphne

    async def collect() -> list[bytes]:
        return [part async for part in response]

    parts = async_to_sync(collect)()
    assert [part.count(b"\r\n") for part in parts] == [3, 1]


def test_the_admin_action_exports_the_selected_events(admin_client, feed) -> None:
    chosen = list(AnalyticsEvent.objects.filter(type="photo.liked").values_list("pk", flat=True))

    response = admin_client.post(
        "/admin/monitor/analyticsevent/",
        {"action": "export_csv", "_selected_action": chosen},
    )

    assert response.status_code == 200
    _, *rows = exported(response)
    assert sorted(row[2] for row in rows) == sorted(
        e["id"] for e in feed["events"] if e["type"] == "photo.liked"
    )


# --- The social feed's records and the aggregates in the admin -----------------------


@pytest.fixture
def social(people) -> dict[str, object]:
    from monitor.models import Comment, Follow, Like, Notice

    bob, carol = people["bob"], people["carol"]
    post = Post.objects.create(author=bob, photo="photos/a.jpg", caption="sunset")
    return {
        "like": Like.objects.create(user=carol, post=post),
        "comment": Comment.objects.create(post=post, author=carol, text="<i>lovely</i>"),
        "follow": Follow.objects.create(follower=carol, followee=bob),
        "notice": Notice.objects.create(
            recipient=bob,
            event_id=uuid.uuid4(),
            kind="photo.liked",
            actor_name="carol",
            subject=f"posts/{post.pk}",
            text="carol liked your photo",
            created_at=DAY1,
        ),
        "post": post,
    }


@pytest.mark.parametrize(
    ("model", "search", "found"),
    [
        ("like", "carol", 1),
        ("like", "nobody", 0),
        ("comment", "lovely", 1),
        ("follow", "bob", 1),
        ("notice", "liked your", 1),
        ("notice", "not-a-uuid", 0),
    ],
)
def test_the_feeds_records_are_listed_and_searched(
    admin_client, social, model: str, search: str, found: int
) -> None:
    response = admin_client.get(f"/admin/monitor/{model}/", {"q": search})

    assert response.status_code == 200
    assert response.context["cl"].result_count == found


def test_the_feeds_records_are_read_only(admin_client, social) -> None:
    for model in ("like", "comment", "follow", "notice"):
        pk = social[model].pk
        assert admin_client.get(f"/admin/monitor/{model}/add/").status_code == 403
        assert admin_client.get(f"/admin/monitor/{model}/{pk}/delete/").status_code == 403
        view = admin_client.get(f"/admin/monitor/{model}/{pk}/change/")
        assert view.status_code == 200 and not view.context["has_change_permission"]
    comment = admin_client.get(f"/admin/monitor/comment/{social['comment'].pk}/change/")
    assert "&lt;i&gt;lovely&lt;/i&gt;" in comment.content.decode()


def test_the_notices_filter_by_kind_and_read(admin_client, social) -> None:
    unread = admin_client.get("/admin/monitor/notice/", {"read_at__isempty": "1"})
    assert unread.context["cl"].result_count == 1
    likes = admin_client.get("/admin/monitor/notice/", {"kind": "photo.liked"})
    assert likes.context["cl"].result_count == 1


def test_the_aggregates_are_listed_read_only(admin_client, feed) -> None:
    post = feed["post"].pk
    days = admin_client.get("/admin/monitor/postdayengagement/", {"q": str(post)})
    assert days.context["cl"].result_count == 2
    assert admin_client.get("/admin/monitor/postdayengagement/", {"q": "x"}).status_code == 200
    users = admin_client.get("/admin/monitor/userdayactivity/", {"q": str(feed["bob"])})
    assert users.context["cl"].result_count == 2
    minutes = admin_client.get("/admin/monitor/eventminutecount/", {"type": "photo.liked"})
    assert minutes.context["cl"].result_count == 3
    for model in ("userdayactivity", "postdayengagement", "eventminutecount", "analyticsevent"):
        assert admin_client.get(f"/admin/monitor/{model}/add/").status_code == 403
        changelist = admin_client.get(f"/admin/monitor/{model}/")
        assert "delete_selected" not in changelist.content.decode()


# --- The aggregates record_batch keeps for the page ---------------------------------


def test_record_batch_counts_activity_per_actor_and_utc_day() -> None:
    late = datetime(2024, 5, 6, 23, 59, 59, tzinfo=UTC)
    record(signup_event(1, at=late), liked(5, 1, late), liked(6, 1, late + timedelta(seconds=1)))
    record(liked(5, 2, late))

    assert sorted(UserDayActivity.objects.values_list("day", "actor", "count")) == [
        (date(2024, 5, 6), "1", 2),
        (date(2024, 5, 6), "2", 1),
        (date(2024, 5, 7), "1", 1),
    ]


def test_record_batch_counts_engagement_per_post_and_day_once() -> None:
    events = [
        liked(5, 1, DAY1),
        liked(5, 2, DAY1),
        unliked(5, 1, DAY1),
        commented(5, 3, DAY1),
        commented(6, 3, DAY2),
        photo_event(5, at=DAY1),  # no engagement
    ]
    record(*events)
    record(*events[:3])  # redelivered: nothing changes

    rows = PostDayEngagement.objects.values_list("day", "post_id", "likes", "unlikes", "comments")
    assert sorted(rows) == [(DAY1.date(), 5, 2, 1, 1), (DAY2.date(), 6, 0, 0, 1)]


def test_record_batch_upserts_aggregates_larger_than_one_statement(monkeypatch) -> None:
    from monitor.workers import analytics

    monkeypatch.setattr(analytics, "CHUNK_ROWS", 2)
    record(*[liked(n, n, DAY1) for n in range(7)])

    assert UserDayActivity.objects.count() == 7
    assert PostDayEngagement.objects.filter(likes=1).count() == 7


# --- Over the real server and in a real browser ---------------------------------------


def staff_session(django_user_model, client) -> dict[str, str]:
    admin = django_user_model.objects.create_superuser(
        username=f"admin-{uuid.uuid4().hex[:6]}", password="pw-admin-123"
    )
    client.force_login(admin)
    return {"sessionid": client.cookies["sessionid"].value}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_daphne_streams_the_export(stack: Stack, django_user_model, client, monkeypatch) -> None:
    events = [signup_event(n, at=DAY1 + timedelta(milliseconds=n)) for n in range(4500)]
    for start in range(0, len(events), 2000):
        record(*events[start : start + 2000])
    cookies = staff_session(django_user_model, client)

    parts = 0
    body = b""
    with httpx.stream(
        "GET", stack.base_url + EXPORT, params=RANGE, cookies=cookies, timeout=30
    ) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        assert response.headers["transfer-encoding"] == "chunked"
        for chunk in response.iter_raw():
            parts += 1
            body += chunk
    header, *rows = list(csv.reader(io.StringIO(body.decode())))
    assert tuple(header) == EXPORT_COLUMNS
    assert [row[2] for row in rows] == [event["id"] for event in events]
    assert parts >= 2


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@needs_chromium
def test_the_charts_are_drawn_in_a_browser(
    browser, stack: Stack, django_user_model, client
) -> None:
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    record(
        signup_event(1, at=today - timedelta(days=2)),
        liked(5, 1, today - timedelta(days=1)),
        commented(5, 2, today),
    )
    cookies = staff_session(django_user_model, client)
    context = browser.new_context(base_url=stack.base_url)
    context.add_cookies(
        [{"name": "sessionid", "value": cookies["sessionid"], "url": stack.base_url}]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto("/admin/")
        page.click("#analytics-module a.viewlink")
        for chart in ("#active-chart", "#daily-chart", "#rates-chart", "#sources-chart"):
            page.wait_for_selector(f'{chart}[data-drawn="true"] canvas', timeout=10_000)
        assert page.inner_text('#summary [data-figure="likes"] .value') == "1"
        page.screenshot(path=str(ARTIFACTS / "admin-analytics.png"), full_page=True)
        assert errors == []
        page.fill("#analytics-from", "2024-05-08")
        page.fill("#analytics-to", "2024-05-07")
        page.click("#analytics-filters input[type=submit]")
        assert "is after" in page.inner_text("#analytics-error")
        assert page.input_value("#analytics-from") == "2024-05-08"  # kept for a fix
    finally:
        context.close()
