"""Tests of monitor/admin.py and monitor/admin_analytics/."""
