"""Dead letters: poison never stops a consumer. Each bad record goes to the DLQ
topic, bytes unchanged, with headers saying where it was read and why it was
refused; it is listed once in the database, with a part per group that
refused it; staff re-drive it after a fix. (Several groups on one record:
tests/workers/test_deadletters_groups.py.)"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from django.core.management import CommandError, call_command

from monitor.events import signing
from monitor.events.schema import encode_event
from monitor.kafka import clients as kafka
from monitor.models import AnalyticsEvent, DeadLetter, DeadLetterGroup, EventMinuteCount
from monitor.workers.deadletters import record_dead_letters
from monitor.workers.records import DeadRecord
from monitor.workers.redrive import mark_redriven
from tests.support import events
from tests.support.events import signup_event
from tests.support.kafka import read_all
from tests.support.workers import IsolatedWorker, run_until_consumed

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 20_000


def photo_event(n: int, caption: str = "a photo") -> dict:
    return events.photo_event(n, caption=caption)


def oversize_event() -> bytes:
    """A valid envelope, but 50 KB: over a limit of LIMIT bytes."""
    return encode_event(photo_event(500, caption="x" * 50_000))


def poison_records() -> dict[bytes, str]:
    """One record of each kind a consumer must refuse (none is a CloudEvent it
    can store), with a phrase its reason must hold."""
    missing_source = signup_event(101)
    del missing_source["source"]
    oversize = oversize_event()
    return {
        b'{"specversion": "1.0", "id": ': "value is not JSON",
        b"\xff\xfe\x00caption": "value is not UTF-8",
        b"[1, 2]": "not a JSON object",
        encode_event(missing_source): "source is missing",
        encode_event(dict(signup_event(102), subject=102)): "subject is not a string",
        encode_event(dict(signup_event(103), specversion="0.3")): "unsupported specversion",
        encode_event(dict(signup_event(104), time="yesterday")): "time is not an RFC 3339",
        encode_event(signup_event(105)).replace(b'"user105"}', b'"user105","n":NaN}'): (
            "NaN is not allowed"
        ),
        oversize: f"record is {len(oversize)} bytes, over the limit of {LIMIT}",
    }


async def produce_signed(topic: str, values: list[bytes]) -> None:
    """Send ``values`` to ``topic`` in order, each signed with the site's key (so
    that the site's events among them are its own), spread over three keys."""
    await kafka.ensure_topics()
    producer = kafka.make_producer()
    await producer.start()
    try:
        for index, value in enumerate(values):
            key = str(index % 3).encode()
            await producer.send_and_wait(topic, value, key=key, headers=[signing.sign(value)])
    finally:
        await producer.stop()


def produce(topic: str, values: list[bytes]) -> dict[bytes, ConsumerRecord]:
    """Put the values on the topic, signed; return each value's record as a reader sees it."""
    asyncio.run(produce_signed(topic, values))
    return {record.value: record for record in asyncio.run(read_all(topic, len(values)))}


async def _end_offsets(topic: str) -> dict[int, int]:
    consumer = kafka.make_consumer(group_id=None)
    await consumer.start()
    try:
        partitions = await kafka.wait_for_topic(consumer, topic, timeout=10)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def end_offsets(topic: str) -> dict[int, int]:
    return asyncio.run(_end_offsets(topic))


def minute_count_total() -> int:
    return sum(EventMinuteCount.objects.values_list("count", flat=True))


def test_it_dead_letters_each_kind_of_poison_and_keeps_consuming(topics, settings) -> None:
    topic, dlq = topics
    settings.MAX_EVENT_BYTES = LIMIT
    valid = [signup_event(n) for n in range(14)] + [photo_event(n) for n in range(14, 18)]
    poison = poison_records()
    waiting = list(poison)
    values = []
    for index, event in enumerate(valid):  # a poison record after every second event
        values.append(encode_event(event))
        if index % 2 and waiting:
            values.append(waiting.pop(0))
    assert not waiting
    read_at = produce(topic, values)

    worker = IsolatedWorker()
    committed = asyncio.run(run_until_consumed(worker, topic, len(values)))

    # Every valid event recorded, once; nothing from the poison.
    stored = list(AnalyticsEvent.objects.values_list("event_id", flat=True))
    assert sorted(stored) == sorted(uuid.UUID(event["id"]) for event in valid)
    assert minute_count_total() == len(valid)

    # The consumer went past every record: its commits reach each partition's end.
    assert {p: offset or 0 for p, offset in committed.items()} == end_offsets(topic)

    # Each poison record is on the DLQ once, bytes and key unchanged, headers saying
    # where it was read, by which group, and why it was refused.
    dead = asyncio.run(read_all(dlq, len(poison)))
    assert sum(end_offsets(dlq).values()) == len(poison)
    assert sorted(record.value for record in dead) == sorted(poison)
    for record in dead:
        origin = read_at[record.value]
        headers = dict(record.headers)
        assert poison[record.value] in headers["dlq.reason"].decode()
        assert headers["dlq.topic"].decode() == topic
        assert int(headers["dlq.partition"]) == origin.partition
        assert int(headers["dlq.offset"]) == origin.offset
        assert headers["dlq.group"].decode() == worker.group_id
        assert "dlq.truncated" not in headers
        assert record.key == origin.key

    # ... and listed once, at the same position and with the same reason.
    letters = {bytes(letter.value): letter for letter in DeadLetter.objects.all()}
    assert DeadLetter.objects.count() == len(poison)
    assert sorted(letters) == sorted(poison)
    for value, letter in letters.items():
        origin = read_at[value]
        assert letter.topic == topic
        assert (letter.partition, letter.offset) == (origin.partition, origin.offset)
        assert letter.size == len(value)
        assert letter.redriven_at is None
        (part,) = letter.groups.all()
        assert part.group == worker.group_id
        assert poison[value] in part.reason
        assert (part.attempts, part.stored_at) == (1, None)


def post_id_past_64_bits() -> bytes:
    """A valid like, but of a post whose id no database integer column holds."""
    return encode_event(events.liked(2**70, 202, datetime.now(UTC)))


def test_it_dead_letters_a_record_the_database_refuses(topics) -> None:
    topic, _ = topics
    poison = post_id_past_64_bits()
    valid = [signup_event(n) for n in range(4)]
    values = [encode_event(valid[0]), encode_event(valid[1]), poison]
    values += [encode_event(event) for event in valid[2:]]
    read_at = produce(topic, values)

    async def consume() -> dict:
        return await asyncio.wait_for(run_until_consumed(IsolatedWorker(), topic, len(values)), 20)

    committed = asyncio.run(consume())

    stored = AnalyticsEvent.objects.values_list("event_id", flat=True)
    assert sorted(stored) == sorted(uuid.UUID(event["id"]) for event in valid)
    letter = DeadLetter.objects.get()
    assert (letter.partition, letter.offset) == (read_at[poison].partition, read_at[poison].offset)
    assert "could not be stored" in letter.groups.get().reason
    # Its headers are kept whole, the site's signature among them, for a re-drive.
    assert [name for name, _ in letter.headers] == [signing.SIGNATURE_HEADER]
    assert {p: offset or 0 for p, offset in committed.items()} == end_offsets(topic)


def test_it_cuts_a_large_dead_letter_on_the_topic_but_lists_it_whole(topics, settings) -> None:
    topic, dlq = topics
    settings.MAX_EVENT_BYTES = LIMIT
    settings.DLQ_MAX_RECORD_BYTES = 1_000
    oversize = oversize_event()
    valid = encode_event(signup_event(1))
    read_at = produce(topic, [oversize, valid])

    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 2))

    (record,) = asyncio.run(read_all(dlq, 1))
    headers = dict(record.headers)
    assert record.value == oversize[:1_000]
    assert headers["dlq.truncated"] == b"true"
    assert int(headers["dlq.original_size"]) == len(oversize)
    assert int(headers["dlq.offset"]) == read_at[oversize].offset
    assert "over the limit" in headers["dlq.reason"].decode()
    # The database keeps the whole record, so a re-drive puts back the real bytes.
    letter = DeadLetter.objects.get()
    assert bytes(letter.value) == oversize
    assert letter.size == len(oversize)
    assert AnalyticsEvent.objects.count() == 1


def test_it_redrives_a_dead_letter_larger_than_the_dlq_cut(topics, settings) -> None:
    topic, _ = topics
    settings.DLQ_MAX_RECORD_BYTES = 1_000
    huge = encode_event(photo_event(600, caption="x" * 100_000))
    settings.MAX_EVENT_BYTES = 200_000  # the producer that wrote it allowed this much
    produce(topic, [huge])
    settings.MAX_EVENT_BYTES = LIMIT
    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 1))
    letter = DeadLetter.objects.get()
    assert bytes(letter.value) == huge

    settings.MAX_EVENT_BYTES = 200_000  # the fix
    out = io.StringIO()
    call_command("redrive_dead_letters", "--all", stdout=out)
    assert "re-drove 1 of 1" in out.getvalue()
    letter.refresh_from_db()
    assert letter.redriven_at is not None
    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 1))
    assert AnalyticsEvent.objects.filter(event_id=json.loads(huge)["id"]).count() == 1


def test_it_leaves_a_small_dead_letter_whole_on_the_topic() -> None:
    record = DeadRecord("events", 2, 7, b"k", b"0123456789", "value is not JSON")
    value, headers = record.for_topic("analytics", max_bytes=10)
    assert value == b"0123456789"
    assert dict(headers) == {
        "dlq.reason": b"value is not JSON",
        "dlq.topic": b"events",
        "dlq.partition": b"2",
        "dlq.offset": b"7",
        "dlq.group": b"analytics",
    }
    cut, cut_headers = record.for_topic("analytics", max_bytes=4)
    assert cut == b"0123"
    assert dict(cut_headers)["dlq.truncated"] == b"true"
    assert dict(cut_headers)["dlq.original_size"] == b"10"
    empty, empty_headers = DeadRecord("events", 0, 1, None, None, "no value").for_topic("g", 4)
    assert empty is None
    assert "dlq.truncated" not in dict(empty_headers)


def test_it_lists_a_redelivered_dead_letter_once_with_a_part_per_group() -> None:
    record = DeadRecord("events", 1, 41, b"key", b"\xff", "value is not UTF-8")
    record_dead_letters("analytics", [record])
    record_dead_letters("analytics", [record])
    assert DeadLetter.objects.count() == 1
    # Another group that refuses the same record adds its part to the same letter.
    record_dead_letters("audit", [record])
    letter = DeadLetter.objects.get()
    parts = letter.groups.values_list("group", "reason", "attempts")
    assert sorted(parts) == [
        ("analytics", "value is not UTF-8", 1),
        ("audit", "value is not UTF-8", 1),
    ]
    assert DeadLetterGroup.objects.count() == 2


def test_it_absorbs_a_batch_read_again_after_a_crash_before_the_commit(settings) -> None:
    settings.MAX_EVENT_BYTES = LIMIT
    poison = poison_records()
    valid = [encode_event(signup_event(n)) for n in range(3)]
    values = valid + list(poison)
    records = [
        ConsumerRecord(
            "events", 0, offset, 0, 0, b"k", value, None, 1, len(value), [signing.sign(value)]
        )
        for offset, value in enumerate(values)
    ]
    batch = {TopicPartition("events", 0): records}

    worker = IsolatedWorker()
    for _ in range(2):  # the second time is the redelivery
        good, dead = worker.split(batch)
        assert asyncio.run(worker.make_durable(good, dead))

    assert AnalyticsEvent.objects.count() == len(valid)
    assert minute_count_total() == len(valid)
    assert DeadLetter.objects.count() == len(poison)
    assert sorted(DeadLetter.objects.values_list("offset", flat=True)) == list(
        range(len(valid), len(values))
    )


def test_it_redrives_dead_letters_by_reason_after_a_fix(topics, settings) -> None:
    topic, _ = topics
    settings.MAX_EVENT_BYTES = LIMIT
    oversize, broken = oversize_event(), b"{not json"
    valid = [encode_event(signup_event(n)) for n in range(2)]
    read_at = produce(topic, [valid[0], oversize, broken, valid[1]])
    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 4))
    assert AnalyticsEvent.objects.count() == 2
    big = DeadLetter.objects.get(groups__reason__contains="over the limit")
    assert DeadLetter.objects.filter(groups__reason__contains="not JSON").exists()

    settings.MAX_EVENT_BYTES = 200_000  # the fix
    out = io.StringIO()
    call_command("redrive_dead_letters", "--reason", "over the limit", stdout=out)
    assert "re-drove 1 of 1" in out.getvalue()
    big.refresh_from_db()
    assert big.redriven_at is not None
    assert DeadLetter.objects.get(groups__reason__contains="not JSON").redriven_at is None

    # The group reads the record again and now records it, once; its part says so.
    asyncio.run(run_until_consumed(IsolatedWorker(), topic, 1))
    assert big.groups.get().stored_at is not None
    event_id = uuid.UUID(json.loads(oversize)["id"])
    assert AnalyticsEvent.objects.filter(event_id=event_id).count() == 1
    assert AnalyticsEvent.objects.count() == 3
    assert minute_count_total() == 3
    assert EventMinuteCount.objects.get(type="photo.posted").count == 1

    # A re-drive of everything pending takes the other letter, not this one again.
    redriven_at = big.redriven_at
    out = io.StringIO()
    call_command("redrive_dead_letters", "--all", stdout=out)
    assert "re-drove 1 of 1" in out.getvalue()
    big.refresh_from_db()
    assert big.redriven_at == redriven_at
    assert sum(end_offsets(topic).values()) == 6
    records = asyncio.run(read_all(topic, 6))
    redriven = [
        (r.value, dict(r.headers)["redriven.from"])
        for r in records
        if "redriven.from" in dict(r.headers)
    ]
    origin = {
        value: f"{topic}/{read_at[value].partition}/{read_at[value].offset}".encode()
        for value in (oversize, broken)
    }
    assert sorted(redriven) == sorted(origin.items())


def test_it_asks_which_dead_letters_to_redrive() -> None:
    with pytest.raises(CommandError, match=r"ids, --reason TEXT, --all, or --list"):
        call_command("redrive_dead_letters")


def test_it_lists_pending_dead_letters() -> None:
    record_dead_letters(
        "analytics",
        [
            DeadRecord("events", 0, 3, None, b"{", "value is not JSON: Expecting value at 1"),
            DeadRecord("events", 2, 9, None, b"\xff", "value is not UTF-8: invalid start byte"),
        ],
    )
    done = DeadLetter.objects.get(offset=9)
    mark_redriven([done.pk])
    pending = DeadLetter.objects.get(offset=3)

    out = io.StringIO()
    call_command("redrive_dead_letters", "--list", stdout=out)
    reason = "value is not JSON: Expecting value at 1"
    assert out.getvalue().splitlines() == [f"{pending.pk}\tanalytics\tevents[0]@3: {reason}"]
    # Listing changes nothing.
    assert DeadLetter.objects.get(pk=pending.pk).redriven_at is None


@pytest.fixture
def letter(topics) -> DeadLetter:
    topic, _ = topics
    asyncio.run(kafka.ensure_topics())
    record = DeadRecord(topic, 1, 41, b"7", b"\xff\xfeposted", "value is not UTF-8: at byte 0")
    record_dead_letters("analytics", [record])
    return DeadLetter.objects.get()


def test_it_lists_dead_letters_for_staff(admin_client, letter) -> None:
    response = admin_client.get("/admin/monitor/deadletter/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "value is not UTF-8: at byte 0" in page
    assert f"{letter.topic}[1]@41" in page
    detail = admin_client.get(f"/admin/monitor/deadletter/{letter.pk}/change/")
    assert detail.status_code == 200
    assert "\\xff\\xfeposted" in detail.content.decode()


def test_staff_redrive_a_dead_letter_from_the_admin(admin_client, letter, topics) -> None:
    topic, _ = topics
    response = admin_client.post(
        "/admin/monitor/deadletter/",
        {"action": "redrive", "_selected_action": [letter.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Re-drove 1 of 1 dead letters." in response.content.decode()
    letter.refresh_from_db()
    assert letter.redriven_at is not None

    (record,) = asyncio.run(read_all(topic, 1))
    assert record.value == b"\xff\xfeposted"
    assert record.key == b"7"
    assert dict(record.headers)["redriven.from"] == f"{topic}/1/41".encode()
