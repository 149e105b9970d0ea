"""The per-shop API rate limit (SPEC 5): one budget per shop shared by every web process.

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
        storage = RedisStorage("redis://", connection_pool=client.connection_pool,
                               key_prefix=KEY_PREFIX)
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
            log.warning("api rate limit unavailable, requests let through",
                        extra={"shop_id": shop_id, "error": type(error).__name__})
            self._paused_until = time.monotonic() + PAUSE_AFTER_ERROR_S
            return None
        return max(1, math.ceil(reset_at - time.time()))
