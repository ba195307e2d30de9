"""The DashScope SDK's local-file upload flow, served by this server.

The SDK turns `img_url="file://..."` or `audio_url="/path/x.mp3"` into three steps:

1. `GET /api/v1/uploads?action=getPolicy&model=M` (with the API key): we issue a policy, a
   JSON document naming a fresh `upload_dir`, the key that asked, and an expiry, plus its HMAC.
2. `POST <upload_host>` (multipart, no API key): the form carries the policy and signature we
   issued; we verify them, the object key, and the size, then store the file.
3. The create request names the file `oss://<upload_dir>/<name>`; it resolves only for the
   key that asked for the policy, for 48 hours.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from wanserve.clock import Clock, utcnow
from wanserve.db.tables import UploadRow
from wanserve.errors import AccessDenied, InvalidParameter, InvalidURL, RequestTooLarge, Throttled
from wanserve.storage.base import FreeSpaceFloor, Storage, check_key
from wanserve.storage.signing import UrlSigner

log = logging.getLogger(__name__)

PREFIX = "dashscope-instant"
SCHEME = "oss://"
_PURPOSE = "upload-policy"


@dataclass(frozen=True)
class UploadPolicy:
    policy: str  # base64 JSON: directory, owner, model, expiry
    signature: str  # its HMAC
    upload_dir: str
    upload_host: str  # absolute URL the file is posted to
    expires_in_seconds: int
    max_bytes: int


@dataclass(frozen=True)
class UploadGrant:
    """An upload the policy allows: where it goes and whose it is."""

    key: str
    api_key_id: str
    model: str


@dataclass(frozen=True)
class Upload:
    key: str
    api_key_id: str
    model: str
    content_type: str
    size: int
    expires_at: datetime


class UploadService:
    def __init__(
        self,
        *,
        engine: Engine,
        storage: Storage,
        signer: UrlSigner,
        max_bytes: int,
        quota_bytes: int,
        policy_ttl: timedelta = timedelta(minutes=5),
        upload_ttl: timedelta = timedelta(hours=48),
        free_space: FreeSpaceFloor | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._storage = storage
        self._signer = signer
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes
        self._policy_ttl = policy_ttl
        self._upload_ttl = upload_ttl
        self._free_space = free_space
        self._now = clock

    def ensure_space(self, size: int) -> None:
        """`StorageFull` if taking `size` more bytes would leave too little free space; asked
        before a file is read, so a full disk refuses it at once instead of half-way."""
        if self._free_space is not None:
            self._free_space.check(needed=size)

    def issue(self, *, api_key_id: str, model: str, upload_host: str) -> UploadPolicy:
        """A policy for one upload directory, valid for a few minutes."""
        expires = self._now() + self._policy_ttl
        upload_dir = f"{PREFIX}/{uuid.uuid4().hex}"
        document = {
            "expiration": expires.isoformat(),
            "upload_dir": upload_dir,
            "api_key_id": api_key_id,
            "model": model,
            "max_bytes": self.max_bytes,
        }
        policy = base64.b64encode(json.dumps(document, sort_keys=True).encode()).decode()
        return UploadPolicy(
            policy=policy,
            signature=self._signer.mac(_PURPOSE, policy.encode()),
            upload_dir=upload_dir,
            upload_host=upload_host,
            expires_in_seconds=int(self._policy_ttl.total_seconds()),
            max_bytes=self.max_bytes,
        )

    def authorize(self, *, policy: str, signature: str, key: str, size: int) -> UploadGrant:
        """Check an upload against the policy we issued, before its file is kept: signature,
        expiry, object key, size, the policy's single use and the key's quota."""
        if not policy or not signature:
            raise AccessDenied("The upload carries no policy or signature.")
        expected = self._signer.mac(_PURPOSE, policy.encode()).encode()
        # As bytes: compare_digest refuses non-ASCII str, and a forged form may carry any text.
        if not hmac.compare_digest(expected, signature.encode()):
            raise AccessDenied("The upload policy signature does not match.")
        try:
            document = json.loads(base64.b64decode(policy, validate=True))
            expires = datetime.fromisoformat(document["expiration"])
            upload_dir = str(document["upload_dir"])
            api_key_id, model = str(document["api_key_id"]), str(document["model"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise AccessDenied("The upload policy is malformed.") from None
        if expires < self._now():
            raise AccessDenied("The upload policy has expired; ask for a new one.")
        name = key[len(upload_dir) + 1 :] if key.startswith(upload_dir + "/") else ""
        if not name or "/" in name:
            raise AccessDenied("The object key is outside the policy's upload directory.")
        try:
            check_key(_object(key))
        except ValueError as exc:
            raise InvalidParameter(f"The object key is not a valid file name: {exc}.") from None
        if size > self.max_bytes:
            raise RequestTooLarge(f"The file exceeds {self.max_bytes // (1024 * 1024)} MB.")
        self._check_quota(api_key_id, size)
        with self._sessions() as s:
            used = s.scalar(
                select(func.count()).where(
                    UploadRow.key.startswith(upload_dir + "/", autoescape=True)
                )
            )
        if used:
            raise AccessDenied("This upload policy has been used; ask for a new one per file.")
        return UploadGrant(key=key, api_key_id=api_key_id, model=model)

    def _check_quota(self, api_key_id: str, size: int) -> None:
        with self._sessions() as s:
            held = s.scalar(
                select(func.coalesce(func.sum(UploadRow.size), 0)).where(
                    UploadRow.api_key_id == api_key_id, UploadRow.expires_at >= self._now()
                )
            )
        if int(held or 0) + size > self.quota_bytes:
            raise Throttled(
                f"This API key holds {int(held or 0) // (1024 * 1024)} MB of uploads; the limit "
                f"is {self.quota_bytes // (1024 * 1024)} MB until older ones expire.",
                code="Throttling.AllocationQuota",
            )

    def receive(self, grant: UploadGrant, *, source: Path, size: int, content_type: str) -> Upload:
        """Keep an authorised upload's file."""
        if size > self.max_bytes:
            raise RequestTooLarge(f"The file exceeds {self.max_bytes // (1024 * 1024)} MB.")
        now = self._now()
        row = UploadRow(
            key=grant.key,
            api_key_id=grant.api_key_id,
            model=grant.model,
            content_type=content_type[:128],
            size=size,
            created_at=now,
            expires_at=now + self._upload_ttl,
        )
        try:
            with self._sessions.begin() as s:
                s.add(row)
        except IntegrityError:
            raise AccessDenied("An object with this key already exists (no overwrite).") from None
        try:
            self._storage.put(_object(grant.key), source)
        except BaseException:
            with self._sessions.begin() as s:
                s.execute(delete(UploadRow).where(UploadRow.key == grant.key))
            raise
        return _to_upload(row)

    def keep_inline(self, data: bytes, *, api_key_id: str, content_type: str, field: str) -> str:
        """Store a client's inline (base64) input like an upload; its oss:// reference."""
        self._check_quota(api_key_id, len(data))
        self.ensure_space(len(data))
        key = f"{PREFIX}/inline/{uuid.uuid4().hex}/{field}"
        now = self._now()
        row = UploadRow(
            key=key,
            api_key_id=api_key_id,
            model="",
            content_type=content_type[:128] or "application/octet-stream",
            size=len(data),
            created_at=now,
            expires_at=now + self._upload_ttl,
        )
        self._storage.put_bytes(_object(key), data)
        with self._sessions.begin() as s:
            s.add(row)
        return SCHEME + key

    def check(self, url: str, *, api_key_id: str, field: str) -> Upload:
        """The upload `url` names, if it exists, is live, and belongs to `api_key_id`."""
        key = url[len(SCHEME) :] if url.startswith(SCHEME) else ""
        with self._sessions() as s:
            row = s.get(UploadRow, key)
        if row is None or row.api_key_id != api_key_id or row.expires_at < self._now():
            raise InvalidURL(
                f"{field}: {url} is not a file this API key uploaded, or it has expired "
                f"(uploads are kept {self._upload_ttl.total_seconds() / 3600:g} hours)."
            )
        return _to_upload(row)

    def open(self, url: str, *, field: str, max_bytes: int, owner: str) -> tuple[str, bytes]:
        """(content type, bytes) of a live upload of API key `owner` (checked at submission
        too; checked again here so no other path can read another key's file)."""
        key = url[len(SCHEME) :]
        with self._sessions() as s:
            row = s.get(UploadRow, key)
        if row is None or row.api_key_id != owner or row.expires_at < self._now():
            raise InvalidURL(f"{field}: {url} has expired or does not exist.")
        if row.size > max_bytes:
            raise InvalidParameter(f"{field} is larger than {max_bytes // (1024 * 1024)} MB.")
        try:
            return row.content_type, self._storage.read(_object(key))
        except FileNotFoundError:
            raise InvalidURL(f"{field}: {url} has expired or does not exist.") from None

    def purge_expired(self) -> int:
        with self._sessions() as s:
            keys = list(s.scalars(select(UploadRow.key).where(UploadRow.expires_at < self._now())))
        for key in keys:
            try:
                self._storage.delete(_object(key))
            except ValueError:  # stored before keys were checked as strictly: nothing to delete
                log.warning("expired upload %r has an invalid key; forgetting it", key)
        if keys:
            with self._sessions.begin() as s:
                s.execute(delete(UploadRow).where(UploadRow.key.in_(keys)))
        return len(keys)


def _object(key: str) -> str:
    return f"uploads/{key}"


def _to_upload(row: UploadRow) -> Upload:
    return Upload(
        key=row.key,
        api_key_id=row.api_key_id,
        model=row.model,
        content_type=row.content_type,
        size=row.size,
        expires_at=row.expires_at,
    )
