from __future__ import annotations

from django.contrib import admin

from .models import AnalyticsEvent, EventMinuteCount, OutboxEvent, Post


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
