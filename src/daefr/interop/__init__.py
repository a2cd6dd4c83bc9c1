"""daefr.interop."""
