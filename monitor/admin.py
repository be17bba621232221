from __future__ import annotations

from django.contrib import admin, messages

from .deadletters import redrive_now
from .models import AnalyticsEvent, DeadLetter, EventMinuteCount, OutboxEvent, Post


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ("id", "author", "caption", "created_at")
    list_select_related = ("author",)
    search_fields = ("caption", "author__username")
    date_hierarchy = "created_at"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the event pipeline; staff look, they do not edit."""

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(AnalyticsEvent)
class AnalyticsEventAdmin(ReadOnlyAdmin):
    list_display = ("time", "type", "actor", "subject", "partition", "offset", "event_id")
    list_filter = ("type",)
    search_fields = ("=event_id", "actor", "subject")
    date_hierarchy = "time"


@admin.register(EventMinuteCount)
class EventMinuteCountAdmin(ReadOnlyAdmin):
    list_display = ("minute", "type", "count")
    list_filter = ("type",)
    date_hierarchy = "minute"


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "event_type", "event_id", "sent_at", "attempts")
    list_filter = ("event_type", ("sent_at", admin.EmptyFieldListFilter))
    search_fields = ("=event_id",)
    exclude = ("payload",)


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "group", "position", "size", "reason", "redriven_at")
    list_filter = ("group", ("redriven_at", admin.EmptyFieldListFilter))
    search_fields = ("reason",)
    readonly_fields = (
        "group",
        "topic",
        "partition",
        "offset",
        "size",
        "reason",
        "preview",
        "created_at",
        "redriven_at",
    )
    exclude = ("key", "value")
    actions = ["redrive"]

    @admin.display(description="position")
    def position(self, letter: DeadLetter) -> str:
        return f"{letter.topic}[{letter.partition}]@{letter.offset}"

    @admin.action(description="Re-drive selected dead letters onto the events topic")
    def redrive(self, request, queryset) -> None:  # type: ignore[no-untyped-def]
        letters = list(queryset)
        try:
            done = redrive_now(letters)
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            self.message_user(request, f"Re-drive failed: {exc}", messages.ERROR)
            return
        level = messages.SUCCESS if done == len(letters) else messages.WARNING
        self.message_user(request, f"Re-drove {done} of {len(letters)} dead letters.", level)
