"""How many messages each Dramatiq queue holds, read from the broker's own Redis keys.

Dramatiq's Redis broker (namespace `dramatiq`, see `dramatiq/brokers/redis/dispatch.lua`) keeps:
- `dramatiq:{queue}`: a list of waiting message ids;
- `dramatiq:{queue}.DQ`: the same for delayed messages (retries with backoff, `delay=`);
- `dramatiq:__acks__.{broker_id}.{queue}`: ids a worker has fetched and not yet acknowledged;
  a worker fetches delayed messages too and holds them until their eta, so those sets of
  `{queue}.DQ` are delayed messages, not active ones;
- `dramatiq:{queue}.XQ`: a sorted set of dead-lettered (failed) message ids;
- `dramatiq:__heartbeats__`: a sorted set of broker ids by last command (every process that
  publishes writes to it, web processes included), used here only to find the acks sets.

Everything is read by one Lua script: one round trip however many queues and processes, and
every count is O(1) in Redis (LLEN, SCARD, ZCARD), so 100,000 waiting messages cost nothing.

With BROKER_URL (RabbitMQ) the counts come from RabbitMQ itself
(`service.infra.rabbitmq.RabbitmqQueueCounter`); `counter_for` picks the one in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import dramatiq
import redis

from service.infra.config import Settings

NAMESPACE = "dramatiq"
STATES = ("waiting", "active", "delayed", "failed")

# KEYS: none (the acks keys are only known inside the script; single-node Redis, like Dramatiq's
# own dispatch script). ARGV: namespace, heartbeat timeout in ms, then the queue names.
# Returns, per queue: waiting, active, delayed, failed, orphaned (held by a process whose
# heartbeat is older than the timeout: Dramatiq's maintenance will requeue them).
_COUNT = """
local ns = ARGV[1]
local timeout = tonumber(ARGV[2])
local now = redis.call('time')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local brokers = redis.call('zrange', ns .. ':__heartbeats__', 0, -1, 'withscores')
local result = {}
for q = 3, #ARGV do
    local queue = ARGV[q]
    local active, delayed, orphaned = 0, 0, 0
    for i = 1, #brokers, 2 do
        local acks = ns .. ':__acks__.' .. brokers[i] .. '.' .. queue
        local held = redis.call('scard', acks)
        local held_delayed = redis.call('scard', acks .. '.DQ')
        if now_ms - tonumber(brokers[i + 1]) > timeout then
            orphaned = orphaned + held + held_delayed
        end
        active = active + held
        delayed = delayed + held_delayed
    end
    local waiting = redis.call('llen', ns .. ':' .. queue)
    delayed = delayed + redis.call('llen', ns .. ':' .. queue .. '.DQ')
    local failed = redis.call('zcard', ns .. ':' .. queue .. '.XQ')
    table.insert(result, {waiting, active, delayed, failed, orphaned})
end
return result
"""


class Counter(Protocol):
    """Counts the messages of each queue of the broker in use."""

    def counts(self, queues: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def ping(self) -> None:
        """Raise unless the broker answers."""


def counter_for(settings: Settings, client: redis.Redis) -> Counter:
    """The counter of the broker in use: Redis keys, or RabbitMQ's own counts (through the
    process's broker, which `runtime.boot` has set up)."""
    if settings.broker_url:
        from service.infra.rabbitmq import RabbitmqQueueCounter

        return RabbitmqQueueCounter(dramatiq.get_broker())  # type: ignore[arg-type]
    return QueueCounter(client, settings.broker_heartbeat_timeout_ms)


class QueueCounter:
    """Counts `{waiting, active, delayed, failed}` (and `orphaned`) for each queue."""

    def __init__(
        self, client: redis.Redis, heartbeat_timeout_ms: int, namespace: str = NAMESPACE
    ) -> None:
        self.namespace = namespace
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.client = client
        self._count = client.register_script(_COUNT)

    def ping(self) -> None:
        self.client.ping()

    def counts(self, queues: Sequence[str]) -> dict[str, dict[str, int]]:
        """One round trip (EVALSHA; EVAL once after a Redis restart flushed the script)."""
        rows = self._count(args=[self.namespace, self.heartbeat_timeout_ms, *queues])
        return {
            queue: dict(zip((*STATES, "orphaned"), map(int, row)))
            for queue, row in zip(queues, rows)
        }
