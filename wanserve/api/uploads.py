"""The SDK's upload endpoints: issue a policy (with the API key), receive the file (with the
policy instead of a key)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from wanserve.api.deps import ApiKeyDep, RequestIdDep, ServicesDep
from wanserve.errors import InvalidParameter, RequestTooLarge

uploads = APIRouter(prefix="/api/v1")
UPLOAD_PATH = "/api/v1/uploads"
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the policy fields


@uploads.get("/uploads")
def get_policy(
    request: Request,
    services: ServicesDep,
    key: ApiKeyDep,
    request_id: RequestIdDep,
    action: Annotated[str, Query()] = "",
    model: Annotated[str, Query()] = "",
) -> dict[str, Any]:
    """An upload policy for one file (the SDK's `getPolicy`)."""
    if action != "getPolicy":
        raise InvalidParameter("action must be getPolicy.")
    services.tasks.catalog.get(model)  # an unknown model is refused here, as DashScope does
    base = (services.settings.public_url or str(request.base_url)).rstrip("/")
    policy = services.uploads.issue(api_key_id=key.id, model=model, upload_host=base + UPLOAD_PATH)
    data = {
        "policy": policy.policy,
        "signature": policy.signature,
        "upload_dir": policy.upload_dir,
        "upload_host": policy.upload_host,
        "expire_in_seconds": policy.expire_in_seconds,
        "max_file_size_mb": policy.max_file_size_mb,
        "capacity_limit_mb": policy.max_file_size_mb,
        "oss_access_key_id": policy.oss_access_key_id,
        "x_oss_object_acl": policy.x_oss_object_acl,
        "x_oss_forbid_overwrite": policy.x_oss_forbid_overwrite,
    }
    return {"request_id": request_id, "data": data}


@uploads.post("/uploads")
async def receive_upload(request: Request, services: ServicesDep) -> Response:
    """The upload itself: an OSS-style POST form, authorised by the policy it carries."""
    limit = services.uploads.max_bytes + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise InvalidParameter("The upload must declare its Content-Length.")
    if int(declared) > limit:
        raise RequestTooLarge(f"The file exceeds {services.uploads.max_bytes // (1024 * 1024)} MB.")
    async with request.form(max_files=1, max_fields=16, max_part_size=_FORM_OVERHEAD) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidParameter("The upload form has no file part.")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        with tempfile.NamedTemporaryFile(
            dir=services.settings.data_dir / "tmp", delete=False
        ) as tmp:
            await run_in_threadpool(shutil.copyfileobj, upload.file, tmp)
            size = tmp.tell()
        content_type = (
            fields.get("x-oss-content-type") or upload.content_type or "application/octet-stream"
        )
        try:
            await run_in_threadpool(
                services.uploads.receive,
                fields,
                source=Path(tmp.name),
                size=size,
                content_type=content_type,
            )
        finally:
            Path(tmp.name).unlink(missing_ok=True)
    # The SDK counts only HTTP 200 as success, and reads nothing from the body.
    return Response(status_code=200)
