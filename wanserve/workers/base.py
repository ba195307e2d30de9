"""The `Dispatcher` seam: how the API tells workers that a task is waiting."""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    def start(self) -> None: ...

    def submit(self, task_id: str, *, model: str) -> None:
        """A PENDING task exists; get it to a worker. Duplicates are harmless (claims are
        conditional)."""

    def stop(self, *, timeout: float) -> None:
        """Stop taking work; hand running tasks back to the queue; return within `timeout`."""
