"""Settings: built once (by the CLI or a test), validated, and passed down. Nothing else reads
the environment.

Every field can be set as `WANSERVE_<FIELD>` in the environment (nested mappings as JSON, e.g.
`WANSERVE_MODELS='{"wan2.1-t2v-turbo": {"checkpoint": "/models/Wan2.1-T2V-1.3B-Diffusers"}}'`);
command-line options override the environment.
"""

from __future__ import annotations

import os
import secrets
import time
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wanserve.catalog import Catalog, Kind, ModelOverride


class WeightsMode(StrEnum):
    AUTO = "auto"  # real checkpoints: a local diffusers directory or a hub id
    DUMMY = "dummy"  # tiny random components of the real architectures, built offline
    # The published architectures at full size with random weights, built in memory: for
    # timing on a host without the weights (bench/reference_job.py); videos are noise.
    RANDOM = "random"


class Role(StrEnum):
    EMBEDDED = "embedded"  # API and generation workers in one process
    API = "api"  # HTTP only; `wanserve worker` processes run the generations


class Settings(BaseSettings):
    # Errors never echo input values: they may hold secrets (keys, database passwords).
    model_config = SettingsConfigDict(
        env_prefix="WANSERVE_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    # Where the embedded defaults keep their state.
    data_dir: Path = Field(default=Path("data"), description="SQLite file, videos, secrets")
    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL; default: sqlite file in data_dir"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(
        default=None,
        description="absolute base URL clients reach this server at (for video_url); "
        "default: the URL of the request",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Engine.
    weights: WeightsMode = WeightsMode.AUTO
    models: dict[str, ModelOverride] = Field(default_factory=dict)
    steps: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="denoising steps for every model (default: each family's official count; "
        "4 in dummy mode)",
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    dtype: str = Field(
        default="auto",
        pattern="^(auto|bfloat16|float16|float32)$",
        description="transformer and text encoder precision (auto: bf16 on CUDA, fp32 on CPU)",
    )
    text_encoder_device: str = Field(
        default="auto",
        pattern="^(auto|cpu)$",
        description="cpu keeps the UMT5 text encoder off the GPU",
    )
    cpu_offload: bool = Field(
        default=False, description="diffusers model CPU offload, for GPUs too small for a model"
    )
    vae_tiling: bool = Field(default=False, description="decode the VAE in tiles to save memory")
    model_memory_gib: float | None = Field(
        default=None,
        gt=0,
        description="resident checkpoints may use this much memory; least recently used ones "
        "are unloaded beyond it (default: no limit)",
    )
    hf_cache_dir: Path | None = None
    allow_download: bool = Field(
        default=True, description="let auto mode fetch hub checkpoints missing from the cache"
    )
    workers: int = Field(default=1, ge=0, le=16, description="in-process generation threads")

    # Process model (docs/architecture.md): embedded, or API replicas plus `wanserve worker`s.
    role: Role = Field(
        default=Role.EMBEDDED,
        description="embedded: API + workers in one process; api: HTTP only (same as workers=0)",
    )
    broker_url: SecretStr | None = Field(
        default=None,
        description="Celery broker (redis://... or amqp://...): task ids travel through it, one "
        "queue per model; unset: workers claim straight from the task table",
    )
    worker_models: list[str] = Field(
        default_factory=list,
        description="models a `wanserve worker` serves, loads at start and takes tasks for "
        "(default: every model in the catalogue)",
    )
    broker_restore_seconds: float = Field(
        default=2.0,
        gt=0,
        description="how often a live worker puts back messages a dead worker held (Redis)",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        gt=0,
        description="on SIGTERM, how long to wait for the running task to reach its next step "
        "and be handed back before exiting anyway",
    )

    # Prompt extension (prompt_extend, multi-shot planning).
    prompt_extender: str = Field(
        default="none",
        pattern="^(none|openai|local)$",
        description="none | openai (any OpenAI-compatible chat endpoint) | local (transformers)",
    )
    prompt_extender_url: str | None = Field(
        default=None, description="base URL of the chat endpoint, e.g. http://127.0.0.1:8001/v1"
    )
    prompt_extender_model: str = "qwen-plus"
    prompt_extender_api_key: SecretStr | None = None
    prompt_extender_vision: bool = Field(
        default=False, description="the chat model accepts images (used for image-to-video)"
    )
    prompt_extender_path: Path | None = Field(
        default=None, description="directory of a local transformers causal language model"
    )
    prompt_extender_timeout: float = Field(default=30.0, gt=0)
    multi_shot_continuity: bool = Field(
        default=False,
        description="multi-shot: start each shot from the previous shot's last frame instead "
        "of cutting",
    )

    # Automatic dubbing (wan2.5/wan2.6 sound when no audio_url is sent).
    dubbing: bool = False
    dubbing_checkpoint: str = "stabilityai/stable-audio-open-1.0"
    dubbing_steps: int | None = Field(
        default=None, ge=1, le=1000, description="default 100; 4 in dummy mode"
    )

    # Task lifecycle.
    task_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    heartbeat_timeout_seconds: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=2, ge=1, le=10)
    task_timeout_seconds: float = Field(
        default=7200.0, gt=0, description="longest a generation may run before it is stopped"
    )
    janitor_interval_seconds: float = Field(default=30.0, gt=0)
    max_unfinished_per_key: int = Field(default=100, ge=1)
    max_queue: int = Field(default=1000, ge=1)
    cancel_running: bool = Field(
        default=True,
        description="let POST .../cancel stop RUNNING tasks (DashScope cancels PENDING only)",
    )

    # Requests and security.
    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=4096 * 4096, ge=256)
    max_audio_bytes: int = Field(default=15 * 1024 * 1024, ge=1024)
    depth_annotator: str | None = Field(
        default=None,
        description="a transformers depth model (local directory or hub id) that draws "
        "depth control videos: enables control_condition depth of the VACE model",
    )
    max_video_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1024, description="an input video (clips, VACE sources)"
    )
    max_video_seconds: float = Field(
        default=30.0, gt=0, le=600, description="an input video's length; longer is refused"
    )
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    upload_ttl_seconds: int = Field(default=48 * 3600, ge=60)
    upload_quota_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="live uploads one API key may hold"
    )
    fetch_allow_private: bool = Field(
        default=False,
        description="fetch input URLs on private networks (on-premise); metadata and "
        "link-local addresses stay refused",
    )
    fetch_allowed_hosts: list[str] = Field(
        default_factory=list, description="host names fetched even when they resolve privately"
    )
    fetch_connect_timeout: float = Field(default=5.0, gt=0)
    fetch_read_timeout: float = Field(default=15.0, gt=0)
    fetch_total_timeout: float = Field(default=60.0, gt=0)
    fetch_max_redirects: int = Field(default=3, ge=0, le=10)
    secret_key: SecretStr | None = Field(
        default=None, description="HMAC key for signed URLs; default: generated once in data_dir"
    )

    # Video encoding.
    x264_crf: int = Field(default=20, ge=0, le=51)
    x264_preset: str = "veryfast"

    # Throttling.
    rate_limit_per_second: float = Field(
        default=20.0,
        ge=0,
        description="requests per second one API key may make on average (0: no limit)",
    )
    rate_limit_burst: int = Field(
        default=40, ge=1, description="requests one API key may make at once before the rate"
    )
    auth_failure_limit: int = Field(
        default=10,
        ge=0,
        description="invalid API keys one client address may present per window before it "
        "is locked out (0: no lockout)",
    )
    auth_failure_window_seconds: float = Field(default=300.0, gt=0)
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis holding rate-limit state shared by every API replica, "
        "e.g. redis://host:6379/0 (default: this process's memory)",
    )

    # Storage.
    storage_url: str | None = Field(
        default=None,
        pattern=r"^s3://[^/]+(/.*)?$",
        description="s3://bucket/prefix for an S3-compatible bucket (the [s3] extra); "
        "default: files under data_dir",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint, for MinIO, R2, OSS...; default: AWS"
    )
    s3_region: str | None = Field(default=None, description="default: boto3's own choice")
    s3_addressing_style: str = Field(
        default="auto",
        pattern="^(auto|path|virtual)$",
        description="path for most MinIO setups, virtual for OSS",
    )
    min_free_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="free space data_dir must keep: tasks do not start and uploads are refused "
        "below it (0: no check)",
    )

    # OpenAI door (/v1/videos, docs/openai.md).
    openai_default_model: str = Field(
        default="wan2.1-t2v-turbo",
        description="text-to-video model a /v1/videos request without `model` is run on",
    )
    openai_default_image_model: str = Field(
        default="wan2.2-i2v-flash",
        description="image-to-video model a /v1/videos request without `model` but with an "
        "input_reference is run on",
    )
    openai_poll_after_ms: int = Field(
        default=2000,
        ge=100,
        le=60_000,
        description="openai-poll-after-ms sent with unfinished videos: how long the SDK's "
        "poll() waits between retrieves",
    )

    # Live events and `wanserve generate`.
    events_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="how often an open event stream reads its task's row (one small SELECT)",
    )
    events_keepalive_seconds: float = Field(
        default=15.0,
        gt=0,
        le=15,
        description="longest an event stream stays silent before a `: keep-alive` comment",
    )
    events_max_streams_per_key: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="event streams one API key may hold open at once, per API process (429 beyond)",
    )
    events_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="an event stream is closed after this long; clients reconnect with "
        "Last-Event-ID and resume",
    )
    api_key: SecretStr | None = Field(
        default=None,
        # The SDK's own variable works too, so a shell set up for DashScope needs nothing new.
        validation_alias=AliasChoices("api_key", "WANSERVE_API_KEY", "DASHSCOPE_API_KEY"),
        description="API key `wanserve generate --server` sends (env WANSERVE_API_KEY or "
        "DASHSCOPE_API_KEY)",
    )

    # Webhooks and operations.
    webhook_backoff_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0],
        min_length=1,
        description="wait after the 1st, 2nd, ... failed callback attempt; the last value "
        "repeats for later attempts",
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=50, description="callback attempts before a delivery is abandoned"
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="longest one callback attempt may take"
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="how often the deliverer looks for callbacks due"
    )
    webhook_concurrency: int = Field(
        default=4, ge=1, le=64, description="callbacks one API process sends at once"
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="`wanserve worker`: serve /metrics, /health and /ready on this port "
        "(default: off; API servers serve them on their own port)",
    )

    # API hot path.
    api_key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="how long an API key found active is trusted from memory; a key revoked "
        "by another process (the CLI, another replica) still works here for at most this "
        "long (0: read the database on every request)",
    )
    database_pool_size: int = Field(
        default=20,
        ge=1,
        le=200,
        description="database connections each process keeps open (HTTP requests run in a "
        "pool of 40 threads); up to as many again are opened under bursts",
    )

    # LoRA adapters.
    lora_dir: Path | None = Field(
        default=None,
        description="directory of LoRA adapters requests and models may name "
        "(<name>.safetensors or a diffusers LoRA directory <name>/); default: none, or the "
        "dummy adapters with dummy weights",
    )
    lora_cache_size: int = Field(
        default=8,
        ge=1,
        le=64,
        description="adapters kept loaded per resident checkpoint; the least recently used "
        "is unloaded beyond it",
    )

    # Fleet dispatch: re-sending ids whose broker message may be missing (tasks/janitor.py).
    dispatch_grace_seconds: float = Field(
        default=10.0,
        gt=0,
        description="with a broker: a PENDING task whose id was never sent (the send failed, "
        "or its API process died) is sent by the janitor once it has waited this long",
    )
    redispatch_after_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="with a broker: a PENDING task whose id was sent this long ago is sent "
        "again, in case the broker lost it (each waiting task gets one extra message per period)",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        # Operators write WANSERVE_LOG_LEVEL=DEBUG as often as debug; logging takes either.
        return value.lower() if isinstance(value, str) else value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: dict[str, ModelOverride]) -> dict[str, ModelOverride]:
        # An override for a misspelt model would otherwise surface only when the app is built.
        Catalog.build(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.heartbeat_timeout_seconds <= self.heartbeat_seconds:
            raise ValueError("heartbeat_timeout_seconds must exceed heartbeat_seconds")
        if self.prompt_extender == "openai" and not self.prompt_extender_url:
            raise ValueError("prompt_extender=openai needs prompt_extender_url")
        if self.prompt_extender == "local" and self.prompt_extender_path is None:
            raise ValueError("prompt_extender=local needs prompt_extender_path")
        if any(delay < 0 for delay in self.webhook_backoff_seconds):
            raise ValueError("webhook_backoff_seconds must not be negative")
        if self.broker_url is not None and not self.broker_url.get_secret_value().startswith(
            ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")
        ):
            raise ValueError("broker_url must be a redis://, rediss:// or amqp:// URL")
        return self

    @model_validator(mode="after")
    def _openai_defaults(self) -> Settings:
        # Refused at start-up rather than on the first request that relies on the default.
        catalog = Catalog.build()
        for name, value, kinds in (
            ("openai_default_model", self.openai_default_model, (Kind.TEXT_TO_VIDEO,)),
            (
                "openai_default_image_model",
                self.openai_default_image_model,
                (Kind.IMAGE_TO_VIDEO,),
            ),
        ):
            if value not in catalog.names():
                raise ValueError(f"{name} {value!r} is not a model of the catalogue")
            if catalog.get(value).kind not in kinds:
                raise ValueError(f"{name} {value!r} is not a {kinds[0].value} model")
        return self

    @property
    def api_only(self) -> bool:
        """This server runs no generation: `wanserve worker` processes do."""
        return self.role is Role.API or self.workers == 0

    @property
    def broker(self) -> str | None:
        return self.broker_url.get_secret_value() if self.broker_url is not None else None

    @property
    def effective_dubbing_steps(self) -> int:
        if self.dubbing_steps is not None:
            return self.dubbing_steps
        return 4 if self.weights is WeightsMode.DUMMY else 100

    @property
    def effective_lora_dir(self) -> Path | None:
        """Where adapters are looked up: the configured directory, or with dummy weights the
        one the worker fills with tiny dummy adapters."""
        if self.lora_dir is not None:
            return self.lora_dir.expanduser().resolve()
        if self.weights is WeightsMode.DUMMY:
            return self.data_dir / "dummy-weights" / "loras"
        return None

    @property
    def effective_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'wanserve.db'}"

    @property
    def effective_steps(self) -> int | None:
        """Step count applied to every model unless a per-model override says otherwise."""
        if self.steps is not None:
            return self.steps
        # Random weights draw noise at any step count; a short schedule keeps dummy mode quick
        # while still running the whole multistep sampler (and both Wan2.2 experts).
        return 4 if self.weights is WeightsMode.DUMMY else None

    def load_secret_key(self) -> bytes:
        """The signing key: configured, or created once (0600) under data_dir and reused."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "secret.key"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: of two processes starting at once, one creates the key, both read it.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        for _ in range(50):  # the creator may not have written it yet
            if key := path.read_text().strip():
                return key.encode()
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty; delete it to have a new signing key made")
