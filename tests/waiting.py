"""Waiting in tests without encoding the machine's speed.

A test waits for an event or a condition, never for a fixed time, and its bounds are hang
guards, not performance claims: a passing test never reaches them, so they are large. The same
work takes five times longer on a machine shared with other jobs, so every bound is multiplied
by `WANSERVE_TEST_TIMEOUT_SCALE` (default 1) for machines slower still. A wait on a task fails
only when the task stops making progress for the whole bound, however long it runs in total.

Every wait in tests/ goes through this module: `tests/check_waits.py` (run by `make lint`)
refuses a sleep, or a literal number where a timeout or deadline goes, anywhere else. So:

- a condition: `wait_until`; a subprocess: `wait_process`; a thread: `join`; an event:
  `wait_event`; any other API's timeout argument (an HTTP client, `subprocess.run`, a
  pytest-timeout marker): `scaled(seconds)`;
- a test that checks that something did *not* happen waits for a later event that proves the
  system got past the point where it would have happened, never for a fixed time;
- a timeout the test means to run out (a peer that never answers is the behaviour under test)
  is `expiring(seconds)`, and a fake's simulated work (a slow step, a slow peer) is
  `pause(seconds)`: neither is a wait, so neither is scaled.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

SCALE = float(os.environ.get("WANSERVE_TEST_TIMEOUT_SCALE", "1"))
# How long a wait may see no progress at all before the test is declared hung.
STALL_SECONDS = 300.0
# How often a poll looks again (wait_until's default; a fake's loop that polls a flag). Not a
# bound: a slower machine just polls fewer times.
POLL = 0.05


def scaled(seconds: float) -> float:
    """A hang-guard bound of `seconds`, stretched for slow machines."""
    return seconds * SCALE


def wait_until(
    observe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    progress: Callable[[T], Hashable] | None = None,
    stall: float = STALL_SECONDS,
    interval: float = POLL,
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


def wait_process(proc: subprocess.Popen[Any], seconds: float = STALL_SECONDS) -> int:
    """`proc`'s exit status once it exits; `subprocess.TimeoutExpired` after `scaled(seconds)`.

    For a process the test has told to stop (a signal, closed input): the bound is how long its
    shutdown may take on a busy machine, a hang guard and not a claim about its speed, so the
    default is as generous as any other wait's.
    """
    return proc.wait(scaled(seconds))


def join(thread: threading.Thread, *, stall: float = STALL_SECONDS, what: str = "") -> None:
    """Wait for `thread` to end; fail naming `what` if it is still alive after `scaled(stall)`."""
    thread.join(scaled(stall))
    if thread.is_alive():
        raise AssertionError(f"{what or thread.name} still running after {scaled(stall):.0f} s")


def wait_event(event: threading.Event, *, stall: float = STALL_SECONDS, what: str) -> None:
    """Wait for `event` to be set; fail naming `what` if it is not within `scaled(stall)`."""
    if not event.wait(scaled(stall)):
        raise AssertionError(f"no {what} within {scaled(stall):.0f} s")


def expiring(seconds: float) -> float:
    """A timeout the test means to run out, unscaled: what it bounds never comes (a peer that
    holds the request open, a port nothing listens on), so its length decides nothing but how
    long the test takes. Never for something that does arrive, however late."""
    return seconds


def pause(seconds: float) -> None:
    """Simulated work in a fake (a denoising step, a slow model load, a peer slow to answer),
    or a client's own poll interval that a test records and keeps: the delay is the behaviour
    under test, not a wait for something, and is not scaled. A test never sleeps to let
    something happen: it waits for it (`wait_until`)."""
    time.sleep(seconds)
