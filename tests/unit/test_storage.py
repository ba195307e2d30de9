"""Local storage against real file-system failures: errors are translated to the storage
errors, partial files never stay, names never outgrow the file system, keys are checked."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.tiny_fs import fill, tmpfs
from wanserve.storage import build_storage, free_space_floor
from wanserve.storage.base import (
    MAX_SEGMENT_BYTES,
    FreeSpaceFloor,
    StorageError,
    StorageFull,
    StorageUnavailable,
    check_key,
    from_os_error,
)
from wanserve.storage.local import STALE_STAGING, LocalStorage
from wanserve.storage.memory import MemoryStorage
from wanserve.storage.signing import UrlSigner

SIGNER = UrlSigner(b"k" * 32)


def leftovers(root: Path) -> list[str]:
    """Every file under `root` except the filler: what a failed write left behind."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "filler"
    )


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", size=256 * 1024) as root:
        yield root


def test_a_full_disk_is_storage_full_and_leaves_no_partial_file(
    small_fs: Path, tmp_path: Path
) -> None:
    storage = LocalStorage(small_fs, signer=SIGNER)
    filler = fill(small_fs, leave=16 * 1024)
    with pytest.raises(StorageFull) as info:
        storage.put_bytes("videos/a.mp4", b"x" * 64 * 1024)
    assert info.value.code == "InternalError.Storage"
    assert "full" in info.value.message and str(small_fs) not in info.value.message
    assert str(small_fs) in info.value.detail  # the operator's log names the place
    # A file moved in from another file system is copied: a half copy is removed as well.
    source = tmp_path / "video.mp4"
    source.write_bytes(b"y" * 64 * 1024)
    with pytest.raises(StorageFull):
        storage.put("videos/b.mp4", source)
    assert leftovers(small_fs) == []
    # Once space is back, writes work again.
    filler.unlink()
    storage.put("videos/b.mp4", source)
    assert storage.read("videos/b.mp4") == b"y" * 64 * 1024


def test_a_read_only_directory_is_storage_unavailable(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", size=64 * 1024, read_only=True) as root:
        storage = LocalStorage(root, signer=SIGNER)
        with pytest.raises(StorageUnavailable) as info:
            storage.put_bytes("videos/a.mp4", b"data")
        assert info.value.code == "InternalError.Storage"
        assert "Read-only" in info.value.detail


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        (errno.ENOSPC, StorageFull),
        (errno.EDQUOT, StorageFull),
        (errno.EROFS, StorageUnavailable),
        (errno.EACCES, StorageUnavailable),
        (errno.EIO, StorageUnavailable),
        (errno.EMFILE, StorageError),
    ],
)
def test_errno_translation(number: int, kind: type[StorageError]) -> None:
    error = from_os_error(OSError(number, os.strerror(number), "/data/x"), action="storing x")
    assert type(error) is kind
    assert error.detail == f"storing x: [Errno {number}] {os.strerror(number)}: '/data/x'"


def test_an_absent_key_is_not_a_storage_failure(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalStorage(tmp_path, signer=SIGNER).read("videos/none.mp4")


def test_names_up_to_name_max_are_stored(tmp_path: Path) -> None:
    """The staging name is fixed-length: a 255-byte name (multi-byte characters included)
    does not become a longer staging name."""
    storage = LocalStorage(tmp_path / "root", signer=SIGNER)
    name = "é" * ((MAX_SEGMENT_BYTES - 4) // 2) + ".png"
    assert len(name.encode()) <= MAX_SEGMENT_BYTES
    storage.put_bytes(f"uploads/{name}", b"data")
    source = tmp_path / "src"
    source.write_bytes(b"more")
    storage.put(f"other/{'a' * 251}.png", source)
    assert storage.read(f"uploads/{name}") == b"data"
    assert leftovers(storage.root) == sorted(["uploads/" + name, f"other/{'a' * 251}.png"])


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("a/" + "b" * 256, "longer than 255 bytes"),
        ("a/" + "é" * 128, "longer than 255 bytes"),
        ("/".join(["d" * 200] * 4), "longer than 768 bytes"),
        ("a/.hidden", "start with a dot"),
        ("a/x\x01y", "control characters"),
        ("a/x\\y", "backslashes"),
        ("a/\ud800", "not valid UTF-8"),
        ("a//b", "empty path segment"),
    ],
)
def test_bad_keys_say_why(key: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_key(key)


def test_stale_staging_files_are_swept_at_start_up(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    videos = settings.data_dir / "files" / "videos"
    videos.mkdir(parents=True)
    stale, fresh = videos / ".0123456789abcdef.part", videos / ".fedcba9876543210.part"
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    old = time.time() - STALE_STAGING.total_seconds() - 60
    os.utime(stale, (old, old))
    (videos / "kept.mp4").write_bytes(b"video")
    build_storage(settings, SIGNER)
    # The fresh one may be a live writer's in another process sharing the directory.
    assert sorted(p.name for p in videos.iterdir()) == [fresh.name, "kept.mp4"]


def test_free_space_floor(tmp_path: Path) -> None:
    free = FreeSpaceFloor(paths=(tmp_path,), min_bytes=1024)
    free.check()
    with pytest.raises(StorageFull, match="nearly full") as info:
        free.check(needed=2**62)
    assert "min_free_bytes" in info.value.detail
    FreeSpaceFloor(paths=(tmp_path / "gone",), min_bytes=0).check()  # 0 turns it off


def test_the_floor_covers_scratch_and_local_files(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", min_free_bytes=123)
    storage = build_storage(settings, SIGNER)
    floor = free_space_floor(settings, storage)
    assert floor == FreeSpaceFloor(
        paths=(settings.data_dir / "tmp", settings.data_dir / "files"), min_bytes=123
    )
    assert free_space_floor(settings, MemoryStorage()).paths == (settings.data_dir / "tmp",)


def test_signed_download_path(tmp_path: Path) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    storage = LocalStorage(tmp_path, signer=SIGNER, clock=lambda: now)
    storage.put_bytes("videos/a.mp4", b"v")
    url = storage.url("videos/a.mp4", expires_at=now + timedelta(hours=1), base_url="http://h")
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    assert storage.signed_path("videos/a.mp4", query["Expires"], query["Signature"]) == (
        tmp_path / "videos" / "a.mp4"
    )


@pytest.fixture(params=["local", "memory"])
def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> LocalStorage | MemoryStorage:
    if request.param == "local":
        return LocalStorage(tmp_path / "root", signer=SIGNER)
    return MemoryStorage()


def test_the_storage_contract(any_storage: LocalStorage | MemoryStorage, tmp_path: Path) -> None:
    """What every `Storage` promises (S3 is held to it in tests/integration/test_s3_storage)."""
    source = tmp_path / "src.mp4"
    source.write_bytes(b"video")
    any_storage.put("videos/t.mp4", source)
    any_storage.put_bytes("uploads/d/a.png", b"png")
    assert any_storage.read("videos/t.mp4") == b"video"
    assert any_storage.read("uploads/d/a.png") == b"png"
    any_storage.put_bytes("uploads/d/a.png", b"new")  # a later write replaces the object
    assert any_storage.read("uploads/d/a.png") == b"new"
    any_storage.delete("videos/t.mp4")
    any_storage.delete("videos/t.mp4")
    with pytest.raises(FileNotFoundError):
        any_storage.read("videos/t.mp4")
    with pytest.raises(ValueError):
        any_storage.put_bytes("../escape", b"")


def test_the_fake_plays_a_failing_store() -> None:
    fake = MemoryStorage()
    fake.failure = StorageFull(detail="test")
    with pytest.raises(StorageFull):
        fake.put_bytes("videos/t.mp4", b"x")
    assert fake.objects == {}
