"""Engine creation and schema migrations (Alembic, shipped inside the package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from wanserve.db.lock import lock_key

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and enforced foreign keys.

    The pool keeps `pool_size` connections and opens as many more under bursts. SQLAlchemy's
    default (5 + 10) is below the 40 threads HTTP handlers run in: under load, requests queued
    for a connection, and every connection past the fifth was opened (SQLite: with its
    pragmas) and closed again per request (measured: 9% of a poll's time, see
    docs/performance.md)."""
    parsed = make_url(url)
    pool = {"pool_size": pool_size, "max_overflow": pool_size}
    if parsed.get_backend_name() == "postgresql":
        # libpq waits forever for a host that drops packets: a readiness probe or a request
        # must fail in bounded time instead.
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10}, **pool)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **pool)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if parsed.database in (None, "", ":memory:"):
        pool = {}  # one shared in-memory connection (SingletonThreadPool): no sizes apply
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent).

    Every process migrates at start-up, and a fleet starts several at once: on PostgreSQL the
    migration holds a transaction-level advisory lock, so one process migrates and the others
    wait, then find the schema current. (Without it two replicas creating the same tables on a
    fresh database collide: `duplicate key value violates unique constraint`.) SQLite's
    writer lock already serialises them."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("migrate")})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
