"""Where a checkpoint's weights come from: a tiny dummy build, a local diffusers directory, or
a hub id (from the cache, or downloaded first if the operator allows). Every checkpoint is
brought to a local directory before it is loaded, so its size is known before it is loaded."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from huggingface_hub import snapshot_download

from wanserve.engine.request import EngineConfig

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def local_checkpoint(config: EngineConfig, source: str, *, dummy: Callable[[Path], Path]) -> Path:
    """A local directory holding `source`. In dummy mode `dummy(root)` builds (once) and
    returns the tiny checkpoint's directory. Raises `OSError`/`ValueError` when the weights
    are neither on disk nor downloadable."""
    if config.weights == "dummy":
        return dummy(config.dummy_root)
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    return Path(
        snapshot_download(
            source,
            cache_dir=str(config.hf_cache_dir) if config.hf_cache_dir else None,
            local_files_only=not config.allow_download,
        )
    )


def weight_bytes(directory: Path, *, skip: Iterable[str] = ()) -> int:
    """Bytes of weight files under `directory`, leaving out the subfolders in `skip`."""
    skipped = set(skip)
    total = 0
    for file in directory.rglob("*"):
        relative = file.relative_to(directory).parts
        if file.suffix in _WEIGHT_SUFFIXES and not (relative and relative[0] in skipped):
            total += file.stat().st_size
    return total
