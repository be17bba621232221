"""The admin: where staff read what the event pipeline recorded, and act on it.

At the top of the layers, beside the views: it lists the social tables, the
outbox, the analytics rows and aggregates (with the analytics page of
:mod:`monitor.admin_analytics`), the notices and the dead letters (which
staff re-drive onto the events topic), and every user's API tokens. Rows the
pipeline writes are read-only here: changing one would skip the event it
should emit, or let a redelivered event be counted again.
"""

from __future__ import annotations

from types import GenericAlias
from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import URLPattern, path
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from monitor.admin_analytics.export import csv_response
from monitor.admin_analytics.views import analytics_page, export_events
from monitor.events.schema import EVENT_TYPES
from monitor.models import (
    AnalyticsEvent,
    ApiToken,
    Comment,
    DeadLetter,
    DeadLetterGroup,
    EventMinuteCount,
    Follow,
    Like,
    Notice,
    OutboxEvent,
    Post,
    PostDayEngagement,
    UserDayActivity,
)
from monitor.security.tokens import token_create, token_revoke
from monitor.workers.redrive import groups_waiting, redrive_now

_ModelT = TypeVar("_ModelT", bound=Model)

if TYPE_CHECKING:
    ModelAdmin = admin.ModelAdmin
else:

    class ModelAdmin(admin.ModelAdmin):
        """Django's ModelAdmin, subscriptable at run time (``ModelAdmin[Post]``)
        as it is in the type stubs."""

        __class_getitem__ = classmethod(GenericAlias)


@admin.register(Post)
class PostAdmin(ModelAdmin[Post]):
    list_display = ("id", "author", "caption", "created_at")
    list_select_related = ("author",)
    search_fields = ("caption", "author__username")
    date_hierarchy = "created_at"


class ReadOnlyAdmin(ModelAdmin[_ModelT]):
    """Records written by the event pipeline; staff look, they do not edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: _ModelT | None = None) -> bool:
        return False


class ViewOnlyAdmin(ReadOnlyAdmin[_ModelT]):
    """Rows that only the services or the analytics writer change: deleting one
    here would skip the event it should emit, or let a redelivered event be
    counted again."""

    def has_delete_permission(self, request: HttpRequest, obj: _ModelT | None = None) -> bool:
        return False


class EventTypeFilter(admin.SimpleListFilter):
    """The known event types (a filter on the column's values would read the whole table)."""

    title = "type"
    parameter_name = "type"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(EVENT_TYPES)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(type=self.value()) if self.value() else queryset


@admin.register(AnalyticsEvent)
class AnalyticsEventAdmin(ViewOnlyAdmin[AnalyticsEvent]):
    list_display = ("time", "type", "actor", "subject", "partition", "offset", "event_id")
    list_filter = (EventTypeFilter,)
    search_fields = ("=event_id", "actor", "subject")
    date_hierarchy = "time"
    actions = ["export_csv"]

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "analytics/",
                view(self.analytics_view),
                name="monitor_analyticsevent_analytics",
            ),
            path(
                "analytics/events.csv",
                view(self.export_view),
                name="monitor_analyticsevent_export",
            ),
            *super().get_urls(),
        ]

    def analytics_view(self, request: HttpRequest) -> HttpResponse:
        return analytics_page(request, self)

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        return export_events(request, self)

    @admin.action(description="Export selected events as CSV")
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[AnalyticsEvent]
    ) -> HttpResponseBase:
        return csv_response(request, queryset, name="events-selected")


@admin.register(EventMinuteCount)
class EventMinuteCountAdmin(ViewOnlyAdmin[EventMinuteCount]):
    list_display = ("minute", "type", "count")
    list_filter = (EventTypeFilter,)
    date_hierarchy = "minute"


@admin.register(UserDayActivity)
class UserDayActivityAdmin(ViewOnlyAdmin[UserDayActivity]):
    list_display = ("day", "actor", "count")
    search_fields = ("=actor",)
    date_hierarchy = "day"
    ordering = ("-day", "-count", "actor")


@admin.register(PostDayEngagement)
class PostDayEngagementAdmin(ViewOnlyAdmin[PostDayEngagement]):
    list_display = ("day", "post_id", "likes", "unlikes", "comments")
    search_fields = ("post_id__exact",)
    date_hierarchy = "day"
    ordering = ("-day", "post_id")


@admin.register(Like)
class LikeAdmin(ViewOnlyAdmin[Like]):
    list_display = ("created_at", "user", "post")
    list_select_related = ("user", "post__author")
    list_filter = ("created_at",)
    search_fields = ("user__username", "post__id__exact")
    date_hierarchy = "created_at"


@admin.register(Comment)
class CommentAdmin(ViewOnlyAdmin[Comment]):
    list_display = ("created_at", "author", "post", "text")
    list_select_related = ("author", "post__author")
    list_filter = ("created_at",)
    search_fields = ("text", "author__username", "post__id__exact")
    date_hierarchy = "created_at"


@admin.register(Follow)
class FollowAdmin(ViewOnlyAdmin[Follow]):
    list_display = ("created_at", "follower", "followee")
    list_select_related = ("follower", "followee")
    list_filter = ("created_at",)
    search_fields = ("follower__username", "followee__username")
    date_hierarchy = "created_at"


@admin.register(Notice)
class NoticeAdmin(ViewOnlyAdmin[Notice]):
    list_display = ("created_at", "recipient", "kind", "actor_name", "text", "read_at")
    list_select_related = ("recipient",)
    list_filter = ("kind", ("read_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("text", "actor_name", "recipient__username", "=event_id")
    date_hierarchy = "created_at"


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin[OutboxEvent]):
    list_display = ("created_at", "event_type", "event_id", "sent_at", "attempts")
    list_filter = ("event_type", ("sent_at", admin.EmptyFieldListFilter))
    search_fields = ("=event_id",)
    exclude = ("payload",)


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin[DeadLetter]):
    """One row per record, whichever groups refused it, with each group's part:
    why it refused it and how often, or that it has stored it since."""

    list_display = ("created_at", "position", "size", "group_parts", "redriven_at")
    list_filter = ("groups__group", ("redriven_at", admin.EmptyFieldListFilter))
    search_fields = ("groups__reason",)
    readonly_fields = (
        "topic",
        "partition",
        "offset",
        "size",
        "group_parts",
        "preview",
        "created_at",
        "redriven_at",
    )
    exclude = ("key", "value", "headers")
    actions = ["redrive"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="position")
    def position(self, letter: DeadLetter) -> str:
        return f"{letter.topic}[{letter.partition}]@{letter.offset}"

    @admin.display(description="groups")
    def group_parts(self, letter: DeadLetter) -> str:
        parts = ((_part_text(part),) for part in letter.groups.all())
        return format_html_join(mark_safe("<br>"), "{}", parts)

    @admin.action(description="Re-drive selected dead letters onto the events topic")
    def redrive(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        letters = list(queryset)
        stored = len(letters) - len(groups_waiting(letter.pk for letter in letters))
        try:
            done = redrive_now(letters)
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            self.message_user(request, f"Re-drive failed: {exc}", messages.ERROR)
            return
        level = messages.SUCCESS if done + stored == len(letters) else messages.WARNING
        text = f"Re-drove {done} of {len(letters)} dead letters."
        if stored:
            text += f" {stored} stored by every group since: not sent again."
        self.message_user(request, text, level)


def _part_text(part: DeadLetterGroup) -> str:
    """One group's part of a dead letter, in a line."""
    if part.stored_at is not None:
        return f"{part.group}: stored since (had refused it: {part.reason})"
    tries = f" ({part.attempts} attempts)" if part.attempts > 1 else ""
    return f"{part.group}: {part.reason}{tries}"


@admin.register(ApiToken)
class ApiTokenAdmin(ModelAdmin[ApiToken]):
    """Every user's tokens: staff can revoke any, or make one for a user (shown
    once, in the message after saving). Only digests are stored."""

    list_display = ("name", "user", "prefix", "created", "last_used", "revoked")
    list_filter = (("revoked", admin.EmptyFieldListFilter),)
    search_fields = ("name", "user__username", "prefix")
    list_select_related = ("user",)
    actions = ("revoke",)
    fields = ("user", "name", "prefix", "created", "last_used", "revoked")
    raw_id_fields = ("user",)

    def get_readonly_fields(
        self, request: HttpRequest, obj: ApiToken | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ("prefix", "created", "last_used", "revoked")
        return ("user", "name", "prefix", "created", "last_used", "revoked")

    def save_model(self, request: HttpRequest, obj: ApiToken, form: object, change: bool) -> None:
        if change:
            return  # nothing of a token can be changed, only revoked
        row, token = token_create(user=obj.user, name=obj.name)
        obj.pk, obj.prefix, obj.digest, obj.created = row.pk, row.prefix, row.digest, row.created
        self.message_user(
            request,
            f"Token for {obj.user}: {token} (copy it now: it is not shown again)",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = 0
        for token in queryset.filter(revoked__isnull=True):
            token_revoke(token=token)
            count += 1
        self.message_user(
            request, f"{count} token(s) revoked; their sockets close within a second."
        )
