"""Upload policies and stored uploads expire; expired uploads are purged with their files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wanserve.db.engine import make_engine, upgrade
from wanserve.errors import AccessDenied, InvalidURL
from wanserve.keys import KeyStore
from wanserve.storage.local import LocalStorage
from wanserve.storage.signing import UrlSigner
from wanserve.uploads import UploadService


class Clock:
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[UploadService, Clock, str, LocalStorage]:
    engine = make_engine(f"sqlite:///{tmp_path / 'u.db'}")
    upgrade(engine)
    clock = Clock()
    key, _ = KeyStore(engine, clock=clock).create("k")
    storage = LocalStorage(tmp_path / "files", signer=UrlSigner(b"k" * 32))
    service = UploadService(
        engine=engine, storage=storage, signer=storage.signer, max_bytes=1000, clock=clock
    )
    return service, clock, key.id, storage


def send(service: UploadService, tmp_path: Path, policy: object, name: str = "a.png") -> None:
    src = tmp_path / "src"
    src.write_bytes(b"data")
    fields = {
        "policy": policy.policy,
        "Signature": policy.signature,
        "key": f"{policy.upload_dir}/{name}",
    }  # type: ignore[attr-defined]
    service.receive(fields, source=src, size=4, content_type="image/png")


def test_policy_expires_after_five_minutes(
    setup: tuple[UploadService, Clock, str, LocalStorage], tmp_path: Path
) -> None:
    service, clock, key_id, _ = setup
    policy = service.issue(api_key_id=key_id, model="m", upload_host="http://h/api/v1/uploads")
    clock.now += timedelta(minutes=6)
    with pytest.raises(AccessDenied, match="expired"):
        send(service, tmp_path, policy)


def test_uploads_live_48_hours_then_are_purged(
    setup: tuple[UploadService, Clock, str, LocalStorage], tmp_path: Path
) -> None:
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
