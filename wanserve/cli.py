"""The `wanserve` command: serve, run a worker, generate one video, manage API keys, inspect
models, migrate.

Every option named after a setting can also come from the environment as WANSERVE_<NAME> (for
example WANSERVE_DATA_DIR, WANSERVE_WEIGHTS); an option given on the command line wins. The
arguments of `keys` (`--name`, `KEY_ID`) are not settings: they come from the command line only.

A configuration the process cannot start with is reported as one line on stderr that names the
setting, `wanserve: error: WANSERVE_<NAME>: ...`, the way argparse reports a bad option: exit
status 2 when the configuration itself is wrong, 1 when it is fine but its database cannot be
reached. Never a traceback, and never a value: values may be secrets.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from wanserve import __version__, text
from wanserve.config import Role, Settings, WeightsMode
from wanserve.request import (
    ADAPTIVE,
    CONTROL_CONDITIONS,
    EXPAND_MODES,
    MASK_TYPES,
    RATIOS,
    Function,
    MediaKind,
)

if TYPE_CHECKING:
    from wanserve.catalog import ModelCard

EPILOG = (
    "Every option named after a setting (--data-dir, --database-url, and the options of serve, "
    "worker and models) can also be set as WANSERVE_<OPTION> in the environment, e.g. "
    "WANSERVE_DATA_DIR; the command line wins. The arguments of `keys` (--name, --admin, "
    "KEY_ID), of `usage` (--key, --since, --until, --json) and the request of `generate` "
    "(PROMPT, -o, --model, --size, --resolution, --ratio, --duration, --seed, --image, "
    "--last-frame, --audio, --clip, --video, --mask, --ref-image, --function, --obj-or-bg, "
    "--control-condition, --strength, --mask-type, --expand-ratio, --expand-mode, "
    "--mask-frame-id, --scale, --negative-prompt, --prompt-extend, --watermark, --shot-type, "
    "--generate-audio, --server) are command-line only. "
    "See docs/configuration.md."
)


class ConfigError(Exception):
    """A configuration this process cannot start with, worded for the operator (one line,
    naming the setting, never echoing a value)."""

    def __init__(self, message: str, *, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="state directory (SQLite file, videos) [env WANSERVE_DATA_DIR; default ./data]",
    )
    p.add_argument(
        "--database-url",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
        "[env WANSERVE_DATABASE_URL; default: SQLite in the data dir]",
    )


def _catalog_options(p: argparse.ArgumentParser) -> None:
    """Options that change the catalogue: `serve` runs with them, `models` shows their effect."""
    p.add_argument(
        "--weights",
        choices=[m.value for m in WeightsMode],
        help="auto: real checkpoints (local directory or hub id); dummy: tiny random "
        "models of the real architectures, built offline; random: the published "
        "architectures at full size with random weights, for timing [default auto]",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="denoising steps for every model [default: each "
        "family's official count; 4 with --weights dummy]",
    )


def _engine_options(p: argparse.ArgumentParser) -> None:
    _catalog_options(p)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N [default auto]")
    p.add_argument(
        "--dtype",
        choices=["auto", "bfloat16", "float16", "float32"],
        help="transformer precision [default auto: bf16 on CUDA, fp32 on CPU]",
    )
    p.add_argument(
        "--text-encoder-device", choices=["auto", "cpu"], help="cpu keeps UMT5 off the GPU"
    )
    p.add_argument(
        "--cpu-offload",
        action=argparse.BooleanOptionalAction,
        help="move each model to the GPU only while it runs (small GPUs)",
    )
    p.add_argument(
        "--vae-tiling", action=argparse.BooleanOptionalAction, help="decode the VAE in tiles"
    )
    p.add_argument(
        "--model-memory-gib",
        type=float,
        help="memory budget for resident checkpoints; least recently used ones are unloaded",
    )


def _broker_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker-url",
        help="Celery broker, redis://host:6379/0 or amqp://user:pass@host// (needs the "
        "[celery] extra); unset: workers claim tasks straight from the database "
        "[env WANSERVE_BROKER_URL]",
    )


def _shutdown_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shutdown-grace-seconds",
        type=float,
        help="on SIGTERM, wait this long for the running task to reach its next step and go "
        "back to the queue (a second signal exits at once) [default 30]",
    )


def _models_list(value: str) -> list[str]:
    return [m.strip() for m in value.split(",") if m.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wanserve",
        description="Self-hosted DashScope-compatible Wan video synthesis service.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"wanserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the API server (with in-process workers unless --workers 0 / --role api)",
        argument_default=argparse.SUPPRESS,
    )
    serve.add_argument("--host", help="interface to bind [default 127.0.0.1]")
    serve.add_argument("--port", type=int, help="port to bind [default 8000]")
    _store_options(serve)
    _engine_options(serve)
    serve.add_argument(
        "--workers",
        type=int,
        help="generation threads in this process [default 1; 0 = API only, like --role api]",
    )
    serve.add_argument(
        "--role",
        choices=[r.value for r in Role],
        help="embedded: API and generation in this process; api: HTTP only, tasks run in "
        "`wanserve worker` processes [default embedded]",
    )
    _broker_option(serve)
    serve.add_argument(
        "--public-url", help="base URL clients use to reach this server, for video_url links"
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    _shutdown_option(serve)
    serve.add_argument(
        "--cancel-running",
        action=argparse.BooleanOptionalAction,
        help="let cancel stop RUNNING tasks, not only PENDING ones [default on]",
    )

    worker = sub.add_parser(
        "worker",
        help="run a generation worker: load models, claim and run their tasks",
        description="A generation worker for an API started with --workers 0: loads the "
        "models it serves at start, then claims their tasks (from the broker's per-model "
        "queues with --broker-url, else straight from the database), one at a time. SIGTERM "
        "stops the running task at its next step and hands it back to the queue; a second "
        "signal exits at once.",
        argument_default=argparse.SUPPRESS,
    )
    worker.add_argument(
        "--models",
        dest="worker_models",
        type=_models_list,
        metavar="MODEL[,MODEL...]",
        help="models to serve, e.g. wan2.1-t2v-turbo,wan2.2-i2v-plus "
        "[env WANSERVE_WORKER_MODELS as a JSON list; default: every model]",
    )
    _store_options(worker)
    _engine_options(worker)
    _broker_option(worker)
    worker.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    _shutdown_option(worker)
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve /metrics (Prometheus), /health and /ready on this port, on --host's "
        "interface [env WANSERVE_METRICS_PORT; default off]",
    )
    worker.add_argument("--host", help="interface for --metrics-port [default 127.0.0.1]")

    _generate_parser(sub)

    keys = sub.add_parser(
        "keys", help="create, list and revoke API keys; show a key's webhook signing secret"
    )
    key_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_sub.add_parser(
        "create",
        help="create a key; prints its webhook signing secret, then the key alone on the last line",
        argument_default=argparse.SUPPRESS,
    )
    create.add_argument(
        "--name", default="", type=_key_name, help="a label to recognise the key by"
    )
    create.add_argument(
        "--admin",
        action="store_true",
        default=False,
        help="let the key read every key's usage (GET /api/v1/admin/usage)",
    )
    _store_options(create)
    listing = key_sub.add_parser(
        "list", help="list keys (never their secrets)", argument_default=argparse.SUPPRESS
    )
    _store_options(listing)
    revoke = key_sub.add_parser(
        "revoke", help="revoke a key by its id", argument_default=argparse.SUPPRESS
    )
    revoke.add_argument(
        "key_id", type=_key_id, help="the key's id, as `keys list` shows it (key_...)"
    )
    _store_options(revoke)
    webhook = key_sub.add_parser(
        "webhook-secret",
        help="print the secret that signs a key's webhooks (whsec_...; derived from the "
        "server's secret_key, so run it with the server's WANSERVE_SECRET_KEY or data dir)",
        argument_default=argparse.SUPPRESS,
    )
    webhook.add_argument(
        "key_id", type=_key_id, help="the key's id, as `keys list` shows it (key_...)"
    )
    _store_options(webhook)

    models = sub.add_parser(
        "models",
        help="list the model catalogue as this deployment sees it: WANSERVE_MODELS overrides, "
        "--weights and --steps applied",
        argument_default=argparse.SUPPRESS,
    )
    _store_options(models)
    _catalog_options(models)

    usage = sub.add_parser(
        "usage",
        help="tasks and seconds of video per key, model and UTC day",
        argument_default=argparse.SUPPRESS,
    )
    usage.add_argument("--key", help="only this key (its id, or every key with this name)")
    usage.add_argument("--since", help="first UTC day, YYYY-MM-DD (inclusive)")
    usage.add_argument("--until", help="last UTC day, YYYY-MM-DD (inclusive)")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _store_options(usage)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    _store_options(
        db_sub.add_parser(
            "upgrade", help="apply schema migrations", argument_default=argparse.SUPPRESS
        )
    )
    return parser


def _generate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser(
        "generate",
        help="make one video: embedded (no server needed) or through --server",
        description="Make one video and write it as MP4. Without --server, the model runs in "
        "this process (a temporary data directory unless --data-dir or WANSERVE_DATA_DIR is "
        "set); with --server, a wanserve server makes it. Options are checked by the same "
        "rules as the API. Exit status: 0 written, 1 the task failed, 2 usage or validation "
        "error, 130 interrupted (Ctrl-C cancels the task first).",
        argument_default=argparse.SUPPRESS,
    )
    gen.add_argument("prompt", help="what the video shows")
    gen.add_argument("-o", "--output", type=Path, required=True, help="the MP4 file to write")
    gen.add_argument(
        "--model",
        help="model name, as `wanserve models` lists [default wan2.1-t2v-turbo; "
        "wanx2.1-i2v-turbo with --image; wanx2.1-kf2v-plus with --last-frame; wan2.6-r2v "
        "with --ref-image; wan2.7-i2v with --clip; wan2.1-vace-plus with --function, --video "
        "or --mask]",
    )
    gen.add_argument("--negative-prompt", help="what the video should not show")
    inputs = gen.add_argument_group(
        "inputs",
        "Each a local file (sent inline embedded, uploaded with --server) or an http(s), "
        "oss:// or data: URL. They go in input.media for the wan2.7 and wan3.0 models, in "
        "the flat *_url fields and reference lists for the others.",
    )
    inputs.add_argument(
        "--image", metavar="PATH|URL", help="first frame (image-to-video, key frames)"
    )
    inputs.add_argument("--last-frame", metavar="PATH|URL", help="last frame (key frames)")
    inputs.add_argument(
        "--audio",
        metavar="PATH|URL",
        help="sound track to mux (driving audio: wan2.5, wan2.6, wan2.7-i2v)",
    )
    inputs.add_argument(
        "--clip", metavar="PATH|URL", help="a video to continue (first clip: wan2.7-i2v, VACE)"
    )
    inputs.add_argument(
        "--video", metavar="PATH|URL", help="the source video of a VACE function (video_url)"
    )
    inputs.add_argument(
        "--mask",
        metavar="PATH|URL",
        help="VACE video_edit mask: an image (white: edit, black: keep), or a video "
        "(.mp4/.mov) with a mask for each frame",
    )
    inputs.add_argument(
        "--ref-image",
        dest="ref_images",
        action="append",
        metavar="PATH|URL",
        help="a reference image (a subject or background); repeat for more, in order "
        "(reference-to-video, wan3.0, VACE)",
    )
    vace = gen.add_argument_group(
        "VACE editing (wan2.1-vace-plus)", "Checked by the model's rules for each function."
    )
    vace.add_argument(
        "--function",
        choices=[f.value for f in Function],
        metavar="NAME",
        help="the editing function: " + ", ".join(f.value for f in Function),
    )
    vace.add_argument(
        "--obj-or-bg",
        metavar="obj,bg,...",
        help="image_reference: for each --ref-image in order, obj (a subject) or bg "
        "(the background)",
    )
    vace.add_argument(
        "--control-condition",
        choices=list(CONTROL_CONDITIONS),
        help="video_repainting: the signal taken from --video (scribble on this server: "
        "the others need annotator models)",
    )
    vace.add_argument(
        "--strength", type=float, help="video_repainting: 0 to 1, how closely to follow it"
    )
    vace.add_argument(
        "--mask-type",
        choices=list(MASK_TYPES),
        help="video_edit: fixed (a mask image holds for every frame) or tracking "
        "(follows the object: needs a tracker, so only with a mask video here)",
    )
    vace.add_argument(
        "--expand-ratio", type=float, help="video_edit: grow the mask by this share (0 to 1)"
    )
    vace.add_argument("--expand-mode", choices=list(EXPAND_MODES), help="video_edit")
    vace.add_argument(
        "--mask-frame-id", type=int, help="video_edit: the frame (from 1) the mask image shows"
    )
    vace.add_argument(
        "--scale",
        metavar="TOP,BOTTOM,LEFT,RIGHT",
        help="video_outpainting: how far to extend each side, 1 to 2 each (e.g. 1,1,1.5,1.5)",
    )
    gen.add_argument("--size", help="WIDTH*HEIGHT (or WIDTHxHEIGHT), e.g. 832*480")
    gen.add_argument(
        "--resolution", help="tier: 480P, 720P or 1080P (image-driven, wan2.7 and wan3.0 models)"
    )
    gen.add_argument(
        "--ratio",
        choices=[*RATIOS, ADAPTIVE],
        help="aspect ratio (wan2.7-r2v, wan3.0); adaptive follows the first frame",
    )
    gen.add_argument("--duration", type=int, help="seconds")
    gen.add_argument("--seed", type=int, help="0 to 2147483647 [default random]")
    gen.add_argument(
        "--prompt-extend",
        action=argparse.BooleanOptionalAction,
        help="let the server rewrite the prompt in more detail [default on]",
    )
    gen.add_argument(
        "--watermark", action=argparse.BooleanOptionalAction, help="add the AI watermark"
    )
    gen.add_argument("--shot-type", choices=["single", "multi"], help="multi: several shots")
    gen.add_argument(
        "--generate-audio",
        action=argparse.BooleanOptionalAction,
        help="make a sound track when no --audio is given (wan2.5 and later models)",
    )
    gen.add_argument(
        "--server",
        metavar="URL",
        help="a wanserve server to make the video, e.g. "
        "http://127.0.0.1:8000 [default: run embedded]",
    )
    gen.add_argument(
        "--api-key", help="the server's API key [env WANSERVE_API_KEY or DASHSCOPE_API_KEY]"
    )
    _store_options(gen)
    _engine_options(gen)


_GENERATE_FIELDS = (
    "prompt",
    "output",
    "model",
    "negative_prompt",
    "image",
    "last_frame",
    "audio",
    "clip",
    "video",
    "mask",
    "ref_images",
    "function",
    "ratio",
    "obj_or_bg",
    "control_condition",
    "strength",
    "mask_type",
    "expand_ratio",
    "expand_mode",
    "mask_frame_id",
    "scale",
    "size",
    "resolution",
    "duration",
    "seed",
    "prompt_extend",
    "watermark",
    "shot_type",
    "generate_audio",
    "server",
)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    # Options are named after Settings fields; only those given on the command line are passed.
    return {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings for `args`, or `ConfigError` naming the offending setting."""
    given = _given(args)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe_invalid(exc, given)) from None
    except SettingsError as exc:
        # Raised before validation, when an environment value cannot even be parsed (JSON for
        # mappings and lists). Its message names the field; its cause says why, without the value.
        found = re.search(r'field "(\w+)"', str(exc))
        name = _setting_name(found.group(1), given) if found else "configuration"
        cause = exc.__cause__
        why = f"not valid JSON ({cause})" if isinstance(cause, json.JSONDecodeError) else "invalid"
        raise ConfigError(f"{name}: {why}") from None


def _setting_name(field: str, given: Mapping[str, object]) -> str:
    """How the operator set `field`: the option if it was on the command line, else the
    environment variable (which is also the name to look up in docs/configuration.md)."""
    if field in given:
        return "--" + field.replace("_", "-")
    return f"WANSERVE_{field.upper()}"


def _describe_invalid(exc: ValidationError, given: Mapping[str, object]) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        loc = [str(p) for p in error["loc"]]
        if not loc:  # a rule across settings (model validator): its message names them
            parts.append(f"invalid configuration: {message}")
            continue
        inner = ".".join(loc[1:])
        parts.append(
            f"{_setting_name(loc[0], given)}: " + (f"{inner}: " if inner else "") + message
        )
    return "; ".join(parts)


@contextmanager
def _database(settings: Settings) -> Iterator[None]:
    """Turn a database that cannot be opened into a `ConfigError` naming WANSERVE_DATABASE_URL,
    with the password masked (SQLAlchemy's messages may hold the whole URL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    url = settings.effective_database_url
    # The default database is a SQLite file in the data directory: that is the setting to fix.
    name = "WANSERVE_DATA_DIR" if settings.database_url is None else "WANSERVE_DATABASE_URL"
    try:
        yield
    except (ArgumentError, NoSuchModuleError, ModuleNotFoundError) as exc:
        # Unparseable URL or missing driver: the URL is wrong (or the extra is not installed).
        raise ConfigError(f"{name}: unusable database URL ({_scrub(exc, url)})") from None
    except DBAPIError as exc:
        # Parsed fine but no connection: the setting may be right and the server down.
        shown = make_url(url).render_as_string(hide_password=True)
        detail = _scrub(exc.orig if exc.orig is not None else exc, url)
        raise ConfigError(f"{name}: cannot open {shown} ({detail})", status=1) from None
    except OSError as exc:  # a directory under data_dir (or the SQLite file's) cannot be made
        filename = exc.filename if isinstance(exc.filename, str) else None
        if filename and Path(filename).is_relative_to(settings.data_dir):
            name = "WANSERVE_DATA_DIR"
        raise ConfigError(f"{name}: {exc.strerror or exc} ({filename})", status=1) from None


def _scrub(exc: BaseException, url: str) -> str:
    """The first line of `exc`'s message, with no part of `url` that could be secret."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.replace(url, "<url>")
    try:
        password = make_url(url).password
    except ArgumentError:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        return _COMMANDS[args.command](args, settings)
    except ConfigError as exc:
        sys.stderr.write(f"wanserve: error: {exc}\n")
        return exc.status


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from wanserve.compose.api import ApiServer, uvicorn_config
    from wanserve.compose.shared import ProcessKind, StartupError, check_process_model

    configure_logging(settings)
    log = logging.getLogger("wanserve")
    kind = ProcessKind.API if settings.api_only else ProcessKind.EMBEDDED
    try:
        check_process_model(settings, kind=kind)
    except StartupError as exc:
        raise ConfigError(str(exc)) from None
    if kind is ProcessKind.API:
        from wanserve.compose.api import create_api_only
        from wanserve.compose.shared import build_shared

        try:
            with _database(settings):
                app = create_api_only(build_shared(settings))
        except ImportError as exc:  # broker_url without the [celery] extra
            raise ConfigError(str(exc)) from None
        log.warning(
            "API only: this process runs no generation; tasks wait for `wanserve worker` "
            "processes, which take them %s",
            "from the broker" if settings.broker else "from the task table",
        )
        ApiServer(uvicorn_config(settings, app), services=app.state.services).run()
        return 0

    from wanserve.compose.embedded import SignalledServer, build_components, create_app
    from wanserve.workers.shutdown import Shutdown

    _warn_dummy(settings)
    try:
        with _database(settings):
            components = build_components(settings)
    except ValueError as exc:  # settings the machine cannot honour, e.g. cpu_offload on a CPU
        raise ConfigError(f"invalid configuration: {exc}") from None
    app = create_app(settings, components=components)
    shutdown = Shutdown(stopping=components.stopping, hand_back=components.job.hand_back)
    SignalledServer(uvicorn_config(settings, app), components=components, shutdown=shutdown).run()
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from wanserve.compose.shared import StartupError
    from wanserve.compose.worker import run_worker

    configure_logging(settings)
    _warn_dummy(settings)
    try:
        with _database(settings):
            return run_worker(settings)
    except (StartupError, ImportError) as exc:
        raise ConfigError(str(exc)) from None
    except ValueError as exc:  # unknown model names, settings the machine cannot honour
        raise ConfigError(f"invalid configuration: {exc}") from None


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from wanserve.generate import GenerateOptions, run

    given = {name: getattr(args, name) for name in _GENERATE_FIELDS if hasattr(args, name)}
    if "ref_images" in given:
        given["ref_images"] = tuple(given["ref_images"])
    options = GenerateOptions(**given)
    # Library logs would break the progress display; warnings and errors still show.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(options, settings)


def configure_logging(settings: Settings) -> None:
    """The server's and the worker's log set-up: stderr, at `log_level`."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _warn_dummy(settings: Settings) -> None:
    if settings.weights is WeightsMode.RANDOM:
        logging.getLogger("wanserve").warning(
            "random weights: the published architectures at full size with random weights "
            "(videos are noise); for timing only"
        )
    if settings.weights is WeightsMode.DUMMY:
        logging.getLogger("wanserve").warning(
            "dummy weights: every model runs tiny random components (videos are noise), "
            "sampling with %d steps",
            settings.effective_steps,
        )


def _key_name(value: str) -> str:
    # argv bytes that are not UTF-8 arrive as lone surrogates (surrogateescape): refuse them
    # here, as a usage error, rather than fail at the INSERT.
    return _storable(value, "--name")


def _key_id(value: str) -> str:
    return _storable(value, "key_id")


def _storable(value: str, field: str) -> str:
    why = text.problem(value)
    if why is not None:
        raise argparse.ArgumentTypeError(f"{field} {why}; use UTF-8 text")
    return value


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from wanserve.db.engine import make_engine, upgrade
    from wanserve.keys import KeyStore
    from wanserve.tasks.webhooks import webhook_secret

    with _database(settings):
        engine = make_engine(settings.effective_database_url)
        upgrade(engine)
    store = KeyStore(engine)
    out = sys.stdout
    if args.keys_command == "create":
        key, secret = store.create(getattr(args, "name", ""), admin=getattr(args, "admin", False))
        label = f" ({key.name})" if key.name else ""
        out.write(f"Created {'admin ' if key.admin else ''}API key {key.id}{label}.\n")
        out.write(
            "Webhooks (parameters.callback_url) are signed with "
            f"{webhook_secret(settings.load_secret_key(), key.id)}\n"
            f"(`wanserve keys webhook-secret {key.id}` shows it again).\n"
        )
        out.write("Keep the key now: it is stored hashed and cannot be shown again.\n")
        out.write(secret + "\n")
        return 0
    if args.keys_command == "webhook-secret":
        if not any(k.id == args.key_id for k in store.find(args.key_id)):
            sys.stderr.write(f"wanserve: no key with id {args.key_id!r}.\n")
            return 1
        out.write(webhook_secret(settings.load_secret_key(), args.key_id) + "\n")
        return 0
    if args.keys_command == "list":
        rows = [("ID", "NAME", "PREFIX", "CREATED (UTC)", "STATUS", "ROLE")]
        for k in store.list():
            status = "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
            created = f"{k.created_at:%Y-%m-%d %H:%M:%S}"
            role = "admin" if k.admin else ""
            rows.append((k.id, k.name, k.prefix + "…", created, status, role))
        out.write(_table(rows))
        return 0
    if store.revoke(args.key_id):
        out.write(f"Revoked {args.key_id}.\n")
        return 0
    sys.stderr.write(f"wanserve: no active key with id {args.key_id!r}.\n")
    return 1


def _models(args: argparse.Namespace, settings: Settings) -> int:
    from wanserve.catalog import Catalog

    catalog = Catalog.build(settings.models, steps=settings.effective_steps)
    dummy = settings.weights is WeightsMode.DUMMY
    rows = [("MODEL", "KIND", "SIZES/TIERS", "SECONDS", "FPS", "STEPS", "CHECKPOINT", "INPUTS")]
    for card in sorted(catalog, key=lambda c: c.name):
        seconds = card.durations.allowed
        span = f"{seconds[0]}-{seconds[-1]}" if len(seconds) > 3 else ",".join(map(str, seconds))
        if card.auto_duration:
            span += ",-1"  # the model chooses
        rows.append(
            (
                card.name,
                card.kind.value,
                "/".join(card.tiers),
                span,
                str(card.fps),
                str(card.sampling.steps),
                # Dummy mode loads a tiny random build of the family, not the named checkpoint.
                f"{'dummy' if dummy else card.checkpoint.source} [{card.checkpoint.family.value}]",
                _model_inputs(card),
            )
        )
    sys.stdout.write(_table(rows))
    return 0


def _model_inputs(card: ModelCard) -> str:
    """A model's inputs as a create body sends them (`GET /api/v1/models` has the detail:
    each route's mix, the counts): the `input.media` types, the VACE functions, or the flat
    fields."""
    from wanserve.catalog import Generation, Kind

    served = set().union(*(route.requires | route.accepts for route in card.routes))
    kinds = ", ".join(sorted(served, key=_MEDIA_ORDER.index))
    if card.editing:
        return "function: " + ", ".join(f.value for f in Function)
    if card.routes and card.generation in (Generation.WAN27, Generation.WAN30):
        return f"media[]: {kinds}"
    if card.routes:
        return f"reference_urls: {kinds}"
    fields = {
        Kind.IMAGE_TO_VIDEO: ["img_url"],
        Kind.KEYFRAMES_TO_VIDEO: ["first_frame_url", "last_frame_url"],
    }.get(card.kind, ["prompt"])
    return ", ".join(fields + (["audio_url"] if card.audio else []))


_MEDIA_ORDER = [kind.value for kind in MediaKind]


def _usage(args: argparse.Namespace, settings: Settings) -> int:
    import json
    from datetime import date

    from wanserve.db.engine import make_engine, upgrade
    from wanserve.keys import KeyStore
    from wanserve.tasks.usage import UsageQuery, UsageReader

    with _database(settings):
        engine = make_engine(settings.effective_database_url)
        upgrade(engine)
    days: dict[str, date | None] = {}
    for name in ("since", "until"):
        value = getattr(args, name, None)
        try:
            days[name] = date.fromisoformat(value) if value else None
        except ValueError:
            sys.stderr.write(f"wanserve: --{name} must be a day as YYYY-MM-DD, not {value!r}.\n")
            return 2
    ids: frozenset[str] | None = None
    if (ref := getattr(args, "key", None)) is not None:
        found = KeyStore(engine).find(ref)
        if not found:
            sys.stderr.write(f"wanserve: no API key has the id or name {ref!r}.\n")
            return 1
        ids = frozenset(k.id for k in found)
    query = UsageQuery(api_key_ids=ids, since=days["since"], until=days["until"])
    lines = UsageReader(engine).query(query)
    if getattr(args, "json", False):
        records = [
            {
                "date": u.day.isoformat(),
                "api_key_id": u.api_key_id,
                "model": u.model,
                "succeeded": u.succeeded,
                "failed": u.failed,
                "canceled": u.canceled,
                "video_seconds": u.video_seconds,
            }
            for u in lines
        ]
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return 0
    rows: list[tuple[str, ...]] = [
        ("DATE (UTC)", "KEY", "MODEL", "SUCCEEDED", "FAILED", "CANCELED", "VIDEO SECONDS")
    ]
    for u in lines:
        counts = (u.succeeded, u.failed, u.canceled, u.video_seconds)
        rows.append((u.day.isoformat(), u.api_key_id, u.model, *map(str, counts)))
    totals = [sum(getattr(u, f) for u in lines) for f in ("succeeded", "failed", "canceled")]
    seconds = sum(u.video_seconds for u in lines)
    rows.append(("TOTAL", "", "", *map(str, totals), str(seconds)))
    sys.stdout.write(_table(rows))
    return 0


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from wanserve.db.engine import make_engine, upgrade

    with _database(settings):
        upgrade(make_engine(settings.effective_database_url))
    sys.stdout.write("Database schema is up to date.\n")
    return 0


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )


_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "serve": _serve,
    "worker": _worker,
    "generate": _generate,
    "keys": _keys,
    "models": _models,
    "usage": _usage,
    "db": _db,
}
