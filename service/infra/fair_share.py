"""Each shop's fair share of a capped provider account's budget (SPEC 12), in Redis.

The account's rate (PROVIDER_RATE_LIMIT) is one budget for every shop. Taken first come,
first served, a shop with 32 batches asking at every refill outnumbers a shop with one, whose
wait then grows with the other's backlog. So, while several shops ask for the account at
once, each is owed an equal share of it (`amount / active shops` in the limit's moving
period), and what one shop is still owed is kept from the others:

- a shop is *active* from its ask (a window's admission, a delivery's precheck) until its
  batch ends (`withdraw`), or at most `ACTIVE_MS` after its last ask (a crashed worker); a
  shop refused for the budget stays active until `ACTIVE_MS` after the moment it was told to
  come back (`hold`), so a slow trip back through the queue does not lose it its share;
- each shop's admitted messages are counted in a sliding log of its own (`usage`), over the
  same period as the account's limit;
- a shop under its share may take what it is owed, or more when the budget holds more than
  the other active shops are owed; a shop at or over its share takes only that surplus.

So a shop alone gets the whole rate, and an idle share flows to whoever asks, but a shop
that starts asking while another saturates the account gets its share as the budget frees,
whatever the number of the other's batches. The account's own limit is not decided here: it
stays the `limits` moving window of `service.infra.ratelimit`, which every grant still
passes, so the share can only lower what a window gets, never raise the account's rate.

One Lua script per decision, on Redis' clock: the shop's demand, every active shop's usage
and the grant are read and recorded atomically, so two workers of one shop cannot both take
its last owed messages. Key names are computed inside the script (one Redis, no Cluster, as
elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

KEY_PREFIX = "astronote:send-share"
# A shop that stopped asking without withdrawing (its worker died) is owed nothing after this.
ACTIVE_MS = 2000
# Longest a shop over its share waits before asking again: the others' batches may end at any
# moment (and withdraw), and the budget they leave should not sit idle for long.
OVER_SHARE_RECHECK_MS = 50

# KEYS[1]: the account's demand (a sorted set: shop -> its last ask, Redis ms); KEYS[2], KEYS[3]:
# the account's admission and dispatch logs (the `limits` moving windows: timestamps, newest
# first, at most `amount` of them). ARGV: shop, wanted, amount, span_ms, usage key prefix,
# take (1: admit the grant; 0: only decide), active_ms.
# Returns {granted, wait_ms, member, stamp}: `member` names the grant in the shop's usage log
# and `stamp` its entries in the admission log (to take it back), "" when none. A refusal's
# wait_ms is 0 when the budget, not the share, is what it waits for (the caller knows how long).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local demand, admitted, dispatched = KEYS[1], KEYS[2], KEYS[3]
local shop, wanted, amount = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local span, prefix = tonumber(ARGV[4]), ARGV[5]
local take, active_ms = tonumber(ARGV[6]), tonumber(ARGV[7])

-- Entries of a moving-window log still in the period (binary search: newest first).
local function in_period(key)
  local low, high, found = 0, amount - 1, -1
  while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('LINDEX', key, mid))
    if value and value >= now - span then
      found = mid
      low = mid + 1
    else
      high = mid - 1
    end
  end
  return found + 1
end
local free = amount - math.max(in_period(admitted), in_period(dispatched))

redis.call('ZADD', demand, 'GT', now, shop)  -- never below a `hold` of another of its batches
redis.call('ZREMRANGEBYSCORE', demand, '-inf', now - active_ms)
if redis.call('PTTL', demand) < active_ms then  -- never shorter than a `hold` made it
  redis.call('PEXPIRE', demand, active_ms)
end
local shops = redis.call('ZRANGE', demand, 0, -1)

-- A usage log: members "<ms>:<seq>:<count>" scored by their time; only the period counts.
local function used(s)
  local key = prefix .. s
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span)
  local total = 0
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    total = total + tonumber(string.match(member, ':(%d+)$'))
  end
  return total
end

local share = math.floor(amount / #shops)
local mine = used(shop)
local owed_to_others = 0
for _, s in ipairs(shops) do
  if s ~= shop then
    local u = used(s)
    if u < share then owed_to_others = owed_to_others + share - u end
  end
end
local owed = 0
if mine < share then owed = share - mine end
local granted = math.min(wanted, free, math.max(free - owed_to_others, owed))
if granted < 0 then granted = 0 end

if granted == 0 then
  -- Over its share with budget left (owed to others): until enough of its own sends leave
  -- the period to put it under its share (the caller caps it: another shop may withdraw).
  local wait = 0
  if free > 0 and mine >= share then
    local excess = mine - share
    local entries = redis.call('ZRANGE', prefix .. shop, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      excess = excess - tonumber(string.match(entries[i], ':(%d+)$'))
      if excess < 0 then
        wait = tonumber(entries[i + 1]) + span - now + 1
        break
      end
    end
  end
  return {0, wait, '', ''}
end
if take == 0 then
  return {granted, 0, '', ''}
end
-- Admitted: the same entries the `limits` moving window writes (its acquire script's).
local stamp = tostring(now)
local entries = {}
for i = 1, granted do entries[i] = stamp end
for i = 1, #entries, 5000 do
  redis.call('LPUSH', admitted, unpack(entries, i, math.min(i + 4999, #entries)))
end
redis.call('LTRIM', admitted, 0, amount - 1)
redis.call('PEXPIRE', admitted, span + 1000)
local key = prefix .. shop
local member = stamp .. ':' .. redis.call('INCR', demand .. ':seq') .. ':' .. granted
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, span)
redis.call('PEXPIRE', demand .. ':seq', span)
return {granted, 0, member, stamp}
"""

# KEYS[1]: the account's demand. ARGV: shop, wait_ms, active_ms. The shop's last ask is moved
# to when it was told to come back (never earlier than it is), on Redis' clock.
_HOLD_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local back = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'GT', back, ARGV[1])
if redis.call('PTTL', KEYS[1]) < back - now + tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], back - now + tonumber(ARGV[3]))
end
return 1
"""

# KEYS[1]: the account's demand. ARGV: shop. Removed unless held for later: another batch of
# the shop refused for the budget is still on its way back.
_WITHDRAW_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""


@dataclass(frozen=True)
class Share:
    """What the fair share lets a shop take now: `granted` (0: nothing) else, when the rest
    is owed to other shops, how long until it may ask again (`wait_ms`; 0: as long as the
    budget says). `member` and `stamp` name an admitted grant, for `give_back`."""

    granted: int
    wait_ms: int = 0
    member: str = ""
    stamp: str = ""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FairShare:
    """The shares of one provider account's budget between the shops asking for it, admitted
    atomically with the account's admission count (`admitted`, the `limits` moving-window log
    the account's windows are admitted in) and checked against its dispatch count."""

    def __init__(
        self,
        client: redis.Redis,
        account: str,
        amount: int,
        span_ms: int,
        admitted_key: str,
        dispatched_key: str,
    ) -> None:
        self.client = client
        self.amount = amount
        self.span_ms = span_ms
        self.admitted_key = admitted_key
        self.keys = [f"{KEY_PREFIX}:{account}:demand", admitted_key, dispatched_key]
        self.usage_prefix = f"{KEY_PREFIX}:{account}:usage:"
        self.script = client.register_script(_SCRIPT)
        self.hold_script = client.register_script(_HOLD_SCRIPT)
        self.withdraw_script = client.register_script(_WITHDRAW_SCRIPT)

    def ask(self, shop: int, wanted: int, take: bool = True) -> Share:
        """A window of `shop` wants `wanted` messages: how many it may take now, within the
        account's budget and the shop's share, admitted in the account's count and the
        shop's usage when `take`. Marks the shop active."""
        granted, wait_ms, member, stamp = self.script(
            self.keys,
            [
                shop,
                max(0, wanted),
                self.amount,
                self.span_ms,
                self.usage_prefix,
                int(take),
                ACTIVE_MS,
            ],
        )
        wait = min(int(wait_ms), OVER_SHARE_RECHECK_MS)
        return Share(int(granted), wait, _text(member), _text(stamp))

    def give_back(self, shop: int, share: Share) -> None:
        """Take back an admitted grant a narrower limit (the sender's) refused after all: its
        entries in the account's count (identical timestamps, so any of them) and its usage."""
        if not share.member:
            return
        pipe = self.client.pipeline()
        pipe.lrem(self.admitted_key, share.granted, share.stamp)
        pipe.zrem(f"{self.usage_prefix}{shop}", share.member)
        pipe.execute()

    def hold(self, shop: int, wait_ms: int) -> None:
        """The shop was refused for the budget and comes back in `wait_ms`: it stays owed
        its share until `ACTIVE_MS` after that, however long its batch's trip back through
        the queue takes (a busy worker, the delay queue's polling). Without this, a trip
        longer than `ACTIVE_MS` minus the wait let the others take the budget freed meanwhile,
        and the shop was refused again on its return."""
        self.hold_script([self.keys[0]], [shop, max(0, wait_ms), ACTIVE_MS])

    def withdraw(self, shop: int) -> None:
        """The shop's batch ended: it is owed nothing until it asks again, unless another
        of its batches (or its test send) is held, on its way back for the budget."""
        self.withdraw_script([self.keys[0]], [shop])
