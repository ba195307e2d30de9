"""Usage endpoints (a wanserve extension; DashScope bills in its console instead):
`GET /api/v1/usage` for the caller's own key, `GET /api/v1/admin/usage` for any key, to keys
created with `wanserve keys create --admin`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from wanserve.api.deps import ApiKeyDep, RequestIdDep, ServicesDep, check_url_text
from wanserve.api.openapi import NEEDS_KEY, responses
from wanserve.errors import AccessDenied, InvalidParameter
from wanserve.tasks.usage import UsageLine, UsageQuery

usage = APIRouter(prefix="/api/v1", dependencies=[Depends(check_url_text)])

DayParam = Annotated[str | None, Query(description="UTC day, YYYY-MM-DD, inclusive")]


@usage.get(
    "/usage",
    response_model=None,
    responses=responses("the usage lines", 400, 500),
    openapi_extra=NEEDS_KEY,
)
def own_usage(
    services: ServicesDep,
    key: ApiKeyDep,
    request_id: RequestIdDep,
    since: DayParam = None,
    until: DayParam = None,
) -> dict[str, Any]:
    """The caller's usage per UTC day and model."""
    query = _query(frozenset({key.id}), since, until)
    return _body(services.usage.query(query), request_id=request_id)


@usage.get(
    "/admin/usage",
    response_model=None,
    responses=responses("the usage lines", 400, 403, 500),
    openapi_extra=NEEDS_KEY,
)
def admin_usage(
    services: ServicesDep,
    key: ApiKeyDep,
    request_id: RequestIdDep,
    api_key: Annotated[str | None, Query(alias="key", description="a key's id or name")] = None,
    since: DayParam = None,
    until: DayParam = None,
) -> dict[str, Any]:
    """Every key's usage (or one key's), per UTC day and model; admin keys only."""
    if not key.admin:
        raise AccessDenied("This API key may not read other keys' usage.")
    ids: frozenset[str] | None = None
    if api_key:
        found = services.keys.find(api_key)
        if not found:
            raise InvalidParameter(f"key: no API key has the id or name {api_key!r}.")
        ids = frozenset(k.id for k in found)
    return _body(services.usage.query(_query(ids, since, until)), request_id=request_id)


def parse_day(value: str | None, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidParameter(f"{field}: expected a day as YYYY-MM-DD.") from None


def _query(ids: frozenset[str] | None, since: str | None, until: str | None) -> UsageQuery:
    first, last = parse_day(since, "since"), parse_day(until, "until")
    if first is not None and last is not None and first > last:
        raise InvalidParameter("since must not be after until.")
    return UsageQuery(api_key_ids=ids, since=first, until=last)


def _body(lines: Sequence[UsageLine], *, request_id: str) -> dict[str, Any]:
    counts = ("succeeded", "failed", "canceled", "video_seconds")
    return {
        "request_id": request_id,
        "usage": [
            {
                "date": line.day.isoformat(),
                "api_key_id": line.api_key_id,
                "model": line.model,
                **{name: getattr(line, name) for name in counts},
            }
            for line in lines
        ],
        "total": {name: sum(getattr(line, name) for line in lines) for name in counts},
    }
