"""Tests of monitor/security/ and the site's HTTP hardening."""
