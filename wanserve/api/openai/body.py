"""Reading a `/v1/videos` create body: JSON, or the multipart form the `openai` SDK always
sends. Either is size-capped as it streams (`max_body_bytes`), never decompressed, and may
carry one file part, the `input_reference` image."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from wanserve.api.body import capped_stream, check_identity_encoding, load_json
from wanserve.api.openai.protocol import ImageFile, parse_form, parse_json
from wanserve.errors import InvalidParameter, UnsupportedMediaType

JSON = "application/json"
MULTIPART = "multipart/form-data"
# Text fields: a prompt of the spec's hard limit in 4-byte UTF-8 fits; the file part is bounded
# by the body cap instead.
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32


async def read_create(
    request: Request, *, limit: int
) -> tuple[dict[str, object], ImageFile | None]:
    """The create call's fields (values unchecked) and its uploaded image, if any."""
    check_identity_encoding(request.headers.get("content-encoding"))
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type == JSON:
        raw = b"".join([chunk async for chunk in capped_stream(request, limit=limit)])
        return parse_json(load_json(raw)), None
    if media_type == MULTIPART:
        return await _read_form(request, limit=limit)
    raise UnsupportedMediaType(f"Send the video request as {JSON} or {MULTIPART}.")


async def _read_form(request: Request, *, limit: int) -> tuple[dict[str, object], ImageFile | None]:
    parser = MultiPartParser(
        request.headers,
        capped_stream(request, limit=limit),
        max_files=1,
        max_fields=MAX_FIELDS,
        max_part_size=MAX_FIELD_BYTES,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidParameter(f"The multipart form is malformed: {exc.message}") from None
    except UnicodeDecodeError:
        raise InvalidParameter("A form field is not UTF-8 text.") from None
    try:
        fields: dict[str, str] = {}
        image: ImageFile | None = None
        for name, value in form.multi_items():
            if name in fields or (image is not None and name == "input_reference"):
                raise InvalidParameter(f"form field {name[:64]!r} is sent twice.", field=name)
            if isinstance(value, UploadFile):
                if name != "input_reference":
                    raise InvalidParameter(
                        f"form field {name[:64]!r} is a file; only input_reference may be one.",
                        field=name,
                    )
                image = ImageFile(data=await value.read(), content_type=value.content_type)
            else:
                fields[name] = value
        return parse_form(fields), image
    finally:
        await form.close()
