"""daefr.losses."""
