"""daefr.stages."""
