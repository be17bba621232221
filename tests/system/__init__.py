"""Whole-stack tests: real processes, a real broker, faults."""
