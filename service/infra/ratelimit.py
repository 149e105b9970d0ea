"""The provider's rate limits, shared by every worker process through Redis (SPEC 4.2).

- PROVIDER_RATE_LIMIT: messages per provider account (`200/second`, or a bare `200`).
- SENDER_RATE_LIMIT: messages per sender name, each sender its own budget (optional).
- A cool-down per provider account: a 429 (with its `Retry-After`, else a default) stops every
  worker from starting a window for that account until it ends (`SET ... PX`).

Counted by the `limits` library's moving window (a log of the last `amount` sends: exact, no
burst of twice the rate at a window boundary), on Redis, with Redis' clock read inside the
library's scripts: every worker stamps and compares sends with one clock, not its own.

Two counts per limit. A window asks for its recipients before claiming them (`acquire`, the
admission): what it does not get it never claims. Each call counts its messages again
(`dispatch`) on the thread making it, right before it goes out: a call that a slow claim or a
busy process brought closer to the previous ones than the limit allows is not made, and its
claims are given back (rare; the admission already spaced the windows). Nothing here waits: a
refusal says how long until the budget allows a window again, and the batch goes back on the
queue for that long, giving its worker thread to other work.

A window asking with its shop is admitted by `service.infra.fair_share` instead of the
library's acquire: the same entries in the same admission log, written by a script that also
decides the shop's fair share of the account while several shops ask (PROVIDER_FAIR_SHARE).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from service.infra.fair_share import FairShare, Share

log = logging.getLogger("astronote.sending")

KEY_PREFIX = "astronote:send-limit"
COOL_DOWN_KEY = "astronote:provider-cooldown"
# A 429 without a readable Retry-After cools the account down this long.
DEFAULT_COOL_DOWN_MS = 1000
# A window takes at most this fraction of a limit's amount per second.
WINDOWS_PER_SECOND = 4
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


# Put before the library's scripts: the timestamp they compare and record is Redis' clock
# when the script runs (milliseconds), not a time the caller read before sending it, which
# a worker descheduled between the two would make stale and let sends through early.
_NOW_MS = """
local now_ms = redis.call('TIME')
now_ms = tonumber(now_ms[1]) * 1000 + tonumber(now_ms[2]) / 1000
"""
# The library's acquire_moving_window.lua, on Redis' clock, with one change: a hit into an
# empty count (the account idle for its period: a burst starts) is stamped `cold_ms` later
# than now, and every hit while that stamp is ahead takes it too (the list stays sorted,
# newest first). A probe's start-up bursts reached its provider 20-50 ms after they were
# counted (cold connections and threads on a busy machine), and the calls refilling their
# budget a second later, leaving right at its edge, 0-10 ms after: the provider saw 24 in one
# second against a limit of 20 with a 30 ms margin. Counted `cold_ms` later, the burst's
# refills leave that much later; once the first second has passed nothing changes.
# KEYS[1]: the count; ARGV: limit, span (ms), amount, cold_ms.
_ACQUIRE = (
    _NOW_MS
    + """
local limit, span = tonumber(ARGV[1]), tonumber(ARGV[2])
local amount, cold = tonumber(ARGV[3]), tonumber(ARGV[4])
if amount > limit then
  return false
end
local entry = redis.call('LINDEX', KEYS[1], limit - amount)
if entry and tonumber(entry) >= now_ms - span then
  return false
end
local stamp = now_ms
local newest = tonumber(redis.call('LINDEX', KEYS[1], 0))
if newest == nil or newest < now_ms - span then
  stamp = now_ms + cold
elseif newest > now_ms then
  stamp = newest
end
local entries = {}
for i = 1, amount do
  entries[i] = stamp
end
for i = 1, #entries, 5000 do
  redis.call('LPUSH', KEYS[1], unpack(entries, i, math.min(i + 4999, #entries)))
end
redis.call('LTRIM', KEYS[1], 0, limit - 1)
redis.call('PEXPIRE', KEYS[1], math.ceil(span + cold) + 1000)
return true
"""
)
# moving_window.lua: ARGV = oldest timestamp still in the window, limit; given the expiry.
_WINDOW_PROLOGUE = _NOW_MS + "ARGV[1] = tostring(now_ms - tonumber(ARGV[1]))\n"


class RedisClockStorage(RedisStorage):
    """The library's Redis storage and its moving-window scripts, run on Redis' clock (in
    milliseconds, read inside the script) rather than the calling process's `time.time()`.

    The library's window script compares entries with `now - expiry` in whatever unit it is
    given: here milliseconds. The acquire is our own (`_ACQUIRE`), which expires the key one
    span, the cold start and a second after its newest entry; the list stays bounded by the
    limit."""

    def __init__(
        self,
        client: redis.Redis,
        key_prefix: str = KEY_PREFIX,
        margin_ms: int = 0,
        cold_ms: int = 0,
    ) -> None:
        super().__init__("redis://", connection_pool=client.connection_pool, key_prefix=key_prefix)
        self.client = client
        self.margin_ms = margin_ms
        self.cold_ms = cold_ms
        self.acquire_script = client.register_script(_ACQUIRE)
        self.window_script = client.register_script(
            _WINDOW_PROLOGUE.encode() + self.SCRIPT_MOVING_WINDOW
        )

    def span_ms(self, expiry: int) -> int:
        """How long a send counts: the limit's period and the margin for the time calls take
        to reach the provider, which varies (a limit of N a second is then N in a second and
        `margin_ms`, as counted here)."""
        return expiry * 1000 + self.margin_ms

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return bool(
            self.acquire_script(
                [self.prefixed_key(key)], [limit, self.span_ms(expiry), amount, self.cold_ms]
            )
        )

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        window = self.window_script([self.prefixed_key(key)], [self.span_ms(expiry), limit])
        if window:
            return float(window[0]) / 1000, int(window[1])
        return 0.0, 0

    def free_in_ms(self, key: str, limit: int, expiry: int, amount: int) -> int:
        """How long until `amount` more entries fit: until the entry `amount` places from
        the oldest one the window may hold leaves the window (0: they fit now)."""
        amount = min(amount, limit)
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.lindex(self.prefixed_key(key), limit - amount)
        (seconds, micros), entry = pipe.execute()
        if entry is None:
            return 0
        now = seconds * 1000 + micros / 1000
        return max(0, int(float(entry) + self.span_ms(expiry) - now) + 1)


# A budget a send draws on: its name, its rate, its identifiers in Redis.
Limit = tuple[str, RateLimitItem, tuple[str, ...]]


@dataclass(frozen=True)
class Grant:
    """What a window may send now: `count` recipients (0: none), else wait `wait_ms`."""

    count: int
    wait_ms: int = 0
    # "cool_down", "provider", "sender", "share" (the rest is owed to other shops), "redis_down"
    reason: str | None = None
    # The fair share's record of an admitted grant, for `give_back`.
    share: Share | None = None


class SendLimiter:
    """The rate limits and the cool-down of one provider account, for every sender using it.
    One per worker process; every process counts in the same Redis keys."""

    def __init__(
        self,
        client: redis.Redis,
        account: str,
        provider_rate: str | None = None,
        sender_rate: str | None = None,
        margin_ms: int = 0,
        fair_share: bool = True,
        lookahead_ms: int = 0,
    ) -> None:
        self.client = client
        self.account = account
        self.provider = parse_rate(provider_rate) if provider_rate else None
        self.sender = parse_rate(sender_rate) if sender_rate else None
        # The dispatch count: the limits as the provider counts them, with the margin, and a
        # burst into an idle account counted the margin again later (see _ACQUIRE).
        self.storage = RedisClockStorage(client, margin_ms=margin_ms, cold_ms=margin_ms)
        self.strategy = MovingWindowRateLimiter(self.storage)
        # The admission looks `lookahead_ms` ahead: it counts each send as gone that long
        # before it leaves the dispatch count, so a window is admitted, claimed and composed
        # while the budget frees, and its call departs when it has (`dispatch`, waiting at
        # most about that long on the call's pool thread), instead of the batch starting its
        # trip back through the queue only once the budget is free.
        self.lookahead_ms = lookahead_ms
        self.admission = RedisClockStorage(client, margin_ms=margin_ms - lookahead_ms)
        self.admission_strategy = MovingWindowRateLimiter(self.admission)
        # The shops' shares of the account's budget (service/infra/fair_share.py), decided
        # and admitted in the account's own admission count, atomically.
        self.share: FairShare | None = None
        if fair_share and self.provider is not None:
            keys = [
                self.storage.prefixed_key(self.provider.key_for(*ids))
                for stage in ("admit", "send")
                for name, _, ids in self.limits_for("", stage)
                if name == "provider"
            ]
            self.share = FairShare(
                client,
                account,
                self.provider.amount,
                self.admission.span_ms(self.provider.get_expiry()),
                *keys,
            )

    @classmethod
    def for_settings(cls, settings: Any, client: redis.Redis) -> SendLimiter:
        """The configured provider account's limiter (every process builds it alike)."""
        return cls(
            client,
            account_id(settings.mitto_api_base, settings.mitto_api_key),
            settings.provider_rate_limit,
            settings.sender_rate_limit,
            settings.provider_rate_margin_ms,
            settings.provider_fair_share,
            settings.provider_rate_lookahead_ms,
        )

    @property
    def limits_sends(self) -> bool:
        """Whether any rate is configured (else only the cool-down is kept)."""
        return self.provider is not None or self.sender is not None

    @property
    def cool_down_key(self) -> str:
        return f"{COOL_DOWN_KEY}:{self.account}"

    @property
    def window_cap(self) -> int | None:
        """The most recipients one window may send: a quarter of a limit's amount per second
        (at least one), so a bulk batch goes out in several calls across each second, not
        as one burst: a call that reaches the provider late then moves a quarter of a
        second's budget, not all of it, into the next second the provider counts."""
        caps = [
            min(item.amount, max(1, item.amount // item.get_expiry() // WINDOWS_PER_SECOND))
            for item in (self.provider, self.sender)
            if item is not None
        ]
        return min(caps) if caps else None

    def limits_for(self, sender: str, stage: str) -> list[Limit]:
        """The budgets a send from `sender` draws on at `stage` ("admit" before the claim,
        "send" right before the calls), the narrower (the sender's) first."""
        found: list[Limit] = []
        if self.sender is not None:
            found.append(("sender", self.sender, (stage, "sender", self.account, sender)))
        if self.provider is not None:
            found.append(("provider", self.provider, (stage, "provider", self.account)))
        return found

    def acquire(self, sender: str, wanted: int, shop: int | None = None) -> Grant:
        """Before a window's claim: the budget for up to `wanted` messages from `sender`,
        never waiting. As many as every limit has left (at most `window_cap`) and, with a
        `shop`, its fair share lets it take; or none and how long until a window may be
        tried again (the cool-down, the budget's return, or the share's recheck)."""
        return self._guarded(lambda: self._acquire(sender, wanted, shop))

    def precheck(self, shop: int | None = None) -> Grant:
        """Before a delivery reads anything: whether the account can send at all now (its
        cool-down, its provider-wide budget, the shop's share of it), taking nothing. A batch
        that would only be refused goes back on the queue without its database reads. The
        shop counts as asking from here: the budget freeing meanwhile is kept for its share."""
        return self._guarded(lambda: self._precheck(shop))

    def withdraw(self, shop: int) -> None:
        """The shop's delivery ended (not refused by a limit): it is owed no share until it
        asks again, so what it was owed flows to the others at once."""
        if self.share is None:
            return
        try:
            self.share.withdraw(shop)
        except redis.RedisError as error:  # it expires on its own (fair_share.ACTIVE_MS)
            log.warning("fair share not withdrawn", extra={"error": type(error).__name__})

    def _provider_stage_limits(self) -> list[Limit]:
        return [
            limit
            for stage in ("admit", "send")
            for limit in self.limits_for("", stage)
            if limit[0] == "provider"
        ]

    def _left(self, limits: list[Limit]) -> dict[str, int]:
        """What each named limit has left now (the least over its stages)."""
        left: dict[str, int] = {}
        for name, item, ids in limits:
            _, used = self.admission.get_moving_window(
                item.key_for(*ids), item.amount, item.get_expiry()
            )
            left[name] = min(left.get(name, item.amount), item.amount - used)
        return left

    def _precheck(self, shop: int | None) -> Grant:
        if cooling := self._cooling():
            return cooling
        limits = self._provider_stage_limits()
        if self.share is not None and shop is not None:
            return self._share_grant(shop, self.share.ask(shop, 1, take=False), limits)
        if self._left(limits).get("provider", 1) <= 0:
            return self.refusal(limits, 1)
        return Grant(1)

    def _share_grant(self, shop: int, share: Share, limits: list[Limit]) -> Grant:
        """The share's answer as a grant: refused for the share (the budget left is owed to
        other shops: ask again soon), or for the budget (until it has room again; the shop
        stays owed its share until it is back)."""
        if share.granted:
            return Grant(share.granted)
        if share.wait_ms:
            return Grant(0, share.wait_ms, "share")
        refused = self.refusal(limits, 1)
        assert self.share is not None
        self.share.hold(shop, refused.wait_ms)
        return refused

    def dispatch(self, sender: str, count: int) -> Grant:
        """Right before a claimed window's calls: `count` sends counted at the time they go
        out. The admission (`acquire`) spaces windows, but a claim slowed down (a busy
        database, a descheduled thread) would let two admitted windows reach the provider
        closer than the limit allows; this second count refuses the later one, whose claims
        are then given back. All of `count` or nothing."""
        return self._guarded(lambda: self._dispatch(sender, count))

    def _guarded(self, decide: Callable[[], Grant]) -> Grant:
        try:
            return decide()
        except redis.RedisError as error:
            log.warning(
                "send rate limit unavailable; the batch waits on the queue",
                extra={"error": type(error).__name__},
            )
            return Grant(0, REDIS_DOWN_WAIT_MS, "redis_down")

    def _cooling(self) -> Grant | None:
        cooling = int(self.client.pttl(self.cool_down_key))
        return Grant(0, cooling, "cool_down") if cooling > 0 else None

    def _acquire(self, sender: str, wanted: int, shop: int | None) -> Grant:
        if cooling := self._cooling():
            return cooling
        admit, send = self.limits_for(sender, "admit"), self.limits_for(sender, "send")
        cap = self.window_cap
        count = min(wanted, cap) if cap is not None else wanted
        if self.share is None or shop is None:
            # Room in both counts: admitted only when the sends of a second ago have also
            # left the dispatch count, a window is not refused there for having claimed
            # faster than the one before it.
            count = min([count, *self._left(admit + send).values()])
            return self._hit(admit, count) if count > 0 else self.refusal(admit + send, 1)
        # The sender's own limit (narrower) cuts what is asked of the account; the account's
        # admission and the shop's share are then decided in one script.
        by_sender = [limit for limit in admit + send if limit[0] == "sender"]
        if by_sender:
            count = min(count, self._left(by_sender)["sender"])
            if count <= 0:
                return self.refusal(by_sender, 1)
        share = self.share.ask(shop, count)
        grant = self._share_grant(
            shop, share, [limit for limit in admit + send if limit[0] == "provider"]
        )
        if grant.count and by_sender:
            sender_grant = self._hit(
                [limit for limit in admit if limit[0] == "sender"], grant.count
            )
            if not sender_grant.count:
                self.share.give_back(shop, share)
                return sender_grant
        return Grant(grant.count, grant.wait_ms, grant.reason, share if grant.count else None)

    def give_back(self, shop: int, grant: Grant) -> None:
        """A window admitted (ahead of the budget) whose call was refused at dispatch after
        all: nothing of it went out, so its entries leave the account's admission count and
        the shop's usage. Kept, they would stand for sends that never happened for a second,
        and the admission would refuse windows the dispatch count has room for. (Only the
        share's record can be given back; the library's sender count cannot.)"""
        if self.share is None or grant.share is None:
            return
        try:
            self.share.give_back(shop, grant.share)
        except redis.RedisError as error:  # it leaves the count on its own within a second
            log.warning("admission not given back", extra={"error": type(error).__name__})

    def dispatch_wait(self, sender: str, count: int) -> Grant:
        """Whether `count` sends would pass the dispatch count now, taking nothing: Grant(count),
        or none and how long until they would (a call admitted ahead of the budget waits that
        long, then `dispatch` takes them). Taking them to learn it would leave the sender's
        entries behind whenever the account's refused them (the library gives nothing back)."""
        return self._guarded(lambda: self._dispatch_wait(sender, count))

    def _dispatch_wait(self, sender: str, count: int) -> Grant:
        if cooling := self._cooling():
            return cooling
        waits = [
            (
                self.storage.free_in_ms(item.key_for(*ids), item.amount, item.get_expiry(), count),
                name,
            )
            for name, item, ids in self.limits_for(sender, "send")
        ]
        wait, name = max(waits, default=(0, None))
        return Grant(count) if wait <= 0 else Grant(0, wait, name)

    def _dispatch(self, sender: str, count: int) -> Grant:
        if cooling := self._cooling():
            return cooling
        return self._hit(self.limits_for(sender, "send"), count, dispatch=True)

    def _hit(self, limits: list[Limit], count: int, dispatch: bool = False) -> Grant:
        """Take `count` from each limit in turn: in the admission count (looking ahead), or
        at `dispatch` in the dispatch count (exact)."""
        strategy = self.strategy if dispatch else self.admission_strategy
        for taken, (_, item, ids) in enumerate(limits):
            if not strategy.hit(item, *ids, cost=count):
                # Another worker took the budget first. The sender's share taken just before
                # is not given back (the library has no way to): it only makes this sender
                # slower for a second, never faster than its limit. A window admitted in part
                # comes back as soon as one message fits (it takes what is left then); a
                # dispatch, all or nothing, when all of its messages fit.
                return self.refusal(limits[taken:], count if dispatch else 1, dispatch)
        return Grant(count)

    def refusal(self, limits: list[Limit], count: int, dispatch: bool = False) -> Grant:
        """None now: wait until every limit has room for `count` more (for a `dispatch`, as
        the dispatch count says; else as the admission, looking ahead, does)."""
        storage = self.storage if dispatch else self.admission
        waits = [
            (
                storage.free_in_ms(item.key_for(*ids), item.amount, item.get_expiry(), count),
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
