"""Hostile but well-formed input: text the database cannot store, times the store cannot
represent, bodies in other media types or codings, Unicode digits, 405s, and the offline
API pages. Each case answered 500, or was silently accepted, before."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.api.test_endpoints import URL, assert_error
from tests.conftest import T2V, Harness
from wanserve import cli
from wanserve.compose import shared as app_module
from wanserve.db.engine import make_engine

LONE_SURROGATE = '"\\ud800"'  # the JSON escape, as a client sends it
NUL = '"\\u0000"'


def raw_create(h: Harness, body: str, **headers: str) -> Any:
    return h.client.post(
        URL,
        content=body.encode(),
        headers=h.headers(**({"Content-Type": "application/json"} | headers)),
    )


def with_escape(escape: str, where: str) -> str:
    """The T2V body with one JSON string replaced by `escape` (kept as an escape sequence)."""
    body = json.loads(json.dumps(T2V))
    marker = "@@TEXT@@"
    if where == "key":
        body["parameters"][marker] = 1
    elif where == "ignored":
        body["input"]["function"] = marker
    else:
        section, field = where.split(".")
        body[section][field] = marker
    return json.dumps(body).replace(f'"{marker}"', escape)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_harness(
    request: pytest.FixtureRequest,
    harness_factory: Callable[..., Harness],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Harness]:
    """An idle app on SQLite, then on a real PostgreSQL server (whose `text` refuses NUL)."""
    engines: list[Engine] = []

    def recording(url: str, **options: Any) -> Engine:
        engine = make_engine(url, **options)
        engines.append(engine)
        return engine

    # The app does not dispose its engine; pooled PostgreSQL connections must not outlive us.
    monkeypatch.setattr(app_module, "make_engine", recording)
    overrides = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    h = harness_factory(start_workers=False, **overrides)
    yield h
    h.client.__exit__(None, None, None)  # stop the app first (closing twice is a no-op)
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize("escape", [LONE_SURROGATE, NUL, '"a\\udfffb"'])
@pytest.mark.parametrize(
    "where", ["input.prompt", "input.negative_prompt", "parameters.size", "key", "ignored"]
)
def test_unstorable_text_in_the_body_is_a_400(
    store_harness: Harness, escape: str, where: str
) -> None:
    res = raw_create(store_harness, with_escape(escape, where))
    assert_error(res, 400, "InvalidParameter", "NUL character|lone UTF-16 surrogate")
    shown = "a key in parameters" if where == "key" else where.replace("ignored", "input.function")
    assert res.json()["message"].startswith(shown), res.json()["message"]
    # Nothing was stored, and the connection still serves the next request.
    assert store_harness.create(T2V).status_code == 200
    listing = store_harness.client.get("/api/v1/tasks", headers=store_harness.headers())
    assert listing.json()["total"] == 1


def test_storable_unicode_is_kept(store_harness: Harness) -> None:
    prompt = "猫 🐈 é\u200d"  # astral characters arrive as valid surrogate *pairs* in JSON
    body = json.dumps({**T2V, "input": {"prompt": prompt}})
    res = raw_create(store_harness, body)
    assert res.status_code == 200, res.text
    task = store_harness.get(res.json()["output"]["task_id"])
    assert task["output"]["orig_prompt"] == prompt


@pytest.mark.parametrize(
    "query",
    ["model_name=a%00b", "status=%00", "start_time=%00", "%00=1", "model_name=x&extra=%00"],
)
def test_unstorable_text_in_queries_is_a_400(store_harness: Harness, query: str) -> None:
    res = store_harness.client.get(f"/api/v1/tasks?{query}", headers=store_harness.headers())
    assert_error(res, 400, "InvalidParameter", "NUL character")


@pytest.mark.parametrize(
    "path", ["/api/v1/tasks/a%00b", "/api/v1/tasks/a%00b/cancel", "/api/v1/uploads?model=%00"]
)
def test_unstorable_text_in_paths_is_a_400(store_harness: Harness, path: str) -> None:
    method = "POST" if path.endswith("cancel") else "GET"
    res = store_harness.client.request(method, path, headers=store_harness.headers())
    assert_error(res, 400, "InvalidParameter", "NUL character")


def test_unstorable_upload_file_names_are_a_400(idle: Harness) -> None:
    policy = idle.client.get(
        "/api/v1/uploads",
        params={"action": "getPolicy", "model": "wan2.2-i2v-plus"},
        headers=idle.headers(),
    ).json()["data"]
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": policy["signature"],
        "policy": policy["policy"],
        "key": policy["upload_dir"] + "/cat\x00.png",
        "success_action_status": "200",
    }
    res = idle.client.post("/api/v1/uploads", data=form, files={"file": ("cat.png", b"x")})
    assert_error(res, 400, "InvalidParameter", "form field key contains a NUL")


@pytest.mark.parametrize("signature", ["é", "签名"])
def test_non_ascii_upload_signatures_are_refused_not_crashing(
    idle: Harness, signature: str
) -> None:
    form = {"Signature": signature, "policy": "e30=", "key": "a/b.png"}
    res = idle.client.post("/api/v1/uploads", data=form, files={"file": ("b.png", b"x")})
    assert_error(res, 403, "AccessDenied", "signature")


@pytest.fixture
def idle(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory(start_workers=False)


# -- list times the store cannot represent --


@pytest.mark.parametrize(
    "value",
    [
        "00010101000000",  # year 1 in UTC+8 is year 0 in UTC: OverflowError before
        "00010101075959",
        "00000101000000",
        "99991231235960",
        "100000101000000",
        "２０２５０１０１００００００",  # full-width digits
        "2025010100000",
        " 20250101000000",
    ],
)
@pytest.mark.parametrize("name", ["start_time", "end_time"])
def test_list_times_outside_the_store_are_a_400(idle: Harness, name: str, value: str) -> None:
    res = idle.client.get("/api/v1/tasks", params={name: value}, headers=idle.headers())
    assert_error(res, 400, "InvalidParameter", f"^{name} .* from 00010101080000 to 99991231235959")


def test_list_time_bounds_that_the_store_can_represent(store_harness: Harness) -> None:
    store_harness.create(T2V)
    res = store_harness.client.get(
        "/api/v1/tasks",
        params={"start_time": "00010101080000", "end_time": "99991231235959"},
        headers=store_harness.headers(),
    )
    assert res.status_code == 200, res.text
    assert res.json()["total"] == 1


# -- lenient parsing decisions (docs/api.md, "Request bodies") --


@pytest.mark.parametrize("size", ["１２８０*７２０", "832*４８０", "٨٣٢*٤٨٠", "832 * 480\u3000"])
def test_size_takes_only_ascii_digits(idle: Harness, size: str) -> None:
    res = idle.create({**T2V, "parameters": {"size": size}})
    assert_error(res, 400, "InvalidParameter", "is malformed: write width\\*height")


def test_size_tolerates_ascii_spaces(idle: Harness) -> None:
    assert idle.create({**T2V, "parameters": {"size": " 832 * 480 "}}).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/json-seq",
        "application/json; charset=latin-1",
        None,
    ],
)
def test_json_endpoints_take_only_json(idle: Harness, content_type: str | None) -> None:
    headers = idle.headers() | ({"Content-Type": content_type} if content_type else {})
    res = idle.client.post(URL, content=json.dumps(T2V).encode(), headers=headers)
    assert_error(res, 415, "InvalidParameter", "not supported|needs Content-Type")


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
def test_json_with_or_without_charset(idle: Harness, content_type: str) -> None:
    headers = idle.headers(**{"Content-Type": content_type})
    assert idle.client.post(URL, content=json.dumps(T2V), headers=headers).status_code == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "identity, gzip"])
def test_compressed_bodies_are_refused(idle: Harness, encoding: str) -> None:
    bomb = gzip.compress(json.dumps(T2V).encode() + b" " * 10_000_000)
    headers = idle.headers(**{"Content-Type": "application/json", "Content-Encoding": encoding})
    res = idle.client.post(URL, content=bomb, headers=headers)
    assert_error(res, 415, "InvalidParameter", "Content-Encoding is not supported")


def test_identity_encoding_is_accepted(idle: Harness) -> None:
    headers = idle.headers(**{"Content-Type": "application/json", "Content-Encoding": "identity"})
    assert idle.client.post(URL, content=json.dumps(T2V), headers=headers).status_code == 200


# -- framework answers --


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/tasks/x", "GET"),
        ("PUT", "/api/v1/uploads", "GET, POST"),
        ("GET", URL, "POST"),
        ("GET", "/api/v1/tasks/x/cancel", "POST"),
    ],
)
def test_405_names_every_allowed_method(idle: Harness, method: str, path: str, allow: str) -> None:
    res = idle.client.request(method, path, headers=idle.headers())
    assert_error(res, 405, "UnsupportedOperation", f"use {allow}")
    assert res.headers["allow"] == allow


def test_api_pages_load_nothing_from_the_internet(idle: Harness) -> None:
    for page in ("/docs", "/redoc"):
        res = idle.client.get(page)
        assert res.status_code == 200 and "text/html" in res.headers["content-type"]
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", res.text), res.text
        for asset in re.findall(r"(?:src|href)=[\"']?([^\"' >]+)", res.text):
            fetched = idle.client.get(asset)
            assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
    assert idle.client.get("/openapi.json").json()["openapi"].startswith("3.")
    assert_error(idle.client.get("/docs-assets/nothing.js"), 404, "NotFound")


def test_openapi_documents_the_real_contract(idle: Harness) -> None:
    doc = idle.client.get("/openapi.json").json()
    create = doc["paths"]["/api/v1/services/aigc/{task_group}/video-synthesis"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateTaskRequest"
    }
    assert set(create["responses"]) == {"200", "400", "401", "403", "413", "415", "429", "500"}
    assert create["security"] == [{"DashScopeApiKey": []}]
    for path in doc["paths"].values():
        for operation in path.values():
            assert "422" not in operation["responses"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]


# -- the CLI --


@pytest.mark.parametrize("name", ["\udcff", "a\udc80b"])
def test_key_names_that_are_not_utf8_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    argv = ["keys", "create", "--name", name, "--data-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "--name contains a lone UTF-16 surrogate" in capsys.readouterr().err
    assert cli.main(["keys", "create", "--name", "ok é", "--data-dir", str(tmp_path)]) == 0
