"""The engine boundary: what `wanserve.engine` may import, its import graph, its torch-free
leaves, `GenerationRequest`'s own checks, the 4n+1 frame rule, and the worker's translation
of specs into requests and of engine errors into DashScope codes."""

from __future__ import annotations

import ast
import dataclasses
import graphlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.requests import dashscope_request
from wanserve.catalog import Catalog, frames_for
from wanserve.engine.errors import (
    BadInput,
    Canceled,
    EngineError,
    OutOfMemory,
    WeightsUnavailable,
)
from wanserve.engine.families import (
    FAMILIES,
    Family,
    Kind,
    frames_at_least,
    frames_at_most,
    is_valid_frame_count,
    latent_frames,
)
from wanserve.engine.request import GenerationRequest
from wanserve.request import SynthesisRequest
from wanserve.spec import build_spec
from wanserve.workers.inputs import Conditioning
from wanserve.workers.translation import request_for, task_error

ENGINE = Path(__file__).parents[2] / "wanserve" / "engine"
# Layers above or beside the engine that it must not know: DashScope names and rules, error
# codes, the task store, HTTP. The rule is wider (nothing of `wanserve` outside the engine):
# these are named so that a failure says what matters.
FORBIDDEN = ("wanserve.spec", "wanserve.catalog", "wanserve.errors", "wanserve.tasks")
FORBIDDEN += ("wanserve.api", "wanserve.workers", "wanserve.app", "wanserve.db")
TORCH_FREE = ("request", "errors", "families", "manager", "runner", "adapters", "lora")
TORCH_FREE += ("options", "audio", "speed")


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            # `from wanserve.engine import dummy` imports the module `wanserve.engine.dummy`.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def engine_modules() -> dict[str, set[str]]:
    return {p.stem: imports_of(p) for p in sorted(ENGINE.glob("*.py")) if p.stem != "__init__"}


def outside_the_engine(module: str) -> bool:
    inside = module == "wanserve.engine" or module.startswith("wanserve.engine.")
    return module.startswith("wanserve.") and not inside


def test_the_engine_imports_nothing_above_it() -> None:
    modules = engine_modules()
    assert {"request", "families", "errors", "wan", "runner", "manager"} <= set(modules)
    offending = {
        (name, imported)
        for name, imported_names in modules.items()
        for imported in imported_names
        if imported.startswith(FORBIDDEN) or outside_the_engine(imported)
    }
    assert offending == set()


def test_no_engine_module_reaches_outside_the_engine_when_it_loads() -> None:
    """What loading each engine module brings in, transitively (the static rule above sees one
    step: `engine -> media.audio -> errors` passed it). One fresh interpreter imports every
    engine module in turn and reports the `wanserve` modules outside the engine each added."""
    names = [f"wanserve.engine.{m}" for m in sorted(engine_modules())]
    code = (
        "import importlib, json, sys\n"
        "found, before = {}, set(sys.modules)\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    found[name] = sorted(set(sys.modules) - before)\n"
        "    before = set(sys.modules)\n"
        "print(json.dumps(found))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded: dict[str, list[str]] = json.loads(out)
    assert list(loaded) == names  # every engine module, the torch ones included
    reached = {name: [m for m in added if outside_the_engine(m)] for name, added in loaded.items()}
    assert {name: added for name, added in reached.items() if added} == {}


def test_engine_imports_form_no_circle() -> None:
    modules = engine_modules()
    graph = {
        name: {
            i.removeprefix("wanserve.engine.") for i in imported if i.startswith("wanserve.engine.")
        }
        for name, imported in modules.items()
    }
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError
    assert order.index("wan") > order.index("manager") and "runner" not in graph["wan"]


def test_the_leaves_load_without_torch() -> None:
    """What the API process imports of the engine (and the catalogue, which reads its facts)
    must not load torch or diffusers: an API replica has no GPU and no time for them."""
    names = [f"wanserve.engine.{m}" for m in TORCH_FREE]
    names += ["wanserve.catalog", "wanserve.spec", "wanserve.workers.translation"]
    code = (
        "import sys\n"
        + "".join(f"import {n}\n" for n in names)
        + "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_frame_rule() -> None:
    valid = [n for n in range(1, 200) if is_valid_frame_count(n)]
    assert valid[:4] == [1, 5, 9, 13] and all((n - 1) % 4 == 0 for n in valid)
    for n in range(1, 200):
        up, down = frames_at_least(n), frames_at_most(n)
        assert is_valid_frame_count(up) and is_valid_frame_count(down)
        assert down <= n <= up and up - n < 4 and n - down < 4
    assert [latent_frames(n) for n in (1, 5, 81, 121)] == [1, 2, 21, 31]
    with pytest.raises(ValueError):
        latent_frames(80)
    # The catalogue's durations: 5 s at 16 fps is the Wan training length, 81 frames.
    assert frames_for(5, 16) == 81 and frames_for(5, 24) == 121 and frames_for(2, 24) == 49


def request(**changes: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "checkpoint": "ckpt",
        "family": Family.WAN21_T2V,
        "kind": Kind.TEXT_TO_VIDEO,
        "width": 64,
        "height": 48,
        "num_frames": 9,
        "steps": 2,
        "guidance_scale": 5.0,
        "seed": 1,
        "prompt": "a cat",
        "negative_prompt": "",
    }
    return GenerationRequest(**(base | changes))


FRAME = Image.new("RGB", (64, 48))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_frames": 8}, r"not 4n\+1"),
        ({"width": 72}, "multiples of 16"),
        ({"family": Family.WAN22_TI2V_5B}, "multiples of 32"),
        ({"kind": Kind.IMAGE_TO_VIDEO}, "cannot run i2v"),
        ({"family": Family.WAN21_I2V, "kind": Kind.IMAGE_TO_VIDEO}, "needs a first frame"),
        ({"first_frame": FRAME}, "takes no first frame"),
        ({"steps": 0}, "at least one"),
        (
            {"family": Family.WAN21_FLF2V, "kind": Kind.KEYFRAMES_TO_VIDEO, "first_frame": FRAME},
            "last frame",
        ),
    ],
)
def test_requests_check_themselves(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        request(**changes)


def test_a_request_knows_its_frame_rate() -> None:
    assert request().fps == 16
    assert request(family=Family.WAN22_TI2V_5B, width=64, height=64).fps == 24
    assert FAMILIES[Family.WAN22_TI2V_5B].native_fps == 24


def test_spec_to_request() -> None:
    card = Catalog.build(steps=3).get("wanx2.1-kf2v-plus")
    spec = build_spec(
        dashscope_request(card.name, first_frame_url="https://e.com/a.png",
                         last_frame_url="https://e.com/b.png", seed=5),
        card,
    ).with_image_size(640, 480)  # fmt: skip
    assert spec.gen_width is not None and spec.gen_height is not None
    first, last = Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8), "white")
    made = request_for(spec, conditioning=Conditioning(image=first, last_image=last))
    assert (made.width, made.height) == (spec.gen_width, spec.gen_height)
    assert (made.checkpoint, made.family, made.kind) == (spec.checkpoint, spec.family, spec.kind)
    assert (made.num_frames, made.steps, made.seed) == (spec.num_frames, 3, 5)
    assert (made.flow_shift, made.negative_prompt) == (spec.flow_shift, spec.negative_prompt)
    assert made.first_frame is first and made.last_frame is last
    with pytest.raises(ValueError, match="no size yet"):
        request_for(dataclasses.replace(spec, gen_width=None), conditioning=Conditioning())


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        (
            OutOfMemory(
                "The device ran out of memory generating 81 frames at 80x48", while_loading=False
            ),
            "InternalError.Algo",
            "81 frames at 80x48 with wan2.1-t2v-turbo. Try a shorter duration",
        ),
        (
            OutOfMemory("The device ran out of memory loading x.", while_loading=True),
            "InternalError.Algo",
            "loading x. Lower model_memory_gib",
        ),
        (WeightsUnavailable("Weights for 'x' could not be loaded"), "InternalError.Algo", "'x'"),
        (BadInput("9 frames is not 4n+1"), "InternalError", "wan2.1-t2v-turbo as asked"),
        (EngineError("odd"), "InternalError", "odd"),
    ],
)
def test_engine_errors_become_dashscope_codes(error: EngineError, code: str, says: str) -> None:
    spec = build_spec(
        SynthesisRequest(model="wan2.1-t2v-turbo", prompt="a cat"),
        Catalog.build().get("wan2.1-t2v-turbo"),
    )
    mapped = task_error(error, spec=spec)
    assert mapped.code == code and says in mapped.message


def test_cancel_is_an_engine_error_the_worker_handles_first() -> None:
    assert issubclass(Canceled, EngineError)
