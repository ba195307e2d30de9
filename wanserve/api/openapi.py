"""The published OpenAPI document, made to tell the truth about the routes.

FastAPI documents what it parses itself; wanserve parses the create-task body by hand (leniently,
size-capped) and answers every validation error 400, never FastAPI's 422. So the document is
finished here: the create-task body's schema and the bearer-key security scheme are added, and
the 422 entries FastAPI adds are removed. Everything else (response models, error statuses,
which routes need a key) is declared on the routes themselves.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from wanserve.api import schemas

SECURITY_SCHEME = "DashScopeApiKey"
REF = "#/components/schemas/{model}"
# Bodies read by hand and documented through `openapi_extra` references to these components.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (schemas.CreateTaskRequest,)


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
    published: tuple[type[BaseModel], ...] = (*REQUEST_MODELS, schemas.ErrorBody)
    for model in published:
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
    for path in document["paths"].values():
        for operation in path.values():
            answers = operation["responses"]
            answers.pop("422", None)
            if "security" in operation:
                # Every keyed route can refuse the key (401) or throttle it (429): the
                # throttle sits in the one dependency they all share, so it is documented
                # here for all of them rather than route by route.
                for status in (401, 429):
                    answers.setdefault(str(status), _error(status))
    return document


def _error(status: int) -> dict[str, Any]:
    return {
        "description": schemas.error_description(status),
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
    }
