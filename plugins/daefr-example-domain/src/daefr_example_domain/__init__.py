"""Example daefr plugin package; its components reach daefr only through entry points."""
