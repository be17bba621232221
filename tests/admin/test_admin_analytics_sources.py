"""The admin's analytics page and export count every CloudEvent, with its source
as a dimension: events of other services and unsigned or forged ones too,
which never count as engagement."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitor.admin_analytics.export import EXPORT_COLUMNS
from monitor.admin_analytics.filters import Filters
from monitor.admin_analytics.report import build_report
from monitor.events.schema import Event
from monitor.workers.analytics import record_batch
from monitor.workers.records import RecordedFrom
from tests.support.events import liked, signup_event

pytestmark = pytest.mark.django_db

PAGE = "/admin/monitor/analyticsevent/analytics/"
EXPORT = "/admin/monitor/analyticsevent/analytics/events.csv"
DAY = datetime(2024, 5, 6, 9, 30, tzinfo=UTC)
RANGE = {"from": "2024-05-06", "to": "2024-05-06"}


def order(n: int, at: datetime, source: str = "/shop") -> dict[str, Any]:
    """Another service's event: no subject, actor or data; its id is no UUID."""
    return {
        "specversion": "1.0",
        "id": f"A234-{n}",
        "source": source,
        "type": "order.placed",
        "time": at.isoformat(),
    }


def record(*events: Any, verified: bool) -> int:
    return record_batch(
        [
            RecordedFrom(event, "user-events", 0, offset, verified=verified)
            for offset, event in enumerate(events)
        ]
    )


@pytest.fixture
def mixed() -> dict[str, Event]:
    """The site's sign-up and like, two orders from a shop, one from a warehouse,
    and a like forged under the site's own source for the same post."""
    signup, like = signup_event(1, at=DAY), liked(5, 1, DAY + timedelta(minutes=1))
    forged = liked(5, 2, DAY + timedelta(minutes=2))
    record(signup, like, verified=True)
    record(
        order(1, DAY),
        order(2, DAY + timedelta(minutes=1)),
        order(1, DAY, source="/warehouse"),
        forged,
        verified=False,
    )
    return {"signup": signup, "like": like, "forged": forged}


def test_the_page_counts_every_source_and_type(admin_client, mixed) -> None:
    response = admin_client.get(PAGE, RANGE)

    assert response.status_code == 200
    report = response.context["report"]
    assert report.source_totals == {"/shop": 2, "/test": 3, "/warehouse": 1}
    assert report.totals["order.placed"] == 3
    assert report.totals["photo.liked"] == 2  # the forged one is an event too
    assert report.sums()["events"] == 6
    assert report.likes == [2]
    # ...but only the site's own like is engagement.
    assert [(r["post_id"], r["likes_in_range"]) for r in report.top_posts] == [(5, 1)]
    # Events with no actor are no active users: the site's actors 1 and 2.
    assert report.active_in_range == 2
    html = response.content.decode()
    assert 'name="source" value="/shop"' in html and 'name="source" value="/warehouse"' in html
    assert 'name="type" value="order.placed"' in html
    assert 'data-source="/warehouse"' in html and 'id="sources-chart"' in html


def test_the_chart_data_has_a_series_per_source(admin_client, mixed) -> None:
    data = admin_client.get(PAGE, RANGE).context["chart_data"]

    sources = data["rates"]["sources"]
    assert set(sources) == {"/shop", "/test", "/warehouse"}
    assert sum(sources["/shop"]) == 2
    assert sources["/shop"][9 * 60 + 30] == 1 and sources["/shop"][9 * 60 + 31] == 1
    assert sum(data["rates"]["series"]["order.placed"]) == 3


def test_a_source_filter_narrows_the_rates_totals_and_daily_counts(admin_client, mixed) -> None:
    response = admin_client.get(PAGE, {**RANGE, "source": ["/shop", "/warehouse"]})

    report = response.context["report"]
    assert report.filters.sources == ("/shop", "/warehouse")
    assert report.source_totals == {"/shop": 2, "/warehouse": 1}
    assert {name: n for name, n in report.totals.items() if n} == {"order.placed": 3}
    assert report.likes == [0]
    assert set(report.rates) == {"order.placed"}
    # The other sources stay on offer, and the export link keeps the filter.
    assert report.source_choices == ["/shop", "/test", "/warehouse"]
    html = response.content.decode()
    assert 'value="/shop" checked' in html and 'value="/test" checked' not in html
    assert "source=%2Fshop&amp;source=%2Fwarehouse" in html


def test_a_source_with_no_events_in_the_range_is_shown_at_zero() -> None:
    record(order(1, DAY), verified=False)

    report = build_report(Filters(DAY.date(), DAY.date(), sources=("/elsewhere",)))

    assert report.source_totals == {"/elsewhere": 0}
    assert report.source_rates == {"/elsewhere": [0] * 1440}
    assert report.source_choices == ["/elsewhere", "/shop"]


def exported(response) -> list[dict[str, str]]:
    text = b"".join(response.streaming_content).decode("utf-8")
    header, *rows = list(csv.reader(io.StringIO(text)))
    assert tuple(header) == EXPORT_COLUMNS
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_the_export_has_every_event_with_its_source(admin_client, mixed) -> None:
    rows = exported(admin_client.get(EXPORT, RANGE))

    assert len(rows) == 6
    shop = [row for row in rows if row["source"] == "/shop"]
    assert [row["id"] for row in shop] == ["A234-1", "A234-2"]
    assert shop[0]["type"] == "order.placed"
    assert (shop[0]["actor"], shop[0]["subject"], shop[0]["verified"]) == ("", "", "false")
    assert json.loads(shop[0]["data"]) == {}
    likes = {row["id"]: row["verified"] for row in rows if row["type"] == "photo.liked"}
    assert likes == {mixed["like"]["id"]: "true", mixed["forged"]["id"]: "false"}


def test_the_export_keeps_to_the_sources_and_types(admin_client, mixed) -> None:
    by_source = exported(admin_client.get(EXPORT, {**RANGE, "source": "/warehouse"}))
    by_both = exported(
        admin_client.get(EXPORT, {**RANGE, "source": "/test", "type": "photo.liked"})
    )

    assert [(row["source"], row["id"]) for row in by_source] == [("/warehouse", "A234-1")]
    assert sorted(row["verified"] for row in by_both) == ["false", "true"]
