"""Where a checkpoint's weights come from: a tiny dummy build, a local diffusers directory, or
a hub id (from the cache, or downloaded if the operator allows)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from wanserve.engine.runner import EngineConfig


def locate(
    config: EngineConfig, source: str, *, dummy: Callable[[Path], Path]
) -> tuple[str | Path, dict[str, Any]]:
    """(what to pass to `from_pretrained`, the keyword arguments it needs). In dummy mode
    `dummy(root)` builds (once) and returns the tiny checkpoint's directory."""
    if config.weights == "dummy":
        return dummy(config.dummy_root), {"local_files_only": True}
    path = Path(source).expanduser()
    kwargs: dict[str, Any] = {"local_files_only": path.is_dir() or not config.allow_download}
    if config.hf_cache_dir is not None:
        kwargs["cache_dir"] = str(config.hf_cache_dir)
    return (path if path.is_dir() else source), kwargs
