"""`Throttle`: the two limits the API applies before it serves an authenticated request.

- Per key: a token bucket of `rate_limit_burst` requests refilled at `rate_limit_per_second`.
  Beyond it: 429 `Throttling.RateQuota` with `Retry-After`.
- Per client address: after `auth_failure_limit` presented keys that are wrong (unknown or
  revoked) within `auth_failure_window_seconds`, the address gets 429 `Throttling.AuthFailures`
  for every request, a correct key included, until that window ends: a key guesser learns
  nothing more, and cannot tell a hit from a miss. The window opens at the first failure.

State lives behind the `RateLimiter` seam; names are built from key ids and addresses, never
from the presented secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from wanserve.config import Settings
from wanserve.errors import Throttled
from wanserve.throttling.limiter import MemoryRateLimiter, RateLimiter, Seconds

AUTH_FAILURES_CODE = "Throttling.AuthFailures"
RATE_CODE = "Throttling.RateQuota"


@dataclass(frozen=True)
class ThrottlePolicy:
    rate_per_second: float  # 0: no request-rate limit
    burst: int
    auth_failure_limit: int  # 0: no lockout
    auth_failure_window: float


class Throttle:
    def __init__(self, limiter: RateLimiter, policy: ThrottlePolicy) -> None:
        self._limiter = limiter
        self._policy = policy
        # Checks against process memory take microseconds and never block, so the API may run
        # them on its event loop; a shared limiter (Redis) is network I/O and must not.
        self.in_memory = isinstance(limiter, MemoryRateLimiter)

    def check_address(self, address: str) -> None:
        """Refuse an address locked out by failed authentications."""
        limit = self._policy.auth_failure_limit
        if limit <= 0:
            return
        seen = self._limiter.count(f"authfail:{address}")
        if seen.count >= limit:
            raise Throttled(
                "Too many requests with invalid API keys from this address; try again later.",
                code=AUTH_FAILURES_CODE,
                retry_after=seen.resets_in,
            )

    def record_auth_failure(self, address: str) -> None:
        if self._policy.auth_failure_limit > 0:
            self._limiter.add(f"authfail:{address}", window=self._policy.auth_failure_window)

    def check_key(self, key_id: str) -> None:
        """Take one request from the key's bucket, or refuse with the wait until the next."""
        rate = self._policy.rate_per_second
        if rate <= 0:
            return
        verdict = self._limiter.acquire(f"key:{key_id}", rate=rate, burst=self._policy.burst)
        if not verdict.allowed:
            raise Throttled(
                "Requests rate limit exceeded, please try again later.",
                code=RATE_CODE,
                retry_after=verdict.retry_after,
            )


def build_throttle(settings: Settings, *, clock: Seconds | None = None) -> Throttle:
    """The limiter `settings` ask for: Redis when `redis_url` is set (a fleet of replicas),
    else this process's memory (embedded: one process sees every request)."""
    limiter: RateLimiter
    if settings.redis_url is not None:
        from wanserve.throttling.redis import RedisRateLimiter

        limiter = RedisRateLimiter.from_url(settings.redis_url.get_secret_value(), clock=clock)
    else:
        limiter = MemoryRateLimiter() if clock is None else MemoryRateLimiter(clock=clock)
    policy = ThrottlePolicy(
        rate_per_second=settings.rate_limit_per_second,
        burst=settings.rate_limit_burst,
        auth_failure_limit=settings.auth_failure_limit,
        auth_failure_window=settings.auth_failure_window_seconds,
    )
    return Throttle(limiter, policy)
