"""The engine's options and the counts it reports, as plain values: what the catalogue,
settings, specs and workers name without loading the machinery that applies them.

A torch-free leaf that imports nothing from `wanserve`: an API-only process (the catalogue,
the spec rules) imports it, and `engine/speed.py`, which applies these options to diffusers
models, imports it too (and re-exports the names under their old import path).

* lossless, per checkpoint (`CheckpointSpeed`, fixed when it loads): `CfgBatch`, `CompileMode`
  and the attention backend;
* lossy, per run: `CachePreset`, the transformer block cache;
* `BlockCount`: the transformer block evaluations a run computed and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CfgBatch(StrEnum):
    AUTO = "auto"  # on when the second sample's activations fit (always on a CPU: measured)
    ON = "on"
    OFF = "off"


class CompileMode(StrEnum):
    OFF = "off"
    REGIONAL = "regional"  # torch.compile of the repeated transformer block, at load


class CachePreset(StrEnum):
    OFF = "off"
    FAST = "fast"
    FASTER = "faster"


@dataclass(frozen=True, kw_only=True)
class CheckpointSpeed:
    """Lossless speed-ups of one checkpoint, fixed when it loads."""

    cfg_batch: CfgBatch = CfgBatch.AUTO
    compile: CompileMode = CompileMode.OFF
    attention: str | None = None  # a diffusers attention backend; None: diffusers' default


@dataclass(frozen=True, kw_only=True)
class BlockCount:
    """Transformer block evaluations of one run, one per block per sample (the conditional and
    unconditional passes count separately, batched or not): `computed` ran, `skipped` were
    served from a cache."""

    computed: int = 0
    skipped: int = 0

    def __add__(self, other: BlockCount) -> BlockCount:
        return BlockCount(
            computed=self.computed + other.computed, skipped=self.skipped + other.skipped
        )
