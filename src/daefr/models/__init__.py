"""daefr.models."""
