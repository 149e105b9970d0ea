"""The per-shop API rate limit on real Redis: shared by every instance, per shop."""

from __future__ import annotations

import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.infra.api_rate_limit import ApiRateLimit, ShopLimits


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


def two_processes(settings, **limits) -> tuple[ShopLimits, ShopLimits]:
    """Two web processes' limits: each with its own connection pool to the one Redis."""
    first, second = (redis.Redis.from_url(settings.redis_url) for _ in range(2))
    return ShopLimits(first, None, **limits), ShopLimits(second, None, **limits)


def test_a_shops_heavy_requests_are_capped_across_processes_and_light_ones_still_pass(
    db, redis_client, settings
):
    # Given two processes' limits: 4 requests in flight per shop, of which 1 heavy
    first, second = two_processes(settings, cap=4, heavy_cap=1)

    # When shop 1 has an import running through the first process
    running = first.admit("import-1", shop_id=1, heavy=True)
    assert running.refused is None and running.held

    # Then a second import of shop 1 is refused by the other process, naming the heavy cap;
    # shop 1's light requests and shop 2's import are admitted
    refused = second.admit("import-2", shop_id=1, heavy=True)
    assert (refused.refused, refused.retry_after, refused.held) == ("heavy", 1, False)
    assert second.admit("light-1", shop_id=1).refused is None
    assert second.admit("import-3", shop_id=2, heavy=True).refused is None

    # And the refused import took no place in flight: shop 1 has 2 (the import, the light one)
    assert redis_client.zcard(ShopLimits.in_flight_key(1)) == 2
    assert redis_client.zrange(ShopLimits.heavy_key(1), 0, -1) == [b"import-1"]

    # When the running import is answered (released by the process that admitted it), the
    # other process admits the next one
    first.release(1, "import-1")
    assert second.admit("import-2", shop_id=1, heavy=True).refused is None


def test_the_cap_of_requests_in_flight_is_checked_before_the_heavy_one_takes_a_place(
    db, redis_client, settings
):
    # Given a shop at its cap of 2 requests in flight (light ones), and a heavy cap of 1
    first, second = two_processes(settings, cap=2, heavy_cap=1)
    assert first.admit("a", shop_id=5).refused is None
    assert second.admit("b", shop_id=5).refused is None

    # When an import comes, it is refused for the cap in flight, and holds no heavy place
    assert first.admit("import", shop_id=5, heavy=True).refused == "concurrency"
    assert redis_client.zcard(ShopLimits.heavy_key(5)) == 0

    # Then, once a light request is answered, the import is admitted
    second.release(5, "b")
    assert first.admit("import", shop_id=5, heavy=True).refused is None


def test_a_heavy_place_of_a_process_that_died_is_freed_after_a_while(db, redis_client):
    # Given a shop whose one heavy place is held by a request that will never be released
    limits = ShopLimits(redis_client, None, 0, forget_after_ms=200, heavy_cap=1)
    assert limits.admit("died-mid-import", shop_id=9, heavy=True).refused is None
    assert limits.admit("next", shop_id=9, heavy=True).refused == "heavy"

    # Then after forget_after_ms the place is free again
    time.sleep(0.3)
    assert limits.admit("next", shop_id=9, heavy=True).refused is None
