"""`wanserve generate`: one video from the command line, embedded or through a server.

Embedded (the default) builds the same components as `wanserve serve` in this process (a
temporary data directory unless one is configured), submits through the same `TaskService`
(so `build_spec` checks the options exactly as it checks an API request), runs the task on a
generation thread and copies the MP4 out. With `--server` it drives a remote wanserve through
its HTTP API instead: local files go through the upload flow, progress comes from the task's
event stream, and the video is downloaded from its URL.

Exit status: 0 written; 1 the task failed (its code and message are printed) or the server
refused for another reason; 2 usage or validation error; 130 interrupted (the task is
canceled first).
"""

from __future__ import annotations

import mimetypes
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from wanserve import client_wire as wire
from wanserve import request as read
from wanserve.config import Settings
from wanserve.errors import InvalidApiKey, InvalidParameter, WanserveError
from wanserve.request import (
    Edit,
    Function,
    Inline,
    Media,
    MediaKind,
    MediaSource,
    Medium,
    SynthesisRequest,
)
from wanserve.spec import media_scheme
from wanserve.tasks.models import Progress, TaskError, TaskOutcome, TaskStage, TaskStatus

if TYPE_CHECKING:
    from wanserve.client import RemoteServer
    from wanserve.compose.embedded import Components

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
POLL_SECONDS = 0.25  # embedded: how often the store is read for progress
CANCEL_WAIT_SECONDS = 60.0  # after Ctrl-C: how long to wait for the task to end CANCELED
CLI_KEY_NAME = "wanserve generate"
_RECONNECTS = 5  # consecutive failed event-stream reconnects before giving up


@dataclass(frozen=True, kw_only=True)
class GenerateOptions:
    prompt: str
    output: Path
    model: str | None = None
    negative_prompt: str | None = None
    image: str | None = None  # a local path or an http(s)/oss/data URL
    last_frame: str | None = None
    audio: str | None = None
    clip: str | None = None  # a video to continue
    video: str | None = None  # the source video of an edit (VACE)
    mask: str | None = None  # an image, or a video (by its file type): white edits
    ref_images: tuple[str, ...] = ()
    function: str | None = None  # a VACE function
    ratio: str | None = None
    obj_or_bg: str | None = None  # "obj,bg": one per reference image
    control_condition: str | None = None
    strength: float | None = None
    mask_type: str | None = None
    expand_ratio: float | None = None
    expand_mode: str | None = None
    mask_frame_id: int | None = None
    scale: str | None = None  # "top,bottom,left,right"
    size: str | None = None
    resolution: str | None = None
    duration: int | None = None
    seed: int | None = None
    prompt_extend: bool | None = None
    watermark: bool | None = None
    shot_type: str | None = None
    generate_audio: bool | None = None
    server: str | None = None


class UsageError(Exception):
    """A mistake in the command line itself (a missing file, a missing key)."""


@dataclass(frozen=True)
class Update:
    """What the progress display shows."""

    status: TaskStatus
    queue_position: int | None
    progress: Progress | None


class Display(Protocol):
    def show(self, update: Update) -> None: ...
    def close(self) -> None: ...


def default_model(options: GenerateOptions) -> str:
    if options.function is not None or options.video is not None or options.mask is not None:
        return "wan2.1-vace-plus"
    if options.clip is not None:
        return "wan2.7-i2v"
    if options.ref_images:
        return "wan2.6-r2v"
    if options.last_frame is not None:
        return "wanx2.1-kf2v-plus"
    if options.image is not None:
        return "wanx2.1-i2v-turbo"
    return "wan2.1-t2v-turbo"


Reference = Callable[[str, str, MediaKind], MediaSource]


def build_request(
    options: GenerateOptions, *, model: str, reference: Reference
) -> SynthesisRequest:
    """The request the options describe (the command line is this door's wire format), its
    inputs named and ordered as the server reads `client_wire.create_body` back (so the
    embedded and the remote run submit the same request). `reference(value, field, kind)`
    turns a local path into something the server reads (its bytes embedded, an uploaded file
    remotely). Values are read as every door reads them."""
    model = read.model_name(model)
    given = _inputs(options)
    media = tuple(
        Media(given[i][0], reference(given[i][1], name, given[i][0]), name)
        for i, name in wire.placement(model, [kind for kind, _ in given])
    )
    size = options.size.replace("x", "*").replace("X", "*") if options.size else None
    return SynthesisRequest(
        model=model,
        prompt=read.text(options.prompt, "prompt"),
        negative_prompt=read.text(options.negative_prompt, "negative_prompt"),
        media=media,
        size=read.size(size),
        resolution=options.resolution,
        duration=options.duration,
        seed=read.seed(options.seed),
        prompt_extend=options.prompt_extend,
        watermark=options.watermark,
        shot_type=read.shot_type(options.shot_type),
        audio=options.generate_audio,
        ratio=read.ratio(options.ratio),
        edit=_edit(options),
    )


def _inputs(options: GenerateOptions) -> list[tuple[MediaKind, str]]:
    mask = MediaKind.MASK_IMAGE
    if options.mask is not None and _is_video(options.mask):
        mask = MediaKind.MASK_VIDEO
    given = [
        (MediaKind.FIRST_FRAME, options.image),
        (MediaKind.LAST_FRAME, options.last_frame),
        (MediaKind.DRIVING_AUDIO, options.audio),
        (MediaKind.FIRST_CLIP, options.clip),
        (MediaKind.VIDEO, options.video),
        (mask, options.mask),
        *((MediaKind.REFERENCE_IMAGE, path) for path in options.ref_images),
    ]
    return [(kind, value) for kind, value in given if value is not None]


def _is_video(value: str) -> bool:
    """A video by its name (or a data URI's type): .mp4, .mov, ..."""
    return (mimetypes.guess_type(value)[0] or "").startswith("video/")


_SCALES = ("top_scale", "bottom_scale", "left_scale", "right_scale")


def _edit(options: GenerateOptions) -> Edit:
    """The VACE function and parameters, read as the DashScope door reads them."""
    function = read.function(options.function)
    if options.function is not None and function is None:
        names = ", ".join(f.value for f in Function)
        raise InvalidParameter(
            f"function {options.function!r} must be one of {names}.", field="function"
        )
    roles = None
    if options.obj_or_bg is not None:
        roles = read.obj_or_bg([part.strip() for part in options.obj_or_bg.split(",")])
    top, bottom, left, right = _scales(options.scale)
    return Edit(
        function=function,
        obj_or_bg=roles,
        control_condition=read.choice(
            options.control_condition, "control_condition", read.CONTROL_CONDITIONS
        ),
        strength=read.number_in(options.strength, "strength", 0, 1),
        mask_type=read.choice(options.mask_type, "mask_type", read.MASK_TYPES),
        expand_ratio=read.number_in(options.expand_ratio, "expand_ratio", 0, 1),
        expand_mode=read.choice(options.expand_mode, "expand_mode", read.EXPAND_MODES),
        mask_frame_id=read.mask_frame_id(options.mask_frame_id),
        top_scale=top,
        bottom_scale=bottom,
        left_scale=left,
        right_scale=right,
    )


def _scales(value: str | None) -> list[float | None]:
    """`--scale top,bottom,left,right` (video_outpainting), each from 1 to 2."""
    if value is None:
        return [None] * len(_SCALES)
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != len(_SCALES):
        raise InvalidParameter(
            f"scale {value!r} must be four numbers, top,bottom,left,right, each from 1 to 2 "
            "(1: that side is not extended).",
            field="scale",
        )
    return [read.number_in(n, name, 1, 2) for name, n in zip(_SCALES, numbers, strict=True)]


def local_file(value: str, field: str, *, max_bytes: int) -> Path | None:
    """The local file `value` names, or None when it is a URL the server reads itself."""
    if media_scheme(value) is not None or ("://" in value and not value.startswith("file://")):
        return None  # a URL: the server reads it (or refuses its scheme) itself
    path = Path(value.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise UsageError(f"{field}: no such file: {path}")
    if path.stat().st_size > max_bytes:
        raise UsageError(f"{field}: {path} is larger than {max_bytes // (1024 * 1024)} MB")
    return path


def _sent(value: str, field: str) -> MediaSource:
    source = read.media_source(value, field)
    assert source is not None  # a given option is never empty
    return source


def inline(path: Path) -> Inline:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Inline(data=path.read_bytes(), media_type=kind)


def run(options: GenerateOptions, settings: Settings, *, err: TextIO = sys.stderr) -> int:
    if not options.output.parent.is_dir():
        return _say(err, f"wanserve: no such directory for -o: {options.output.parent}", 2)
    display = make_display(err)
    try:
        if options.server is not None:
            return _remote(options, settings, display=display, err=err)
        return _embedded(options, settings, display=display, err=err)
    except UsageError as exc:
        return _say(err, f"wanserve: {exc}", EXIT_USAGE)
    except KeyboardInterrupt:  # before any task existed (after, each path cancels its own)
        return _say(err, "wanserve: interrupted", EXIT_INTERRUPTED)
    finally:
        display.close()


# -- embedded ------------------------------------------------------------------------------


def _embedded(
    options: GenerateOptions, settings: Settings, *, display: Display, err: TextIO
) -> int:
    from wanserve.compose.embedded import build_components

    with ExitStack() as stack:
        if "data_dir" not in settings.model_fields_set:
            # Nothing configured: state of this one run only (videos, SQLite, dummy weights).
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="wanserve-"))
            settings = settings.model_copy(update={"data_dir": Path(scratch)})
        settings = settings.model_copy(update={"workers": 1})
        model = options.model or default_model(options)

        limits = {
            Medium.IMAGE: settings.max_image_bytes,
            Medium.AUDIO: settings.max_audio_bytes,
            Medium.VIDEO: settings.max_video_bytes,
        }

        def reference(value: str, field: str, kind: MediaKind) -> MediaSource:
            path = local_file(value, field, max_bytes=limits[kind.medium])
            return _sent(value, field) if path is None else inline(path)

        try:
            request = build_request(options, model=model, reference=reference)
        except WanserveError as exc:
            return _refused(err, TaskError(exc.code, exc.message), usage=_is_usage(exc))
        try:
            components = build_components(settings)
        except ValueError as exc:
            return _say(err, f"wanserve: invalid configuration: {exc}", EXIT_USAGE)
        services = components.services
        key = _cli_key(components)
        try:
            task = services.tasks.submit(request, api_key_id=key, request_id=str(uuid.uuid4()))
        except WanserveError as exc:
            return _refused(err, TaskError(exc.code, exc.message), usage=_is_usage(exc))
        components.loop.start()
        try:
            outcome = _watch_embedded(components, task.id, key, display=display)
        except KeyboardInterrupt:
            display.close()
            err.write("wanserve: interrupted; canceling the task\n")
            _cancel_embedded(components, task.id, key)
            return EXIT_INTERRUPTED
        finally:
            components.loop.stop(timeout=settings.shutdown_grace_seconds)
        display.close()
        if outcome.status is not TaskStatus.SUCCEEDED:
            return _task_failed(err, outcome)
        done = services.tasks.get(task.id, api_key_id=key)
        assert done is not None and done.result is not None
        _write(options.output, services.storage.read(done.result.video_key))
        return _written(options.output, task.id, err=err)


def _cli_key(components: Components) -> str:
    """The id of the key tasks made here belong to (its secret is never used, so never
    kept): one per data directory, reused across runs."""
    keys = components.services.keys
    found = [k for k in keys.find(CLI_KEY_NAME) if k.active]
    if found:
        return found[0].id
    return keys.create(CLI_KEY_NAME)[0].id


def _watch_embedded(
    components: Components, task_id: str, key: str, *, display: Display
) -> TaskOutcome:
    tasks = components.services.tasks
    while True:
        state = tasks.watch(task_id, key)
        assert state is not None  # our own task, not expired while we wait
        if state.status.is_terminal:
            task = tasks.get(task_id, api_key_id=key)
            assert task is not None
            return TaskOutcome(
                task_id=task_id, status=task.status, video_url=None, error=task.error
            )
        display.show(Update(state.status, state.queue_position, state.progress))
        time.sleep(POLL_SECONDS)


def _cancel_embedded(components: Components, task_id: str, key: str) -> None:
    tasks = components.services.tasks
    try:
        tasks.cancel(task_id, api_key_id=key)
    except WanserveError:
        return  # it ended meanwhile
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline:
        state = tasks.watch(task_id, key)
        if state is None or state.status.is_terminal:
            return
        time.sleep(POLL_SECONDS)


# -- remote --------------------------------------------------------------------------------


def _remote(options: GenerateOptions, settings: Settings, *, display: Display, err: TextIO) -> int:
    import httpx

    from wanserve.client import Refused, RemoteServer

    if settings.api_key is None:
        raise UsageError(
            "--server needs an API key: --api-key, WANSERVE_API_KEY or DASHSCOPE_API_KEY"
        )
    assert options.server is not None
    server = RemoteServer(options.server, api_key=settings.api_key.get_secret_value())
    model = options.model or default_model(options)
    task_id: str | None = None
    try:

        def reference(value: str, field: str, kind: MediaKind) -> MediaSource:
            audio = kind.medium is Medium.AUDIO
            limit = settings.max_audio_bytes if audio else settings.max_upload_bytes
            path = local_file(value, field, max_bytes=limit)
            return _sent(value if path is None else server.upload(path, model=model), field)

        try:
            request = build_request(options, model=model, reference=reference)
        except WanserveError as exc:
            return _refused(err, TaskError(exc.code, exc.message), usage=_is_usage(exc))
        task_id = server.create(request)
        outcome = _watch_remote(server, task_id, display=display)
        display.close()
        if outcome.status is not TaskStatus.SUCCEEDED:
            return _task_failed(err, outcome)
        if outcome.video_url is None:
            return _say(err, f"wanserve: task {task_id} succeeded without a video URL", 1)
        server.download(outcome.video_url, options.output)
        return _written(options.output, task_id, err=err)
    except Refused as exc:
        display.close()
        return _refused(err, exc.error, usage=exc.status in (400, 401, 403, 413, 415))
    except KeyboardInterrupt:
        display.close()
        if task_id is not None:
            err.write("wanserve: interrupted; canceling the task\n")
            _cancel_remote(server, task_id)
        return EXIT_INTERRUPTED
    except _Unreachable as exc:
        display.close()
        return _say(err, f"wanserve: {exc}", EXIT_FAILED)
    except httpx.HTTPError as exc:
        display.close()
        return _say(err, f"wanserve: cannot reach {options.server}: {exc}", EXIT_FAILED)
    finally:
        server.close()


class _Unreachable(Exception):
    pass


def _watch_remote(server: RemoteServer, task_id: str, *, display: Display) -> TaskOutcome:
    """Follow the event stream to the done event, resuming after dropped connections."""
    import httpx

    last_id: str | None = None
    status, position, progress = TaskStatus.PENDING, None, None
    failures = 0
    while True:
        try:
            for event in server.events(task_id, last_id=last_id):
                failures = 0
                last_id = event.id or last_id
                if event.kind == "done":
                    return wire.read_outcome(event.data)
                if event.kind == "status":
                    known, position = wire.read_status_data(event.data)
                    status = known or status
                elif event.kind == "progress":
                    progress = wire.read_progress_data(event.data)
                display.show(Update(status, position, progress))
        except httpx.TransportError as exc:
            failures += 1
            if failures > _RECONNECTS:
                raise _Unreachable(f"lost the server's event stream: {exc}") from None
            time.sleep(min(2.0 * failures, 10.0))
            continue
        # Closed without done (the server shut down, or a stream's time limit): the task may
        # have ended meanwhile; ask, then resume the stream.
        outcome = server.get(task_id)
        if outcome.status is None or outcome.status.is_terminal:
            return outcome


def _cancel_remote(server: RemoteServer, task_id: str) -> None:
    from wanserve.client import Refused

    try:
        server.cancel(task_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            outcome = server.get(task_id)
            if outcome.status is None or outcome.status.is_terminal:
                return
            time.sleep(POLL_SECONDS)
    except (Refused, OSError):
        return  # best effort: the process is exiting anyway


# -- output --------------------------------------------------------------------------------


def _write(target: Path, data: bytes) -> None:
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    partial.replace(target)


def _written(output: Path, task_id: str, *, err: TextIO) -> int:
    err.write(f"wanserve: task {task_id} succeeded\n")
    sys.stdout.write(f"{output}\n")  # alone on stdout, for scripts
    sys.stdout.flush()
    return EXIT_OK


def _say(err: TextIO, line: str, code: int) -> int:
    err.write(line + "\n")
    err.flush()
    return code


def _refused(err: TextIO, error: TaskError, *, usage: bool) -> int:
    return _say(err, f"wanserve: {error.code}: {error.message}", EXIT_USAGE if usage else 1)


def _task_failed(err: TextIO, outcome: TaskOutcome) -> int:
    if outcome.status is None:
        return _say(err, f"wanserve: task {outcome.task_id} is unknown to the server", 1)
    if outcome.error is not None:
        return _say(
            err,
            f"wanserve: task {outcome.task_id} {outcome.status.value}: "
            f"{outcome.error.code}: {outcome.error.message}",
            EXIT_FAILED,
        )
    return _say(err, f"wanserve: task {outcome.task_id} {outcome.status.value}", EXIT_FAILED)


def _is_usage(exc: WanserveError) -> bool:
    return isinstance(exc, InvalidParameter | InvalidApiKey)


# -- progress display ----------------------------------------------------------------------


def describe(update: Update) -> str:
    p = update.progress
    if update.status is TaskStatus.PENDING or p is None or p.stage is TaskStage.QUEUED:
        ahead = update.queue_position
        return "queued" if not ahead else f"queued ({ahead} ahead)"
    if p.stage is TaskStage.LOADING:
        return "loading model"
    if p.stage is TaskStage.DENOISING:
        return f"denoising step {p.step} of {p.total_steps}"
    return p.stage.value


def make_display(err: TextIO) -> Display:
    if err.isatty():
        return RichDisplay(err)
    return PlainDisplay(err)


class PlainDisplay:
    """One line per change, no control characters: for logs, pipes and CI."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._last = ""

    def show(self, update: Update) -> None:
        percent = update.progress.percent if update.progress is not None else 0
        line = f"wanserve: {describe(update)} ({percent}%)"
        if line != self._last:
            self._err.write(line + "\n")
            self._err.flush()
            self._last = line

    def close(self) -> None:
        return None


class RichDisplay:
    """A rich progress bar with the stage and an ETA, on a terminal."""

    def __init__(self, err: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=err),
            transient=False,
        )
        self._task = self._bar.add_task("queued", total=100)
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    def show(self, update: Update) -> None:
        with self._lock:
            if self._closed:
                return
            if not self._started:
                self._bar.start()
                self._started = True
            percent = update.progress.percent if update.progress is not None else 0
            self._bar.update(self._task, description=describe(update), completed=percent)

    def close(self) -> None:
        with self._lock:
            if self._started and not self._closed:
                self._bar.stop()
            self._closed = True
