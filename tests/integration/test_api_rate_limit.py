"""The per-shop API rate limit on real Redis: shared by every instance, per shop."""

from __future__ import annotations

import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.infra.api_rate_limit import ApiRateLimit


def test_a_shop_over_its_budget_is_told_when_to_retry_and_others_are_not(db, redis_client):
    # Given two web processes' limiters (one Redis) allowing 5 requests a second per shop
    first, second = ApiRateLimit(redis_client, "5/second"), ApiRateLimit(redis_client, "5/second")

    # When shop 1 makes 5 requests through both processes, then a sixth
    answers = [(first if i % 2 else second).retry_after(1) for i in range(5)]
    sixth = first.retry_after(1)

    # Then the first five pass, the sixth must wait about a second; shop 2 is untouched
    assert answers == [None] * 5
    assert sixth == 1
    assert second.retry_after(2) is None


def test_redis_down_lets_requests_through(db):
    # Given a limiter whose Redis does not answer
    dead = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    limiter = ApiRateLimit(dead, "1/second")

    # Then requests are not refused because of the limiter, and after the first failure the
    # limiter is not asked again for a while (no connect attempt per request)
    started = time.monotonic()
    assert all(limiter.retry_after(1) is None for _ in range(50))
    assert time.monotonic() - started < 1.0
