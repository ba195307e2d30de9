"""Prompt extension, multi-shot, long durations, dubbing and the audio-driven seam through the
HTTP API, with the real engine on tiny checkpoints and a local OpenAI-compatible server."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import pytest

from tests.api.test_engine_http import SMALL
from tests.audio_files import wav
from tests.conftest import Harness
from tests.llm_server import Script, llm_server
from tests.waiting import scaled
from wanserve.engine.request import CancelFn, Clip, GenerationRequest, ProgressFn
from wanserve.engine.runner import PipelineRunner
from wanserve.media.audio import AudioClip


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def llm(script: Script) -> Iterator[str]:
    with llm_server(script) as url:
        yield url


@pytest.fixture
def full(harness_factory: Callable[..., Harness], runner: PipelineRunner, llm: str) -> Harness:
    """A deployment with a prompt extender and dubbing configured."""
    return harness_factory(
        runner=runner,
        models=SMALL,
        steps=2,
        prompt_extender="openai",
        prompt_extender_url=llm,
        dubbing=True,
    )


def run(h: Harness, body: dict[str, Any]) -> dict[str, Any]:
    res = h.create(body)
    assert res.status_code == 200, res.text
    done = h.wait(res.json()["output"]["task_id"])
    assert done["output"]["task_status"] == "SUCCEEDED", done
    return done


def media(h: Harness, task_id: str) -> tuple[float, float | None]:
    """(video seconds, audio seconds or None)."""
    path = h.components.services.storage.path(f"videos/{task_id}.mp4")  # type: ignore[attr-defined]
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        return (float(v.duration * v.time_base), float(a.duration * a.time_base) if a else None)


def t2v(model: str = "wan2.1-t2v-turbo", **params: Any) -> dict[str, Any]:
    size = "832*480" if model.startswith(("wan2.1", "wan2.5")) else "1280*720"
    return {
        "model": model,
        "input": {"prompt": "A kitten running in the moonlight"},
        "parameters": {"size": size, **params},
    }


# -- prompt extension --------------------------------------------------------------------------


def test_prompt_extension_and_actual_prompt(full: Harness, script: Script) -> None:
    script.reply = "A kitten sprints through silver moonlight; low tracking shot."
    out = run(full, t2v())["output"]
    assert (
        out["actual_prompt"] == script.reply
        and out["orig_prompt"] == "A kitten running in the moonlight"
    )
    assert script.requests[-1]["messages"][1]["content"] == "A kitten running in the moonlight"
    sent = len(script.requests)
    out = run(full, t2v(prompt_extend=False))["output"]
    assert "actual_prompt" not in out and len(script.requests) == sent  # not asked at all


def test_wan26_extends_but_never_returns_actual_prompt(full: Harness, script: Script) -> None:
    out = run(full, t2v("wan2.6-t2v", duration=2))["output"]
    assert "actual_prompt" not in out
    assert len(script.requests) == 1  # the prompt was extended all the same


def test_a_failing_extender_never_fails_the_task(full: Harness, script: Script) -> None:
    script.status = 503
    out = run(full, t2v())["output"]
    assert out["actual_prompt"] == "A kitten running in the moonlight"


# -- multi-shot and long videos ----------------------------------------------------------------


@pytest.mark.parametrize("continuity", [False, True])
def test_multi_shot(
    harness_factory: Callable[..., Harness],
    runner: PipelineRunner,
    llm: str,
    script: Script,
    continuity: bool,
) -> None:
    full = harness_factory(runner=runner, models=SMALL, steps=2, prompt_extender="openai",
                           prompt_extender_url=llm, multi_shot_continuity=continuity)  # fmt: skip
    done = run(full, t2v("wan2.6-t2v", duration=10, shot_type="multi"))
    plan_request = script.requests[-1]["messages"][0]["content"]
    assert "exactly 3 shots" in plan_request
    task = full.components.store.get(done["output"]["task_id"])
    assert task is not None and task.progress is not None
    assert task.progress.total_steps == 3 * 2  # three shots of two steps each
    assert media(full, task.id)[0] == 10.0


def test_multi_shot_is_refused_without_an_extender(
    harness_factory: Callable[..., Harness], runner: PipelineRunner
) -> None:
    h = harness_factory(runner=runner, models=SMALL, steps=2)
    res = h.create(t2v("wan2.6-t2v", shot_type="multi"))
    assert res.status_code == 400 and "needs a prompt extender" in res.json()["message"]


@pytest.mark.parametrize(
    ("model", "seconds", "passes"), [("wan2.6-t2v", 15, 3), ("wan2.5-t2v-preview", 10, 2)]
)
def test_long_videos_are_chained(full: Harness, model: str, seconds: int, passes: int) -> None:
    done = run(full, t2v(model, duration=seconds, prompt_extend=False, audio=False))
    task = full.components.store.get(done["output"]["task_id"])
    assert (
        task is not None and task.progress is not None and task.progress.total_steps == passes * 2
    )
    assert media(full, task.id) == (float(seconds), None)


# -- sound ---------------------------------------------------------------------------------------


def test_automatic_dubbing(full: Harness) -> None:
    done = run(full, t2v("wan2.5-t2v-preview", prompt_extend=False))
    assert done["usage"]["audio"] is True
    assert media(full, done["output"]["task_id"]) == pytest.approx((5.0, 5.0), abs=0.03)
    silent = run(full, t2v("wan2.5-t2v-preview", prompt_extend=False, audio=False))
    assert silent["usage"]["audio"] is False
    assert media(full, silent["output"]["task_id"])[1] is None


@dataclass
class FakeAudioDriven:
    """A stand-in at the `AudioDrivenVideo` seam."""

    calls: list[tuple[GenerationRequest, AudioClip]] = field(default_factory=list)

    def run(
        self,
        request: GenerationRequest,
        *,
        audio: AudioClip,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> Clip:
        self.calls.append((request, audio))
        frames = np.zeros((request.num_frames, request.height, request.width, 3), np.uint8)
        return Clip(frames=frames, fps=request.fps)


def test_audio_driven_seam(harness_factory: Callable[..., Harness], runner: PipelineRunner) -> None:
    fake = FakeAudioDriven()
    h = harness_factory(runner=runner, models=SMALL, steps=2, audio_driven=fake)
    track = "data:audio/wav;base64," + base64.b64encode(wav(4.0)).decode()
    body = t2v("wan2.5-t2v-preview", prompt_extend=False)
    body["input"]["audio_url"] = track
    done = run(h, body)
    assert len(fake.calls) == 1 and abs(fake.calls[0][1].seconds - 4.0) < 0.01
    assert done["usage"]["audio"] is True
    run(h, t2v("wan2.5-t2v-preview", prompt_extend=False))
    assert len(fake.calls) == 1  # no track sent: the ordinary engine made the video


def test_a_retried_task_reuses_its_recorded_extension(
    harness_factory: Callable[..., Harness], llm: str, script: Script
) -> None:
    from tests.conftest import FakeRunner
    from wanserve.engine.prompt import ChatPromptExtender, OpenAIChat
    from wanserve.workers.execute import Execution, execute
    from wanserve.workers.inputs import MediaResolver

    h = harness_factory(start_workers=False)
    task_id = h.create(t2v()).json()["output"]["task_id"]
    extender = ChatPromptExtender(
        OpenAIChat(base_url=llm, model="m", api_key=None, timeout=scaled(30), vision=False)
    )
    ex = Execution(
        store=h.components.store, runner=FakeRunner(), storage=h.components.services.storage,
        inputs=MediaResolver(), scratch_dir=h.settings.data_dir / "tmp", heartbeat_seconds=0.2,
        extender=extender,
    )  # fmt: skip
    script.reply = "the first answer"
    claim = h.components.store.claim(task_id, worker_id="w1")
    assert claim is not None
    assert execute(claim, ex, stopping=lambda: True).value == "PENDING"  # interrupted: re-queued
    script.reply = "a different answer the second time"
    claim = h.components.store.claim(task_id, worker_id="w2")
    assert claim is not None and execute(claim, ex).value == "SUCCEEDED"
    assert h.get(task_id)["output"]["actual_prompt"] == "the first answer"
    assert len(script.requests) == 1  # asked once; the retry reused the record
