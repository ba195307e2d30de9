"""API keys: created once, shown once, stored only as a SHA-256 digest.

Keys are 192-bit random tokens, so a fast digest is the right tool (no password stretching
needed) and lets a presented key be found by an indexed lookup of its digest.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import sessionmaker

from wanserve.clock import Clock, utcnow
from wanserve.db.tables import ApiKeyRow

KEY_PREFIX = "sk-"


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
    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._now = clock

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
            return int(res.rowcount) == 1  # type: ignore[attr-defined]

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is, or None."""
        with self._sessions() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest(secret)))
            if row is None or row.revoked_at is not None:
                return None
            return _to_key(row)


def _to_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        admin=row.admin,
    )
