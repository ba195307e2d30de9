"""Waiting in tests without encoding the machine's speed.

A test waits for an event or a condition, never for a fixed time, and its bounds are hang
guards, not performance claims: a passing test never reaches them, so they are large. The same
work takes five times longer on a machine shared with other jobs, so every bound is multiplied
by `WANSERVE_TEST_TIMEOUT_SCALE` (default 1) for machines slower still. A wait on a task fails
only when the task stops making progress for the whole bound, however long it runs in total.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

SCALE = float(os.environ.get("WANSERVE_TEST_TIMEOUT_SCALE", "1"))
# How long a wait may see no progress at all before the test is declared hung.
STALL_SECONDS = 300.0


def scaled(seconds: float) -> float:
    """A hang-guard bound of `seconds`, stretched for slow machines."""
    return seconds * SCALE


def wait_until(
    observe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    progress: Callable[[T], Hashable] | None = None,
    stall: float = STALL_SECONDS,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `observe()` until `done` holds for what it returned, and return that.

    With `progress`, the bound counts from the last time `progress(observed)` changed (a task's
    status or step), so a slow run that keeps moving is never cut off; without it, from the
    start. Either way the bound is `scaled(stall)`.
    """
    bound = scaled(stall)
    last_change = time.monotonic()
    marker: Hashable = object()
    while True:
        seen = observe()
        if done(seen):
            return seen
        if progress is not None and (now_marker := progress(seen)) != marker:
            marker, last_change = now_marker, time.monotonic()
        if time.monotonic() - last_change > bound:
            raise AssertionError(
                f"no progress towards {what} for {bound:.0f} s; last seen {seen!r}"
            )
        time.sleep(interval)
