"""Tests of monitor/kafka/."""
