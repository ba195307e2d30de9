"""The rate limiters, in memory and on the real Redis server: token buckets, failure windows,
sharing between replicas, and atomicity under concurrent callers. Time is injected."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from wanserve.errors import Throttled
from wanserve.throttling.guard import Throttle, ThrottlePolicy
from wanserve.throttling.limiter import MemoryRateLimiter, RateLimiter

REDIS_URL = "redis://127.0.0.1:6379/0"


class Seconds:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own on the shared Redis server, deleted afterwards."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    prefix = f"wanserve-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


LimiterFactory = Callable[[Seconds | None], RateLimiter]


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> LimiterFactory:
    """Every behaviour holds for both implementations of the seam."""
    if request.param == "memory":
        return lambda clock: (
            MemoryRateLimiter() if clock is None else MemoryRateLimiter(clock=clock)
        )
    prefix: str = request.getfixturevalue("redis_prefix")
    from wanserve.throttling.redis import RedisRateLimiter

    return lambda clock: RedisRateLimiter.from_url(REDIS_URL, prefix=prefix, clock=clock)


def test_bucket_allows_a_burst_then_refuses_with_the_wait(make_limiter: LimiterFactory) -> None:
    clock = Seconds()
    limiter = make_limiter(clock)
    assert all(limiter.acquire("k", rate=2, burst=3).allowed for _ in range(3))
    refused = limiter.acquire("k", rate=2, burst=3)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.5)  # one token at 2 a second
    assert limiter.acquire("other", rate=2, burst=3).allowed  # buckets are per name


def test_bucket_refills_at_the_rate_and_never_beyond_the_burst(
    make_limiter: LimiterFactory,
) -> None:
    clock = Seconds()
    limiter = make_limiter(clock)
    for _ in range(3):
        limiter.acquire("k", rate=2, burst=3)
    clock.now += 0.25  # half a token
    half = limiter.acquire("k", rate=2, burst=3)
    assert not half.allowed and half.retry_after == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.acquire("k", rate=2, burst=3).allowed
    assert not limiter.acquire("k", rate=2, burst=3).allowed
    clock.now += 3600  # a long idle time refills to the burst, not to 7200 tokens
    assert sum(limiter.acquire("k", rate=2, burst=3).allowed for _ in range(10)) == 3


def test_concurrent_callers_never_exceed_the_bucket(make_limiter: LimiterFactory) -> None:
    clock = Seconds()  # frozen: no refill while the threads race
    limiter = make_limiter(clock)
    allowed: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def caller() -> None:
        start.wait()
        for _ in range(20):
            ok = limiter.acquire("k", rate=1, burst=50).allowed
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=caller) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 240 and sum(allowed) == 50


def test_failure_window_counts_and_forgets(make_limiter: LimiterFactory) -> None:
    clock = Seconds()
    limiter = make_limiter(clock)
    assert limiter.count("a").count == 0
    assert limiter.add("a", window=60).count == 1
    clock.now += 20
    second = limiter.add("a", window=60)
    # The window opened at the first event and does not slide with later ones.
    assert second.count == 2 and second.resets_in == pytest.approx(40)
    assert limiter.count("a").count == 2 and limiter.count("b").count == 0
    clock.now += 40
    assert limiter.count("a").count == 0
    assert limiter.add("a", window=60).count == 1


def test_two_replicas_share_one_budget(redis_prefix: str) -> None:
    from wanserve.throttling.redis import RedisRateLimiter

    clock = Seconds()
    one = RedisRateLimiter.from_url(REDIS_URL, prefix=redis_prefix, clock=clock)
    two = RedisRateLimiter.from_url(REDIS_URL, prefix=redis_prefix, clock=clock)
    takes = [(one if i % 2 else two).acquire("k", rate=1, burst=4).allowed for i in range(8)]
    assert takes == [True] * 4 + [False] * 4
    one.add("addr", window=60)
    assert two.add("addr", window=60).count == 2


def test_redis_keys_expire_once_irrelevant(redis_prefix: str) -> None:
    import redis

    from wanserve.throttling.redis import RedisRateLimiter

    limiter = RedisRateLimiter.from_url(REDIS_URL, prefix=redis_prefix, clock=Seconds())
    limiter.acquire("k", rate=10, burst=20)  # 0.1 s from full again
    limiter.add("a", window=60)
    client = redis.Redis.from_url(REDIS_URL)
    assert 0 < client.pttl(redis_prefix + "k") <= 1100 + 100
    assert 59_000 < client.pttl(redis_prefix + "a") <= 61_000
    client.close()


def test_redis_time_is_the_default_clock(redis_prefix: str) -> None:
    from wanserve.throttling.redis import RedisRateLimiter

    limiter = RedisRateLimiter.from_url(REDIS_URL, prefix=redis_prefix)
    assert limiter.acquire("k", rate=0.001, burst=2).allowed
    assert limiter.acquire("k", rate=0.001, burst=2).allowed
    refused = limiter.acquire("k", rate=0.001, burst=2)
    assert not refused.allowed and 990 < refused.retry_after <= 1000


def test_unreachable_redis_lets_requests_through(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    from wanserve.throttling.redis import RedisRateLimiter

    limiter = RedisRateLimiter.from_url("redis://127.0.0.1:1/0", clock=Seconds())
    with caplog.at_level(logging.WARNING):
        assert limiter.acquire("k", rate=1, burst=1).allowed
        assert limiter.count("a").count == 0
    assert "rate limiter unavailable" in caplog.text


def throttle(clock: Seconds, **policy: float) -> Throttle:
    base = ThrottlePolicy(rate_per_second=1, burst=2, auth_failure_limit=3, auth_failure_window=300)
    return Throttle(MemoryRateLimiter(clock=clock), ThrottlePolicy(**(base.__dict__ | policy)))


def test_throttle_refuses_a_key_over_its_rate_with_retry_after() -> None:
    clock = Seconds()
    t = throttle(clock)
    t.check_key("key_a")
    t.check_key("key_a")
    with pytest.raises(Throttled) as caught:
        t.check_key("key_a")
    assert caught.value.code == "Throttling.RateQuota"
    assert caught.value.retry_after == pytest.approx(1.0)
    t.check_key("key_b")
    clock.now += 1
    t.check_key("key_a")


def test_throttle_locks_an_address_out_after_failures_until_the_window_ends() -> None:
    clock = Seconds()
    t = throttle(clock)
    for _ in range(3):
        t.check_address("10.0.0.1")
        t.record_auth_failure("10.0.0.1")
        clock.now += 10
    with pytest.raises(Throttled) as caught:
        t.check_address("10.0.0.1")
    assert caught.value.code == "Throttling.AuthFailures"
    assert caught.value.retry_after == pytest.approx(270)
    t.check_address("10.0.0.2")
    clock.now += 270
    t.check_address("10.0.0.1")


def test_zero_turns_each_limit_off() -> None:
    t = throttle(Seconds(), rate_per_second=0, auth_failure_limit=0)
    for _ in range(100):
        t.check_key("k")
        t.record_auth_failure("a")
        t.check_address("a")
