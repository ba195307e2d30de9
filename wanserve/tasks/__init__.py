"""Tasks: the record of truth for every generation request and its lifecycle."""
