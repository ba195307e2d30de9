"""LoRA adapters on disk: their names, where they live, and which ones a run uses.

A torch-free leaf: the API process lists adapters here to validate `parameters.lora` without
loading torch (it only reads directory entries), and the worker's `lora` module loads the
files this module finds.

An adapter named `NAME` is either `<lora_dir>/NAME.safetensors` (one file, in diffusers' key
format or a non-diffusers Wan format such as lightx2v's, CausVid's or Kijai's, which diffusers
converts) or `<lora_dir>/NAME/` (a diffusers LoRA directory holding
`pytorch_lora_weights.safetensors`). Names are plain identifiers: no separators, no dot-dot,
no leading dot, so a client cannot point the server at a path outside `lora_dir`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# diffusers' default file name inside a LoRA directory (`save_lora_weights`).
DIRECTORY_WEIGHTS = "pytorch_lora_weights.safetensors"
SUFFIX = ".safetensors"
MAX_SCALE = 2.0  # strengths past 2 mostly produce artefacts; bounded like LightX2V's
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def is_valid_name(name: str) -> bool:
    """A name that can only ever denote an entry directly inside the adapter directory."""
    return bool(_NAME.fullmatch(name)) and ".." not in name and not name.endswith(SUFFIX)


@dataclass(frozen=True, kw_only=True)
class AdapterUse:
    """One adapter applied to a run, at `scale` (0 = no effect, 1 = as trained)."""

    name: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise ValueError(f"{self.name!r} is not an adapter name")
        if not 0.0 <= self.scale <= MAX_SCALE:
            raise ValueError(f"adapter scale {self.scale} is outside 0..{MAX_SCALE}")


class AdapterDirectory:
    """The adapters under one directory, read from its entries each time they are asked for
    (adding a file makes it available without a restart; nothing is cached)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        """Every adapter available now, sorted; none when the directory does not exist."""
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return []
        found = set()
        for entry in entries:
            name = entry.name.removesuffix(SUFFIX) if entry.name.endswith(SUFFIX) else entry.name
            if is_valid_name(name) and self.path(name) is not None:
                found.add(name)
        return sorted(found)

    def path(self, name: str) -> Path | None:
        """The file or diffusers directory holding adapter `name`, or None if there is none
        (or `name` is not a valid adapter name)."""
        if not is_valid_name(name):
            return None
        file = self.root / f"{name}{SUFFIX}"
        if file.is_file():
            return file
        directory = self.root / name
        if (directory / DIRECTORY_WEIGHTS).is_file():
            return directory
        return None

    def exists(self, name: str) -> bool:
        return self.path(name) is not None
