"""The admin's analytics page and the event log as CSV.

The page's figures (report.py) come from the aggregates that
:mod:`monitor.workers.analytics` keeps with the raw events (per minute, type
and source, per actor and day, per post and day), each a GROUP BY over an
index range, a handful per page; so they stay exact and quick after raw
events are pruned. The filters are a range of UTC days, event types and
sources (filters.py). The CSV export (export.py) reads the raw events,
streamed in chunks. The views (views.py) are wired in monitor/admin.py,
behind the admin site's login.
"""
