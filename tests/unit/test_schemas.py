"""The DashScope door: request parsing, times, and usage per model generation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.requests import dashscope_request
from wanserve.api.dashscope import render as schemas
from wanserve.api.dashscope.protocol import (
    CreateTaskInput,
    CreateTaskParameters,
    parse_create_body,
    read_body,
)
from wanserve.catalog import Catalog, Size
from wanserve.errors import EmptyInput, InvalidParameter
from wanserve.request import SynthesisRequest
from wanserve.spec import build_spec
from wanserve.tasks.models import Task, TaskError, TaskResult, TaskStatus

CATALOG = Catalog.build()
T0 = datetime(2025, 9, 29, 6, 5, 22, 119000, tzinfo=UTC)


def test_utc8_times() -> None:
    assert schemas.format_time(T0) == "2025-09-29 14:05:22.119"
    assert schemas.format_time(None) is None
    parsed = schemas.parse_list_time("20250929140522", "start_time")
    assert parsed is not None and parsed.astimezone(UTC) == T0.replace(microsecond=0)
    with pytest.raises(InvalidParameter, match="start_time '2025-09-29' must be a time"):
        schemas.parse_list_time("2025-09-29", "start_time")


def test_parse_body_ignores_sdk_artefacts_and_reads_parameters() -> None:
    req = parse_create_body(
        b'{"model": "m", "parameters": {"size": "832*480", "seed": 3, "custom": 1},'
        b' "input": {"prompt": "p", "extend_prompt": true, "function": "video-synthesis"}}'
    )
    assert req == SynthesisRequest(model="m", prompt="p", size=Size(832, 480), seed=3)


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        (b"{nope", InvalidParameter, "not valid JSON"),
        (b"[1]", InvalidParameter, "JSON object"),
        (b'{"model": "m"}', EmptyInput, '"input" is missing'),
        (b'{"model": "m", "input": "x"}', InvalidParameter, "input must be"),
        (b'{"model": "m", "input": {}, "parameters": []}', InvalidParameter, "parameters must be"),
        (b"\xff\xfe", InvalidParameter, "not valid JSON"),
        (b"", InvalidParameter, "JSON object"),
    ],
)
def test_parse_body_errors(raw: bytes, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_create_body(raw)


def test_null_prompt_counts_as_missing() -> None:
    assert parse_create_body(b'{"model": "m", "input": {"prompt": null}}').prompt is None


def succeeded(model: str, **params: object) -> Task:
    card = CATALOG.get(model)
    spec = build_spec(dashscope_request(model, prompt="p", **params), card)
    size = spec.size
    return Task(
        id="t",
        api_key_id="k",
        request_id="r",
        model=model,
        status=TaskStatus.SUCCEEDED,
        spec=spec,
        submit_time=T0,
        expires_at=T0,
        scheduled_time=T0,
        end_time=T0,
        result=TaskResult(
            video_key="v.mp4",
            width=size.width,
            height=size.height,
            has_audio=False,
            actual_prompt="p",
        ),
    )


def test_usage_wan26() -> None:
    usage = schemas.task_usage(succeeded("wan2.6-t2v", size="1280*720", duration=10))
    assert usage == {
        "duration": 10.0,
        "input_video_duration": 0,
        "output_video_duration": 10,
        "SR": 720,
        "size": "1280*720",
        "video_count": 1,
        "audio": False,
    }


def test_usage_wan25_and_earlier() -> None:
    assert schemas.task_usage(succeeded("wan2.5-t2v-preview", size="832*480", duration=10)) == {
        "video_duration": 10,
        "video_ratio": "832*480",
        "video_count": 1,
        "audio": False,
    }
    assert schemas.task_usage(succeeded("wan2.1-t2v-turbo", size="832*480")) == {
        "video_duration": 5,
        "video_ratio": "832*480",
        "video_count": 1,
    }


def test_actual_prompt_never_for_wan26() -> None:
    out26 = schemas.task_output(succeeded("wan2.6-t2v", size="1280*720"), "http://v")
    assert "actual_prompt" not in out26 and out26["video_url"] == "http://v"
    out21 = schemas.task_output(succeeded("wan2.1-t2v-turbo"), "http://v")
    assert out21["actual_prompt"] == "p" and out21["orig_prompt"] == "p"
    assert out21["submit_time"] == out21["end_time"] == "2025-09-29 14:05:22.119"


def test_failed_output_and_no_usage() -> None:
    task = succeeded("wan2.1-t2v-turbo")
    failed = Task(
        **{
            **task.__dict__,
            "status": TaskStatus.FAILED,
            "result": None,
            "error": TaskError("InternalError", "boom"),
        }
    )
    body = schemas.task_body(failed, request_id="r", video_url=None)
    assert body["output"]["code"] == "InternalError" and body["output"]["message"] == "boom"
    assert "usage" not in body and "video_url" not in body["output"]


# -- The door's models parse, validate and document at once. --


def test_the_documented_models_are_the_parsing_ones() -> None:
    from wanserve.api.dashscope.protocol import CreateTaskRequest
    from wanserve.api.openai.protocol import VideoCreateRequest
    from wanserve.api.openapi import REQUEST_MODELS

    assert CreateTaskRequest in REQUEST_MODELS and VideoCreateRequest in REQUEST_MODELS


@pytest.mark.parametrize(
    ("part", "name"),
    [("input", n) for n in CreateTaskInput.model_fields]
    + [("parameters", n) for n in CreateTaskParameters.model_fields],
)
def test_every_field_refuses_a_wrong_type_in_dashscope_words(part: str, name: str) -> None:
    """No field is left to pydantic's own messages: each has a reader that names it."""
    parts: dict[str, dict[str, object]] = {"input": {}, "parameters": {}}
    parts[part][name] = [1]
    with pytest.raises(InvalidParameter) as info:
        read_body({"model": "m", **parts})
    field = info.value.field or ""
    assert field == name or field.startswith(f"{name}[")  # a list names the item at fault
    assert name in info.value.message and "validation error" not in info.value.message


def test_a_request_field_is_declared_once() -> None:
    # Declared door fields are carried by name; a name the request does not have is a bug.
    with pytest.raises(TypeError):
        SynthesisRequest.of(model="m", media=(), values={"no_such_field": 1})
