"""Tests of monitor/views/ and the pages in a browser."""
