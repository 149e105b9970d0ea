"""The one time source for decisions that follow the calendar: quiet hours and the frequency
cap (`service.quiet_hours`, `service.frequency`), the waiting batches the reconciler leaves
alone, and the health check that does not call a waiting campaign stuck.

Production uses `WallClock` (the machine's UTC time). Tests shift time instead of sleeping
through a night: in-process with `ShiftedClock`, and on real processes with
TEST_CLOCK_OFFSET_KEY, which makes every process read an offset in milliseconds from that
Redis key at each reading (`RedisOffsetClock`), so a test jumps the whole stack's time with
one SET. It is a test hook only: production must never set TEST_CLOCK_OFFSET_KEY, since
anyone who can write that Redis key could then move quiet hours.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import redis

from service.infra.config import Settings

log = logging.getLogger("astronote.clock")


class WallClock:
    """Now, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ShiftedClock(WallClock):
    """The real time moved by an offset the test sets (it keeps running, as time does)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return super().now() + self.offset

    def set(self, when: datetime) -> None:
        """Make it `when` now."""
        self.offset = when - super().now()


class RedisOffsetClock(WallClock):
    """The real time moved by the offset (integer milliseconds) stored in a Redis key; no key
    is no offset. Read at every call: tests jump the time of every process at once."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    def now(self) -> datetime:
        raw = self.client.get(self.key)
        offset_ms = int(raw) if raw else 0
        return super().now() + timedelta(milliseconds=offset_ms)


def set_offset(client: redis.Redis, key: str, when: datetime) -> None:
    """For tests: make it `when` now for every process reading `key`."""
    client.set(key, int((when - datetime.now(UTC)).total_seconds() * 1000))


def for_settings(settings: Settings) -> WallClock:
    """The process's clock for its settings (one per process)."""
    return for_process(settings.redis_url, settings.test_clock_offset_key)


@lru_cache(maxsize=4)
def for_process(redis_url: str, test_offset_key: str | None) -> WallClock:
    """The process's clock: the real one, unless TEST_CLOCK_OFFSET_KEY is set (tests only)."""
    if not test_offset_key:
        return WallClock()
    log.warning(
        "TEST_CLOCK_OFFSET_KEY is set: this process's time can be moved through Redis"
        " (for tests only)",
        extra={"key": test_offset_key},
    )
    return RedisOffsetClock(redis.Redis.from_url(redis_url), test_offset_key)
