"""History from before the broker's log: the events the analytics store keeps.

The embedded broker's log starts again after a roll-over and after ``make
run`` is started again, so a client that asks for the last N events may
find fewer on the topic than it asked for. The analytics worker stored every
event it read, with its position on the stream
(:class:`~monitor.models.AnalyticsEvent`), so :func:`stored_history` makes up
the difference from there: per partition, the newest events stored at
positions below where the broker's log now begins, rebuilt as envelopes
(the stored fields; ``schemaversion`` is the current one), in position
order, ready to be sent before what the topic holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from django.db.models import Q

from monitor.events.schema import (
    CONTENT_TYPE,
    SCHEMA_VERSION,
    SPEC_VERSION,
    Event,
    encode_event,
    format_time,
)
from monitor.live.filters import EventFilter
from monitor.live.protocol import encode_item
from monitor.models import AnalyticsEvent

# Stored rows read at most for one history (the filter is applied as they are read).
STORED_SCAN = 5000


def envelope_of(row: AnalyticsEvent) -> Event:
    """The envelope of a stored event, rebuilt from its row."""
    return {
        "specversion": SPEC_VERSION,
        "id": row.envelope_id,
        "source": row.source,
        "type": row.type,
        "time": format_time(row.time),
        "subject": row.subject,
        "datacontenttype": CONTENT_TYPE,
        "schemaversion": SCHEMA_VERSION,
        "actor": row.actor,
        "data": row.data,
    }


def stored_history(
    topic: str, begins: Mapping[int, int], count: int, event_filter: EventFilter | None
) -> dict[int, list[tuple[datetime, str]]]:
    """Per partition, in position order, the newest ``count`` events at most (all
    partitions together) that ``event_filter`` lets through, stored at positions
    below ``begins`` (per partition, where the broker's log begins)."""
    below = Q()
    for partition, begin in begins.items():
        if begin > 0:
            below |= Q(partition=partition, offset__lt=begin)
    kept: dict[int, list[tuple[int, datetime, str]]] = {}
    if count <= 0 or not below:
        return {}
    rows = AnalyticsEvent.objects.filter(below, topic=topic).order_by("-time", "-id")
    found = 0
    for row in rows[:STORED_SCAN].iterator():
        event = envelope_of(row)
        verified = row.verified
        view = {"topic": topic, "verified": verified, "event": event}
        if event_filter is not None and not event_filter.matches(view):
            continue
        item = encode_item(
            topic,
            row.partition,
            row.offset,
            encode_event(event),
            verified=verified,
            reason=None if verified else "stored as not the site's own",
        )
        kept.setdefault(row.partition, []).append((row.offset, row.time, item))
        found += 1
        if found == count:
            break
    return {
        partition: [(moment, item) for _, moment, item in sorted(entries)]
        for partition, entries in kept.items()
    }
