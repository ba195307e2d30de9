"""LoRA adapters on resident pipelines: loaded once, swapped per run, bounded per checkpoint.

diffusers' Wan LoRA loader (`WanLoraLoaderMixin.load_lora_weights`, on the PEFT backend) reads
each adapter once, converting non-diffusers Wan key formats (lightx2v, CausVid, Kijai:
`diffusion_model.blocks.N.self_attn.q.lora_down.weight`...) on the way, and injects it under its
name. A run then only activates the adapters it names at their scales (`set_adapters`) or
switches adapters off (`disable_lora`): the base weights are never reloaded or modified (no
fusing), so a run without adapters computes exactly what the base model computes.

Loaded adapters live in the resident checkpoint's cache, least recently used first; past
`cache_size` the oldest is deleted from the pipeline (`delete_adapters`). Wan2.2's two experts
each get the adapter (`load_into_transformer_2`), as diffusers' Wan2.2 LoRA guide loads them.

Only `wan.generate` calls this, holding the checkpoint's lease (one run at a time), so the
cache needs no lock of its own.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from wanserve.engine.adapters import DIRECTORY_WEIGHTS, AdapterDirectory, AdapterUse
from wanserve.engine.errors import WeightsUnavailable
from wanserve.engine.manager import Leased

log = logging.getLogger(__name__)

_CACHE_KEY = "adapters"


@dataclass(frozen=True)
class LoraLibrary:
    """Where adapters come from and how many one checkpoint keeps loaded."""

    directory: AdapterDirectory
    cache_size: int = 8

    def __post_init__(self) -> None:
        if self.cache_size < 1:
            raise ValueError("lora_cache_size must be at least 1")

    def apply(self, leased: Leased, adapters: tuple[AdapterUse, ...]) -> None:
        """Make exactly `adapters` active on the leased pipeline, loading those not cached."""
        pipe = leased.pipeline
        loaded = loaded_adapters(leased)
        if not adapters:
            if loaded:
                pipe.disable_lora()
            return
        wanted = {a.name for a in adapters}
        for use in adapters:
            if use.name in loaded:
                loaded.move_to_end(use.name)
                continue
            while len(loaded) >= self.cache_size:
                victim = next((n for n in loaded if n not in wanted), None)
                if victim is None:
                    break  # every cached adapter is in use by this run
                log.info("unloading adapter %s (lora_cache_size %d)", victim, self.cache_size)
                pipe.delete_adapters(victim)
                del loaded[victim]
            self._load(pipe, use.name)
            loaded[use.name] = None
        pipe.enable_lora()
        pipe.set_adapters([a.name for a in adapters], [a.scale for a in adapters])

    def _load(self, pipe: Any, name: str) -> None:
        path = self.directory.path(name)
        if path is None:
            raise WeightsUnavailable(
                f"LoRA adapter {name!r} is not in {self.directory.root} (expected "
                f"{name}.safetensors or a {name}/ directory holding {DIRECTORY_WEIGHTS})."
            )
        source, weight_name = (
            (path, DIRECTORY_WEIGHTS) if path.is_dir() else (path.parent, path.name)
        )
        targets = [False] + ([True] if getattr(pipe, "transformer_2", None) is not None else [])
        try:
            with warnings.catch_warnings():
                # PEFT warns when a second adapter joins a model: several are the point here.
                warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
                for into_second in targets:
                    self._load_into(pipe, source, weight_name, name, into_second=into_second)
        except (OSError, SafetensorError, ValueError, KeyError, RuntimeError, ImportError) as exc:
            _forget(pipe, name)
            raise WeightsUnavailable(
                f"LoRA adapter {name!r} ({_describe(path)}) could not be loaded: {_first_line(exc)}"
            ) from exc
        log.info("loaded LoRA adapter %s from %s", name, path)

    @staticmethod
    def _load_into(
        pipe: Any, source: Path, weight_name: str, name: str, *, into_second: bool
    ) -> None:
        pipe.load_lora_weights(
            str(source),
            weight_name=weight_name,
            adapter_name=name,
            use_safetensors=True,  # never unpickle an adapter file
            local_files_only=True,
            load_into_transformer_2=into_second,
        )


def loaded_adapters(leased: Leased) -> OrderedDict[str, None]:
    """The adapters loaded into the leased checkpoint, least recently used first."""
    cache: OrderedDict[str, None] = leased.cache.setdefault(_CACHE_KEY, OrderedDict())
    return cache


def _forget(pipe: Any, name: str) -> None:
    """Remove whatever a failed load injected, so the pipeline is as it was."""
    try:
        if any(name in names for names in pipe.get_list_adapters().values()):
            pipe.delete_adapters(name)
    except (ValueError, KeyError, AttributeError):
        log.warning("could not clean up adapter %s after a failed load", name, exc_info=True)


def _describe(path: Path) -> str:
    return f"{path.name}/" if path.is_dir() else path.name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
