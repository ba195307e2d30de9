"""The download route of `LocalStorage`: `GET /files/<key>?Expires=..&Signature=..`. Only an
app whose storage is local includes it; with S3 the URLs point at the bucket instead."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse

from wanserve.storage.local import FILES_PREFIX, LocalStorage

files = APIRouter()


def _storage(request: Request) -> LocalStorage:
    storage: LocalStorage = request.app.state.local_storage
    return storage


@files.api_route(FILES_PREFIX + "{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
def download(
    key: str,
    storage: Annotated[LocalStorage, Depends(_storage)],
    expires: Annotated[str | None, Query(alias="Expires")] = None,
    signature: Annotated[str | None, Query(alias="Signature")] = None,
) -> FileResponse:
    """A stored file, for as long as its signed URL is valid."""
    path = storage.signed_path(key, expires, signature)
    return FileResponse(path, media_type="video/mp4")


def mount(app: FastAPI, storage: LocalStorage) -> None:
    """Serve `storage`'s files from `app`."""
    app.state.local_storage = storage
    app.include_router(files)
