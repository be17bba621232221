"""The app's tables, the ground floor every other layer reads and writes.

One module per concern: the social feed, the event pipeline, analytics, the
live side and security. Every model is imported here, so Django finds them
all under the app label ``monitor`` and the rest of the project imports them
from ``monitor.models``.
"""

from __future__ import annotations

from monitor.models.analytics import (
    AnalyticsEvent,
    AnalyticsHorizon,
    EventMinuteCount,
    PostDayEngagement,
    UserDayActivity,
)
from monitor.models.events import BrokerEpoch, DeadLetter, DeadLetterGroup, OutboxEvent
from monitor.models.live import WatcherHeartbeat
from monitor.models.security import ApiToken, RateCounter

# The migrations name the upload paths as monitor.models.*_upload_path.
from monitor.models.social import (
    Comment,
    Follow,
    Like,
    Notice,
    Post,
    photo_upload_path,
    thumbnail_upload_path,
)

__all__ = [
    "AnalyticsEvent",
    "AnalyticsHorizon",
    "BrokerEpoch",
    "ApiToken",
    "Comment",
    "DeadLetter",
    "DeadLetterGroup",
    "EventMinuteCount",
    "Follow",
    "Like",
    "Notice",
    "OutboxEvent",
    "Post",
    "PostDayEngagement",
    "RateCounter",
    "UserDayActivity",
    "WatcherHeartbeat",
    "photo_upload_path",
    "thumbnail_upload_path",
]
