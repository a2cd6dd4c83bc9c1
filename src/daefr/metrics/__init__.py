"""daefr.metrics."""
