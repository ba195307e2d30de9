"""`RateLimiter` in Redis, so every API replica draws on the same buckets and counters.

Each operation is one Lua script run with EVALSHA (redis-py's `Script` falls back to EVAL
once after a restart flushed the script cache): read, refill, take and write happen atomically
inside Redis, so concurrent requests on any number of replicas never take more tokens than the
bucket holds. Every key carries a TTL of about the time it takes to become irrelevant again
(a full bucket, an ended window), so idle keys and addresses cost nothing.

Time comes from Redis's own `TIME` unless a clock is injected: one clock for the whole fleet,
so a replica whose host clock runs ahead cannot refill buckets early or end lockouts sooner.
Tests inject a clock to move time without sleeping.

If Redis cannot be reached the limiter lets requests through and logs a warning: throttling
protects the service, and refusing every request because the limiter is down would do the
opposite.
"""

from __future__ import annotations

import logging
from typing import Any

from wanserve.throttling.limiter import Seconds, Verdict, WindowCount

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "redis_url is set but the redis client is not installed: pip install 'wanserve[redis]'"
    ) from exc

log = logging.getLogger(__name__)

# ARGV[n] = now in seconds, or a negative number for "use Redis TIME".
_NOW = """
local now = tonumber(ARGV[%d])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS[1] = bucket; ARGV = rate, burst, now. Returns {allowed (0|1), retry_after (string:
# Lua numbers returned to Redis are truncated to integers)}.
_ACQUIRE = (
    """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
"""
    + _NOW % 3
    + """
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(retry)}
"""
)

# KEYS[1] = window; ARGV = window seconds, now. Returns {count, resets_in (string)}.
_ADD = (
    """
local window = tonumber(ARGV[1])
"""
    + _NOW % 2
    + """
local state = redis.call('HMGET', KEYS[1], 'n', 'ends')
local n = tonumber(state[1])
local ends = tonumber(state[2])
if n == nil or ends == nil or ends <= now then
  n = 0
  ends = now + window
end
n = n + 1
redis.call('HSET', KEYS[1], 'n', n, 'ends', tostring(ends))
redis.call('PEXPIRE', KEYS[1], math.ceil((ends - now) * 1000) + 1000)
return {n, tostring(ends - now)}
"""
)

# KEYS[1] = window; ARGV = now. Returns {count, resets_in (string)}.
_COUNT = (
    _NOW % 1
    + """
local state = redis.call('HMGET', KEYS[1], 'n', 'ends')
local n = tonumber(state[1])
local ends = tonumber(state[2])
if n == nil or ends == nil or ends <= now then
  return {0, '0'}
end
return {n, tostring(ends - now)}
"""
)


class RedisRateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "wanserve:throttle:",
        clock: Seconds | None = None,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._clock = clock
        self._acquire = client.register_script(_ACQUIRE)
        self._add = client.register_script(_ADD)
        self._count = client.register_script(_COUNT)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "wanserve:throttle:", clock: Seconds | None = None
    ) -> RedisRateLimiter:
        # Short timeouts: this sits on every request, and a slow Redis must not stall the API.
        client = redis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        return cls(client, prefix=prefix, clock=clock)

    def acquire(self, name: str, *, rate: float, burst: int) -> Verdict:
        reply = self._run(self._acquire, name, rate, burst, self._now())
        if reply is None:
            return Verdict(allowed=True)
        return Verdict(allowed=int(reply[0]) == 1, retry_after=float(reply[1]))

    def add(self, name: str, *, window: float) -> WindowCount:
        reply = self._run(self._add, name, window, self._now())
        if reply is None:
            return WindowCount(count=0, resets_in=0.0)
        return WindowCount(count=int(reply[0]), resets_in=float(reply[1]))

    def count(self, name: str) -> WindowCount:
        reply = self._run(self._count, name, self._now())
        if reply is None:
            return WindowCount(count=0, resets_in=0.0)
        return WindowCount(count=int(reply[0]), resets_in=float(reply[1]))

    def close(self) -> None:
        self._redis.close()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else -1.0

    def _run(self, script: Any, name: str, *args: float) -> list[Any] | None:
        try:
            reply: list[Any] = script(keys=[self._prefix + name], args=[repr(a) for a in args])
        except redis.RedisError as exc:
            # Fail open (see the module docstring); the message names no key or address.
            log.warning("rate limiter unavailable, request let through: %s", type(exc).__name__)
            return None
        return reply
