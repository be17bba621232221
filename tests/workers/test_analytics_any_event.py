"""Analytics counts every CloudEvent, whatever its type or source, signed or not
(monitor.workers.records.split_records and monitor.workers.analytics.record_batch);
a record that is not a CloudEvent is a dead letter with its reason."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from django.conf import settings
from django.db import transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from monitor.events import signing
from monitor.events.schema import encode_event
from monitor.kafka import clients as kafka
from monitor.models import AnalyticsEvent, EventMinuteCount, PostDayEngagement, UserDayActivity
from monitor.workers.analytics import record_batch
from monitor.workers.records import UNVERIFIED_NAMESPACE, RecordedFrom, split_records
from tests.support.events import commented, liked, signup_event, unliked
from tests.support.kafka import committed_offsets, read_all
from tests.support.workers import IsolatedWorker, run_until_consumed

pytestmark = pytest.mark.django_db

AT = datetime(2024, 5, 6, 7, 8, 9, 500_000, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)
TOPIC = "user-events"


def order_placed(**changes: Any) -> dict[str, Any]:
    """Another service's CloudEvent: no subject, actor or time; an id that is no UUID."""
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": "A234-1234-1234",
        "source": "/shop",
        "type": "order.placed",
        "datacontenttype": "application/json",
        "data": {"order": 17, "total": "9.50"},
    }
    envelope.update(changes)
    return {name: value for name, value in envelope.items() if value is not ...}


def as_record(
    value: bytes | None,
    offset: int = 0,
    *,
    headers: Sequence[tuple[str, bytes]] = (),
    timestamp: int = AT_MS,
) -> ConsumerRecord:
    return ConsumerRecord(
        TOPIC, 0, offset, timestamp, 0, b"k", value, None, 1, len(value or b""), list(headers)
    )


def signed(value: bytes) -> list[tuple[str, bytes]]:
    return [signing.sign(value)]


def split(*records: ConsumerRecord) -> tuple[list[RecordedFrom], list[Any]]:
    return split_records(
        {TopicPartition(TOPIC, 0): list(records)}, max_bytes=settings.MAX_EVENT_BYTES
    )


def read(*records: ConsumerRecord) -> list[RecordedFrom]:
    valid, dead = split(*records)
    assert dead == []
    return valid


def minute_counts() -> dict[tuple[datetime, str, str], int]:
    rows = EventMinuteCount.objects.values_list("minute", "type", "source", "count")
    return {(minute, kind, source): count for minute, kind, source, count in rows}


def engagement() -> list[tuple[date, int, int, int, int]]:
    rows = PostDayEngagement.objects.values_list("day", "post_id", "likes", "unlikes", "comments")
    return sorted(rows)


MINUTE = AT.replace(second=0, microsecond=0)


def test_a_foreign_cloudevent_is_stored_and_counted_with_its_source() -> None:
    value = json.dumps(order_placed()).encode()

    assert record_batch(read(as_record(value, 5))) == 1

    row = AnalyticsEvent.objects.get()
    assert (row.type, row.source, row.cloudevent_id) == ("order.placed", "/shop", "A234-1234-1234")
    assert row.envelope_id == "A234-1234-1234"
    assert row.event_id == uuid.uuid5(UNVERIFIED_NAMESPACE, "unverified\n/shop\nA234-1234-1234")
    assert (row.subject, row.actor) == ("", "")
    assert row.time == AT  # no time of its own: the record's
    assert row.data == {"order": 17, "total": "9.50"}
    assert row.verified is False
    assert (row.topic, row.partition, row.offset) == (TOPIC, 0, 5)
    assert minute_counts() == {(MINUTE, "order.placed", "/shop"): 1}
    assert not UserDayActivity.objects.exists()  # no actor
    assert engagement() == []


def test_a_foreign_event_delivered_again_is_stored_once_but_the_same_id_elsewhere_is_not() -> None:
    value = json.dumps(order_placed()).encode()
    record_batch(read(as_record(value, 1)))

    again = record_batch(read(as_record(value, 2), as_record(value, 3)))
    other_source = json.dumps(order_placed(source="/warehouse")).encode()
    elsewhere = record_batch(read(as_record(other_source, 4)))

    assert (again, elsewhere) == (0, 1)
    assert minute_counts() == {
        (MINUTE, "order.placed", "/shop"): 1,
        (MINUTE, "order.placed", "/warehouse"): 1,
    }


def test_its_own_time_and_actor_are_kept_when_it_has_them() -> None:
    value = json.dumps(
        order_placed(time="2024-05-06T09:00:00+02:00", subject="orders/17", actor="c-42")
    ).encode()

    record_batch(read(as_record(value)))

    row = AnalyticsEvent.objects.get()
    assert row.time == datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
    assert (row.subject, row.actor) == ("orders/17", "c-42")
    assert list(UserDayActivity.objects.values_list("day", "actor", "count")) == [
        (date(2024, 5, 6), "c-42", 1)
    ]


@pytest.mark.parametrize(
    ("data", "stored"),
    [
        ({"data": "plain text"}, {"value": "plain text"}),
        ({"data": [1, 2]}, {"value": [1, 2]}),
        ({"data": 0}, {"value": 0}),
        ({"data": None}, {}),
        ({"data": ...}, {}),
        ({"data": ..., "data_base64": "AAEC"}, {"data_base64": "AAEC"}),
    ],
)
def test_data_that_is_not_an_object_is_stored_as_one(data: dict, stored: dict) -> None:
    record_batch(read(as_record(json.dumps(order_placed(**data)).encode())))

    assert AnalyticsEvent.objects.get().data == stored


def test_text_longer_than_its_column_is_cut_and_the_whole_write_goes_through() -> None:
    long = order_placed(
        id="i" * 1000,
        type="t" * 300,
        source="/" + "s" * 999,
        subject="u" * 1000,
        actor="a" * 1000,
    )
    short = order_placed(id="next")

    assert (
        record_batch(
            read(as_record(json.dumps(long).encode()), as_record(json.dumps(short).encode(), 1))
        )
        == 2
    )

    row = AnalyticsEvent.objects.get(type__startswith="t")
    assert (len(row.cloudevent_id), len(row.type), len(row.source)) == (255, 100, 255)
    assert (len(row.subject), len(row.actor)) == (255, 255)
    # The key is made from the whole source and id: a redelivery is still known.
    assert record_batch(read(as_record(json.dumps(long).encode(), 2))) == 0
    assert minute_counts() == {
        (MINUTE, "t" * 100, "/" + "s" * 254): 1,
        (MINUTE, "order.placed", "/shop"): 1,
    }


def test_a_non_string_actor_counts_as_none() -> None:
    record_batch(read(as_record(json.dumps(order_placed(actor=42)).encode())))

    assert AnalyticsEvent.objects.get().actor == ""
    assert not UserDayActivity.objects.exists()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"hello, analytics", "value is not JSON"),
        (b'{"order": 17, "total": "9.50"}', "value is not a CloudEvent: no specversion"),
        (b"[1, 2, 3]", "value is not a CloudEvent: not a JSON object"),
        (b'{"specversion": "1.0", "source": "/shop", "type": "x"}', "id is missing"),
        (b"\xff\xfe", "value is not UTF-8"),
        (None, "record has no value"),
    ],
)
def test_a_record_that_is_not_a_cloudevent_is_a_dead_letter_with_its_reason(
    value: bytes | None, reason: str
) -> None:
    valid, dead = split(as_record(value, 7))

    assert valid == []
    [letter] = dead
    assert letter.reason.startswith(reason)
    assert (letter.topic, letter.partition, letter.offset, letter.value) == (TOPIC, 0, 7, value)


def test_only_a_signed_site_event_is_verified_and_keeps_its_id() -> None:
    like = liked(5, 2, AT)
    value = encode_event(like)
    bad = [(signing.SIGNATURE_HEADER, b"v1=s0:" + b"0" * 64)]

    mine, unsigned, wrong = read(
        as_record(value, 0, headers=signed(value)),
        as_record(value, 1),
        as_record(value, 2, headers=bad),
    )

    assert (mine.verified, unsigned.verified, wrong.verified) == (True, False, False)
    assert mine.event_id == uuid.UUID(like["id"])
    forged_key = uuid.uuid5(UNVERIFIED_NAMESPACE, f"unverified\n/test\n{like['id']}")
    assert unsigned.event_id == wrong.event_id == forged_key


def test_a_forged_like_is_stored_and_counted_but_never_shadows_the_real_one() -> None:
    like = liked(5, 2, AT)
    value = encode_event(like)
    forged_elsewhere = dict(liked(6, 3, AT), source="/elsewhere")

    # The forgeries come first, one reusing the real like's id.
    assert (
        record_batch(read(as_record(value, 0), as_record(encode_event(forged_elsewhere), 1))) == 2
    )
    assert engagement() == []
    assert record_batch(read(as_record(value, 2, headers=signed(value)))) == 1

    rows = {(row.source, row.verified): row for row in AnalyticsEvent.objects.all()}
    assert set(rows) == {("/test", False), ("/elsewhere", False), ("/test", True)}
    assert rows[("/test", True)].event_id == uuid.UUID(like["id"])
    assert rows[("/test", False)].cloudevent_id == like["id"]
    assert engagement() == [(AT.date(), 5, 1, 0, 0)]  # the real like only
    assert minute_counts() == {
        (MINUTE, "photo.liked", "/test"): 2,
        (MINUTE, "photo.liked", "/elsewhere"): 1,
    }


def test_a_signed_event_delivered_again_changes_nothing() -> None:
    event = signup_event(3, at=AT)
    value = encode_event(event)
    record_batch(read(as_record(value, 0, headers=signed(value))))

    assert record_batch(read(as_record(value, 9, headers=signed(value)))) == 0
    assert AnalyticsEvent.objects.get().offset == 0


# --- Any mix, in any order, delivered any number of times --------------------

SOCIAL = {"like": liked, "unlike": unliked, "comment": commented}
ENGAGEMENT_COLUMN = {"photo.liked": 0, "photo.unliked": 1, "comment.added": 2}

deliveries = st.lists(
    st.tuples(
        st.sampled_from(["like", "unlike", "comment"]),
        st.integers(1, 3),  # post
        st.integers(0, 86_399),  # second of the day
        st.sampled_from(["signed", "unsigned", "forged elsewhere", "foreign"]),
        st.integers(1, 3),  # how many times it is delivered
    ),
    min_size=1,
    max_size=25,
)


def as_delivered(kind: str, post: int, second: int, how: str) -> tuple[bytes, list]:
    at = AT.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(seconds=second)
    if how == "foreign":
        return json.dumps(order_placed(id=f"o-{post}-{second}", time=at.isoformat())).encode(), []
    event = SOCIAL[kind](post, 2, at)
    if how == "forged elsewhere":
        event = dict(event, source="/elsewhere")
    value = encode_event(event)
    return value, signed(value) if how == "signed" else []


@hypothesis_settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=deliveries, data=st.data())
def test_only_signed_events_count_as_engagement_whatever_else_is_delivered(
    steps: list[tuple[str, int, int, str, int]], data: st.DataObject
) -> None:
    with transaction.atomic():
        try:
            check_one_mix(steps, data.draw)
        finally:
            transaction.set_rollback(True)  # each example starts from an empty database


def check_one_mix(steps: list[tuple[str, int, int, str, int]], draw: st.DrawFn) -> None:
    sent = [as_delivered(*step[:4]) for step in steps]
    # A forgery of a signed event: the same bytes, unsigned.
    sent += [(value, []) for value, headers in sent if headers and draw(st.booleans())]
    times = [draw(st.integers(1, 3)) for _ in sent]
    order = draw(st.permutations([n for n, count in enumerate(times) for _ in range(count)]))
    records = [as_record(sent[n][0], offset, headers=sent[n][1]) for offset, n in enumerate(order)]
    while records:
        size = draw(st.integers(1, 10))
        record_batch(read(*records[:size]))
        records = records[size:]

    distinct = {(value, bool(headers)) for value, headers in sent}
    envelopes = [(json.loads(value), mine) for value, mine in distinct]
    mine = [event for event, verified in envelopes if verified]
    assert AnalyticsEvent.objects.count() == len(distinct)
    assert set(AnalyticsEvent.objects.filter(verified=True).values_list("event_id", flat=True)) == {
        uuid.UUID(event["id"]) for event in mine
    }
    expected: dict[tuple[date, int], list[int]] = {}
    for event in mine:
        day = datetime.fromisoformat(event["time"]).date()
        column = ENGAGEMENT_COLUMN[event["type"]]
        expected.setdefault((day, event["data"]["post_id"]), [0, 0, 0])[column] += 1
    assert engagement() == sorted((*key, *counts) for key, counts in expected.items())
    per_minute = Counter(
        (
            datetime.fromisoformat(event["time"]).replace(second=0, microsecond=0),
            event["type"],
            event["source"],
        )
        for event, _ in envelopes
    )
    assert minute_counts() == dict(per_minute)


# --- The worker on a real broker ---------------------------------------------


async def produce_with_headers(topic: str, records: list[tuple[bytes, list]]) -> None:
    await kafka.ensure_topics()
    producer = kafka.make_producer()
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait(topic, value, key=b"0", headers=headers)
    finally:
        await producer.stop()


@pytest.mark.django_db(transaction=True)
def test_the_worker_counts_every_cloudevent_by_source(topics) -> None:
    topic, _ = topics
    like = liked(5, 2, AT)
    real = encode_event(like)
    forged = encode_event(liked(5, 3, AT + timedelta(seconds=1)))
    foreign = json.dumps(order_placed(time="2024-05-06T07:08:30Z")).encode()
    sent = [(real, signed(real)), (forged, []), (foreign, []), (foreign, [])]
    asyncio.run(produce_with_headers(topic, sent))

    committed = asyncio.run(run_until_consumed(IsolatedWorker(), topic, len(sent)))

    assert sum(offset or 0 for offset in committed.values()) == len(sent)
    assert sorted(AnalyticsEvent.objects.values_list("type", "source", "verified")) == [
        ("order.placed", "/shop", False),
        ("photo.liked", "/test", False),
        ("photo.liked", "/test", True),
    ]
    assert minute_counts() == {
        (MINUTE, "photo.liked", "/test"): 2,
        (MINUTE, "order.placed", "/shop"): 1,
    }
    assert engagement() == [(AT.date(), 5, 1, 0, 0)]


@pytest.mark.django_db(transaction=True)
def test_the_worker_sends_records_that_are_not_cloudevents_aside(topics) -> None:
    topic, dlq = topics
    foreign = json.dumps(order_placed()).encode()
    poison = [b"hello, analytics", b'{"order": 17}']
    asyncio.run(produce_with_headers(topic, [(poison[0], []), (foreign, []), (poison[1], [])]))

    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 3))

    assert list(AnalyticsEvent.objects.values_list("type", flat=True)) == ["order.placed"]
    letters = {record.value: dict(record.headers) for record in asyncio.run(read_all(dlq, 2))}
    assert letters[poison[0]]["dlq.reason"].startswith(b"value is not JSON")
    assert letters[poison[1]]["dlq.reason"] == b"value is not a CloudEvent: no specversion"
    committed = committed_offsets(topic, IsolatedWorker.group_id)
    assert sum(offset or 0 for offset in committed.values()) == 3
