"""What the engine raises. A torch-free leaf: no DashScope codes, no HTTP statuses.

    EngineError                  anything the engine raises on purpose
    ├── Canceled                 `should_cancel` turned true; the run stopped at a step boundary
    ├── BadInput                 the request cannot be generated as given (e.g. an image model
    │                            without its first frame)
    ├── WeightsUnavailable       a checkpoint is neither on disk nor downloadable, or unreadable
    └── OutOfMemory              the device ran out of memory loading a checkpoint or generating

`wanserve.workers.translation.task_error` is the one place these become DashScope codes and
client-facing messages; anything else escaping the engine is an unexpected internal error.
Messages here speak of checkpoints, frames and pixels, and may name operator settings.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class Canceled(EngineError):
    """Raised inside a run when `should_cancel` turned true; the run stopped early and the
    resident pipeline stays usable."""


class BadInput(EngineError):
    """The request is inconsistent with its checkpoint (no first frame for an image model, a
    frame count that is not 4n+1)."""


class WeightsUnavailable(EngineError):
    """A checkpoint's weights could not be found or loaded; the message says how to
    configure them."""


class OutOfMemory(EngineError):
    """The device ran out of memory. `while_loading`: loading a checkpoint (too many resident
    models) rather than generating (too many frames or pixels for this device)."""

    def __init__(self, message: str, *, while_loading: bool) -> None:
        super().__init__(message)
        self.while_loading = while_loading
