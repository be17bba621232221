"""Tests of the Django project's own modules."""
