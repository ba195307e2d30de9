"""Storage failures through the HTTP API: a full or read-only disk gives the client a
DashScope-style storage error (never a bare 500 or a generic code), the operator a log line
naming the cause, leaves no partial file, and the next task works once space is back."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import T2V, Harness
from tests.tiny_fs import fill, tmpfs
from tests.unit.test_image import encode, noise
from wanserve.storage.base import StorageFull

MiB = 1024 * 1024


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def small_files(data_dir: Path) -> Iterator[Path]:
    """`data_dir/files` on an 8 MiB file system of its own (requested before the harness, so
    it is unmounted after the app stops)."""
    with tmpfs(data_dir / "files", size=8 * MiB) as root:
        yield root


@pytest.fixture
def read_only_files(data_dir: Path) -> Iterator[Path]:
    with tmpfs(data_dir / "files", size=MiB, read_only=True) as root:
        yield root


def upload(h: Harness, name: str = "cat.png") -> Any:
    res = h.client.get(
        "/api/v1/uploads?action=getPolicy&model=wan2.5-i2v-preview", headers=h.headers()
    )
    policy = res.json()["data"]
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": policy["signature"],
        "policy": policy["policy"],
        "key": f"{policy['upload_dir']}/{name}",
        "success_action_status": "200",
    }
    return h.client.post(
        "/api/v1/uploads", data=form, files={"file": ("x.png", encode(noise(), "PNG"))}
    )


def assert_storage_error(res: Any, status: int) -> None:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"request_id", "code", "message"} and body["request_id"]
    assert body["code"] == "InternalError.Storage"


def run(h: Harness) -> dict[str, Any]:
    task_id = h.create(T2V).json()["output"]["task_id"]
    out: dict[str, Any] = h.wait(task_id)["output"]
    return out


def partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".part")]


def test_a_full_video_directory_fails_with_a_storage_code_then_recovers(
    small_files: Path,
    harness_factory: Callable[..., Harness],
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness_factory(data_dir=data_dir, min_free_bytes=0)  # the late failure, not the floor
    filler = fill(small_files, leave=4096)
    with caplog.at_level(logging.ERROR):
        out = run(h)
    assert (out["task_status"], out["code"]) == ("FAILED", "InternalError.Storage")
    assert "storage is full" in out["message"] and str(data_dir) not in out["message"]
    assert any("No space left on device" in r.getMessage() for r in caplog.records)
    assert partial_files(small_files) == []
    filler.unlink()
    assert run(h)["task_status"] == "SUCCEEDED"


def test_below_the_free_space_floor_tasks_fail_fast_and_uploads_are_refused(
    small_files: Path, harness_factory: Callable[..., Harness], data_dir: Path
) -> None:
    h = harness_factory(data_dir=data_dir, min_free_bytes=4 * MiB)
    filler = fill(small_files, leave=MiB)
    out = run(h)
    assert (out["task_status"], out["code"]) == ("FAILED", "InternalError.Storage")
    assert "nearly full" in out["message"]
    assert h.runner.calls == []  # refused before generating anything
    assert_storage_error(upload(h), 507)
    filler.unlink()
    assert upload(h).status_code == 200
    assert run(h)["task_status"] == "SUCCEEDED"


def test_a_read_only_directory_is_a_storage_error_not_a_500(
    read_only_files: Path, harness_factory: Callable[..., Harness], data_dir: Path
) -> None:
    h = harness_factory(data_dir=data_dir, min_free_bytes=0)  # the tiny mount is "full" too
    assert_storage_error(upload(h), 503)
    out = run(h)
    assert (out["task_status"], out["code"]) == ("FAILED", "InternalError.Storage")
    assert "cannot be reached or written" in out["message"]


def test_a_failing_store_at_the_seam(
    harness_factory: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same contract with the failure injected at the `Storage` seam (no mount needed)."""
    h = harness_factory()
    storage = h.components.services.storage

    def full(*args: object, **kwargs: object) -> None:
        raise StorageFull(detail="injected")

    with monkeypatch.context() as patch:
        patch.setattr(storage, "put", full)
        assert_storage_error(upload(h), 507)
        out = run(h)
        assert (out["task_status"], out["code"]) == ("FAILED", "InternalError.Storage")
    assert upload(h).status_code == 200
    assert run(h)["task_status"] == "SUCCEEDED"


@pytest.mark.parametrize("length", [200, 243, 250, 255])
def test_upload_names_up_to_the_file_name_limit_are_stored(harness: Harness, length: int) -> None:
    res = upload(harness, "n" * (length - 4) + ".png")
    assert res.status_code == 200, res.text


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("n" * 252 + ".png", "longer than 255 bytes"),
        ("é" * 126 + ".png", "longer than 255 bytes"),
        ("cat\x07.png", "control characters"),
        (".cat.png", "start with a dot"),
    ],
)
def test_bad_upload_names_are_client_errors(harness: Harness, name: str, reason: str) -> None:
    res = upload(harness, name)
    assert res.status_code == 400 and res.json()["code"] == "InvalidParameter", res.text
    assert reason in res.json()["message"]
