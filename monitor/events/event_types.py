"""What each event type carries: one TypedDict per type, the contract that
emitters write and consumers read.

Every type is an envelope class whose ``type`` is a ``Literal`` and whose
``data`` is a TypedDict. Emitters build their data as those TypedDicts, so the
type checker sees every field they write; the validation tables
(:data:`DATA_FIELDS`, :data:`EVENT_TYPES`, which :mod:`monitor.events.schema`
checks envelopes against) are read from the same classes, so the two cannot
drift apart.

A data field is required unless marked ``NotRequired``. Required fields are
checked on both ends; the others are extras a consumer may use when present
(events stored before an extra existed lack it) and are never validated.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, get_args, get_origin, get_type_hints


class EnvelopeAttributes(TypedDict):
    """The context attributes every envelope carries, whatever its type."""

    specversion: str
    id: str  # a UUID
    source: str
    time: str  # RFC 3339
    subject: str  # what the event is about: posts/12, users/3
    datacontenttype: NotRequired[str]  # always written; a parsed envelope may omit it
    schemaversion: int
    actor: str  # the id of the user who acted; the Kafka key


class Event(EnvelopeAttributes):
    """Any valid envelope: what :func:`parse_event` returns and consumers read."""

    type: str
    data: dict[str, Any]


# --- One class per event type: its data, then its envelope ------------------


class UserSignedUpData(TypedDict):
    user_id: int
    username: str


class PhotoPostedData(TypedDict):
    post_id: int
    author_id: int
    author: str
    caption: str
    photo_url: str
    thumbnail_url: NotRequired[str]


class PhotoDeletedData(TypedDict):
    post_id: int
    author_id: int


class LikeData(TypedDict):
    """A like given or taken back; ``post_author_id`` is whom the notifications tell."""

    post_id: int
    post_author_id: int
    user_id: int
    username: str
    like_count: NotRequired[int]  # the post's likes after the change


class CommentAddedData(TypedDict):
    comment_id: int
    post_id: int
    post_author_id: int  # whom the notifications tell
    user_id: int
    username: str
    text: str
    comment_count: NotRequired[int]  # the post's comments after the change


class CommentDeletedData(TypedDict):
    comment_id: int
    post_id: int
    user_id: int
    comment_count: NotRequired[int]  # the post's comments after the change


class UserFollowedData(TypedDict):
    follower_id: int
    follower: str
    followee_id: int
    followee: str


class UserUnfollowedData(TypedDict):
    follower_id: int
    followee_id: int


class UserSignedUp(EnvelopeAttributes):
    type: Literal["user.signed_up"]
    data: UserSignedUpData


class PhotoPosted(EnvelopeAttributes):
    type: Literal["photo.posted"]
    data: PhotoPostedData


class PhotoDeleted(EnvelopeAttributes):
    type: Literal["photo.deleted"]
    data: PhotoDeletedData


class PhotoLiked(EnvelopeAttributes):
    type: Literal["photo.liked"]
    data: LikeData


class PhotoUnliked(EnvelopeAttributes):
    type: Literal["photo.unliked"]
    data: LikeData


class CommentAdded(EnvelopeAttributes):
    type: Literal["comment.added"]
    data: CommentAddedData


class CommentDeleted(EnvelopeAttributes):
    type: Literal["comment.deleted"]
    data: CommentDeletedData


class UserFollowed(EnvelopeAttributes):
    type: Literal["user.followed"]
    data: UserFollowedData


class UserUnfollowed(EnvelopeAttributes):
    type: Literal["user.unfollowed"]
    data: UserUnfollowedData


# Every event type there is; a type not in this union is unknown and dead-lettered.
TypedEvent = (
    UserSignedUp
    | PhotoPosted
    | PhotoDeleted
    | PhotoLiked
    | PhotoUnliked
    | CommentAdded
    | CommentDeleted
    | UserFollowed
    | UserUnfollowed
)

# The data of any event type: what an emitter passes with the type's name.
EventData = (
    UserSignedUpData
    | PhotoPostedData
    | PhotoDeletedData
    | LikeData
    | CommentAddedData
    | CommentDeletedData
    | UserFollowedData
    | UserUnfollowedData
)


def _required_data_fields(envelope: type) -> tuple[str, dict[str, type]]:
    """An envelope class's type name, and its data's required fields with their JSON types."""
    hints = get_type_hints(envelope)
    (name,) = get_args(hints["type"])
    fields = {}
    for field, hint in get_type_hints(hints["data"], include_extras=True).items():
        # TypedDict's own __required_keys__ cannot see NotRequired in postponed annotations.
        if get_origin(hint) is not NotRequired:
            fields[field] = hint
    return name, fields


# The data fields each event type must carry, with their JSON types.
DATA_FIELDS: dict[str, dict[str, type]] = dict(map(_required_data_fields, get_args(TypedEvent)))
EVENT_TYPES = frozenset(DATA_FIELDS)

# The types the public feed shows live: all that a user who is not staff may
# receive on the event stream (and only when the site signed them).
PUBLIC_TYPES = frozenset(
    {
        "photo.posted",
        "photo.deleted",
        "photo.liked",
        "photo.unliked",
        "comment.added",
        "comment.deleted",
    }
)
