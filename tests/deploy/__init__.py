"""Tests of how the product is run: make run, runweb, compose, dependencies."""
