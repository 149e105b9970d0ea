"""The provider's rate limits, shared by every worker process through Redis (SPEC 4.2).

- PROVIDER_RATE_LIMIT: messages per provider account (`200/second`, or a bare `200`).
- SENDER_RATE_LIMIT: messages per sender name, each sender its own budget (optional).
- A cool-down per provider account: a 429 (with its `Retry-After`, else a default) stops every
  worker from starting a window for that account until it ends (`SET ... PX`).

Counted by the `limits` library's moving window (a log of the last `amount` sends: exact, no
burst of twice the rate at a window boundary), on Redis, with Redis' clock: every worker
stamps and compares sends with one clock, not its own. A window asks for its recipients
before claiming them (`acquire`); what it gets it sends, what it does not get it never
claims. Nothing here waits: a refusal says how long until the budget allows a window again,
and the batch goes back on the queue for that long, giving its worker thread to other work.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import redis
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger("astronote.sending")

KEY_PREFIX = "astronote:send-limit"
COOL_DOWN_KEY = "astronote:provider-cooldown"
# A 429 without a readable Retry-After cools the account down this long.
DEFAULT_COOL_DOWN_MS = 1000
# When Redis cannot be reached, a batch waits this long on the queue: sending without the
# shared count could exceed the account's limit; a batch put back costs no retry.
REDIS_DOWN_WAIT_MS = 1000


def parse_rate(value: str) -> RateLimitItem:
    """`200/second`, `50 per 10 seconds`, ..., or a bare integer meaning per second."""
    text = value.strip()
    return parse(f"{text}/second" if text.isdigit() else text)


def account_id(api_base: str, api_key: str | None) -> str:
    """A provider account's name in Redis: the API key is a secret, so only a digest of it."""
    return hashlib.sha256(f"{api_base}\0{api_key or ''}".encode()).hexdigest()[:16]


class RedisClockStorage(RedisStorage):
    """The library's Redis storage and its moving-window scripts, fed Redis' own clock (in
    milliseconds) rather than the calling process's `time.time()`.

    The scripts compare entries with `now - expiry` in whatever unit they are given: here
    milliseconds, so the key's EXPIRE (which the script sets in seconds from the same number)
    is 1000 times longer than needed; the list stays bounded by `amount` all the same."""

    def __init__(self, client: redis.Redis, key_prefix: str = KEY_PREFIX) -> None:
        super().__init__("redis://", connection_pool=client.connection_pool, key_prefix=key_prefix)
        self.client = client

    def now_ms(self) -> float:
        seconds, micros = self.client.time()
        return seconds * 1000 + micros / 1000

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return bool(
            self.lua_acquire_moving_window(
                [self.prefixed_key(key)], [self.now_ms(), limit, expiry * 1000, amount]
            )
        )

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = self.now_ms()
        window = self.lua_moving_window([self.prefixed_key(key)], [now - expiry * 1000, limit])
        if window:
            return float(window[0]) / 1000, int(window[1])
        return now / 1000, 0

    def free_in_ms(self, key: str, limit: int, expiry: int, amount: int) -> int:
        """How long until `amount` more entries fit: until the entry `amount` places from
        the oldest one the window may hold leaves the window (0: they fit now)."""
        if amount > limit:
            amount = limit
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.lindex(self.prefixed_key(key), limit - amount)
        (seconds, micros), entry = pipe.execute()
        if entry is None:
            return 0
        now = seconds * 1000 + micros / 1000
        return max(0, int(float(entry) + expiry * 1000 - now) + 1)


# A budget a send draws on: its name, its rate, its identifiers in Redis.
Limit = tuple[str, RateLimitItem, tuple[str, ...]]


@dataclass(frozen=True)
class Grant:
    """What a window may send now: `count` recipients (0: none), else wait `wait_ms`."""

    count: int
    wait_ms: int = 0
    reason: str | None = None  # "cool_down", "provider", "sender", "redis_down"


class SendLimiter:
    """The rate limits and the cool-down of one provider account, for every sender using it.
    One per worker process; every process counts in the same Redis keys."""

    def __init__(
        self,
        client: redis.Redis,
        account: str,
        provider_rate: str | None = None,
        sender_rate: str | None = None,
    ) -> None:
        self.client = client
        self.account = account
        self.provider = parse_rate(provider_rate) if provider_rate else None
        self.sender = parse_rate(sender_rate) if sender_rate else None
        self.storage = RedisClockStorage(client)
        self.strategy = MovingWindowRateLimiter(self.storage)

    @property
    def cool_down_key(self) -> str:
        return f"{COOL_DOWN_KEY}:{self.account}"

    @property
    def window_cap(self) -> int | None:
        """The most recipients one window may send: a limit's amount per second (at least
        one), so a bulk batch larger than that goes out second by second, not in one burst."""
        caps = [
            min(item.amount, max(1, item.amount // item.get_expiry()))
            for item in (self.provider, self.sender)
            if item is not None
        ]
        return min(caps) if caps else None

    def limits_for(self, sender: str) -> list[Limit]:
        """The budgets a send from `sender` draws on, the narrower (the sender's) first."""
        found: list[Limit] = []
        if self.sender is not None:
            found.append(("sender", self.sender, ("sender", self.account, sender)))
        if self.provider is not None:
            found.append(("provider", self.provider, ("provider", self.account)))
        return found

    def acquire(self, sender: str, wanted: int) -> Grant:
        """Take the budget for up to `wanted` messages from `sender` now, never waiting:
        as many as every limit has left (at most `window_cap`), or none and how long until
        a window may be tried again."""
        try:
            return self._acquire(sender, wanted)
        except redis.RedisError as error:
            log.warning(
                "send rate limit unavailable; the batch waits on the queue",
                extra={"error": type(error).__name__},
            )
            return Grant(0, REDIS_DOWN_WAIT_MS, "redis_down")

    def _acquire(self, sender: str, wanted: int) -> Grant:
        cooling = int(self.client.pttl(self.cool_down_key))
        if cooling > 0:
            return Grant(0, cooling, "cool_down")
        limits = self.limits_for(sender)
        cap = self.window_cap
        count = min(wanted, cap) if cap is not None else wanted
        for _, item, ids in limits:
            _, used = self.storage.get_moving_window(
                item.key_for(*ids), item.amount, item.get_expiry()
            )
            count = min(count, item.amount - used)
        if count <= 0:
            return self.refusal(limits, 1)
        for taken, (_, item, ids) in enumerate(limits):
            if not self.strategy.hit(item, *ids, cost=count):
                # Another worker took the budget between the count and the hit. The sender's
                # share taken just before is not given back (the library has no way to): it
                # only makes this sender slower for a second, never faster than its limit.
                return self.refusal(limits[taken:], count)
        return Grant(count)

    def refusal(self, limits: list[Limit], count: int) -> Grant:
        """None now: wait until every limit has room for `count` more."""
        waits = [
            (
                self.storage.free_in_ms(item.key_for(*ids), item.amount, item.get_expiry(), count),
                name,
            )
            for name, item, ids in limits
        ]
        wait, name = max(waits)
        return Grant(0, max(1, wait), name)

    def cool_down(self, seconds: float | None) -> int:
        """A 429: no worker starts a window for this account for `seconds` (the provider's
        Retry-After, else DEFAULT_COOL_DOWN_MS). A longer cool-down already set is kept.
        Returns the cool-down in force, in milliseconds."""
        wanted = max(1, int(seconds * 1000)) if seconds is not None else DEFAULT_COOL_DOWN_MS
        try:
            pipe = self.client.pipeline()
            pipe.set(self.cool_down_key, 1, px=wanted, nx=True)
            pipe.pexpire(self.cool_down_key, wanted, gt=True)
            pipe.pttl(self.cool_down_key)
            in_force = int(pipe.execute()[-1])
        except redis.RedisError as error:
            log.warning("provider cool-down not recorded", extra={"error": type(error).__name__})
            return wanted
        log.info(
            "provider throttled: account cooling down",
            extra={"cool_down_ms": in_force, "asked_ms": wanted},
        )
        return in_force if in_force > 0 else wanted
