"""Relational storage shared by the task store and the key store: one schema, one engine."""
