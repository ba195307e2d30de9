"""`bench/api.py --in-process` still builds and drives the real API app (a smoke run: the
figures it prints are not judged here; benchmarks are read from the script, never from a
test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.waiting import scaled

ROOT = Path(__file__).resolve().parents[2]


def test_the_in_process_poll_bench_runs_and_prints_a_ratio() -> None:
    out = subprocess.run(
        [sys.executable, "bench/api.py", "--in-process", "--databases", "sqlite", "--polls", "20"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
        text=True,
        timeout=scaled(300),
    ).stdout
    assert re.search(r"\[sqlite\] wanserve +[0-9.]+ us/poll .* ratio [0-9.]+$", out, re.M), out
