"""daefr.testing: helpers for tests and plugin authors (tiny random weights, conformance checks)."""
