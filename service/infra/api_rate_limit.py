"""The per-shop API limits (SPEC 5), shared by every web process through Redis: a request rate
(`ApiRateLimit`) and a number of requests in flight (`ShopConcurrency`).

Counted in Redis by the `limits` library (a sliding-window counter: two integers per shop, no
list of timestamps, and no burst of twice the rate at a window boundary as with fixed windows).
The check runs right after authentication, before a body is read or a query is made, so a shop
hammering the API costs one Redis round trip per refused request.

If Redis cannot be reached the request is let through, and the limiter is not asked again for
`PAUSE_AFTER_ERROR_S`: an API limit must not take the API down with it, nor make every request
wait for a connect timeout (enqueue, which needs Redis, answers 503 on its own).
"""

from __future__ import annotations

import logging
import math
import time

import redis
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter

log = logging.getLogger("astronote.api")

KEY_PREFIX = "astronote:api-limit"
PAUSE_AFTER_ERROR_S = 5.0


class ApiRateLimit:
    """`retry_after(shop_id)`: None if the request may proceed, else seconds to wait."""

    def __init__(self, client: redis.Redis, rate: str) -> None:
        self.item: RateLimitItem = parse(rate)
        storage = RedisStorage(
            "redis://", connection_pool=client.connection_pool, key_prefix=KEY_PREFIX
        )
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self._paused_until = 0.0

    @property
    def description(self) -> str:
        return f"{self.item.amount} requests per {self.item.multiples} {self.item.GRANULARITY.name}"

    def retry_after(self, shop_id: int) -> int | None:
        if time.monotonic() < self._paused_until:
            return None
        try:
            if self.limiter.hit(self.item, "shop", str(shop_id)):
                return None
            reset_at, _ = self.limiter.get_window_stats(self.item, "shop", str(shop_id))
        except redis.RedisError as error:
            log.warning(
                "api rate limit unavailable, requests let through",
                extra={"shop_id": shop_id, "error": type(error).__name__},
            )
            self._paused_until = time.monotonic() + PAUSE_AFTER_ERROR_S
            return None
        return max(1, math.ceil(reset_at - time.time()))


# KEYS[1]: the shop's set of requests in flight (score: start time in ms). ARGV: now (ms),
# request id, cap, forget-after (ms). Entries of requests whose process died mid-request age
# out after `forget-after`, so a crash cannot leave a shop locked out.
_ACQUIRE = """
redis.call('zremrangebyscore', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[4]))
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[3]) then
    return 0
end
redis.call('zadd', KEYS[1], ARGV[1], ARGV[2])
redis.call('pexpire', KEYS[1], ARGV[4])
return 1
"""


class ShopConcurrency:
    """At most `cap` requests of one shop in flight across every web process, so a shop
    hammering the API with heavy requests (imports of 10,000 contacts) cannot take every web
    thread: the others always find one free. Same Redis-down policy as `ApiRateLimit`."""

    def __init__(self, client: redis.Redis, cap: int, forget_after_ms: int = 120_000) -> None:
        self.client = client
        self.cap = cap
        self.forget_after_ms = forget_after_ms
        self.acquire_script = client.register_script(_ACQUIRE)
        self._paused_until = 0.0

    @staticmethod
    def key(shop_id: int) -> str:
        return f"{KEY_PREFIX}:inflight:{shop_id}"

    def acquire(self, shop_id: int, request_id: str) -> bool:
        """False when the shop already has `cap` requests in flight (answer 429)."""
        if time.monotonic() < self._paused_until:
            return True
        try:
            return bool(
                self.acquire_script(
                    keys=[self.key(shop_id)],
                    args=[int(time.time() * 1000), request_id, self.cap, self.forget_after_ms],
                )
            )
        except redis.RedisError as error:
            log.warning(
                "api concurrency limit unavailable, requests let through",
                extra={"shop_id": shop_id, "error": type(error).__name__},
            )
            self._paused_until = time.monotonic() + PAUSE_AFTER_ERROR_S
            return True

    def release(self, shop_id: int, request_id: str) -> None:
        try:
            self.client.zrem(self.key(shop_id), request_id)
        except redis.RedisError:
            pass  # the entry ages out after forget_after_ms
