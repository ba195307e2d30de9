"""The SDK's upload endpoints: issue a policy (with the API key), receive the file (with the
policy instead of a key)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from wanserve import text
from wanserve.api.dashscope import docs, render
from wanserve.api.deps import ApiKeyDep, RequestIdDep, Services, ServicesDep, check_url_text
from wanserve.api.openapi import NEEDS_KEY, responses
from wanserve.errors import InvalidParameter, RequestTooLarge
from wanserve.storage.base import os_errors
from wanserve.uploads import UploadGrant

uploads = APIRouter(prefix="/api/v1", dependencies=[Depends(check_url_text)])
UPLOAD_PATH = "/api/v1/uploads"
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the policy fields


@uploads.get(
    "/uploads",
    response_model=None,
    responses=responses(docs.UploadPolicyResponse, 400, 401, 429, 500),
    openapi_extra=NEEDS_KEY,
)
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
    services.catalog.get(model)  # an unknown model is refused here, as DashScope does
    base = (services.settings.public_url or str(request.base_url)).rstrip("/")
    policy = services.uploads.issue(api_key_id=key.id, model=model, upload_host=base + UPLOAD_PATH)
    return render.upload_policy_body(policy, request_id=request_id)


@uploads.post(
    "/uploads",
    response_class=Response,
    responses=responses("Stored (empty body).", 400, 403, 413, 429, 500),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": docs.UPLOAD_FORM}},
        }
    },
)
async def receive_upload(request: Request, services: ServicesDep) -> Response:
    """The upload itself: an OSS-style POST form, authorised by the policy it carries."""
    declared = request.headers.get("content-length", "")
    if not declared.isascii() or not declared.isdigit():
        raise InvalidParameter("The upload must declare its Content-Length.")
    if int(declared) > services.uploads.max_bytes + _FORM_OVERHEAD:
        raise RequestTooLarge(f"The file exceeds {services.uploads.max_bytes // (1024 * 1024)} MB.")
    services.uploads.ensure_space(int(declared))
    async with request.form(max_files=1, max_fields=16, max_part_size=_FORM_OVERHEAD) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidParameter("The upload form has no file part.")
        fields = {
            text.check(k, field="a form field name"): text.check(v, field=f"form field {k}")
            for k, v in form.items()
            if isinstance(v, str)
        }
        if upload.filename is not None:
            text.check(upload.filename, field="the file name")
        grant = await run_in_threadpool(
            services.uploads.authorize,
            policy=fields.get("policy", ""),
            signature=fields.get("Signature", ""),
            key=fields.get("key", ""),
            size=upload.size if upload.size is not None else int(declared),
        )
        content_type = (
            fields.get("x-oss-content-type") or upload.content_type or "application/octet-stream"
        )
        await run_in_threadpool(_keep, services, grant, upload, content_type)
    # The SDK counts only HTTP 200 as success, and reads nothing from the body.
    return Response(status_code=200)


def _keep(services: Services, grant: UploadGrant, upload: UploadFile, content_type: str) -> None:
    # Staged in the scratch directory (not the spool the form parser chose), whose free space
    # is checked; removed whatever happens, so a failed upload never keeps a disk full.
    scratch = services.settings.data_dir / "tmp"
    with (
        os_errors(f"staging an upload in {scratch}"),
        tempfile.TemporaryDirectory(dir=scratch, prefix="upload-") as tmp,
    ):
        path = Path(tmp) / "file"
        with path.open("wb") as staged:
            shutil.copyfileobj(upload.file, staged)
            size = staged.tell()
        services.uploads.receive(grant, source=path, size=size, content_type=content_type)
