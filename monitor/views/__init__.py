"""The HTTP layer: the site's pages and endpoints, one module per area.

Where an event's path starts: a view checks the request (sign-in, CSRF,
rate limits, the form) and calls a service of monitor.feed, which stores the
change and its event (an outbox row) in one transaction; the event is
published after commit, so a view never waits for Kafka. The URL patterns
(eventsite/urls.py) name the views from here.
"""

from __future__ import annotations

from monitor.views.actions import (
    comment_remove,
    post_comment,
    post_like,
    post_remove,
    post_unlike,
    user_follow,
    user_unfollow,
)
from monitor.views.dashboard import dashboard, dashboard_rates, dashboard_state, healthz
from monitor.views.notices import notices, notices_read
from monitor.views.pages import feed, post_detail, post_new, profile, signup, wants_json
from monitor.views.tokens import token_revoke_view, tokens

__all__ = [
    "comment_remove",
    "dashboard",
    "dashboard_rates",
    "dashboard_state",
    "feed",
    "healthz",
    "notices",
    "notices_read",
    "post_comment",
    "post_detail",
    "post_like",
    "post_new",
    "post_remove",
    "post_unlike",
    "profile",
    "signup",
    "token_revoke_view",
    "tokens",
    "user_follow",
    "user_unfollow",
    "wants_json",
]
