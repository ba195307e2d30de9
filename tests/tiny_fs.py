"""Tiny real file systems for storage-failure tests: a tmpfs of a few kilobytes fills up for
real (ENOSPC), and a read-only one refuses writes for real (EROFS), even to root, whom chmod
does not stop. Mounting needs root (or CAP_SYS_ADMIN); where it is not allowed, tests skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, *, size: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted at `path` (created if missing) while the block runs."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazy: a file the app still holds open must not fail the test's clean-up.
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path, *, leave: int) -> Path:
    """Fill the file system of `path` until only about `leave` bytes are free; the filler."""
    filler = path / "filler"
    free = shutil.disk_usage(path).free
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler
