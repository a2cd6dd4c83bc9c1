"""Extra ``daefr`` subcommands, one module each (see :mod:`daefr.cli`)."""
