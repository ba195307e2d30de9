"""Usage metering seen from outside: the caller's own usage, the admin view (admin keys
only), and the `wanserve usage` and `wanserve keys create --admin` commands."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_endpoints import assert_error
from tests.conftest import T2V, Harness
from tests.waiting import wait_until
from wanserve.cli import main
from wanserve.db.engine import make_engine
from wanserve.keys import KeyStore


def usage(h: Harness, path: str, secret: str | None = None, **params: str) -> Any:
    return h.client.get(f"/api/v1/{path}", params=params, headers=h.headers(secret))


def wait_ended(h: Harness, task_id: str, key: str | None = None) -> str:
    status: str = wait_until(
        lambda: h.get(task_id, key)["output"]["task_status"],
        lambda s: s not in ("PENDING", "RUNNING"),
        progress=lambda s: s,
        what=f"task {task_id} to end",
    )
    return status


def run_one(h: Harness, key: str | None = None) -> None:
    task_id = h.create(T2V, key=key).json()["output"]["task_id"]
    assert wait_ended(h, task_id, key) == "SUCCEEDED"


@pytest.fixture
def busy(harness_factory: Callable[..., Harness]) -> tuple[Harness, str, str]:
    """Two keys with finished tasks, and an admin key's secret."""
    h = harness_factory()
    run_one(h)
    run_one(h)
    _, other = h.components.services.keys.create("other")
    run_one(h, other)
    h.runner.gate = threading.Event()  # the run never finishes: the cancel always wins
    canceled = h.create(T2V, key=other).json()["output"]["task_id"]
    h.client.post(f"/api/v1/tasks/{canceled}/cancel", headers=h.headers(other))
    assert wait_ended(h, canceled, other) == "CANCELED"
    _, admin = h.components.services.keys.create("ops", admin=True)
    return h, other, admin


def test_a_key_reads_its_own_usage(busy: tuple[Harness, str, str]) -> None:
    h, _other, _admin = busy
    res = usage(h, "usage")
    assert res.status_code == 200, res.text
    body = res.json()
    today = datetime.now(UTC).date().isoformat()
    assert body["usage"] == [
        {
            "date": today,
            "api_key_id": h.key_id,
            "model": "wan2.1-t2v-turbo",
            "succeeded": 2,
            "failed": 0,
            "canceled": 0,
            "video_seconds": 10,
        }
    ]
    assert body["total"] == {"succeeded": 2, "failed": 0, "canceled": 0, "video_seconds": 10}
    assert res.headers["x-request-id"] == body["request_id"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert usage(h, "usage", since=tomorrow).json()["usage"] == []


def test_only_admin_keys_read_every_keys_usage(busy: tuple[Harness, str, str]) -> None:
    h, other, admin = busy
    assert_error(usage(h, "admin/usage"), 403, "AccessDenied")
    assert_error(usage(h, "admin/usage", other, key=h.key_id), 403, "AccessDenied")
    everything = usage(h, "admin/usage", admin).json()
    assert everything["total"] == {"succeeded": 3, "failed": 0, "canceled": 1, "video_seconds": 15}
    by_name = usage(h, "admin/usage", admin, key="other").json()["usage"]
    assert [(u["succeeded"], u["canceled"]) for u in by_name] == [(1, 1)]
    by_id = usage(h, "admin/usage", admin, key=h.key_id).json()["usage"]
    assert [u["api_key_id"] for u in by_id] == [h.key_id]
    assert_error(usage(h, "admin/usage", admin, key="nobody"), 400, "InvalidParameter", "nobody")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "2026-13-01"}, "since: expected a day"),
        ({"until": "yesterday"}, "until: expected a day"),
        ({"since": "2026-02-02", "until": "2026-02-01"}, "since must not be after until"),
    ],
)
def test_bad_days_are_invalid_parameters(
    harness_factory: Callable[..., Harness], params: dict[str, str], message: str
) -> None:
    h = harness_factory(start_workers=False)
    assert_error(usage(h, "usage", **params), 400, "InvalidParameter", message)


def test_usage_command(busy: tuple[Harness, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    h, _other, _admin = busy
    data = ["--data-dir", str(h.settings.data_dir)]
    assert main(["usage", "--json", *data]) == 0
    lines = json.loads(capsys.readouterr().out)
    assert sorted((u["api_key_id"] == h.key_id, u["succeeded"]) for u in lines) == [
        (False, 1),
        (True, 2),
    ]
    assert main(["usage", "--key", "other", *data]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["DATE", "(UTC)", "KEY"]
    assert len(table) == 3 and table[-1].split() == ["TOTAL", "1", "0", "1", "5"]
    today = datetime.now(UTC).date()
    assert main(["usage", "--until", (today - timedelta(days=1)).isoformat(), *data]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == ["TOTAL", "0", "0", "0", "0"]
    assert main(["usage", "--since", "soon", *data]) == 2
    assert main(["usage", "--key", "nobody", *data]) == 1
    assert "nobody" in capsys.readouterr().err


def test_keys_create_admin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["keys", "create", "--name", "ops", "--admin", *data]) == 0
    assert main(["keys", "create", "--name", "app", *data]) == 0
    out = capsys.readouterr().out
    assert "Created admin API key" in out and "Created API key" in out
    engine = make_engine(f"sqlite:///{tmp_path / 'wanserve.db'}")
    roles = {k.name: k.admin for k in KeyStore(engine).list()}
    engine.dispose()
    assert roles == {"ops": True, "app": False}
    assert main(["keys", "list", *data]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[-1] == "ROLE" and any(r.endswith("admin") for r in listing)
