"""Upload policies: signed, single-use, expiring; uploads: owned, quota-bound, purged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wanserve.db.engine import make_engine, upgrade
from wanserve.db.tables import UploadRow
from wanserve.errors import AccessDenied, InvalidURL, Throttled
from wanserve.keys import KeyStore
from wanserve.storage.local import LocalStorage
from wanserve.storage.signing import UrlSigner
from wanserve.uploads import UploadPolicy, UploadService


class Clock:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


Setup = tuple[UploadService, Clock, str, LocalStorage]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    engine = make_engine(f"sqlite:///{tmp_path / 'u.db'}")
    upgrade(engine)
    clock = Clock()
    key, _ = KeyStore(engine, clock=clock).create("k")
    storage = LocalStorage(tmp_path / "files", signer=UrlSigner(b"k" * 32))
    service = UploadService(
        engine=engine,
        storage=storage,
        signer=storage.signer,
        max_bytes=1000,
        quota_bytes=10,
        clock=clock,
    )
    return service, clock, key.id, storage


def send(service: UploadService, tmp_path: Path, policy: UploadPolicy, name: str = "a.png") -> None:
    src = tmp_path / "src"
    src.write_bytes(b"data")
    grant = service.authorize(
        policy=policy.policy, signature=policy.signature, key=f"{policy.upload_dir}/{name}", size=4
    )
    service.receive(grant, source=src, size=4, content_type="image/png")


def test_policy_expires_after_five_minutes(setup: Setup, tmp_path: Path) -> None:
    service, clock, key_id, _ = setup
    policy = service.issue(api_key_id=key_id, model="m", upload_host="http://h/api/v1/uploads")
    clock.now += timedelta(minutes=6)
    with pytest.raises(AccessDenied, match="expired"):
        send(service, tmp_path, policy)


def test_a_policy_is_good_for_one_file(setup: Setup, tmp_path: Path) -> None:
    service, _, key_id, _ = setup
    policy = service.issue(api_key_id=key_id, model="m", upload_host="h")
    send(service, tmp_path, policy, "a.png")
    with pytest.raises(AccessDenied, match="has been used"):
        send(service, tmp_path, policy, "b.png")


def test_quota_per_key(setup: Setup, tmp_path: Path) -> None:
    service, clock, key_id, _ = setup
    for _ in range(2):  # 4 + 4 bytes of a 10-byte quota
        send(service, tmp_path, service.issue(api_key_id=key_id, model="m", upload_host="h"))
    with pytest.raises(Throttled, match="the limit is 0 MB") as info:
        send(service, tmp_path, service.issue(api_key_id=key_id, model="m", upload_host="h"))
    assert info.value.code == "Throttling.AllocationQuota"
    with pytest.raises(Throttled):
        service.keep_inline(b"12345", api_key_id=key_id, content_type="image/png", field="img_url")
    clock.now += timedelta(hours=49)  # expired uploads no longer count
    send(service, tmp_path, service.issue(api_key_id=key_id, model="m", upload_host="h"))


def test_uploads_live_48_hours_then_are_purged(setup: Setup, tmp_path: Path) -> None:
    service, clock, key_id, storage = setup
    policy = service.issue(api_key_id=key_id, model="m", upload_host="h")
    send(service, tmp_path, policy)
    url = f"oss://{policy.upload_dir}/a.png"
    assert service.check(url, api_key_id=key_id, field="img_url").size == 4
    assert service.open(url, field="img_url", max_bytes=100, owner=key_id) == ("image/png", b"data")
    with pytest.raises(InvalidURL):
        service.open(url, field="img_url", max_bytes=100, owner="key_someone_else")
    clock.now += timedelta(hours=47)
    assert service.purge_expired() == 0
    clock.now += timedelta(hours=2)
    with pytest.raises(InvalidURL, match="expired"):
        service.check(url, api_key_id=key_id, field="img_url")
    with pytest.raises(InvalidURL, match="expired"):
        service.open(url, field="img_url", max_bytes=100, owner=key_id)
    assert service.purge_expired() == 1
    assert not storage.exists(f"uploads/{policy.upload_dir}/a.png")


def test_purging_forgets_uploads_whose_keys_are_no_longer_valid(setup: Setup) -> None:
    """A row stored before keys were checked as strictly must not stop the janitor."""
    service, clock, key_id, _ = setup
    with service._sessions.begin() as s:
        s.add(
            UploadRow(
                key="dashscope-instant/d/.old.png",
                api_key_id=key_id,
                model="m",
                content_type="image/png",
                size=1,
                created_at=clock.now,
                expires_at=clock.now + timedelta(hours=1),
            )
        )
    clock.now += timedelta(hours=2)
    assert service.purge_expired() == 1
    assert service.purge_expired() == 0
