"""`exclusive()`: one holder at a time across processes, for housekeeping sweeps.

On PostgreSQL it is a session-level advisory lock (`pg_try_advisory_lock`) held for one
sweep: of N API replicas sweeping on a timer, one does the work and the others skip that
round, and a replica that dies mid-sweep releases the lock with its connection. On SQLite
all processes share one host and one file; the store's conditional updates already make a
doubled sweep harmless, so there it always proceeds.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text


def lock_key(name: str) -> int:
    """A stable 32-bit key for `name` (advisory locks are keyed by integers)."""
    return zlib.crc32(f"wanserve:{name}".encode())


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[bool]:
    """Yield True if this process holds the lock `name` for the block, False if another does."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = lock_key(name)
    with engine.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
