"""Webhooks through the real app: a task created with `parameters.callback_url` is POSTed to a
receiver on loopback when it ends, signed so the reference `standardwebhooks` verifier accepts
it, retried after failures with backoff, and refused at submission when the URL could never
be delivered to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import T2V, Harness
from tests.waiting import wait_until
from tests.webhook_receiver import webhook_receiver
from wanserve.db.engine import make_engine
from wanserve.engine.errors import OutOfMemory
from wanserve.tasks.outbox import SqlOutbox
from wanserve.tasks.webhooks import webhook_secret

# The receiver listens on loopback, which the guarded fetcher refuses unless told otherwise.
LOOPBACK_OK = {"fetch_allow_private": True, "webhook_backoff_seconds": [0.2]}


def with_callback(url: str, body: dict[str, Any] = T2V) -> dict[str, Any]:
    return {**body, "parameters": {**body.get("parameters", {}), "callback_url": url}}


def secret_of(h: Harness) -> str:
    return webhook_secret(h.settings.load_secret_key(), h.key_id)


def eventually(check: Callable[[], bool]) -> None:
    wait_until(check, lambda held: held, stall=60, what="the condition")


def pending_webhooks(h: Harness) -> int:
    db = make_engine(h.settings.effective_database_url)
    try:
        return SqlOutbox(db).pending()
    finally:
        db.dispose()


def counter(h: Harness, name: str, **labels: str) -> float:
    text = h.client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_a_finished_task_is_posted_signed_with_its_get_body(
    harness_factory: Callable[..., Harness],
) -> None:
    with webhook_receiver() as rx:
        # Links in webhooks point at public_url (there is no request to take a host from).
        h = harness_factory(**LOOPBACK_OK, public_url="http://videos.example")
        rx.secret = secret_of(h)
        res = h.create(with_callback(rx.url))
        assert res.status_code == 200, res.text
        task_id = res.json()["output"]["task_id"]
        [hook] = rx.wait_for(lambda got: len(got) >= 1)
        polled = h.get(task_id)
    assert hook.verified, hook.headers
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["webhook-signature"].startswith("v1,")
    # The body is the GET body; its request_id is the message's id.
    assert hook.json["request_id"] == hook.headers["webhook-id"]
    assert {**hook.json, "request_id": None} == {**polled, "request_id": None}
    assert hook.json["output"]["task_status"] == "SUCCEEDED"
    assert hook.json["output"]["video_url"].startswith("http://videos.example/files/videos/")


def test_a_tampered_body_or_another_keys_secret_does_not_verify(
    harness_factory: Callable[..., Harness],
) -> None:
    # The receiver holds a different key's secret: the reference verifier must refuse.
    with webhook_receiver() as rx:
        h = harness_factory(**LOOPBACK_OK)
        other, _ = h.components.services.keys.create("other")
        rx.secret = webhook_secret(h.settings.load_secret_key(), other.id)
        assert h.create(with_callback(rx.url)).status_code == 200
        [hook] = rx.wait_for(lambda got: len(got) >= 1)
    assert not hook.verified


def test_failures_are_retried_with_the_same_id_until_a_2xx(
    harness_factory: Callable[..., Harness],
) -> None:
    with webhook_receiver(script=[500, 302, 200]) as rx:
        h = harness_factory(**LOOPBACK_OK)
        rx.secret = secret_of(h)
        assert h.create(with_callback(rx.url)).status_code == 200
        got = rx.wait_for(lambda got: len(got) >= 3)
        eventually(
            lambda: counter(h, "wanserve_webhook_deliveries_total", outcome="delivered") == 1
        )
        assert counter(h, "wanserve_webhook_deliveries_total", outcome="failed") == 2
        assert pending_webhooks(h) == 0  # delivered: nothing more will be sent
    assert [r.answered for r in got] == [500, 302, 200]  # the redirect was not followed
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert all(r.verified for r in got)


def test_delivery_is_abandoned_after_the_last_attempt(
    harness_factory: Callable[..., Harness],
) -> None:
    with webhook_receiver(script=[503]) as rx:
        h = harness_factory(**LOOPBACK_OK, webhook_max_attempts=3)
        assert h.create(with_callback(rx.url)).status_code == 200
        rx.wait_for(lambda got: len(got) >= 3)
        eventually(
            lambda: counter(h, "wanserve_webhook_deliveries_total", outcome="abandoned") == 1
        )
        assert pending_webhooks(h) == 0
    assert len(rx.received) == 3


@pytest.mark.parametrize("outcome", ["FAILED", "CANCELED"])
def test_failed_and_canceled_tasks_are_posted_too(
    harness_factory: Callable[..., Harness], outcome: str
) -> None:
    with webhook_receiver() as rx:
        if outcome == "FAILED":
            h = harness_factory(**LOOPBACK_OK)
            h.runner.error = OutOfMemory("out of memory", while_loading=False)
            task_id = h.create(with_callback(rx.url)).json()["output"]["task_id"]
        else:
            h = harness_factory(**LOOPBACK_OK, start_workers=False)
            task_id = h.create(with_callback(rx.url)).json()["output"]["task_id"]
            cancel = h.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=h.headers())
            assert cancel.status_code == 200
        rx.secret = secret_of(h)
        [hook] = rx.wait_for(lambda got: len(got) >= 1)
    assert hook.json["output"]["task_id"] == task_id
    assert hook.json["output"]["task_status"] == outcome


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:9/hook", "InvalidURL"),  # loopback
        ("http://10.1.2.3/hook", "InvalidURL"),  # private
        ("http://169.254.169.254/latest/meta-data/", "InvalidURL"),  # metadata
        ("http://[::1]/hook", "InvalidURL"),
        ("http://localhost/hook", "InvalidURL"),  # a name that resolves to loopback
        ("ftp://example.com/hook", "InvalidURL"),
        ("https://user:pw@example.com/hook", "InvalidURL"),
        ("http://no-such-host.invalid/hook", "InvalidURL"),
        ("https://example.com/" + "a" * 2100, "InvalidParameter"),
        (42, "InvalidParameter"),
    ],
)
def test_undeliverable_callbacks_are_refused_at_submission(
    harness: Harness, url: object, code: str
) -> None:
    res = harness.create(with_callback(url))  # type: ignore[arg-type]
    assert res.status_code == 400, res.text
    body = res.json()
    assert body["code"] == code
    assert "callback_url" in body["message"] and body["request_id"]
    assert harness.client.get("/api/v1/tasks", headers=harness.headers()).json()["total"] == 0


def test_metadata_stays_refused_even_when_private_networks_are_allowed(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory(fetch_allow_private=True)
    res = h.create(with_callback("http://169.254.169.254/hook"))
    assert res.status_code == 400 and res.json()["code"] == "InvalidURL"


def test_a_task_without_a_callback_sends_nothing(harness_factory: Callable[..., Harness]) -> None:
    with webhook_receiver() as rx:
        h = harness_factory(**LOOPBACK_OK)
        task_id = h.create(T2V).json()["output"]["task_id"]
        h.wait(task_id)
        hooked = h.create(with_callback(rx.url)).json()["output"]["task_id"]
        [hook] = rx.wait_for(lambda got: len(got) >= 1)
    assert hook.json["output"]["task_id"] == hooked  # only the task that asked
