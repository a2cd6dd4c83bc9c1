"""daefr.nn."""
