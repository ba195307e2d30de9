"""LoRA adapters and the distilled preset through the HTTP API (the fake runner at the engine
seam records what the engine is asked to run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FakeRunner, Harness
from wanserve.engine.adapters import AdapterUse

T2V: dict[str, Any] = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a cat"}}


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    root = tmp_path / "loras"
    root.mkdir()
    (root / "watercolor.safetensors").write_bytes(b"adapter")  # listed, never loaded here
    (root / "turbo4").mkdir()
    (root / "turbo4" / "pytorch_lora_weights.safetensors").write_bytes(b"adapter")
    (root / "not-an-adapter.txt").write_bytes(b"")
    return root


def create(h: Harness, **parameters: Any) -> Any:
    return h.create(T2V | {"parameters": {"size": "832*480", **parameters}})


def test_a_named_adapter_reaches_the_engine(
    harness_factory: Callable[..., Harness], lora_dir: Path
) -> None:
    h = harness_factory(lora_dir=lora_dir)
    res = create(h, lora="watercolor", lora_scale=0.75)
    assert res.status_code == 200, res.text
    h.wait(res.json()["output"]["task_id"])
    assert isinstance(h.runner, FakeRunner)
    assert h.runner.calls[-1].adapters == (AdapterUse(name="watercolor", scale=0.75),)
    res = create(h, lora="turbo4")  # a diffusers LoRA directory; default strength 1
    h.wait(res.json()["output"]["task_id"])
    assert h.runner.calls[-1].adapters == (AdapterUse(name="turbo4", scale=1.0),)
    h.wait(create(h).json()["output"]["task_id"])
    assert h.runner.calls[-1].adapters == ()


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"lora": "nope"}, "'nope' is not an adapter on this server; available: turbo4, wat"),
        ({"lora": "not-an-adapter.txt"}, "'not-an-adapter.txt' is not an adapter"),
        ({"lora": "../loras/watercolor"}, "no paths"),
        ({"lora": "/etc/passwd"}, "no paths"),
        ({"lora": 5}, "lora must be the name"),
        ({"lora": "watercolor", "lora_scale": 2.5}, "from 0 to 2"),
        ({"lora": "watercolor", "lora_scale": -0.1}, "from 0 to 2"),
        ({"lora": "watercolor", "lora_scale": "1"}, "must be a number"),
        ({"lora": "watercolor", "lora_scale": True}, "must be a number"),
        ({"lora_scale": 1.0}, "lora_scale needs lora"),
    ],
)
def test_bad_adapters_are_refused_at_submission(
    harness_factory: Callable[..., Harness],
    lora_dir: Path,
    parameters: dict[str, Any],
    message: str,
) -> None:
    h = harness_factory(lora_dir=lora_dir)
    res = create(h, **parameters)
    assert res.status_code == 400, res.text
    body = res.json()
    assert body["code"] == "InvalidParameter" and message in body["message"]
    assert body["request_id"]
    assert isinstance(h.runner, FakeRunner) and h.runner.calls == []


def test_without_an_adapter_directory_lora_is_refused(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory(weights="auto")
    res = create(h, lora="watercolor")
    assert res.status_code == 400
    assert "no LoRA adapters" in res.json()["message"]


def test_the_distilled_preset_runs_four_steps_without_guidance_and_its_adapter(
    harness_factory: Callable[..., Harness], lora_dir: Path
) -> None:
    models = {"wan2.1-t2v-turbo": {"preset": "distilled", "lora": "turbo4"}}
    h = harness_factory(lora_dir=lora_dir, models=models, steps=2)
    h.wait(create(h).json()["output"]["task_id"])
    assert isinstance(h.runner, FakeRunner)
    call = h.runner.calls[-1]
    assert (call.steps, call.guidance_scale, call.flow_shift) == (4, 1.0, 5.0)
    assert call.adapters == (AdapterUse(name="turbo4"),)
    # A request may add a style adapter on top of the model's own.
    h.wait(create(h, lora="watercolor", lora_scale=0.5).json()["output"]["task_id"])
    assert h.runner.calls[-1].adapters == (
        AdapterUse(name="turbo4"),
        AdapterUse(name="watercolor", scale=0.5),
    )
    # Other models keep their own sampling and no adapter.
    other = T2V | {"model": "wan2.1-t2v-plus", "parameters": {"size": "1280*720"}}
    h.wait(h.create(other).json()["output"]["task_id"])
    assert (h.runner.calls[-1].steps, h.runner.calls[-1].adapters) == (2, ())
