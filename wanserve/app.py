"""`create_app(settings)`: the embedded server (API and generation threads in one process).

The composition roots live in `wanserve.compose`; this module keeps the long-standing import
path (`wanserve.app:create_app`, as uvicorn's `--factory` users and older tests spell it).
"""

from __future__ import annotations

from wanserve.compose.embedded import Components, build_components, create_app

__all__ = ["Components", "build_components", "create_app"]
