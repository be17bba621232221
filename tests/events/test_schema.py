"""monitor.events.schema: the envelope is built, encoded and parsed, or rejected with a reason."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from monitor.events.event_types import LikeData
from monitor.events.schema import (
    DATA_FIELDS,
    EVENT_TYPES,
    REQUIRED_STRINGS,
    InvalidEvent,
    build_event,
    encode_event,
    parse_event,
)

MOMENT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def photo_event(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "photo.posted",
        "subject": "posts/7",
        "actor": "3",
        "data": {
            "post_id": 7,
            "author_id": 3,
            "author": "alice",
            "caption": "Zürich at dawn ☀️ 東京",
            "photo_url": "/media/photos/abc.jpg",
        },
        "source": "/test",
        "time": MOMENT,
    }
    fields.update(overrides)
    return build_event(**fields)


def encoded(change: Callable[[dict[str, Any]], object]) -> bytes:
    """A valid envelope, changed in place by ``change``, as JSON bytes."""
    event = photo_event()
    change(event)
    return json.dumps(event).encode()


def test_it_round_trips_an_envelope_to_an_equal_dict() -> None:
    event = photo_event()

    assert parse_event(encode_event(event)) == event


def test_it_builds_every_context_attribute() -> None:
    event_id = uuid.UUID("6f1c2b9e-3f8e-4d55-9a0f-1a2b3c4d5e6f")
    event = photo_event(id=event_id)

    assert event["specversion"] == "1.0"
    assert event["id"] == str(event_id)
    assert event["source"] == "/test"
    assert event["type"] == "photo.posted"
    assert event["subject"] == "posts/7"
    assert event["actor"] == "3"
    assert event["datacontenttype"] == "application/json"
    assert event["schemaversion"] == 1
    assert event["time"] == "2024-05-06T07:08:09.123456Z"


def test_it_formats_time_in_utc_whatever_the_input_offset() -> None:
    local = MOMENT.astimezone(timezone(timedelta(hours=5, minutes=30)))

    assert photo_event(time=local)["time"] == "2024-05-06T07:08:09.123456Z"


def test_it_gives_each_built_event_a_fresh_uuid() -> None:
    first, second = photo_event(), photo_event()

    assert first["id"] != second["id"]
    uuid.UUID(first["id"])


def test_it_encodes_compact_utf8_json() -> None:
    event = photo_event()

    raw = encode_event(event)

    assert isinstance(raw, bytes)
    text = raw.decode("utf-8")
    assert json.loads(text) == event
    assert text == json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    assert ", " not in text
    assert ": " not in text
    # Non-ASCII is written as UTF-8, not as \u escapes.
    assert "Zürich at dawn ☀️ 東京".encode() in raw
    assert b"\\u" not in raw


def test_it_keeps_a_non_ascii_caption_through_the_round_trip() -> None:
    event = photo_event()

    parsed = parse_event(encode_event(event))

    assert parsed["data"]["caption"] == "Zürich at dawn ☀️ 東京"


def test_it_accepts_a_record_exactly_at_max_bytes() -> None:
    raw = encode_event(photo_event())

    assert parse_event(raw, max_bytes=len(raw))["id"] == json.loads(raw)["id"]


def test_it_accepts_a_time_with_a_non_utc_offset() -> None:
    raw = encoded(lambda event: event.update(time="2024-05-06T09:08:09+02:00"))

    assert parse_event(raw)["time"] == "2024-05-06T09:08:09+02:00"


def test_it_refuses_to_build_an_event_whose_data_does_not_fit_its_type() -> None:
    with pytest.raises(InvalidEvent) as caught:
        build_event(
            type="user.signed_up",
            subject="users/1",
            actor="1",
            data={"user_id": 1},
            source="/test",
        )

    assert "data.username" in caught.value.reason


def test_it_reads_the_event_types_from_their_classes() -> None:
    assert EVENT_TYPES == {
        "user.signed_up",
        "photo.posted",
        "photo.deleted",
        "photo.liked",
        "photo.unliked",
        "comment.added",
        "comment.deleted",
        "user.followed",
        "user.unfollowed",
    }


def test_it_reads_a_types_required_data_fields_from_its_class_in_order() -> None:
    assert list(DATA_FIELDS["photo.liked"].items()) == [
        ("post_id", int),
        ("post_author_id", int),
        ("user_id", int),
        ("username", str),
    ]


def test_it_checks_every_required_data_field_as_a_json_string_or_integer() -> None:
    kinds = {kind for fields in DATA_FIELDS.values() for kind in fields.values()}

    assert kinds == {int, str}


def test_it_builds_an_event_without_the_data_extras() -> None:
    data = LikeData(post_id=7, post_author_id=3, user_id=4, username="bob")

    event = build_event(type="photo.liked", subject="posts/7", actor="4", data=data, source="/test")

    assert "like_count" not in DATA_FIELDS["photo.liked"]
    assert parse_event(encode_event(event))["data"] == data


def without(name: str) -> Callable[[dict[str, Any]], object]:
    return lambda event: event.pop(name)


def setting(name: str, value: object) -> Callable[[dict[str, Any]], object]:
    return lambda event: event.__setitem__(name, value)


def setting_data(name: str, value: object) -> Callable[[dict[str, Any]], object]:
    return lambda event: event["data"].__setitem__(name, value)


def without_data(name: str) -> Callable[[dict[str, Any]], object]:
    return lambda event: event["data"].pop(name)


VALID = encode_event(photo_event())

MALFORMED: list[Any] = [
    pytest.param(None, ["no value"], id="none-value"),
    pytest.param(b"\xff\xfe{}", ["not utf-8", "byte 0"], id="non-utf8"),
    pytest.param(b'{"specversion": "1.0",', ["not json"], id="truncated-json"),
    pytest.param(b"not json at all", ["not json"], id="not-json"),
    pytest.param(b"[1, 2, 3]", ["not a json object"], id="json-array"),
    pytest.param(b'"a string"', ["not a json object"], id="json-string"),
    *[
        pytest.param(encoded(without(name)), [name, "missing"], id=f"{name}-missing")
        for name in REQUIRED_STRINGS
    ],
    *[
        pytest.param(encoded(setting(name, "")), [name, "non-empty"], id=f"{name}-empty")
        for name in REQUIRED_STRINGS
    ],
    *[
        pytest.param(encoded(setting(name, 42)), [name, "string"], id=f"{name}-not-string")
        for name in REQUIRED_STRINGS
    ],
    pytest.param(
        encoded(setting("specversion", "0.3")), ["specversion", "0.3"], id="wrong-specversion"
    ),
    pytest.param(
        encoded(without("schemaversion")), ["schemaversion", "integer"], id="schemaversion-missing"
    ),
    pytest.param(
        encoded(setting("schemaversion", "1")),
        ["schemaversion", "integer"],
        id="schemaversion-string",
    ),
    pytest.param(
        encoded(setting("schemaversion", True)),
        ["schemaversion", "integer"],
        id="schemaversion-bool",
    ),
    pytest.param(
        encoded(setting("schemaversion", 1.0)),
        ["schemaversion", "integer"],
        id="schemaversion-float",
    ),
    pytest.param(
        encoded(setting("schemaversion", 2)),
        ["unsupported schemaversion", "2"],
        id="schemaversion-unsupported",
    ),
    pytest.param(encoded(setting("id", "not-a-uuid")), ["id", "uuid", "not-a-uuid"], id="id"),
    pytest.param(
        encoded(setting("time", "yesterday at noon")),
        ["time", "rfc 3339", "yesterday"],
        id="time-not-rfc3339",
    ),
    pytest.param(
        encoded(setting("time", "2024-05-06T07:08:09")), ["time", "offset"], id="time-no-offset"
    ),
    pytest.param(
        encoded(setting("type", "photo.burned")),
        ["unknown event type", "photo.burned"],
        id="unknown-type",
    ),
    pytest.param(encoded(without("data")), ["data", "json object"], id="data-missing"),
    pytest.param(encoded(setting("data", [1, 2])), ["data", "json object"], id="data-array"),
    pytest.param(encoded(setting("data", "{}")), ["data", "json object"], id="data-string"),
    pytest.param(
        encoded(without_data("photo_url")), ["data.photo_url", "str"], id="data-field-missing"
    ),
    pytest.param(
        encoded(setting_data("post_id", "7")), ["data.post_id", "int"], id="data-field-wrong-type"
    ),
    pytest.param(
        encoded(setting_data("caption", 12)), ["data.caption", "str"], id="data-field-int-for-str"
    ),
    pytest.param(
        encoded(setting_data("author_id", True)), ["data.author_id", "int"], id="bool-for-int"
    ),
    pytest.param(
        encoded(setting_data("post_id", 7.0)), ["data.post_id", "int"], id="float-for-int"
    ),
    pytest.param(
        encoded(setting("datacontenttype", "text/plain")),
        ["datacontenttype", "text/plain"],
        id="wrong-datacontenttype",
    ),
]


@pytest.mark.parametrize(("raw", "words"), MALFORMED)
def test_it_rejects_malformed_input_with_a_reason(raw: bytes | None, words: list[str]) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)

    reason = caught.value.reason
    assert str(caught.value) == reason
    for word in words:
        assert word.lower() in reason.lower(), f"{word!r} not in {reason!r}"


def test_it_rejects_a_record_over_max_bytes() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(VALID, max_bytes=len(VALID) - 1)

    assert str(len(VALID)) in caught.value.reason
    assert f"limit of {len(VALID) - 1}" in caught.value.reason


def test_it_checks_the_size_before_decoding() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(b"\xff" * 10, max_bytes=5)

    assert "over the limit" in caught.value.reason


def test_it_is_a_value_error_for_callers_that_catch_broadly() -> None:
    assert issubclass(InvalidEvent, ValueError)


@pytest.mark.parametrize(
    "time",
    ["20240506T070809Z", "2024-W19-1T07:08:09Z", "2024-05-06T07:08Z", "2024-05-06T07Z"],
)
def test_it_rejects_iso8601_times_that_are_not_rfc3339(time: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(encoded(setting("time", time)))

    assert "rfc 3339" in caught.value.reason.lower()
