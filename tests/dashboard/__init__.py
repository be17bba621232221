"""Tests of monitor/dashboard/ and the dashboard page."""
