"""The `wanserve` command: serve, run a worker, manage API keys, inspect models, migrate.

Every option can also come from the environment as WANSERVE_<NAME> (for example
WANSERVE_DATA_DIR, WANSERVE_WEIGHTS); an option given on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError

from wanserve import __version__, text
from wanserve.config import Role, Settings, WeightsMode


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


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        choices=[m.value for m in WeightsMode],
        help="auto: real checkpoints (local directory or hub id); dummy: tiny random "
        "models of the real architectures, built offline [default auto]",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="denoising steps for every model [default: each "
        "family's official count; 4 with --weights dummy]",
    )
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
        epilog="Every option can also be set as WANSERVE_<OPTION> in the environment.",
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

    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    key_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_sub.add_parser(
        "create",
        help="create a key; prints it alone on the last line",
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

    models = sub.add_parser(
        "models",
        help="list the model catalogue and the checkpoint each runs",
        argument_default=argparse.SUPPRESS,
    )
    _store_options(models)

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


def settings_from(args: argparse.Namespace) -> Settings:
    # Options are named after Settings fields; only those given on the command line are passed.
    given = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    return Settings(**given)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"wanserve: invalid configuration:\n{exc}", file=sys.stderr)  # noqa: T201
        return 2
    except SettingsError as exc:  # a WANSERVE_* variable that is not JSON where JSON is due
        print(f"wanserve: invalid configuration: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    handler = _COMMANDS[args.command]
    return handler(args, settings)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from wanserve.compose.api import uvicorn_config
    from wanserve.compose.shared import ProcessKind, StartupError, check_process_model

    _logging(settings)
    log = logging.getLogger("wanserve")
    kind = ProcessKind.API if settings.api_only else ProcessKind.EMBEDDED
    try:
        check_process_model(settings, kind=kind)
    except StartupError as exc:
        return _config_error(exc)
    if kind is ProcessKind.API:
        from wanserve.compose.api import create_api_only
        from wanserve.compose.shared import build_shared

        try:
            app = create_api_only(build_shared(settings))
        except ImportError as exc:  # broker_url without the [celery] extra
            return _config_error(exc)
        log.warning(
            "API only: this process runs no generation; tasks wait for `wanserve worker` "
            "processes, which take them %s",
            "from the broker" if settings.broker else "from the task table",
        )
        uvicorn.Server(uvicorn_config(settings, app)).run()
        return 0

    from wanserve.compose.embedded import SignalledServer, build_components, create_app
    from wanserve.workers.shutdown import Shutdown

    _warn_dummy(settings)
    try:
        components = build_components(settings)
    except ValueError as exc:  # settings the machine cannot honour, e.g. cpu_offload on a CPU
        return _config_error(exc)
    app = create_app(settings, components=components)
    shutdown = Shutdown(stopping=components.stopping, hand_back=components.job.hand_back)
    SignalledServer(uvicorn_config(settings, app), shutdown=shutdown).run()
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from wanserve.compose.shared import StartupError
    from wanserve.compose.worker import run_worker

    _logging(settings)
    _warn_dummy(settings)
    try:
        return run_worker(settings)
    except (StartupError, ImportError) as exc:
        return _config_error(exc)
    except ValueError as exc:  # unknown model names, settings the machine cannot honour
        return _config_error(exc)


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _warn_dummy(settings: Settings) -> None:
    if settings.weights is WeightsMode.DUMMY:
        logging.getLogger("wanserve").warning(
            "dummy weights: every model runs tiny random components (videos are noise), "
            "sampling with %d steps",
            settings.effective_steps,
        )


def _config_error(exc: Exception) -> int:
    print(f"wanserve: invalid configuration: {exc}", file=sys.stderr)  # noqa: T201
    return 2


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

    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    store = KeyStore(engine)
    out = sys.stdout
    if args.keys_command == "create":
        key, secret = store.create(getattr(args, "name", ""), admin=getattr(args, "admin", False))
        label = f" ({key.name})" if key.name else ""
        out.write(f"Created {'admin ' if key.admin else ''}API key {key.id}{label}.\n")
        out.write("Keep it now: it is stored hashed and cannot be shown again.\n")
        out.write(secret + "\n")
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
    rows = [("MODEL", "KIND", "SIZES/TIERS", "SECONDS", "FPS", "STEPS", "CHECKPOINT")]
    for card in sorted(catalog, key=lambda c: c.name):
        seconds = card.durations.allowed
        span = f"{seconds[0]}-{seconds[-1]}" if len(seconds) > 3 else ",".join(map(str, seconds))
        rows.append(
            (
                card.name,
                card.kind.value,
                "/".join(card.tiers),
                span,
                str(card.fps),
                str(card.sampling.steps),
                f"{card.checkpoint.source} [{card.checkpoint.family.value}]",
            )
        )
    sys.stdout.write(_table(rows))
    return 0


def _usage(args: argparse.Namespace, settings: Settings) -> int:
    import json
    from datetime import date

    from wanserve.db.engine import make_engine, upgrade
    from wanserve.keys import KeyStore
    from wanserve.tasks.usage import UsageQuery, UsageReader

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
    "keys": _keys,
    "models": _models,
    "usage": _usage,
    "db": _db,
}
