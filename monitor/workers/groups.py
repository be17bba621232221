"""The consumer groups eventsite runs on the events topic.

Each worker consumes in one of these groups, and the operators' dashboard
shows the lag of each group in :data:`ALL`. The dashboard reads these names,
never a worker class: a new worker adds its group here.
"""

from __future__ import annotations

# Stores every event once, with its aggregates (``manage.py run_analytics``).
ANALYTICS = "analytics"
# Turns the events that concern a user into that user's notices
# (``manage.py run_notifications``).
NOTIFICATIONS = "notifications"

# Every group above, in the order the dashboard lists them.
ALL: tuple[str, ...] = (ANALYTICS, NOTIFICATIONS)
