"""API keys: created once, shown once, stored only as a SHA-256 digest.

Keys are 192-bit random tokens, so a fast digest is the right tool (no password stretching
needed) and lets a presented key be found by an indexed lookup of its digest.

Authentication runs on every request, and polls are most of them: a key found active is kept
in memory, by digest, for `cache_seconds` (`api_key_cache_seconds`), so a poll costs no
database read for its key. The bound is on revocation: a key revoked by another process (the
`wanserve keys revoke` CLI, another replica) keeps working here for at most `cache_seconds`;
one revoked through this `KeyStore` stops at once. Unknown and revoked keys are never cached,
so a new key works at once and a guess always reaches the store (and the lockout).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Row, select, update
from sqlalchemy.orm import sessionmaker

from wanserve.clock import Clock, utcnow
from wanserve.db.tables import ApiKeyRow

KEY_PREFIX = "sk-"
# Only active keys are cached, so this bounds memory by the keys in use, not by what clients
# send; past it the oldest entry goes (it is re-read on its next use).
_CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str  # the first characters of the key, to recognise it in listings
    created_at: datetime
    revoked_at: datetime | None
    admin: bool = False  # may read every key's usage

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = utcnow,
        cache_seconds: float = 0.0,
    ) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._now = clock
        self._cache_for = timedelta(seconds=cache_seconds)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[ApiKey, datetime]] = {}  # digest -> (key, read at)

    def create(self, name: str = "", *, admin: bool = False) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is not kept and cannot be shown again."""
        secret = KEY_PREFIX + secrets.token_hex(24)
        row = ApiKeyRow(
            id="key_" + secrets.token_hex(6),
            name=name,
            key_hash=digest(secret),
            prefix=secret[:10],
            created_at=self._now(),
            revoked_at=None,
            admin=admin,
        )
        with self._sessions.begin() as s:
            s.add(row)
        return _to_key(row), secret

    def list(self) -> list[ApiKey]:
        with self._sessions() as s:
            rows = s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id))
            return [_to_key(r) for r in rows]

    def find(self, ref: str) -> tuple[ApiKey, ...]:
        """The key whose id is `ref`, else every key named `ref` (names need not be unique)."""
        with self._sessions() as s:
            row = s.get(ApiKeyRow, ref)
            if row is not None:
                return (_to_key(row),)
            rows = s.scalars(
                select(ApiKeyRow).where(ApiKeyRow.name == ref).order_by(ApiKeyRow.created_at)
            )
            return tuple(_to_key(r) for r in rows)

    def revoke(self, key_id: str) -> bool:
        with self._sessions.begin() as s:
            res = s.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
            revoked = int(res.rowcount) == 1  # type: ignore[attr-defined]
        with self._lock:  # this process stops honouring it at once
            self._cache = {d: e for d, e in self._cache.items() if e[0].id != key_id}
        return revoked

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is, or None (from memory when read recently)."""
        hashed = digest(secret)
        key = self._cached(hashed)
        if key is not None:
            return key
        with self._sessions() as s:
            row = s.execute(select(*_KEY_COLUMNS).where(ApiKeyRow.key_hash == hashed)).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        key = _to_key(row)
        if self._cache_for:
            with self._lock:
                if len(self._cache) >= _CACHE_ENTRIES:
                    del self._cache[next(iter(self._cache))]
                self._cache[hashed] = (key, self._now())
        return key

    def cached(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is if it was read within `cache_seconds`, else
        None; never touches the database, so the event loop may call it."""
        return self._cached(digest(secret))

    def _cached(self, hashed: str) -> ApiKey | None:
        entry = self._cache.get(hashed)
        if entry is None:
            return None
        key, read_at = entry
        # A clock that went back (NTP step) must not stretch the bound: such entries are stale.
        if not read_at <= self._now() < read_at + self._cache_for:
            return None
        return key


_KEY_COLUMNS = (
    ApiKeyRow.id,
    ApiKeyRow.name,
    ApiKeyRow.prefix,
    ApiKeyRow.created_at,
    ApiKeyRow.revoked_at,
    ApiKeyRow.admin,
)


def _to_key(row: ApiKeyRow | Row[*tuple[Any, ...]]) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        admin=row.admin,
    )
