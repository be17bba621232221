"""Dead letters do not multiply. A record that fails in several consumer groups
is one letter, with each group's part (its reason, its attempts); a re-drive
goes only to the groups that failed, a re-drive that fails again adds one
attempt per failing group and no letter, and a fixed one stores the record
once in each group and lists nothing new."""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from monitor.events import signing
from monitor.events.schema import encode_event
from monitor.models import AnalyticsEvent, DeadLetter, DeadLetterGroup, Notice
from monitor.workers.deadletters import record_dead_letters
from monitor.workers.held import REDRIVE_FOR, REDRIVE_LETTER, Listing
from monitor.workers.notifications import NotificationsWorker
from monitor.workers.records import DeadRecord
from monitor.workers.redrive import mark_redriven
from tests.support import events
from tests.support.kafka import read_all
from tests.support.workers import IsolatedWorker, run_until_consumed
from tests.workers.test_deadletters import end_offsets, produce

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 20_000


class CountingAnalytics(IsolatedWorker):
    """The analytics worker (in this run's own group), noting each event it is given."""

    given: list[uuid.UUID] = []

    def consume_batch(self, records):
        self.given.extend(record.event_id for record in records)
        super().consume_batch(records)


class CountingNotifications(NotificationsWorker):
    """The notifications worker in a group of this run's own, noting each event it is given."""

    group_id = f"notifications-test-{uuid.uuid4().hex[:8]}"
    given: list[uuid.UUID] = []

    def consume_batch(self, records):
        self.given.extend(record.event_id for record in records)
        super().consume_batch(records)


@pytest.fixture(autouse=True)
def _counts_from_zero() -> None:
    CountingAnalytics.given = []
    CountingNotifications.given = []


def both_groups_read(topic: str, count: int) -> None:
    """Each group, at once, reads ``count`` more records of ``topic``."""

    async def run() -> None:
        await asyncio.gather(
            run_until_consumed(CountingAnalytics(), topic, count),
            run_until_consumed(CountingNotifications(), topic, count),
        )

    asyncio.run(run())


def redrive_all() -> str:
    out = io.StringIO()
    call_command("redrive_dead_letters", "--all", stdout=out)
    return out.getvalue()


def parts() -> dict[str, DeadLetterGroup]:
    return {part.group: part for part in DeadLetterGroup.objects.all()}


@pytest.fixture
def users(django_user_model):
    """The author of post 7 and the user who comments on it."""
    author = django_user_model.objects.create_user("author", password="x")
    commenter = django_user_model.objects.create_user("commenter", password="x")
    return author, commenter


def test_one_bad_record_in_two_groups_is_one_letter_and_redrives_do_not_multiply(
    topics, settings, users
) -> None:
    topic, dlq = topics
    author, commenter = users
    settings.MAX_EVENT_BYTES = LIMIT
    comment = events.social_event(
        "comment.added",
        actor=commenter.pk,
        post_id=7,
        at=datetime.now(UTC),
        post_author_id=author.pk,
        text="x" * 30_000,  # over LIMIT: both groups refuse it
    )
    bad = encode_event(comment)
    read_at = produce(topic, [bad])[bad]
    groups = sorted([CountingAnalytics.group_id, CountingNotifications.group_id])

    both_groups_read(topic, 1)

    # One letter, listing both groups and their reasons; one DLQ record per group.
    letter = DeadLetter.objects.get()
    assert (letter.partition, letter.offset) == (read_at.partition, read_at.offset)
    assert sorted(parts()) == groups
    assert all("over the limit" in part.reason for part in parts().values())
    assert all(part.attempts == 1 for part in parts().values())
    assert sum(end_offsets(dlq).values()) == 2

    # Re-driven while still failing: no new letter, one more attempt per group.
    assert "re-drove 1 of 1" in redrive_all()
    both_groups_read(topic, 1)
    assert DeadLetter.objects.count() == 1
    assert DeadLetterGroup.objects.count() == 2
    assert all(part.attempts == 2 for part in parts().values())
    assert all(part.stored_at is None for part in parts().values())
    letter.refresh_from_db()
    assert letter.redriven_at is None  # pending again
    assert sum(end_offsets(dlq).values()) == 4

    # The copy on the topic is the original record, its signature kept, for both groups.
    original = (read_at.partition, read_at.offset)
    copy = next(r for r in asyncio.run(read_all(topic, 2)) if (r.partition, r.offset) != original)
    assert (copy.value, copy.key) == (bad, read_at.key)
    headers = dict(copy.headers)
    assert signing.check(copy.value, copy.headers) is None
    assert headers[signing.SIGNATURE_HEADER] == dict(read_at.headers)[signing.SIGNATURE_HEADER]
    assert headers[REDRIVE_FOR].decode().split(",") == groups
    assert int(headers[REDRIVE_LETTER]) == letter.pk

    # After the fix: each group stores it once; nothing new is listed or sent aside.
    settings.MAX_EVENT_BYTES = 200_000
    assert "re-drove 1 of 1" in redrive_all()
    both_groups_read(topic, 1)
    event_id = uuid.UUID(comment["id"])
    assert AnalyticsEvent.objects.filter(event_id=event_id).count() == 1
    assert list(Notice.objects.filter(event_id=event_id).values_list("recipient", flat=True)) == [
        author.pk
    ]
    assert CountingAnalytics.given == CountingNotifications.given == [event_id]
    assert DeadLetter.objects.count() == 1
    assert all(part.stored_at is not None for part in parts().values())
    assert sum(end_offsets(dlq).values()) == 4

    # Nothing is left to re-drive; the topic holds the record and its two copies.
    assert "re-drove 0 of 0" in redrive_all()
    assert sum(end_offsets(topic).values()) == 3


def test_a_redrive_goes_only_to_the_group_that_failed(topics, users) -> None:
    topic, _ = topics
    author, liker = users
    # Analytics cannot store a post id past 64 bits; notifications needs none.
    like = events.social_event(
        "photo.liked", actor=liker.pk, post_id=2**70, at=datetime.now(UTC), post_author_id=author.pk
    )
    value = encode_event(like)
    produce(topic, [value])

    both_groups_read(topic, 1)
    letter = DeadLetter.objects.get()
    assert list(parts()) == [CountingAnalytics.group_id]
    assert Notice.objects.filter(recipient=author).count() == 1

    assert "re-drove 1 of 1" in redrive_all()
    both_groups_read(topic, 1)

    # Notifications skipped the copy: it was given the event once, the original.
    event_id = uuid.UUID(like["id"])
    assert CountingNotifications.given == [event_id]
    assert CountingAnalytics.given.count(event_id) >= 2  # the original, then the copy
    part = DeadLetterGroup.objects.get()
    assert (part.letter_id, part.attempts, part.stored_at) == (letter.pk, 2, None)
    assert "could not be stored" in part.reason
    assert DeadLetter.objects.count() == 1


def as_read(offset: int, value: bytes, headers: list[tuple[str, bytes]]) -> ConsumerRecord:
    return ConsumerRecord("events", 0, offset, 0, 0, b"k", value, None, 1, len(value), headers)


def redrive_headers(letter: DeadLetter, *groups: str) -> list[tuple[str, bytes]]:
    return [(REDRIVE_LETTER, str(letter.pk).encode()), (REDRIVE_FOR, ",".join(groups).encode())]


def handle_again_and_again(worker: IsolatedWorker, *records: ConsumerRecord) -> None:
    """Split and make durable the same batch twice, as after a crash before the commit."""
    batch = {TopicPartition("events", 0): list(records)}
    for _ in range(2):
        valid, dead = worker.split(batch)
        assert asyncio.run(worker.make_durable(valid, dead))


def test_a_copy_read_again_counts_one_attempt_and_a_stored_one_is_given_once() -> None:
    group = CountingAnalytics.group_id
    broken = b"{not json"
    event = events.signup_event(1)
    fixed = encode_event(event)
    record_dead_letters(group, [DeadRecord("events", 0, 3, b"k", broken, "value is not JSON")])
    record_dead_letters(group, [DeadRecord("events", 0, 4, b"k", fixed, "could not be stored")])
    still_broken, now_fixed = DeadLetter.objects.order_by("offset")

    worker = CountingAnalytics()
    handle_again_and_again(
        worker,
        as_read(10, broken, redrive_headers(still_broken, group)),
        as_read(11, fixed, [signing.sign(fixed), *redrive_headers(now_fixed, group)]),
    )

    assert DeadLetter.objects.count() == 2
    refused = still_broken.groups.get()
    assert (refused.attempts, refused.failed_offset, refused.stored_at) == (2, 10, None)
    stored = now_fixed.groups.get()
    assert stored.attempts == 1 and stored.stored_at is not None
    assert CountingAnalytics.given == [uuid.UUID(event["id"])]  # the second time, skipped
    assert AnalyticsEvent.objects.count() == 1


def test_a_group_skips_a_copy_for_others_and_a_header_naming_another_letter_is_no_redrive() -> None:
    group = CountingAnalytics.group_id
    broken = b"{not json"
    record_dead_letters(group, [DeadRecord("events", 0, 3, b"k", broken, "value is not JSON")])
    letter = DeadLetter.objects.get()

    worker = CountingAnalytics()
    handle_again_and_again(
        worker,
        as_read(10, broken, redrive_headers(letter, "notifications")),  # not for this group
        as_read(11, b"{other", redrive_headers(letter, group)),  # not the letter's bytes
    )

    assert letter.groups.get().attempts == 1
    other = DeadLetter.objects.get(offset=11)
    assert other.groups.get().reason.startswith("value is not JSON")


def test_dead_letters_are_listed_at_their_positions_on_the_stream() -> None:
    worker = CountingAnalytics()
    worker.bases = {0: 1_000}  # the embedded broker rolled over after 1,000 records
    handle_again_and_again(worker, as_read(5, b"{not json", []))
    letter = DeadLetter.objects.get()
    assert (letter.partition, letter.offset) == (0, 1_005)
    assert letter.groups.get().failed_offset == 1_005


def test_a_letter_refused_again_after_its_redrive_began_stays_pending() -> None:
    record_dead_letters("analytics", [DeadRecord("events", 0, 3, None, b"{", "not JSON")])
    letter = DeadLetter.objects.get()
    started = timezone.now() - timedelta(seconds=1)
    copy = DeadRecord("events", 0, 9, None, b"{", "not JSON")
    record_dead_letters("analytics", [copy], Listing(letters={("events", 0, 9): letter.pk}))

    assert mark_redriven([letter.pk], started) == 0
    letter.refresh_from_db()
    assert letter.redriven_at is None
    assert letter.groups.get().attempts == 2


def test_two_groups_listing_the_same_records_at_once_lose_nothing() -> None:
    dead = [DeadRecord("events", 0, n, None, b"{", f"bad {n}") for n in range(300)]
    ready = threading.Barrier(2)
    errors: list[BaseException] = []

    def list_them(group: str) -> None:
        try:
            ready.wait(5)
            for start in range(0, len(dead), 50):
                with transaction.atomic():
                    record_dead_letters(group, dead[start : start + 50])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=list_them, args=(g,)) for g in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors
    assert DeadLetter.objects.count() == 300
    assert DeadLetterGroup.objects.filter(group="one").count() == 300
    assert DeadLetterGroup.objects.filter(group="two").count() == 300


@pytest.fixture
def two_group_letter() -> DeadLetter:
    record = DeadRecord("events", 1, 41, b"7", b"\xff\xfeposted", "value is not UTF-8: at 0")
    record_dead_letters("analytics", [record])
    record_dead_letters("notifications", [record])
    DeadLetterGroup.objects.filter(group="notifications").update(reason="over the limit")
    return DeadLetter.objects.get()


ROW = '<td class="field-position">events[1]@41</td>'


def test_staff_see_one_row_per_record_with_each_group(admin_client, two_group_letter) -> None:
    page = admin_client.get("/admin/monitor/deadletter/").content.decode()
    assert page.count(ROW) == 1
    assert "analytics: value is not UTF-8: at 0" in page
    assert "notifications: over the limit" in page
    filtered = admin_client.get("/admin/monitor/deadletter/?groups__group=notifications")
    assert filtered.content.decode().count(ROW) == 1
    found = admin_client.get("/admin/monitor/deadletter/?q=over+the+limit")
    assert found.content.decode().count(ROW) == 1
    detail = admin_client.get(f"/admin/monitor/deadletter/{two_group_letter.pk}/change/")
    assert "notifications: over the limit" in detail.content.decode()

    out = io.StringIO()
    call_command("redrive_dead_letters", "--list", stdout=out)
    assert out.getvalue().splitlines() == [
        f"{two_group_letter.pk}\tanalytics,notifications\tevents[1]@41:"
        " analytics: value is not UTF-8: at 0; notifications: over the limit"
    ]


def test_staff_are_told_when_every_group_stored_a_letter_already(
    admin_client, two_group_letter
) -> None:
    two_group_letter.groups.update(stored_at=timezone.now())
    response = admin_client.post(
        "/admin/monitor/deadletter/",
        {"action": "redrive", "_selected_action": [two_group_letter.pk]},
        follow=True,
    )
    assert (
        "Re-drove 0 of 1 dead letters. 1 stored by every group since: not sent again."
        in response.content.decode()
    )
    two_group_letter.refresh_from_db()
    assert two_group_letter.redriven_at is None
