"""The per-shop API limits (SPEC 5), shared by every web process through Redis: a request rate
(`API_RATE_LIMIT`), a number of requests in flight (`API_SHOP_CONCURRENCY`) and, lower, of
heavy requests in flight (`API_SHOP_HEAVY_CONCURRENCY`: contact imports, a second or so of a
core each).

All are decided by one Lua script (`ShopLimits.admit`), one Redis round trip, and for a key
seen before, before any database work: Redis maps each API key's SHA-256 to its shop
(`remember`, after the key first authenticated in PostgreSQL; a key never changes shop), so a
shop hammering the API is refused at the cost of that round trip, and its refused requests take
no database connection or query from the other shops. An admitted request is still
authenticated in PostgreSQL (a revoked key stops working at once in every process; its
mapping is forgotten at its first refusal).

The rate is a sliding-window counter (two integers per shop: this window's count and the last
one's, weighted by how much of the last window still overlaps; no burst of twice the rate at a
window boundary as with fixed windows). The requests in flight are a sorted set per shop (the
heavy ones a second) whose entries age out after `forget_after_ms`, so a process that died
mid-request cannot lock a shop out. The script names the shop's keys itself (it reads the shop
from the key's mapping first): a single Redis, not a Redis Cluster.

If Redis cannot be reached the request is let through, and the limits are not asked again for
`PAUSE_AFTER_ERROR_S`: an API limit must not take the API down with it, nor make every request
wait for a connect timeout (enqueue, which needs Redis, answers 503 on its own).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis
from limits import parse

log = logging.getLogger("astronote.api")

KEY_PREFIX = "astronote:api-limit"
PAUSE_AFTER_ERROR_S = 5.0
# How long a key's mapping to its shop is kept after its last use.
MAPPING_TTL_S = 86_400

# KEYS[1]: the API key's mapping (`{prefix}:key:{sha256}`), or unused when ARGV[1] names the
# shop. ARGV: shop id or '', now (ms), rate limit (0: off), rate window (ms), cap (0: off),
# forget-after (ms), request id, key prefix, mapping TTL (s), heavy cap (0: a light request, or
# no cap). Returns {shop id or '' when the key is unknown, verdict, retry-after ms}; verdict 0:
# admitted (and counted), 1: over the rate, 2: at the cap of requests in flight, 3: at the cap
# of heavy requests in flight. A refused request takes no place in either set.
_ADMIT = """
local shop = ARGV[1]
if shop == '' then
    shop = redis.call('get', KEYS[1])
    if not shop then
        return {'', 0, 0}
    end
    redis.call('expire', KEYS[1], tonumber(ARGV[9]))
end
local now, limit, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local cap, forget, prefix = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[8]
local heavy_cap = tonumber(ARGV[10])
local counter
if limit > 0 then
    local current = math.floor(now / window)
    counter = prefix .. ':rate:' .. shop .. ':' .. current
    local count = tonumber(redis.call('get', counter) or '0')
    local last = tonumber(redis.call('get', prefix .. ':rate:' .. shop .. ':' .. (current - 1))
                          or '0')
    local into = now - current * window
    if last * (window - into) / window + count + 1 > limit then
        local wait = window - into
        if count + 1 <= limit and last > 0 then
            -- the last window's weight falls until one more request fits
            wait = window - (limit - 1 - count) * window / last - into
        end
        return {shop, 1, math.max(1, math.ceil(wait))}
    end
end
local inflight, heavy = prefix .. ':inflight:' .. shop, prefix .. ':heavy:' .. shop
if cap > 0 then
    redis.call('zremrangebyscore', inflight, '-inf', now - forget)
    if redis.call('zcard', inflight) >= cap then
        return {shop, 2, 1000}
    end
end
if heavy_cap > 0 then
    redis.call('zremrangebyscore', heavy, '-inf', now - forget)
    if redis.call('zcard', heavy) >= heavy_cap then
        return {shop, 3, 1000}
    end
    redis.call('zadd', heavy, now, ARGV[7])
    redis.call('pexpire', heavy, forget)
end
if cap > 0 then
    redis.call('zadd', inflight, now, ARGV[7])
    redis.call('pexpire', inflight, forget)
end
if counter then
    redis.call('incr', counter)
    redis.call('pexpire', counter, 2 * window)
end
return {shop, 0, 0}
"""


@dataclass(frozen=True)
class Admission:
    """What `ShopLimits.admit` decided: `shop_id` None when the API key is not known yet (ask
    PostgreSQL, then `remember` it); `refused` "rate", "concurrency" or "heavy", with
    `retry_after` seconds; `held` when the request took a place in flight (give it back:
    `release`)."""

    shop_id: int | None
    refused: str | None = None
    retry_after: int = 0
    held: bool = False


class ShopLimits:
    """The rate (`rate`, as `100/second`; None: off), the cap of requests in flight (`cap`;
    0: off) and the lower cap of heavy requests in flight (`heavy_cap`, contact imports,
    which hold a core for up to seconds; 0: off) of each shop, decided in one round trip."""

    def __init__(
        self,
        client: redis.Redis,
        rate: str | None,
        cap: int,
        forget_after_ms: int = 120_000,
        heavy_cap: int = 0,
    ) -> None:
        self.client = client
        item = parse(rate) if rate else None
        self.limit = item.amount if item else 0
        self.window_ms = int(item.get_expiry() * 1000) if item else 1000
        self.rate_description = (
            f"{item.amount} requests per {item.multiples} {item.GRANULARITY.name}" if item else ""
        )
        self.cap = cap
        self.heavy_cap = heavy_cap
        self.forget_after_ms = forget_after_ms
        self.script = client.register_script(_ADMIT)
        self._paused_until = 0.0

    @staticmethod
    def mapping(key_hash: str) -> str:
        return f"{KEY_PREFIX}:key:{key_hash}"

    @staticmethod
    def in_flight_key(shop_id: int) -> str:
        return f"{KEY_PREFIX}:inflight:{shop_id}"

    @staticmethod
    def heavy_key(shop_id: int) -> str:
        return f"{KEY_PREFIX}:heavy:{shop_id}"

    def admit(
        self,
        request_id: str,
        *,
        key_hash: str | None = None,
        shop_id: int | None = None,
        heavy: bool = False,
    ) -> Admission:
        """Count one request of the shop that `key_hash` maps to (or of `shop_id`), unless it
        is over a limit (a `heavy` one also against `heavy_cap`). An unknown key, or Redis
        down, is `Admission(None)` / let through."""
        heavy_cap = self.heavy_cap if heavy else 0
        if time.monotonic() < self._paused_until:
            return Admission(shop_id)
        try:
            shop, verdict, retry_ms = self.script(
                keys=[self.mapping(key_hash or "")],
                args=[
                    "" if shop_id is None else shop_id,
                    int(time.time() * 1000),
                    self.limit,
                    self.window_ms,
                    self.cap,
                    self.forget_after_ms,
                    request_id,
                    KEY_PREFIX,
                    MAPPING_TTL_S,
                    heavy_cap,
                ],
            )
        except redis.RedisError as error:
            self._unavailable(error, shop_id)
            return Admission(shop_id)
        if not shop:
            return Admission(None)
        refused = {1: "rate", 2: "concurrency", 3: "heavy"}.get(int(verdict))
        return Admission(
            int(shop),
            refused,
            math.ceil(int(retry_ms) / 1000) if refused else 0,
            held=refused is None and (self.cap > 0 or heavy_cap > 0),
        )

    def remember(self, key_hash: str, shop_id: int) -> None:
        """The key authenticated as `shop_id`: its next requests are limited before the
        database is asked."""
        try:
            self.client.set(self.mapping(key_hash), shop_id, ex=MAPPING_TTL_S)
        except redis.RedisError as error:
            self._unavailable(error, shop_id)

    def forget(self, key_hash: str) -> None:
        """The key was refused by PostgreSQL (revoked): it no longer counts for its shop."""
        if time.monotonic() < self._paused_until:
            return
        try:
            self.client.delete(self.mapping(key_hash))
        except redis.RedisError as error:
            self._unavailable(error, None)

    def release(self, shop_id: int, request_id: str) -> None:
        """Give back the request's places in flight (both sets, one round trip: a light
        request is in the heavy set of no shop, and ZREM of an absent member is a no-op)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(self.in_flight_key(shop_id), request_id)
            pipe.zrem(self.heavy_key(shop_id), request_id)
            pipe.execute()
        except redis.RedisError:
            pass  # the entry ages out after forget_after_ms

    def _unavailable(self, error: Exception, shop_id: int | None) -> None:
        log.warning(
            "api limits unavailable, requests let through",
            extra={"shop_id": shop_id, "error": type(error).__name__},
        )
        self._paused_until = time.monotonic() + PAUSE_AFTER_ERROR_S


class ApiRateLimit:
    """The rate alone, by shop id: `retry_after(shop_id)` is None if the request may proceed,
    else seconds to wait."""

    def __init__(self, client: redis.Redis, rate: str) -> None:
        self.limits = ShopLimits(client, rate, 0)

    @property
    def description(self) -> str:
        return self.limits.rate_description

    def retry_after(self, shop_id: int) -> int | None:
        admission = self.limits.admit("", shop_id=shop_id)
        return admission.retry_after if admission.refused else None


class ShopConcurrency:
    """The cap of requests in flight alone, by shop id, so a shop hammering the API with heavy
    requests (imports of 10,000 contacts) cannot take every web thread."""

    def __init__(self, client: redis.Redis, cap: int, forget_after_ms: int = 120_000) -> None:
        self.limits = ShopLimits(client, None, cap, forget_after_ms)
        self.cap = cap

    def acquire(self, shop_id: int, request_id: str) -> bool:
        """False when the shop already has `cap` requests in flight (answer 429)."""
        return self.limits.admit(request_id, shop_id=shop_id).refused is None

    def release(self, shop_id: int, request_id: str) -> None:
        self.limits.release(shop_id, request_id)
