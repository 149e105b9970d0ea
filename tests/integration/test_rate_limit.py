"""PROVIDER_RATE_LIMIT: one budget per second shared by every worker, through Redis."""

from __future__ import annotations

from service.infra.ratelimit import RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_two_limiters_share_one_budget_per_second(redis_client, db):
    time = FakeTime()
    first = RateLimiter(redis_client, 100, clock=time.clock, sleep=time.sleep)
    second = RateLimiter(redis_client, 100, clock=time.clock, sleep=time.sleep)

    first.acquire(60)
    second.acquire(40)  # fills this second's budget exactly: no wait
    assert time.slept == []

    second.acquire(30)  # over the shared budget: waits for the next second
    assert time.slept == [1.0]


def test_a_batch_larger_than_the_limit_is_spread_over_seconds(redis_client, db):
    time = FakeTime()
    RateLimiter(redis_client, 100, clock=time.clock, sleep=time.sleep).acquire(250)
    assert len(time.slept) == 2 and time.now == 1002.0
