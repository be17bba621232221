"""The benchmark harness for eventsite: ``make bench`` or ``python -m bench``."""
