"""Prompt extension against a local OpenAI-compatible server and a local transformers model."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.llm_server import Script, llm_server
from tests.waiting import expiring, scaled
from wanserve.catalog import Kind
from wanserve.engine.dummy import build_tokenizer
from wanserve.engine.prompt import ChatPromptExtender, LocalChat, OpenAIChat, PromptJob


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def url(script: Script) -> Iterator[str]:
    with llm_server(script) as base:
        yield base


def extender(url: str, *, vision: bool = False, timeout: float = scaled(30)) -> ChatPromptExtender:
    # A generous default: an answer that should arrive must not be cut off on a busy machine.
    # The fallback tests pass a short one, against a server that answers far later or never.
    chat = OpenAIChat(
        base_url=url, model="qwen-plus", api_key="sk-llm", timeout=timeout, vision=vision
    )
    return ChatPromptExtender(chat)


def test_extends_through_an_openai_compatible_endpoint(url: str, script: Script) -> None:
    script.reply = '  "A kitten sprints through silver moonlight, low camera, cool tones."  '
    out = extender(url).extend(
        PromptJob(prompt="A kitten running in the moonlight", kind=Kind.TEXT_TO_VIDEO)
    )
    assert out == "A kitten sprints through silver moonlight, low camera, cool tones."
    request = script.requests[0]
    assert request["model"] == "qwen-plus"
    system, user = request["messages"]
    assert system["role"] == "system" and "text-to-video" in system["content"]
    assert user == {"role": "user", "content": "A kitten running in the moonlight"}
    assert script.headers[0]["Authorization"] == "Bearer sk-llm"
    assert (request["temperature"], request["seed"]) == (0, 0)  # deterministic asks


def test_system_prompt_follows_the_prompts_language(url: str, script: Script) -> None:
    extender(url).extend(PromptJob(prompt="一只小猫在月光下奔跑", kind=Kind.TEXT_TO_VIDEO))
    assert "文生视频" in script.requests[0]["messages"][0]["content"]
    extender(url).extend(PromptJob(prompt="the cat sings", kind=Kind.IMAGE_TO_VIDEO))
    assert "image-to-video" in script.requests[1]["messages"][0]["content"]


def test_vision_models_see_the_first_frame(url: str, script: Script) -> None:
    frame = Image.new("RGB", (32, 24), (200, 10, 10))
    extender(url, vision=True).extend(
        PromptJob(prompt="it moves", kind=Kind.IMAGE_TO_VIDEO, image=frame)
    )
    parts = script.requests[0]["messages"][1]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "it moves"}
    extender(url, vision=False).extend(
        PromptJob(prompt="it moves", kind=Kind.IMAGE_TO_VIDEO, image=frame)
    )
    assert script.requests[1]["messages"][1]["content"] == "it moves"


@pytest.mark.parametrize(
    ("status", "delay", "reply"),
    [(500, 0.0, "x"), (200, 2.0, "too late"), (200, 0.0, "   "), (404, 0.0, "x")],
)
def test_failures_fall_back_to_the_prompt_as_sent(
    url: str,
    script: Script,
    caplog: pytest.LogCaptureFixture,
    status: int,
    delay: float,
    reply: str,
) -> None:
    script.status, script.delay, script.reply = status, delay, reply
    job = PromptJob(prompt="a dog", kind=Kind.TEXT_TO_VIDEO)
    with caplog.at_level(logging.WARNING, logger="wanserve.engine.prompt"):
        # The 2 s reply is meant to outlast the timeout; the others get a hang guard.
        timeout = expiring(0.5) if delay else scaled(30)
        assert extender(url, timeout=timeout).extend(job) == "a dog"
    assert "using the prompt as sent" in caplog.text
    assert "sk-llm" not in caplog.text


def test_unreachable_endpoint_falls_back() -> None:
    job = PromptJob(prompt="a dog", kind=Kind.TEXT_TO_VIDEO)
    assert extender("http://127.0.0.1:1/v1").extend(job) == "a dog"


def test_shot_plans(url: str, script: Script) -> None:
    plan = extender(url).plan_shots(PromptJob(prompt="a fox detective", kind=Kind.TEXT_TO_VIDEO), 3)
    assert plan is not None and plan.subject == "A red fox in a brown trench coat."
    assert len(plan.shots) == 3
    assert plan.prompts()[0] == "A red fox in a brown trench coat. Shot 1: the fox acts."
    assert "exactly 3 shots" in script.requests[0]["messages"][0]["content"]
    script.plan_reply = "I cannot do JSON today"
    assert extender(url).plan_shots(PromptJob(prompt="x", kind=Kind.TEXT_TO_VIDEO), 3) is None
    script.plan_reply = '{"subject": "s", "shots": ["only one"]}'
    assert extender(url).plan_shots(PromptJob(prompt="x", kind=Kind.TEXT_TO_VIDEO), 3) is None


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama-architecture chat model, saved like any local checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("llm")
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_local_transformers_model(tiny_llm: Path) -> None:
    chat = LocalChat(tiny_llm)
    messages = [{"role": "system", "content": "rewrite"}, {"role": "user", "content": "a cat runs"}]
    first = chat.complete(messages, max_tokens=12, seed=1)
    assert first.strip() and first == chat.complete(
        messages, max_tokens=12, seed=1
    )  # greedy: stable
    out = ChatPromptExtender(chat).extend(PromptJob(prompt="a cat runs", kind=Kind.TEXT_TO_VIDEO))
    assert isinstance(out, str) and out.strip()


def test_missing_local_model_falls_back(tmp_path: Path) -> None:
    job = PromptJob(prompt="a cat", kind=Kind.TEXT_TO_VIDEO)
    assert ChatPromptExtender(LocalChat(tmp_path / "nothing")).extend(job) == "a cat"
