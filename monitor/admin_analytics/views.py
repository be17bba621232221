"""The analytics page and its export; monitor/admin.py wires them behind admin_view."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from monitor.admin_analytics.export import csv_response
from monitor.admin_analytics.filters import BadFilter, parse_filters
from monitor.admin_analytics.report import build_report
from monitor.events.schema import EVENT_TYPES
from monitor.models import AnalyticsEvent
from monitor.views import wants_json


def analytics_page(
    request: HttpRequest, model_admin: admin.ModelAdmin[AnalyticsEvent]
) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Analytics",
        "opts": model_admin.model._meta,
        "event_types": sorted(EVENT_TYPES),
        "event_sources": [],
        "params": request.GET,
    }
    try:
        filters = parse_filters(request.GET, today=timezone.now().date())
    except BadFilter as exc:
        if wants_json(request):
            return JsonResponse({"error": str(exc)}, status=400)
        context["error"] = str(exc)
        return TemplateResponse(request, "admin/monitor/analytics.html", context, status=400)
    report = build_report(filters)
    context.update(
        filters=filters,
        report=report,
        chart_data=report.chart_data(),
        event_types=report.type_choices,
        event_sources=report.source_choices,
    )
    return TemplateResponse(request, "admin/monitor/analytics.html", context)


def export_events(
    request: HttpRequest, model_admin: admin.ModelAdmin[AnalyticsEvent]
) -> HttpResponseBase:
    """The raw events in the page's range, types and sources, as CSV."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        filters = parse_filters(request.GET, today=timezone.now().date())
    except BadFilter as exc:
        if wants_json(request):
            return JsonResponse({"error": str(exc)}, status=400)
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    events = AnalyticsEvent.objects.filter(time__gte=filters.start, time__lt=filters.end)
    if filters.types:
        events = events.filter(type__in=filters.types)
    if filters.sources:
        events = events.filter(source__in=filters.sources)
    return csv_response(request, events, name=f"events-{filters.first}-{filters.last}")
