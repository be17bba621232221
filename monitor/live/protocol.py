"""The WebSocket protocol's vocabulary: close codes and the server's frames.

Every frame the server sends on ``/ws/events/`` and ``/ws/notices/`` is built
here, and every close code it uses is named here; docs/websocket-protocol.md
is their reference for clients. The builders return JSON text, ready to be
written; each call returns a new string, so nothing here holds state.

This module imports nothing of the project: the command-line client
(:mod:`monitor.live.tail`) reads the same close codes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

PROTOCOL_VERSION = 1

# A client that stayed behind for FANOUT_SLOW_CLOSE_SECONDS, or answered no
# ping for EVENTSITE_WS_PING_TIMEOUT_SECONDS (see monitor.live.delivery).
CLOSE_TOO_SLOW = 4008
# The filter or replay asked for when connecting is not valid.
CLOSE_BAD_REQUEST = 4400
# Not signed in: no credential, a bad or revoked token, or signed out since.
CLOSE_UNAUTHENTICATED = 4401
# A session cookie sent from a page of another site.
CLOSE_FORBIDDEN_ORIGIN = 4403
# A client that keeps sending more messages than its rate allows.
CLOSE_RATE_LIMITED = 4429
# A dependency (the broker, the database) cannot be reached now; also sent to
# every live client when the broker stops answering the live reader.
CLOSE_UNAVAILABLE = 4503

# Close codes after which connecting again, unchanged, cannot succeed.
FINAL_CLOSE_CODES = {
    CLOSE_BAD_REQUEST: "bad request",
    CLOSE_UNAUTHENTICATED: "not signed in",
    CLOSE_FORBIDDEN_ORIGIN: "forbidden",
}


def encode_item(
    topic: str,
    partition: int,
    offset: int,
    value: bytes,
    *,
    timestamp: int | None = None,
    verified: bool = True,
    reason: str | None = None,
) -> str:
    """One CloudEvent as it appears in an ``events`` frame; the envelope's own
    JSON (the record's value) is embedded verbatim, not decoded and encoded
    again. ``verified``: the site's own, signed event; else ``reason`` says why not."""
    extra = "" if timestamp is None else f'"timestamp":{timestamp},'
    extra += '"verified":true,' if verified else f'"verified":false,"reason":{json.dumps(reason)},'
    return (
        f'{{"topic":{json.dumps(topic)},"partition":{partition},'
        f'"offset":{offset},{extra}"event":{value.decode()}}}'
    )


def encode_record_item(
    topic: str, partition: int, offset: int, *, timestamp: int, reason: str, record: str
) -> str:
    """One record that is not a CloudEvent, as it appears in an ``events`` frame:
    ``record`` is its preview (key, headers, value, size) as JSON."""
    return (
        f'{{"topic":{json.dumps(topic)},"partition":{partition},"offset":{offset},'
        f'"timestamp":{timestamp},"verified":false,"reason":{json.dumps(reason)},'
        f'"record":{record}}}'
    )


def events_frame(items: Sequence[str], *, sent_ms: int, replay: bool = False) -> str:
    """The ``events`` frame carrying encoded ``items``, stamped with when it was
    cut (``sent_ms``, milliseconds since the epoch); replayed ones say so."""
    flag = ',"replay":true' if replay else ""
    return f'{{"type":"events"{flag},"sent":{sent_ms},"events":[' + ",".join(items) + "]}"


def welcome_frame(
    *, user: str, topic: str, topics: Sequence[str], positions: Mapping[str, int]
) -> str:
    """The event stream's first frame: the events ``topic``, every topic watched,
    and per partition (``"0"``, or ``"orders/0"`` for another topic's), the
    last offset before the events that follow (-1: none yet)."""
    return json.dumps(
        {
            "type": "welcome",
            "protocol": PROTOCOL_VERSION,
            "user": user,
            "topic": topic,
            "topics": list(topics),
            "positions": dict(positions),
        }
    )


def gap_frame(missed: int | None, reason: str = "slow") -> str:
    """The notice of ``missed`` events that will never come (None: how many is unknown).

    Reasons: ``slow`` (the client fell behind), ``expired``, ``limit`` and
    ``reset`` (before a replay: see monitor.live.replay), ``stalled`` and
    ``behind`` (the process's live reader skipped ahead: see
    monitor.live.reader_keeper)."""
    return json.dumps({"type": "gap", "missed": missed, "reason": reason})


def live_frame(replayed: int) -> str:
    """The end of a replay of ``replayed`` events: live events follow."""
    return json.dumps({"type": "live", "replayed": replayed})


def subscribed_frame(described_filter: Mapping[str, Any]) -> str:
    """The answer to a subscribe: the filter as the server understood it."""
    return json.dumps({"type": "subscribed", "filter": described_filter})


def pong_frame() -> str:
    return json.dumps({"type": "pong"})


def error_frame(code: str, message: str) -> str:
    """A message from the client was not taken: ``code`` for programs, ``message`` for people."""
    return json.dumps({"type": "error", "code": code, "message": message})


def notices_welcome_frame(unread: int, notices: Sequence[Mapping[str, Any]]) -> str:
    """The notice stream's first frame: the unread count and the latest notices, newest first."""
    return json.dumps({"type": "welcome", "unread": unread, "notices": list(notices)})


def notice_frame(unread: int, notice: Mapping[str, Any]) -> str:
    """One notice stored after the welcome; ``unread`` counts it (if it is unread)."""
    return json.dumps({"type": "notice", "unread": unread, "notice": notice})
