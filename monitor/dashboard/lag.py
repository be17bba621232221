"""A consumer group's lag, from offsets and record times: in records, and in time.

The lag of a partition is the number of records between where the group
would resume and the log's end; its lag in time is the age of the oldest
record it has not committed (the one it would read next). Neither is ever
made up: where the figures cannot give one, it is ``None`` and a
``lag_unknown`` (or ``lag_seconds_unknown``) says why, and so are the
group's totals.

Where a group resumes on a partition: at its committed offset, or at the
log's start once the log no longer holds that offset. Where it never
committed, the site's groups resume at the start (the workers'
``auto_offset_reset="earliest"``); another service's group starts where its
own settings say, which is not known here, so its lag there is unknown
unless the partition is empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

# The time of the record at an offset: its timestamp (ms), or why it is not known.
RecordTime = int | str


@dataclass(frozen=True)
class Offsets:
    """What the broker reports of one partition: its log's start and end."""

    start: int
    end: int


def resume_offset(offsets: Offsets, committed: int | None) -> int:
    """The offset the group reads next on the partition, for a group that
    resumes at the start when it never committed."""
    return offsets.start if committed is None else max(committed, offsets.start)


def partition_lag(
    tp: TopicPartition, offsets: Offsets, committed: int | None, *, site: bool
) -> dict[str, Any]:
    """The partition's row: committed offset, end, and lag in records (see the module)."""
    row: dict[str, Any] = {
        "topic": tp.topic,
        "partition": tp.partition,
        "committed": committed,
        "end": offsets.end,
    }
    if committed is not None and offsets.end < committed:
        row["lag"] = None
        row["lag_unknown"] = f"the broker reports end {offsets.end} below committed {committed}"
    elif committed is None and not site and offsets.end > offsets.start:
        row["lag"] = None
        row["lag_unknown"] = "no committed offset: where this group starts is its own setting"
    else:
        row["lag"] = max(offsets.end - resume_offset(offsets, committed), 0)
    return row


def add_lag_time(
    row: dict[str, Any],
    resumes_at: int,
    times: Mapping[tuple[TopicPartition, int], RecordTime],
    now_ms: int,
) -> None:
    """Give ``row`` its lag in time: the age at ``now_ms`` of the record at
    ``resumes_at``, whose time ``times`` holds (keyed by partition and offset)."""
    if row["lag"] is None:
        row["lag_seconds"] = None
        return
    if row["lag"] == 0:
        row["lag_seconds"] = 0.0
        return
    known = times.get((TopicPartition(row["topic"], row["partition"]), resumes_at))
    if isinstance(known, int):
        # A producer's clock ahead of this one's gives a time to come: no age yet.
        row["lag_seconds"] = round(max(now_ms - known, 0) / 1000, 3)
    else:
        row["lag_seconds"] = None
        row["lag_seconds_unknown"] = known or "the record's time was not read"


def group_report(
    group: str, rows: list[dict[str, Any]], *, site: bool, error: str | None = None
) -> dict[str, Any]:
    """The group with its partitions' rows and totals: lag in records (their sum)
    and in time (the oldest of its partitions'). A total is None, with the reasons,
    when any partition's is unknown. A group with no rows has committed nothing
    (``empty``), or its offsets could not be read (``error``)."""
    report: dict[str, Any] = {
        "group": group,
        "site": site,
        "topics": sorted({row["topic"] for row in rows}),
        "empty": error is None and all(row["committed"] is None for row in rows),
        "partitions": rows,
    }
    if not rows or error is not None:
        report.update(lag=None, lag_seconds=None)
        report["lag_unknown"] = error or "no committed offsets: what it would read is not known"
        if error is not None:
            report["error"] = error
        return report
    unknown = [row for row in rows if row["lag"] is None]
    report["lag"] = None if unknown else sum(row["lag"] for row in rows)
    if unknown:
        report["lag_unknown"] = _reasons(unknown, "lag_unknown")
    untimed = [row for row in rows if row.get("lag_seconds") is None]
    report["lag_seconds"] = None if untimed else max(row["lag_seconds"] for row in rows)
    if untimed:
        report["lag_seconds_unknown"] = _reasons(
            untimed, "lag_seconds_unknown", default="its lag in records is unknown"
        )
    return report


def _reasons(rows: list[dict[str, Any]], key: str, default: str = "") -> str:
    return "; ".join(
        f"{row['topic']} partition {row['partition']}: {row.get(key) or default}" for row in rows
    )
