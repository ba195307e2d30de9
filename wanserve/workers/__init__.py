"""Dispatch and execution: how a task id becomes a running generation."""
