"""`S3Storage`: objects in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, Alibaba OSS),
through boto3. Videos are served as presigned GET URLs that expire with their task, so no
replica of this server is in the download path.

Credentials come from boto3's default chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`,
`AWS_PROFILE`, an instance role, ...): this module reads no environment itself.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "storage_url s3://... needs boto3: install wanserve with the [s3] extra "
        "(pip install 'wanserve[s3]')"
    ) from exc

from wanserve.clock import Clock, utcnow
from wanserve.storage.base import (
    StorageError,
    StorageFull,
    StorageUnavailable,
    check_key,
)

# SigV4 presigned URLs live at most seven days; a task that lives longer gets a fresh URL on
# each poll.
MAX_PRESIGN = timedelta(days=7)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_ABSENT = frozenset({"NoSuchKey", "404", "NotFound"})
_FULL = frozenset({"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded"})
_UNAVAILABLE = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AccountProblem",
    }
)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ending in "/"


def parse_storage_url(url: str) -> S3Location:
    """`s3://bucket` or `s3://bucket/some/prefix`; `ValueError` names what is wrong."""
    if not url.startswith("s3://"):
        raise ValueError("storage_url must look like s3://bucket or s3://bucket/prefix")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"storage_url: {bucket!r} is not a valid bucket name")
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return S3Location(bucket=bucket, prefix=f"{prefix}/" if prefix else "")


class S3Storage:
    def __init__(
        self,
        location: S3Location,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: str = "auto",
        clock: Clock = utcnow,
    ) -> None:
        self.location = location
        self._now = clock
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": addressing_style},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
        )
        # A session of our own: boto3's module-level default session is shared process state.
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def _name(self, key: str) -> str:
        return self.location.prefix + check_key(key)

    def _where(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{self._name(key)}"

    def put(self, key: str, source: Path) -> None:
        # One PUT (up to 5 GB): videos are far smaller, and the managed multipart transfer
        # would hide the error code behind its own exception.
        with source.open("rb") as body, self._errors(f"storing {self._where(key)}"):
            self._client.put_object(
                Bucket=self.location.bucket,
                Key=self._name(key),
                Body=body,
                ContentType=_content_type(key),
            )

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(f"storing {self._where(key)}"):
            self._client.put_object(
                Bucket=self.location.bucket,
                Key=self._name(key),
                Body=data,
                ContentType=_content_type(key),
            )

    def read(self, key: str) -> bytes:
        with self._errors(f"reading {self._where(key)}"):
            response = self._client.get_object(Bucket=self.location.bucket, Key=self._name(key))
            data: bytes = response["Body"].read()
            return data

    def delete(self, key: str) -> None:
        with self._errors(f"deleting {self._where(key)}"):
            self._client.delete_object(Bucket=self.location.bucket, Key=self._name(key))

    def url(self, key: str, *, expires_at: datetime, base_url: str) -> str:
        """A presigned GET URL (`base_url` is not used: the bucket serves the file)."""
        lifetime = min(expires_at - self._now(), MAX_PRESIGN)
        with self._errors(f"signing a URL for {self._where(key)}"):
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.location.bucket, "Key": self._name(key)},
                ExpiresIn=max(1, int(lifetime.total_seconds())),
            )
            return url

    def check(self) -> None:
        """HEAD the bucket: it exists and these credentials reach it (one small request)."""
        where = f"checking s3://{self.location.bucket}"
        try:
            with self._errors(where):
                self._client.head_bucket(Bucket=self.location.bucket)
        except FileNotFoundError:  # HEAD answers a bare 404 for a missing bucket
            raise StorageUnavailable(detail=f"{where}: no such bucket") from None

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _ABSENT:
                raise FileNotFoundError(action) from None
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            raise _client_error(code, status, detail=f"{action}: {exc}") from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            hint = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use boto3's other sources"
            raise StorageUnavailable(detail=f"{action}: {exc} ({hint})") from exc
        except BotoCoreError as exc:  # the endpoint cannot be reached, timed out, ...
            raise StorageUnavailable(detail=f"{action}: {exc}") from exc


def _client_error(code: str, status: int, *, detail: str) -> StorageError:
    if code in _FULL:
        return StorageFull(detail=detail)
    if code in _UNAVAILABLE or status == 403 or status >= 500:
        return StorageUnavailable(detail=detail)
    return StorageError(detail=detail)


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"
