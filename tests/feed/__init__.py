"""Tests of monitor/feed/."""
