"""daefr.inference."""
