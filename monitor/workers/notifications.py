"""The notifications worker: events that concern a user become that user's notices.

Who is told what:

- ``photo.liked``: the post's author (``data.post_author_id``), "ana liked your photo";
- ``comment.added``: the post's author, "ana commented: <the comment's first 80
  characters>";
- ``user.followed``: the followee (``data.followee_id``), "ana started following you".

Only the site's own events, signed with its key (``verified``, see
:mod:`monitor.events.received`), tell anyone: an unsigned or forged event,
even of one of these types, is skipped (counted in the debug log), and is
no dead letter. Nobody is told about their own action, and a recipient who
no longer exists is skipped. Other event types tell nobody.

:func:`store_notices` is idempotent by event id: a notice is unique by
(event id, recipient), and a batch is inserted with ``ON CONFLICT DO
NOTHING``, so a redelivered batch creates nothing new.
:class:`NotificationsWorker` consumes in the group
:data:`~monitor.workers.groups.NOTIFICATIONS` and runs it in one transaction
per batch (see :class:`~monitor.workers.base.BatchWorker`).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model

from monitor.events.schema import Event, parse_time
from monitor.models import Notice
from monitor.workers import groups
from monitor.workers.base import BatchWorker
from monitor.workers.records import RecordedFrom

logger = logging.getLogger(__name__)

# How much of a comment its notice quotes.
COMMENT_PREVIEW_CHARS = 80
# Rows per INSERT statement: well under SQLite's limit on bound variables.
INSERT_CHUNK_ROWS = 500

_WHITESPACE = re.compile(r"\s+")


def _liked(data: dict[str, Any]) -> tuple[int, int, str, str]:
    return data["post_author_id"], data["user_id"], data["username"], "liked your photo"


def _commented(data: dict[str, Any]) -> tuple[int, int, str, str]:
    return (
        data["post_author_id"],
        data["user_id"],
        data["username"],
        f"commented: {comment_preview(data['text'])}",
    )


def _followed(data: dict[str, Any]) -> tuple[int, int, str, str]:
    return data["followee_id"], data["follower_id"], data["follower"], "started following you"


# Per event type that tells someone: (recipient id, actor id, actor name, what they did).
NOTIFYING: dict[str, Callable[[dict[str, Any]], tuple[int, int, str, str]]] = {
    "photo.liked": _liked,
    "comment.added": _commented,
    "user.followed": _followed,
}


def comment_preview(text: str) -> str:
    """A comment on one line, cut to its first COMMENT_PREVIEW_CHARS characters."""
    line = _WHITESPACE.sub(" ", text).strip()
    if len(line) <= COMMENT_PREVIEW_CHARS:
        return line
    return line[:COMMENT_PREVIEW_CHARS].rstrip() + "…"


def notice_for(
    event: Event, *, event_id: uuid.UUID | None = None, time: datetime | None = None
) -> Notice | None:
    """The (unsaved) notice ``event`` makes, or None if it tells nobody.

    ``event`` must be a valid envelope of the site's own, verified (see
    :func:`~monitor.events.schema.parse_event` and :func:`notices_for`);
    ``event_id`` and ``time``, when given, are its id and time already parsed.
    Whether the recipient still exists is not checked here.
    """
    describe = NOTIFYING.get(event["type"])
    if describe is None:
        return None
    recipient_id, actor_id, actor_name, action = describe(event["data"])
    if recipient_id == actor_id:
        return None  # liking your own photo tells nobody
    actor_name = actor_name[: Notice._meta.get_field("actor_name").max_length]
    return Notice(
        recipient_id=recipient_id,
        event_id=event_id or uuid.UUID(event["id"]),
        kind=event["type"],
        actor_name=actor_name,
        subject=event["subject"][: Notice._meta.get_field("subject").max_length],
        text=f"{actor_name} {action}",
        created_at=time or parse_time(event["time"]),
    )


def notices_for(records: Sequence[RecordedFrom]) -> list[Notice]:
    """The notices a batch's verified events make, at most one per event and
    recipient, in batch order, for recipients that exist."""
    notices: dict[tuple[uuid.UUID, int], Notice] = {}
    unverified = 0
    for record in records:
        if not record.verified:
            unverified += 1  # not the site's own: nobody is told
            continue
        notice = notice_for(record.event, event_id=record.event_id, time=record.time)
        if notice is not None:
            notices.setdefault((notice.event_id, notice.recipient_id), notice)
    if unverified:
        logger.debug("notifications: %d unverified events skipped", unverified)
    if not notices:
        return []
    wanted = {notice.recipient_id for notice in notices.values()}
    existing = set(get_user_model().objects.filter(pk__in=wanted).values_list("pk", flat=True))
    return [notice for notice in notices.values() if notice.recipient_id in existing]


def store_notices(records: Sequence[RecordedFrom]) -> int:
    """Insert the batch's notices; return how many the batch makes (new or not).

    Idempotent: a notice already stored for the same event and recipient is
    left as it is (its read state included). Call it inside a transaction, so
    that the batch's notices appear together or not at all.
    """
    notices = notices_for(records)
    if notices:
        Notice.objects.bulk_create(notices, batch_size=INSERT_CHUNK_ROWS, ignore_conflicts=True)
    return len(notices)


class NotificationsWorker(BatchWorker):
    """Turns the events that concern someone into their notices, once per event."""

    group_id = groups.NOTIFICATIONS

    def consume_batch(self, records: list[RecordedFrom]) -> None:
        made = store_notices(records)
        logger.debug("notifications: %d notices from %d events", made, len(records))
