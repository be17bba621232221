"""Tests of monitor/workers/ and the commands that run them."""
