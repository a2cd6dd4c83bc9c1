"""daefr.utils."""
