"""Prompt extension: turn a short prompt into the detailed one Wan models respond to best, and
plan multi-shot videos.

`PromptExtender` is the seam; `ChatPromptExtender` implements it over any chat model
(`ChatBackend`): an OpenAI-compatible endpoint (vLLM, Ollama, SGLang, DashScope's compatible
mode) or a local transformers model. Extension is best effort by contract: a timeout, an error
or an unusable answer falls back to the original prompt with a logged warning, never a failed
task.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from PIL import Image

from wanserve.engine.families import Kind

log = logging.getLogger(__name__)

Message = dict[str, Any]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")

_SYSTEM = {
    ("en", "t2v"): (
        "You rewrite prompts for a text-to-video model. Keep the user's subject, action and "
        "intent, and make them concrete: what the subject looks like, where it is, the light, "
        "the camera's framing and movement, the visual style, and any sound or speech. Write "
        "one paragraph in the present tense, at most 200 words, in English. Reply with the "
        "rewritten prompt only."
    ),
    ("zh", "t2v"): (
        "你负责为文生视频模型改写提示词。保留用户的主体、动作和意图，并把它们写具体：主体的外观、所处"
        "环境、光线、镜头景别与运动、画面风格，以及声音或台词。用现在时写成一段中文，不超过300字。"
        "只回复改写后的提示词。"
    ),
    ("en", "i2v"): (
        "You rewrite prompts for an image-to-video model. The video starts from a given first "
        "frame; describe how the scene moves from it: the subject's motion, the camera's "
        "movement, changes of light, and any sound or speech. Do not redescribe what the frame "
        "already shows unless it changes. One paragraph, present tense, at most 150 words, in "
        "English. Reply with the rewritten prompt only."
    ),
    ("zh", "i2v"): (
        "你负责为图生视频模型改写提示词。视频从给定的首帧开始；描述画面如何从首帧动起来：主体的动作、"
        "镜头运动、光线变化，以及声音或台词。首帧已有的内容除非发生变化否则不必重复。用现在时写成一段"
        "中文，不超过200字。只回复改写后的提示词。"
    ),
}
_SHOTS = {
    "en": (
        "You plan short multi-shot videos. From the user's idea, write one description of the "
        "main subject (appearance and clothing, so every shot shows the same subject) and "
        "exactly {count} shots that tell the idea in order, each naming its framing, camera "
        "movement and action. Reply with JSON only: "
        '{{"subject": "...", "shots": ["...", ...]}}, in English.'
    ),
    "zh": (
        "你负责规划多镜头短视频。根据用户的想法，写一段主体描述（外观与服饰，使每个镜头中的主体一致），"
        "以及按顺序讲述这个想法的恰好{count}个镜头，每个镜头写明景别、镜头运动和动作。只回复 JSON："
        '{{"subject": "...", "shots": ["...", ...]}}，使用中文。'
    ),
}


def language_of(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


@dataclass(frozen=True)
class PromptJob:
    prompt: str
    kind: Kind
    image: Image.Image | None = None  # the first frame, shown to vision models
    seed: int = 0  # passed to the chat model, so the same request asks the same question


@dataclass(frozen=True)
class ShotPlan:
    subject: str
    shots: tuple[str, ...]

    def prompts(self) -> list[str]:
        """Each shot's prompt, carrying the shared subject description."""
        return [f"{self.subject} {shot}".strip() for shot in self.shots]

    def describe(self) -> str:
        return self.subject + " " + " ".join(f"Shot {i + 1}: {s}" for i, s in enumerate(self.shots))


class PromptExtender(Protocol):
    def extend(self, job: PromptJob) -> str:
        """The prompt to generate with (the original one if extension failed)."""

    def plan_shots(self, job: PromptJob, count: int) -> ShotPlan | None:
        """A plan of `count` shots, or None if none could be made."""


class ChatBackend(Protocol):
    vision: bool

    def complete(self, messages: list[Message], *, max_tokens: int, seed: int) -> str: ...


class ChatPromptExtender:
    """`PromptExtender` over a chat model, with the fallbacks the contract promises."""

    def __init__(self, backend: ChatBackend, *, max_tokens: int = 512) -> None:
        self._backend = backend
        self._max_tokens = max_tokens

    def extend(self, job: PromptJob) -> str:
        lang = language_of(job.prompt)
        # Composite (VACE) passes are described from their text, like text-to-video.
        kind = "i2v" if job.kind in (Kind.IMAGE_TO_VIDEO, Kind.KEYFRAMES_TO_VIDEO) else "t2v"
        messages = [
            {"role": "system", "content": _SYSTEM[(lang, kind)]},
            self._user(job),
        ]
        try:
            answer = _clean(
                self._backend.complete(messages, max_tokens=self._max_tokens, seed=job.seed)
            )
        except Exception as exc:  # best effort by contract: never fail the task
            log.warning("prompt extension failed (%s); using the prompt as sent", _reason(exc))
            return job.prompt
        if not answer:
            log.warning("prompt extension returned nothing; using the prompt as sent")
            return job.prompt
        return answer

    def plan_shots(self, job: PromptJob, count: int) -> ShotPlan | None:
        lang = language_of(job.prompt)
        messages = [
            {"role": "system", "content": _SHOTS[lang].format(count=count)},
            self._user(job),
        ]
        try:
            answer = self._backend.complete(
                messages, max_tokens=self._max_tokens * 2, seed=job.seed
            )
            return _parse_plan(answer, count)
        except Exception as exc:
            log.warning("multi-shot planning failed (%s); generating one shot", _reason(exc))
            return None

    def _user(self, job: PromptJob) -> Message:
        if job.image is None or not self._backend.vision:
            return {"role": "user", "content": job.prompt or "(no prompt: animate the image)"}
        return {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _data_uri(job.image)}},
                {"type": "text", "text": job.prompt or "(no prompt: animate the image)"},
            ],
        }


class OpenAIChat:
    """Any OpenAI-compatible `/chat/completions` endpoint (configured by the operator, so it
    may be on a private network: it does not go through the client-URL fetcher)."""

    def __init__(
        self, *, base_url: str, model: str, api_key: str | None, timeout: float, vision: bool
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, trust_env=False
        )
        self._model = model
        self.vision = vision

    def complete(self, messages: list[Message], *, max_tokens: int, seed: int) -> str:
        # Greedy and seeded: the same request gets the same answer where the server allows.
        body = {
            "model": self._model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "seed": seed,
        }
        res = self._client.post("/chat/completions", json=body)
        res.raise_for_status()
        return str(res.json()["choices"][0]["message"]["content"])


class LocalChat:
    """A causal language model loaded with transformers from a local directory, on the CPU or
    the configured device, loaded on first use and kept. Its time is bounded by the token
    budget (a wall-clock limit would make the answer depend on the machine's load)."""

    vision = False

    def __init__(self, path: Path, *, device: str = "cpu") -> None:
        self._path = path
        self._device = device
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self._path, local_files_only=True)
        self._model = AutoModelForCausalLM.from_pretrained(self._path, local_files_only=True)
        self._model.to(self._device).eval()

    def complete(self, messages: list[Message], *, max_tokens: int, seed: int) -> str:
        """Greedy decoding bounded by tokens, not time: the answer does not depend on load."""
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            ids = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self._device)
            with torch.inference_mode():
                out = self._model.generate(
                    **ids,
                    max_new_tokens=max_tokens,
                    do_sample=False,
                    pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                )
            return str(
                self._tokenizer.decode(
                    out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True
                )
            )


def _parse_plan(answer: str, count: int) -> ShotPlan:
    start, end = answer.find("{"), answer.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the answer")
    data = json.loads(answer[start : end + 1])
    subject, shots = data.get("subject"), data.get("shots")
    if not isinstance(subject, str) or not isinstance(shots, list):
        raise ValueError("the plan needs a subject and a list of shots")
    texts = [s.strip() for s in shots if isinstance(s, str) and s.strip()]
    if len(texts) < count:
        raise ValueError(f"the plan has {len(texts)} shots, {count} were asked for")
    return ShotPlan(subject=subject.strip(), shots=tuple(texts[:count]))


def _clean(answer: str) -> str:
    text = answer.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text


def _data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
