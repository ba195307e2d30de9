"""The published OpenAPI document, made to tell the truth about the routes.

FastAPI documents what it parses itself; wanserve reads the create bodies itself (size-capped,
JSON or multipart) and validates them with each door's own pydantic models (`protocol.py`),
answering every validation error 400 in its door's shape, never FastAPI's 422. So the document
is finished here: the schemas of those same models (`REQUEST_MODELS`) and the bearer-key
security scheme are added, and the 422 entries FastAPI adds are removed. Everything else
(response models, error statuses, which routes need a key) is declared on the routes
themselves.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict

from wanserve.api.dashscope.protocol import CreateTaskRequest
from wanserve.api.openai import schemas as openai_schemas
from wanserve.api.openai.protocol import VideoCreateRequest


class ErrorBody(BaseModel):
    """Every error outside a door that writes its own: DashScope's code and a message for
    people."""

    model_config = ConfigDict(extra="forbid")
    request_id: str
    code: str
    message: str


_ERROR_WHEN = {
    400: "InvalidParameter, BadRequest.EmptyModel / EmptyInput, InvalidURL, UnsupportedOperation",
    401: "InvalidApiKey: no key, or an unknown or revoked one",
    403: "AccessDenied",
    413: "BadRequest.TooLarge: the body is over the server's limit",
    415: "InvalidParameter: the body is not application/json, or is compressed",
    429: "Throttling, Throttling.RateQuota, Throttling.AuthFailures (with Retry-After)",
    500: "InternalError",
}


def error_description(status: int) -> str:
    return _ERROR_WHEN[status]


def responses(ok: type[BaseModel] | str, *errors: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a route: its 200 body (a model, or a description when the body
    is empty) and the error statuses it really answers (401 is added where a key is needed)."""
    success = {"model": ok} if isinstance(ok, type) else {"description": ok}
    documented: dict[int | str, dict[str, Any]] = {200: success}
    for status in errors:
        documented[status] = {"model": ErrorBody, "description": _ERROR_WHEN[status]}
    return documented


SECURITY_SCHEME = "DashScopeApiKey"
REF = "#/components/schemas/{model}"
# Bodies read by hand and documented through `openapi_extra` references to these components.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    CreateTaskRequest,
    VideoCreateRequest,
)
# Error bodies by path prefix: the OpenAI door writes its own (every other path, DashScope's).
ERROR_MODELS: tuple[tuple[str, type[BaseModel]], ...] = (("/v1/", openai_schemas.OpenAIError),)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a keyed route that reads `model` as its JSON body by hand."""
    return NEEDS_KEY | {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    }


# `openapi_extra` of a route that depends on `authenticate` (it must document 401 too).
NEEDS_KEY: dict[str, Any] = {"security": [{SECURITY_SCHEME: []}]}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    models = components.setdefault("schemas", {})
    error_models: list[type[BaseModel]] = [ErrorBody, *(m for _, m in ERROR_MODELS)]
    for model in (*REQUEST_MODELS, *error_models):
        schema = model.model_json_schema(ref_template=REF)
        models.update(schema.pop("$defs", {}))
        models[model.__name__] = schema
    for name in ("HTTPValidationError", "ValidationError"):
        models.pop(name, None)
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`; keys come from `wanserve keys create`.",
    }
    for route, path in document["paths"].items():
        error_model = next((m for p, m in ERROR_MODELS if route.startswith(p)), ErrorBody)
        for operation in path.values():
            answers = operation["responses"]
            answers.pop("422", None)
            if "security" in operation:
                # Every keyed route can refuse the key (401) or throttle it (429): the
                # throttle sits in the one dependency they all share, so it is documented
                # here for all of them rather than route by route.
                for status in (401, 429):
                    answers.setdefault(str(status), _error(status, error_model))
    return document


def _error(status: int, model: type[BaseModel]) -> dict[str, Any]:
    return {
        "description": error_description(status),
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }
