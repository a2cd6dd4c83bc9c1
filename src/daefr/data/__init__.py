"""daefr.data."""
