"""The DashScope-compatible HTTP API."""
