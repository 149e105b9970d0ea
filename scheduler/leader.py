"""Leader election among clock processes: one Redis key, held with a unique value.

The key `astronote:scheduler:leader` holds JSON `{holder, epoch, token}`: `holder` is the
clock's `host:pid`, `epoch` a fencing number drawn from a PostgreSQL sequence on each
acquisition, `token` makes the value unique to this tenure. It is taken with `SET NX PX`,
renewed and released only by scripts that first check the value is still ours, so a clock
whose lease ran out can never extend or delete its successor's lock.

The epoch is drawn *after* the lock is won (the value is then rewritten, checked): drawn
before, a clock paused between drawing and `SET NX` could lead with an epoch older than its
predecessor's, and the fencing in `scheduler.runs` would then refuse all of its jobs.

Redis and this process measure the lease on different clocks, and a process can be paused
(SIGSTOP, a long GC, a VM migration) between any two lines. So the holder keeps its own
deadline on a monotonic clock, measured from the moment it *sent* the command, and
`lease_valid()` answers "may I still act?" without asking Redis: a paused process that wakes
up after its lease expired finds out before it acts, not after.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from service.observability.scheduler_state import LEADER_KEY

# Share of the TTL kept in reserve: covers the drift between our clock and Redis's, and the
# moment a job needs between checking its lease and claiming its slot.
SAFETY_FRACTION = 0.1

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

# Put the epoch into a lock we just won, keeping its TTL, unless we lost it meanwhile.
_STAMP = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[1], ARGV[2], 'KEEPTTL')
    return 1
end
return 0
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Tenure:
    """What this process holds: the exact value it wrote, and when its lease runs out."""

    value: str
    epoch: int
    deadline: float  # on the injected monotonic clock


class Leadership:
    """One clock's view of the leader lock. Thread-safe: the election loop mutates it, job
    threads read it (`lease_valid()`), and every mutation swaps one immutable `Tenure`."""

    def __init__(
        self,
        client: redis.Redis,
        holder: str,
        ttl_ms: int,
        next_epoch: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        key: str = LEADER_KEY,
    ) -> None:
        self.client = client
        self.holder = holder
        self.ttl_ms = ttl_ms
        self.next_epoch = next_epoch
        self.clock = clock
        self.key = key
        self._tenure: Tenure | None = None
        self._mutation = threading.Lock()
        self._renew = client.register_script(_RENEW)
        self._stamp = client.register_script(_STAMP)
        self._release = client.register_script(_RELEASE)

    @property
    def epoch(self) -> int | None:
        tenure = self._tenure
        return tenure.epoch if tenure else None

    def acquire(self) -> bool:
        """Take the lock if it is free, or keep it (a checked renewal) if this process holds
        it. An epoch is drawn only once the lock is won, so standbys polling a held lock do
        not burn the sequence. Redis and database errors propagate; a lock won but not
        stamped with its epoch is given back."""
        if self._tenure is not None:
            return self.renew()
        token = uuid.uuid4().hex
        unstamped = self._value(None, token)
        sent_at = self.clock()
        if not self.client.set(self.key, unstamped, nx=True, px=self.ttl_ms):
            return False
        try:
            epoch = self.next_epoch()
        except BaseException:
            self._release(keys=[self.key], args=[unstamped])
            raise
        value = self._value(epoch, token)
        if self._stamp(keys=[self.key], args=[unstamped, value]) != 1:
            return False  # the lease ran out while we drew the epoch (a pause): not ours
        with self._mutation:
            self._tenure = Tenure(value, epoch, sent_at + self.ttl_ms / 1000)
        return True

    def _value(self, epoch: int | None, token: str) -> str:
        return json.dumps({"holder": self.holder, "epoch": epoch, "token": token})

    def renew(self) -> bool:
        """Extend the lease if the key still holds our value. Since only this process ever
        writes that value, a successful renewal proves the tenure never lapsed. If the key is
        gone (expired, flushed) or another clock's, step down at once and return False."""
        tenure = self._tenure
        if tenure is None:
            return False
        sent_at = self.clock()
        if self._renew(keys=[self.key], args=[tenure.value, self.ttl_ms]) == 1:
            with self._mutation:
                if self._tenure is tenure:
                    self._tenure = Tenure(tenure.value, tenure.epoch, sent_at + self.ttl_ms / 1000)
            return True
        self.abandon()
        return False

    def release(self) -> bool:
        """Delete the lock if it is still ours, so a standby takes over at its next retry
        instead of waiting for the TTL. We stop leading whatever Redis answers."""
        tenure = self._tenure
        self.abandon()
        if tenure is None:
            return False
        return self._release(keys=[self.key], args=[tenure.value]) == 1

    def abandon(self) -> None:
        """Forget the tenure without touching Redis (the lock is lost or its lease ran out)."""
        with self._mutation:
            self._tenure = None

    def is_leading(self) -> bool:
        """Holding the lock and its lease not yet run out on our own clock."""
        tenure = self._tenure
        return tenure is not None and self.clock() < tenure.deadline

    def lease_valid(self) -> bool:
        """Safe to start a job now: leading with the safety margin still ahead."""
        tenure = self._tenure
        margin = self.ttl_ms / 1000 * SAFETY_FRACTION
        return tenure is not None and self.clock() < tenure.deadline - margin

    def lease_remaining_ms(self) -> int:
        tenure = self._tenure
        if tenure is None:
            return 0
        return max(0, int((tenure.deadline - self.clock()) * 1000))
