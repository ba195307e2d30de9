"""`S3Storage` against a real S3-speaking server (moto's, on loopback): objects, presigned
URLs, error translation, and the whole API (a task's video, an SDK upload used as input)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.conftest import T2V, Harness
from tests.s3_server import client, fake_aws_env, new_bucket, s3_server
from tests.unit.test_image import encode, noise
from tests.unit.test_storage import SIGNER
from tests.waiting import scaled
from wanserve.storage import build_storage
from wanserve.storage.base import StorageUnavailable
from wanserve.storage.s3 import S3Location, S3Storage, parse_storage_url

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    fake_aws_env(monkeypatch)
    return new_bucket(endpoint)


def storage(endpoint: str, bucket: str, **kwargs: Any) -> S3Storage:
    return S3Storage(S3Location(bucket=bucket, prefix="wan/"), endpoint_url=endpoint, **kwargs)


def test_objects_round_trip_under_the_prefix(endpoint: str, bucket: str, tmp_path: Path) -> None:
    s3 = storage(endpoint, bucket)
    source = tmp_path / "video.mp4"
    source.write_bytes(b"\0\0\0\x18ftypisom video")
    s3.put("videos/t.mp4", source)
    s3.put_bytes("uploads/dashscope-instant/d/cat é.png", b"png")
    assert s3.read("videos/t.mp4") == source.read_bytes()
    assert s3.read("uploads/dashscope-instant/d/cat é.png") == b"png"
    raw = client(endpoint)
    listed = raw.list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        "wan/uploads/dashscope-instant/d/cat é.png",
        "wan/videos/t.mp4",
    ]
    assert raw.head_object(Bucket=bucket, Key="wan/videos/t.mp4")["ContentType"] == "video/mp4"
    s3.delete("videos/t.mp4")
    s3.delete("videos/t.mp4")  # absent keys are fine
    with pytest.raises(FileNotFoundError):
        s3.read("videos/t.mp4")
    with pytest.raises(ValueError, match="dot"):
        s3.put_bytes("videos/../x", b"")


def test_presigned_urls_fetch_the_object_and_live_as_long_as_the_task(
    endpoint: str, bucket: str
) -> None:
    s3 = storage(endpoint, bucket, clock=lambda: NOW)
    s3.put_bytes("videos/t.mp4", b"the video")
    url = s3.url("videos/t.mp4", expires_at=NOW + timedelta(hours=24), base_url="http://api/")
    assert url.startswith(f"{endpoint}/{bucket}/wan/videos/t.mp4?")
    query = parse_qs(urlparse(url).query)
    # Valid for as long as the task has left by the storage's clock. moto's server checks
    # neither signatures nor expiry, so the lifetime is read from the URL, and the fetch
    # proves the URL names the object on the right endpoint.
    assert query["X-Amz-Expires"] == [str(24 * 3600)]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Signature"]
    res = httpx.get(url, timeout=scaled(30))
    assert (res.status_code, res.content) == (200, b"the video")
    # SigV4 caps a presigned URL at seven days; polls hand out fresh ones.
    month = s3.url("videos/t.mp4", expires_at=NOW + timedelta(days=30), base_url="")
    assert parse_qs(urlparse(month).query)["X-Amz-Expires"] == [str(7 * 24 * 3600)]


def test_a_missing_bucket_is_storage_unavailable(endpoint: str, bucket: str) -> None:
    s3 = storage(endpoint, "no-such-bucket-here")
    for call in (
        lambda: s3.put_bytes("videos/t.mp4", b"x"),
        lambda: s3.read("videos/t.mp4"),
        lambda: s3.delete("videos/t.mp4"),
    ):
        with pytest.raises(StorageUnavailable) as info:
            call()
        assert info.value.code == "InternalError.Storage"
        assert "NoSuchBucket" in info.value.detail and "no-such-bucket" in info.value.detail
        assert "no-such-bucket" not in info.value.message  # clients learn no bucket names


def test_an_unreachable_endpoint_is_storage_unavailable(bucket: str) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s3 = storage(f"http://127.0.0.1:{port}", bucket)
    with pytest.raises(StorageUnavailable, match="cannot be reached") as info:
        s3.put_bytes("videos/t.mp4", b"x")
    assert f"127.0.0.1:{port}" in info.value.detail


def test_missing_credentials_are_storage_unavailable(
    endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageUnavailable) as info:
        storage(endpoint, bucket).put_bytes("videos/t.mp4", b"x")
    assert "AWS_ACCESS_KEY_ID" in info.value.detail


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("s3://videos", S3Location("videos", "")),
        ("s3://videos/", S3Location("videos", "")),
        ("s3://my.videos/wan/prod/", S3Location("my.videos", "wan/prod/")),
    ],
)
def test_storage_urls(url: str, location: S3Location) -> None:
    assert parse_storage_url(url) == location


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("gs://videos", "must look like"),
        ("s3://Videos", "not a valid bucket name"),
        ("s3://v", "not a valid bucket name"),
        ("s3://videos/../x", "dot"),
    ],
)
def test_bad_storage_urls(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_storage_url(url)


def test_settings_choose_s3(endpoint: str, bucket: str, tmp_path: Path) -> None:
    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path / "data", storage_url=f"s3://{bucket}/p", s3_endpoint_url=endpoint
    )
    chosen = build_storage(settings, SIGNER)
    assert isinstance(chosen, S3Storage) and chosen.location == S3Location(bucket, "p/")


# -- the whole API on S3 ------------------------------------------------------------------------


@pytest.fixture
def on_s3(harness_factory: Callable[..., Harness], endpoint: str, bucket: str) -> Harness:
    return harness_factory(storage_url=f"s3://{bucket}/wan", s3_endpoint_url=endpoint)


def test_a_task_video_is_served_from_the_bucket(on_s3: Harness, endpoint: str) -> None:
    task_id = on_s3.create(T2V).json()["output"]["task_id"]
    out = on_s3.wait(task_id)["output"]
    assert out["task_status"] == "SUCCEEDED", out
    url = out["video_url"]
    assert url.startswith(f"{endpoint}/") and "X-Amz-Signature=" in url
    video = httpx.get(url, timeout=scaled(30))
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"  # an MP4
    assert not (on_s3.settings.data_dir / "files").exists()  # nothing stored locally
    # This server serves no files itself when a bucket does.
    assert on_s3.client.get(f"/files/videos/{task_id}.mp4").status_code == 404


def test_an_sdk_upload_lands_in_the_bucket_and_feeds_a_task(
    on_s3: Harness, endpoint: str, bucket: str
) -> None:
    res = on_s3.client.get(
        "/api/v1/uploads?action=getPolicy&model=wan2.5-i2v-preview", headers=on_s3.headers()
    )
    policy = res.json()["data"]
    image = encode(noise(), "PNG")
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": policy["signature"],
        "policy": policy["policy"],
        "key": f"{policy['upload_dir']}/cat.png",
        "success_action_status": "200",
    }
    sent = on_s3.client.post("/api/v1/uploads", data=form, files={"file": ("cat.png", image)})
    assert sent.status_code == 200, sent.text
    stored = client(endpoint).get_object(
        Bucket=bucket, Key=f"wan/uploads/{policy['upload_dir']}/cat.png"
    )
    assert stored["Body"].read() == image
    body = {
        "model": "wan2.5-i2v-preview",
        "input": {"img_url": f"oss://{policy['upload_dir']}/cat.png"},
        "parameters": {"resolution": "480P", "audio": False},
    }
    task_id = on_s3.create(body).json()["output"]["task_id"]
    out = on_s3.wait(task_id)["output"]
    assert out["task_status"] == "SUCCEEDED", out
    assert on_s3.runner.calls[0].first_frame is not None  # read back from the bucket
