"""The OpenAPI description of DashScope's answers (`wanserve.api.openapi` publishes it).

Bodies are rendered by `render.py`; these models say what it produces, and the schemathesis
test (tests/api/test_openapi.py) holds every response to them. They forbid extra fields, so an
undocumented field fails that test. The request bodies are documented by the models that parse
them (`protocol.py`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatusName = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"]
_CLOSED = ConfigDict(extra="forbid")


class CreatedOutput(BaseModel):
    model_config = _CLOSED
    task_id: str
    task_status: TaskStatusName


class CreatedResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    output: CreatedOutput


class TransformerBlocks(BaseModel):
    """Transformer block evaluations a SUCCEEDED task computed and a block cache skipped."""

    model_config = _CLOSED
    computed: int
    skipped: int


class TaskOutput(BaseModel):
    """A task as `GET /tasks/{id}` shows it; fields appear as the status makes them known."""

    model_config = _CLOSED
    task_id: str
    task_status: TaskStatusName
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    orig_prompt: str | None = None
    actual_prompt: str | None = None
    video_url: str | None = None
    progress: int | None = None
    step: int | None = None
    total_steps: int | None = None
    stage: Literal["loading", "denoising", "decoding", "encoding"] | None = None
    queue_position: int | None = None
    transformer_blocks: TransformerBlocks | None = None
    code: str | None = None
    message: str | None = None


class TaskUsage(BaseModel):
    """Billing facts of a SUCCEEDED task, in the fields of its model generation."""

    model_config = _CLOSED
    video_duration: int | None = None
    video_ratio: str | None = None
    video_count: int
    duration: float | None = None
    input_video_duration: int | None = None
    output_video_duration: int | None = None
    SR: int | None = None
    size: str | None = None
    audio: bool | None = None
    fps: int | None = Field(default=None, description="wan2.7, wan3.0")
    ratio: str | None = Field(default=None, description="wan2.7, wan3.0: the video's, reduced")


class TaskResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    output: TaskOutput
    usage: TaskUsage | None = None


class ListedTask(TaskOutput):
    model_name: str
    request_id: str


class TaskListResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    page_no: int
    page_size: int
    total: int
    tasks: list[ListedTask]


class CancelResponse(BaseModel):
    model_config = _CLOSED
    request_id: str


class UploadPolicyData(BaseModel):
    model_config = _CLOSED
    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    expire_in_seconds: int
    max_file_size_mb: int
    capacity_limit_mb: int
    oss_access_key_id: str
    x_oss_object_acl: str
    x_oss_forbid_overwrite: str


class UploadPolicyResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    data: UploadPolicyData


class ModelResolution(BaseModel):
    model_config = _CLOSED
    resolution: Literal["480P", "720P", "1080P"]
    pixels: int = Field(description="the tier's pixel budget (width x height)")
    sizes: list[str] = Field(
        description="the `size` values of this tier (text-to-video); empty for image-driven "
        "models, whose video keeps the input image's aspect ratio at the tier's pixel budget"
    )


class ModelRoute(BaseModel):
    """One input mix a model serves, and the open checkpoint that serves it."""

    model_config = _CLOSED
    kind: Literal["t2v", "i2v", "kf2v", "vace"]
    requires: list[str] = Field(description="input kinds it needs")
    accepts: list[str] = Field(description="input kinds it takes besides")
    checkpoint: str


class ModelEntry(BaseModel):
    """What one model name takes, as this deployment serves it."""

    model_config = _CLOSED
    model: str
    kind: Literal["t2v", "i2v", "kf2v", "vace"] = Field(
        description="t2v: text; i2v: a first frame (img_url); kf2v: first and last frames; "
        "vace: references, clips, source videos and masks (a model with routes takes its "
        "first route's kind here)"
    )
    generation: Literal["wan2.1", "wan2.2", "wan2.5", "wan2.6", "wan2.7", "wan3.0"]
    inputs: list[str] = Field(description="the `input` fields it reads")
    media: dict[str, int] = Field(
        description="media[] and reference models: the most of each input kind it takes"
    )
    media_total: int | None = Field(description="reference images and videos together")
    routes: list[ModelRoute] = Field(
        description="the input mixes it serves, in order; the first that fits is taken"
    )
    functions: list[str] = Field(description="VACE functions (`input.function`)")
    prompt_required: bool
    prompt_limit: int = Field(description="characters of prompt used; the rest is dropped")
    negative_prompt_limit: int
    sized_by: Literal["size", "resolution"] = Field(
        description="the parameter that chooses the frame: `size` (width*height) or "
        "`resolution` (a tier)"
    )
    resolutions: list[ModelResolution]
    default_size: str | None = Field(description="text-to-video only")
    default_resolution: str
    durations: list[int] = Field(description="allowed `duration` values, in seconds")
    default_duration: int
    auto_duration: bool = Field(description="`duration: -1` lets the model choose")
    ratios: list[str] = Field(description="`ratio` values (wan2.7-r2v, wan2.7-videoedit, wan3.0)")
    fps: int = Field(description="frame rate of the delivered video")
    steps: int = Field(description="denoising steps per pass on this server")
    seed_max: int
    parameters: list[str] = Field(description="the `parameters` it takes")
    shot_types: list[Literal["single", "multi"]]
    audio: bool = Field(description="takes `audio_url`; its video can carry a sound track")
    dubbing: bool = Field(description="this server can generate its sound track (`audio: true`)")
    multi_shot: bool = Field(description="this server can plan multi-shot videos for it")


class DeploymentFeatures(BaseModel):
    model_config = _CLOSED
    dubbing: bool
    prompt_extension: bool
    multi_shot: bool


class ModelsResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    features: DeploymentFeatures
    models: list[ModelEntry]


# The OSS-style form of the upload POST (the SDK sends the fields in this order).
UPLOAD_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["policy", "Signature", "key", "file"],
    "properties": {
        "OSSAccessKeyId": {"type": "string"},
        "Signature": {"type": "string"},
        "policy": {"type": "string"},
        "key": {"type": "string", "description": "<upload_dir>/<file name>"},
        "x-oss-object-acl": {"type": "string"},
        "x-oss-forbid-overwrite": {"type": "string"},
        "success_action_status": {"type": "string"},
        "x-oss-content-type": {"type": "string"},
        "file": {"type": "string", "format": "binary"},
    },
}
