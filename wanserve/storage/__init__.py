"""Object storage for output videos and uploaded inputs behind the `Storage` seam: local files
(embedded) or an S3-compatible bucket (fleet), chosen by `storage_url`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wanserve.clock import Clock, utcnow
from wanserve.config import Settings
from wanserve.storage.base import FreeSpaceFloor, Storage
from wanserve.storage.local import LocalStorage
from wanserve.storage.signing import UrlSigner

if TYPE_CHECKING:  # the worker process needs no web framework
    from fastapi import FastAPI


def build_storage(settings: Settings, signer: UrlSigner, *, clock: Clock = utcnow) -> Storage:
    """The storage `settings` name; local storage first removes the partial files a crash
    left behind."""
    if settings.storage_url is None:
        local = LocalStorage(settings.data_dir / "files", signer=signer, clock=clock)
        local.sweep_staging()
        return local
    # boto3 is the optional [s3] extra: imported only when S3 is configured.
    from wanserve.storage.s3 import S3Storage, parse_storage_url

    return S3Storage(
        parse_storage_url(settings.storage_url),
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        addressing_style=settings.s3_addressing_style,
        clock=clock,
    )


def free_space_floor(settings: Settings, storage: Storage) -> FreeSpaceFloor:
    """The local directories that must keep `min_free_bytes` free: the scratch directory
    (encoding, upload staging) always, the files directory when storage is local."""
    paths = [settings.data_dir / "tmp"]
    if isinstance(storage, LocalStorage):
        paths.append(storage.root)
    return FreeSpaceFloor(paths=tuple(paths), min_bytes=settings.min_free_bytes)


def serve_files(app: FastAPI, storage: Storage) -> None:
    """Let `app` serve stored files where the storage needs it to (local files; a bucket
    serves its own presigned URLs)."""
    if isinstance(storage, LocalStorage):
        from wanserve.storage import local_routes

        local_routes.mount(app, storage)
