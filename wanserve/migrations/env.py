"""Alembic environment: runs on the connection `wanserve.db.engine.upgrade` hands over, or on
`sqlalchemy.url` when invoked from the alembic command line."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from wanserve.db.tables import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _migrate(conn)


def _migrate(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # type: ignore[attr-defined]
    )
    with context.begin_transaction():
        context.run_migrations()


run()
