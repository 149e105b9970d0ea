"""PROVIDER_RATE_LIMIT: messages per second across every worker process, counted in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis


class RateLimiter:
    """A one-second fixed window shared through Redis. `acquire(n)` blocks until `n` messages
    fit in the current window (a batch larger than the limit is spread over several windows)."""

    def __init__(
        self,
        client: redis.Redis,
        per_second: int,
        key: str = "astronote:rate:provider",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client, self.per_second, self.key = client, per_second, key
        self.clock, self.sleep = clock, sleep

    def acquire(self, count: int) -> None:
        remaining = count
        while remaining > 0:
            now = self.clock()
            window = int(now)
            take = min(remaining, self.per_second)
            key = f"{self.key}:{window}"
            pipe = self.client.pipeline()
            pipe.incrby(key, take)
            pipe.expire(key, 5)
            used = pipe.execute()[0]
            if used <= self.per_second:
                remaining -= take
                continue
            # Over the limit: give back what we took and wait for the next window.
            self.client.decrby(key, take)
            self.sleep(max(0.0, window + 1 - now))
