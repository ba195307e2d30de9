"""Request throttling: per-key request rates and failed-authentication lockouts, kept where
every API replica sees them (process memory when there is one process, Redis for a fleet)."""
