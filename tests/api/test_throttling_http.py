"""Request-rate limits and failed-authentication lockouts through the real app: 429 bodies in
DashScope's shape, `Retry-After`, and budgets shared by replicas through Redis."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.test_endpoints import assert_error
from tests.conftest import T2V, Harness

# A rate this slow refills nothing while a test runs, so the burst is the whole budget.
SLOW = {"rate_limit_per_second": 0.001}


def poll(h: Harness, key: str | None = None) -> httpx.Response:
    return h.client.get("/api/v1/tasks/nope", headers=h.headers(key))


def test_a_key_over_its_rate_gets_429_with_retry_after(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory(start_workers=False, rate_limit_burst=4, **SLOW)
    # Every authenticated route draws on the same bucket.
    assert h.create(T2V).status_code == 200
    assert poll(h).status_code == 200
    assert h.client.get("/api/v1/tasks", headers=h.headers()).status_code == 200
    policy = h.client.get(
        "/api/v1/uploads?action=getPolicy&model=wan2.1-t2v-turbo", headers=h.headers()
    )
    assert policy.status_code == 200
    res = poll(h)
    assert_error(res, 429, "Throttling.RateQuota", "rate limit")
    assert 990 <= int(res.headers["retry-after"]) <= 1000
    _, other = h.components.services.keys.create("other")
    assert poll(h, other).status_code == 200


def test_zero_rate_means_no_limit(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(start_workers=False, rate_limit_per_second=0, rate_limit_burst=1)
    assert all(poll(h).status_code == 200 for _ in range(5))


def test_bad_keys_lock_the_address_out_even_for_a_good_key(
    harness_factory: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    h = harness_factory(start_workers=False, auth_failure_limit=2)
    guess = "sk-" + uuid.uuid4().hex
    with caplog.at_level(logging.DEBUG):
        # A missing key is a misconfigured client, not a guess: it does not count.
        assert_error(h.client.get("/api/v1/tasks/x"), 401, "InvalidApiKey")
        assert_error(poll(h, guess), 401, "InvalidApiKey")
        assert poll(h).status_code == 200
        assert_error(poll(h, guess + "0"), 401, "InvalidApiKey")
        locked = poll(h)
        assert_error(locked, 429, "Throttling.AuthFailures", "invalid API keys")
        assert 290 <= int(locked.headers["retry-after"]) <= 300
        assert_error(h.create(T2V), 429, "Throttling.AuthFailures")
    assert guess not in caplog.text and h.key not in caplog.text


def test_replicas_share_a_keys_budget_through_redis(
    harness_factory: Callable[..., Harness], tmp_path: Path, redis_url: str
) -> None:
    # Two apps on one database and one Redis: two API replicas. Key ids are random, so the
    # buckets of this test are its own; the address lockout (shared by every TestClient) is off.
    shared = {"redis_url": redis_url, "rate_limit_burst": 4, "auth_failure_limit": 0, **SLOW}
    one = harness_factory(start_workers=False, data_dir=tmp_path / "shared", **shared)
    two = harness_factory(start_workers=False, data_dir=tmp_path / "shared", **shared)
    codes = [poll(h, one.key).status_code for h in (one, two, one, two)]
    assert codes == [200] * 4
    assert_error(poll(two, one.key), 429, "Throttling.RateQuota")
    assert_error(poll(one, one.key), 429, "Throttling.RateQuota")
    import redis

    client = redis.Redis.from_url(redis_url)
    assert client.delete(f"wanserve:throttle:key:{one.key_id}") == 1  # the one shared bucket
    client.close()
