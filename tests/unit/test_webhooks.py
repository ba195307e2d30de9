"""Webhook pieces on their own: secrets, signatures (checked by the reference
`standardwebhooks` verifier), backoff, and the outbox the store writes with each terminal
status, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from standardwebhooks import Webhook, WebhookVerificationError

from tests.unit.test_store import RESULT, SPEC, Clock
from wanserve.db.engine import make_engine, upgrade
from wanserve.db.tables import WebhookOutboxRow
from wanserve.keys import KeyStore
from wanserve.tasks.models import TaskError
from wanserve.tasks.outbox import SqlOutbox
from wanserve.tasks.store import SqlTaskStore
from wanserve.tasks.webhooks import Backoff, signed_headers, webhook_secret

SERVER_KEY = b"server-secret-key-0123456789"


def test_secrets_are_per_key_per_server_and_standard() -> None:
    one = webhook_secret(SERVER_KEY, "key_a")
    assert one == webhook_secret(SERVER_KEY, "key_a")  # derived: every replica agrees
    assert one != webhook_secret(SERVER_KEY, "key_b")
    assert one != webhook_secret(b"another-server-key-0123456789", "key_a")
    assert one.startswith("whsec_")
    assert len(base64.b64decode(one.removeprefix("whsec_"))) == 32


def test_signed_headers_verify_with_the_reference_implementation() -> None:
    secret = webhook_secret(SERVER_KEY, "key_a")
    body = '{"output":{"task_status":"SUCCEEDED","orig_prompt":"猫"}}'.encode()
    headers = dict(signed_headers(secret, message_id="m-1", timestamp=int(time.time()), body=body))
    assert Webhook(secret).verify(body, headers) == {
        "output": {"task_status": "SUCCEEDED", "orig_prompt": "猫"}
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"SUCCEEDED", b"FAILED"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhook_secret(SERVER_KEY, "key_b")).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "m-2"})


def test_backoff_follows_the_schedule_then_repeats_its_last_delay_then_stops() -> None:
    backoff = Backoff(delays=(5, 30, 120), max_attempts=5)
    waits = [backoff.after(n) for n in range(1, 6)]
    assert waits == [
        timedelta(seconds=5),
        timedelta(seconds=30),
        timedelta(seconds=120),
        timedelta(seconds=120),
        None,
    ]
    assert Backoff(delays=(5,), max_attempts=1).after(1) is None


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'w.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def rows(db: Engine) -> list[WebhookOutboxRow]:
    with db.connect() as conn:
        return list(conn.execute(select(WebhookOutboxRow)).all())  # type: ignore[arg-type]


def test_every_terminal_change_owes_one_webhook_in_its_transaction(db: Engine) -> None:
    clock = Clock()
    store = SqlTaskStore(db, ttl=timedelta(hours=1), clock=clock)
    key, _ = KeyStore(db).create("k")
    url = "https://hooks.example/x"

    def task(name: str, callback: str | None = url) -> str:
        return store.create(
            task_id=name, api_key_id=key.id, request_id="r", spec=SPEC, callback_url=callback
        ).id

    # Succeeded, failed, canceled while PENDING, canceled while RUNNING, reaped to FAILED.
    claim = store.claim(task("ok"), worker_id="w")
    assert claim is not None and store.succeed(claim, RESULT)
    claim = store.claim(task("bad"), worker_id="w")
    assert claim is not None and store.fail(claim, TaskError("InvalidParameter", "no"))
    assert store.cancel_pending(task("early"))
    claim = store.claim(task("late"), worker_id="w")
    assert claim is not None and store.cancel_running(claim)
    assert store.claim(task("lost"), worker_id="w") is not None
    clock.advance(120)
    assert store.reap(stale_after=timedelta(seconds=60), max_attempts=1).failed == ["lost"]
    # Not terminal, or no callback: nothing owed.
    task("waiting")
    claim = store.claim(task("silent", None), worker_id="w")
    assert claim is not None and store.succeed(claim, RESULT)
    # A second ending is refused by the state machine, so it owes nothing more.
    assert not store.succeed(claim, RESULT)

    owed = rows(db)
    assert sorted(r.task_id for r in owed) == ["bad", "early", "late", "lost", "ok"]
    assert {(r.url, r.api_key_id, r.state, r.attempts) for r in owed} == {
        (url, key.id, "pending", 0)
    }


def test_a_claim_is_taken_once_fenced_and_released_by_its_lease(db: Engine) -> None:
    clock = Clock()
    store = SqlTaskStore(db, ttl=timedelta(hours=1), clock=clock)
    key, _ = KeyStore(db).create("k")
    store.create(
        task_id="t", api_key_id=key.id, request_id="r", spec=SPEC, callback_url="https://h/x"
    )
    assert store.cancel_pending("t")
    one, two = SqlOutbox(db, clock=clock), SqlOutbox(db, clock=clock)
    lease = timedelta(seconds=60)

    [first] = one.claim_due(limit=10, lease=lease)
    assert first.attempt == 1 and first.task_id == "t"
    assert two.claim_due(limit=10, lease=lease) == []  # another replica sees it taken
    clock.advance(61)  # the first sender died mid-attempt: the message is due again
    [second] = two.claim_due(limit=10, lease=lease)
    assert second.id == first.id and second.attempt == 2
    assert not one.delivered(first)  # the lost claim's outcome does not count
    assert two.retry(second, after=timedelta(seconds=30), error="HTTP 500")
    assert one.claim_due(limit=10, lease=lease) == []  # backing off
    clock.advance(31)
    [third] = one.claim_due(limit=10, lease=lease)
    assert third.attempt == 3 and one.delivered(third)
    clock.advance(3600)
    assert one.claim_due(limit=10, lease=lease) == [] and one.pending() == 0
    [row] = rows(db)
    assert (row.state, row.attempts, row.last_error) == ("delivered", 3, None)


def test_purging_a_task_deletes_its_undelivered_webhooks(db: Engine) -> None:
    clock = Clock()
    store = SqlTaskStore(db, ttl=timedelta(seconds=10), clock=clock)
    key, _ = KeyStore(db).create("k")
    store.create(
        task_id="t", api_key_id=key.id, request_id="r", spec=SPEC, callback_url="https://h/x"
    )
    assert store.cancel_pending("t") and len(rows(db)) == 1
    clock.now = datetime(2027, 1, 1, tzinfo=UTC)
    assert store.delete(task_id for task_id, _ in store.expired()) == 1
    assert rows(db) == []


def test_the_cli_shows_the_secret_the_server_signs_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from wanserve.cli import main

    monkeypatch.setenv("WANSERVE_SECRET_KEY", SERVER_KEY.decode())
    assert main(["keys", "create", "--name", "hooks", "--data-dir", str(tmp_path)]) == 0
    created = capsys.readouterr().out.splitlines()
    key_id = created[0].split()[3]  # "Created API key key_... (hooks)."
    expected = webhook_secret(SERVER_KEY, key_id)
    assert any(expected in line for line in created[:-1])
    assert created[-1].startswith("sk-")  # the key itself stays alone on the last line
    assert main(["keys", "webhook-secret", key_id, "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert main(["keys", "webhook-secret", "key_nope", "--data-dir", str(tmp_path)]) == 1
    assert "no key with id" in capsys.readouterr().err
