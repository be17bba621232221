"""The raw events as CSV, streamed in chunks.

One row per event, of any type and source: ``id`` is the id its envelope
carried, ``verified`` whether it is the site's own signed event.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse

from monitor.events.schema import format_time
from monitor.models import AnalyticsEvent

EXPORT_CHUNK_ROWS = 2000

EXPORT_COLUMNS = (
    "time",
    "type",
    "id",
    "actor",
    "subject",
    "source",
    "verified",
    "topic",
    "partition",
    "offset",
    "data",
)
# What each row is written from (see _csv_row).
READ = (
    "time",
    "type",
    "cloudevent_id",
    "event_id",
    "actor",
    "subject",
    "source",
    "verified",
    "topic",
    "partition",
    "offset",
    "data",
)
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """``value``, with an apostrophe in front when a spreadsheet would take it for a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_chunks(events: QuerySet[AnalyticsEvent], rows: int | None = None) -> Iterator[str]:
    """The events as CSV text, oldest first, header included: one string per
    ``rows`` events (EXPORT_CHUNK_ROWS by default), read from the database
    ``rows`` at a time."""
    rows = rows or EXPORT_CHUNK_ROWS
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    values = events.order_by("time", "id").values_list(*READ)
    for count, row in enumerate(values.iterator(chunk_size=rows), 1):
        writer.writerow(_csv_row(row))
        if count % rows == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def _csv_row(row: tuple[Any, ...]) -> list[Any]:
    """One event's cells (EXPORT_COLUMNS) from its READ values."""
    moment, kind, own_id, key, actor, subject, source, verified, topic, partition, offset, data = (
        row
    )
    return [
        format_time(moment),
        csv_cell(kind),
        csv_cell(own_id or str(key)),  # blank in rows recorded before it was kept
        csv_cell(actor),
        csv_cell(subject),
        csv_cell(source),
        "true" if verified else "false",
        csv_cell(topic),
        partition,
        offset,
        csv_cell(json.dumps(data, ensure_ascii=False, separators=(",", ":"))),
    ]


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def csv_response(
    request: HttpRequest, events: QuerySet[AnalyticsEvent], *, name: str
) -> StreamingHttpResponse:
    """Stream the events as a CSV attachment, chunk by chunk.

    Served asynchronously (daphne), a response with a synchronous iterator
    would be read whole into memory first; there the chunks are read one at
    a time in the request's own thread instead.
    """
    chunks = csv_chunks(events)
    content: Iterator[str] | AsyncIterator[str] = (
        _one_at_a_time(chunks) if isinstance(request, ASGIRequest) else chunks
    )
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    response["Cache-Control"] = "no-store"
    return response


async def _one_at_a_time(chunks: Iterator[str]) -> AsyncIterator[str]:
    # thread_sensitive: every step runs in the thread Django gives this
    # request's context, so the database cursor stays in one thread.
    step = sync_to_async(_next_chunk, thread_sensitive=True)
    try:
        while (chunk := await step(chunks)) is not None:
            yield chunk
    finally:
        await sync_to_async(_finish, thread_sensitive=True)(chunks)


def _next_chunk(chunks: Iterator[str]) -> str | None:
    return next(chunks, None)


def _finish(chunks: Iterator[str]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()  # the generator closes its cursor
    connection = connections[DEFAULT_DB_ALIAS]
    if not connection.in_atomic_block:
        connection.close()  # the request's thread ends with the request
