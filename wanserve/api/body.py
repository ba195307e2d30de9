"""Reading a JSON request body: its media type, its content coding, and its size.

Decisions (docs/api.md, "Request bodies"): a JSON endpoint takes `Content-Type:
application/json` (parameters such as `charset=utf-8` allowed, as the SDK sends; a charset
other than UTF-8 is refused, JSON being UTF-8). Anything else, a missing type included, is
415: a form or `text/plain` body is not read as JSON by guesswork. Content codings are not
supported (the SDK never compresses): a `Content-Encoding` other than `identity` is 415, so no
decompression runs and the size cap holds for what is parsed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable

from fastapi import Request
from pydantic import BeforeValidator, ValidationError

from wanserve.errors import InvalidParameter, RequestTooLarge, UnsupportedMediaType

JSON = "application/json"


async def read_json(request: Request, *, limit: int) -> bytes:
    """The raw body of a JSON request, at most `limit` bytes; not yet parsed."""
    check_json_media_type(
        request.headers.get("content-type"), request.headers.get("content-encoding")
    )
    return b"".join([chunk async for chunk in capped_stream(request, limit=limit)])


async def capped_stream(request: Request, *, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks; `RequestTooLarge` as soon as it is known to exceed `limit` bytes
    (from Content-Length, or while streaming when it lies or is absent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"The request body exceeds {limit} bytes.")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"The request body exceeds {limit} bytes.")
        yield chunk


def load_json(raw: bytes) -> object:
    """A JSON document from a body already read (None for an empty body)."""
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise InvalidParameter(f"The request body is not valid JSON: {exc}.") from None
    except (ValueError, RecursionError):  # bad UTF-8, absurd numbers, absurd nesting
        raise InvalidParameter("The request body is not valid JSON.") from None


def check_identity_encoding(content_encoding: str | None) -> None:
    """Refuse (415) a compressed body: nothing is decompressed, so size caps hold."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        raise UnsupportedMediaType(
            "Content-Encoding is not supported: send the body uncompressed (identity)."
        )


def check_json_media_type(content_type: str | None, content_encoding: str | None) -> None:
    """Refuse (415) a body that is not uncompressed UTF-8 JSON by its headers."""
    check_identity_encoding(content_encoding)
    if content_type is None or not content_type.strip():
        raise UnsupportedMediaType(f"The request needs Content-Type: {JSON}.")
    media_type, *params = (part.strip() for part in content_type.split(";"))
    if media_type.lower() != JSON:
        raise UnsupportedMediaType(
            f"Content-Type {_shown(media_type)} is not supported: send {JSON}."
        )
    for param in params:
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(
                f"charset {_shown(charset)} is not supported: JSON bodies are UTF-8."
            )


def _shown(value: str) -> str:
    # Header values are latin-1 decoded bytes: show them, shortened, as a repr.
    return repr(value[:64])


def invalid(exc: ValidationError) -> InvalidParameter:
    """A check of pydantic's own that no reader made first (every door's reader checks the
    bounds its field documents, so a passing suite never sees this), as an InvalidParameter
    naming the field by its path."""
    error = exc.errors()[0]
    path = ".".join(str(part) for part in error["loc"])
    name = str(error["loc"][-1]) if error["loc"] else None
    return InvalidParameter(f"{path}: {error['msg']}.", field=name)


def named(reader: Callable[[object, str], object], name: str) -> BeforeValidator:
    """A door model's validator that reads its field with a reader taking the field's name
    (for the message), e.g. `named(request.text, "prompt")`."""
    return BeforeValidator(lambda value: reader(value, name))
