"""`Shutdown`: what SIGTERM and SIGINT do to a generating process.

First signal: stop claiming, and let the running task stop at its next denoising step (the job
body's `stopping` check) and go back to PENDING; then the process exits. Second signal: exit
at once, handing running tasks back first (bounded, best effort); whatever that misses the
reaper requeues once its heartbeat is stale.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

_HAND_BACK_SECONDS = 5.0  # on an immediate exit, how long the hand-back may take at most


class Shutdown:
    def __init__(
        self,
        *,
        stopping: threading.Event,
        hand_back: Callable[[], list[str]],
    ) -> None:
        self.stopping = stopping
        self._hand_back = hand_back
        self._on_first: list[Callable[[], None]] = []
        self._signals = 0

    def add_on_first(self, action: Callable[[], None]) -> None:
        """Also do `action` on the first signal (e.g. tell a consumer loop to end)."""
        self._on_first.append(action)

    def install(self) -> None:
        """Own SIGTERM and SIGINT (call from the main thread)."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.request(signum)

    def request(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info(
                "%s: stopping; a running task goes back to the queue at its next step "
                "(signal again to exit at once)",
                signal.Signals(signum).name,
            )
            self.stopping.set()
            for action in self._on_first:
                action()
            return
        self.exit_now(signum)

    def hand_back(self) -> list[str]:
        """Hand running tasks back, within a bound (the database may be what is stuck)."""
        handed: list[str] = []

        def work() -> None:
            handed.extend(self._hand_back())

        worker = threading.Thread(target=work, name="wanserve-hand-back", daemon=True)
        worker.start()
        worker.join(_HAND_BACK_SECONDS)
        return handed

    def exit_now(self, signum: int) -> None:
        handed = self.hand_back()
        log.warning(
            "%s again: exiting now; task(s) handed back: %s",
            signal.Signals(signum).name,
            ", ".join(handed) or "none",
        )
        logging.shutdown()
        os._exit(128 + signum)
