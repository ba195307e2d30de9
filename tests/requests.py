"""Requests for tests, written as a client writes them: DashScope's field names and JSON values
(`img_url`, `size="832*480"`, `seed="42"`), read by the DashScope door's own models into the
typed request `build_spec` takes. A test of a rule then exercises the door and the spec as a
request does."""

from __future__ import annotations

import dataclasses
from typing import Any

from wanserve.api.dashscope.protocol import CreateTaskInput, read_body
from wanserve.request import SynthesisRequest


def dashscope_request(
    model: object, *, size_names_tier: bool = False, **fields: Any
) -> SynthesisRequest:
    """The request of a create body with `model` and `fields` (each put in `input` or in
    `parameters`, where DashScope puts it); `size_names_tier` as the OpenAI door sets it."""
    inp = {k: v for k, v in fields.items() if k in CreateTaskInput.model_fields}
    params = {k: v for k, v in fields.items() if k not in inp}
    request = read_body({"model": model, "input": inp, "parameters": params})
    return dataclasses.replace(request, size_names_tier=size_names_tier)
