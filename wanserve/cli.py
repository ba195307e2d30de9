"""The `wanserve` command: serve, manage API keys, inspect models, migrate the database.

Every option can also come from the environment as WANSERVE_<NAME> (for example
WANSERVE_DATA_DIR, WANSERVE_WEIGHTS); an option given on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from wanserve import __version__, text
from wanserve.config import Settings, WeightsMode


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
        help="run the API server with its in-process workers",
        argument_default=argparse.SUPPRESS,
    )
    serve.add_argument("--host", help="interface to bind [default 127.0.0.1]")
    serve.add_argument("--port", type=int, help="port to bind [default 8000]")
    _store_options(serve)
    serve.add_argument(
        "--weights",
        choices=[m.value for m in WeightsMode],
        help="auto: real checkpoints (local directory or hub id); dummy: tiny random "
        "models of the real architectures, built offline [default auto]",
    )
    serve.add_argument(
        "--steps",
        type=int,
        help="denoising steps for every model [default: each "
        "family's official count; 4 with --weights dummy]",
    )
    serve.add_argument("--device", help="auto, cpu, cuda or cuda:N [default auto]")
    serve.add_argument(
        "--workers", type=int, help="generation threads in this process [default 1; 0 = API only]"
    )
    serve.add_argument(
        "--public-url", help="base URL clients use to reach this server, for video_url links"
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--dtype",
        choices=["auto", "bfloat16", "float16", "float32"],
        help="transformer precision [default auto: bf16 on CUDA, fp32 on CPU]",
    )
    serve.add_argument(
        "--text-encoder-device", choices=["auto", "cpu"], help="cpu keeps UMT5 off the GPU"
    )
    serve.add_argument(
        "--cpu-offload",
        action=argparse.BooleanOptionalAction,
        help="move each model to the GPU only while it runs (small GPUs)",
    )
    serve.add_argument(
        "--vae-tiling", action=argparse.BooleanOptionalAction, help="decode the VAE in tiles"
    )
    serve.add_argument(
        "--model-memory-gib",
        type=float,
        help="memory budget for resident checkpoints; least recently used ones are unloaded",
    )
    serve.add_argument(
        "--cancel-running",
        action=argparse.BooleanOptionalAction,
        help="let cancel stop RUNNING tasks, not only PENDING ones [default on]",
    )

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
    handler = _COMMANDS[args.command]
    return handler(args, settings)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from wanserve.app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.weights is WeightsMode.DUMMY:
        logging.getLogger("wanserve").warning(
            "dummy weights: every model runs tiny random components (videos are noise), "
            "sampling with %d steps",
            settings.effective_steps,
        )
    try:
        app = create_app(settings)
    except ValueError as exc:  # settings the machine cannot honour, e.g. cpu_offload on a CPU
        print(f"wanserve: invalid configuration: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the app logs requests itself, without query strings
        timeout_graceful_shutdown=60,
    )
    return 0


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
        key, secret = store.create(getattr(args, "name", ""))
        out.write(f"Created API key {key.id}" + (f" ({key.name})" if key.name else "") + ".\n")
        out.write("Keep it now: it is stored hashed and cannot be shown again.\n")
        out.write(secret + "\n")
        return 0
    if args.keys_command == "list":
        rows = [("ID", "NAME", "PREFIX", "CREATED (UTC)", "STATUS")]
        for k in store.list():
            status = "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
            rows.append((k.id, k.name, k.prefix + "…", f"{k.created_at:%Y-%m-%d %H:%M:%S}", status))
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
    "keys": _keys,
    "models": _models,
    "db": _db,
}
