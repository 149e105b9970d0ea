"""The send limiter on real Redis: one moving-window budget per provider account and per
sender, shared by every worker, on Redis' clock; a cool-down after a 429 that every worker
sees; refusals that say how long to wait instead of waiting."""

from __future__ import annotations

import time

import pytest
import redis

from service import windows
from service.infra import config
from service.infra.ratelimit import (
    DEFAULT_COOL_DOWN_MS,
    REDIS_DOWN_WAIT_MS,
    SendLimiter,
    parse_rate,
)


def limiter(client: redis.Redis, provider: str | None = None, sender: str | None = None, **kw):
    return SendLimiter(client, kw.get("account", "acct"), provider, sender)


def test_two_workers_share_one_budget_and_are_told_how_long_to_wait(redis_client, db):
    # Given two workers' limiters for one account capped at 400 messages a second (windows
    # of at most 100)
    first = limiter(redis_client, "400/second")
    second = limiter(redis_client, "400/second")

    # When they ask for 100 three times, then 100 again, then 1
    taken = [first.acquire("Shop", 100).count for _ in range(3)]
    b = second.acquire("Shop", 100)
    c = first.acquire("Shop", 1)
    assert taken == [100, 100, 100]

    # Then the second gets what is left, the third nothing, and is told to come back when
    # the first window leaves the one-second window (not waiting for it)
    assert (b.count, c.count) == (100, 0)
    assert c.reason == "provider" and 0 < c.wait_ms <= 1001


def test_the_budget_comes_back_as_sends_leave_the_moving_window(redis_client, db):
    # Given a budget of 8 a second used up (four windows of 2)
    limits = limiter(redis_client, "8/second")
    assert [limits.acquire("Shop", 5).count for _ in range(4)] == [2, 2, 2, 2]
    refused = limits.acquire("Shop", 1)
    assert refused.count == 0

    # When the test waits as long as it was told to
    time.sleep(refused.wait_ms / 1000)

    # Then the budget is back
    assert limits.acquire("Shop", 5).count == 2


def test_a_window_takes_at_most_a_quarter_of_a_limits_amount_per_second(redis_client, db):
    # A bulk window of 500 under 200/second goes out 50 at a time; 60/minute is 1 a window
    assert limiter(redis_client, "200/second").acquire("Shop", 500).count == 50
    assert limiter(redis_client, "200/second").window_cap == 50
    assert limiter(redis_client, "60/minute", account="other").window_cap == 1
    assert limiter(redis_client, "60/minute", account="other").acquire("Shop", 500).count == 1
    assert limiter(redis_client, None, "10/second", account="x").window_cap == 2
    assert limiter(redis_client).window_cap is None
    assert limiter(redis_client).acquire("Shop", 500).count == 500  # no limit: no cut


def test_each_sender_has_its_own_budget_within_the_accounts(redis_client, db):
    # Given an account of 12 a second and a limit of 4 a second per sender (windows of 1)
    limits = limiter(redis_client, "12/second", "4/second")

    def take(sender: str, times: int) -> list[int]:
        return [limits.acquire(sender, 10).count for _ in range(times)]

    # When one sender asks five times and another four times
    first = take("ShopA", 5)
    other = take("ShopB", 4)

    # Then the first sender is held at its limit while the other gets its own 4
    assert first == [1, 1, 1, 1, 0] and other == [1, 1, 1, 1]
    assert limits.acquire("ShopA", 1).reason == "sender"
    # And the account's budget counts both: 4 left
    assert take("ShopC", 4) == [1, 1, 1, 1]
    refused = limits.acquire("ShopD", 1)
    assert (refused.count, refused.reason) == (0, "provider")


def test_the_window_runs_on_redis_clock_not_the_workers(redis_client, db, monkeypatch):
    # Given the budget used up by one worker (at dispatch, which takes all it asks for)
    limits = limiter(redis_client, "10/second")
    assert limits.dispatch("Shop", 10).count == 10

    # When another worker's own clock runs an hour ahead
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)

    # Then it still finds the budget used (its clock stamps and compares nothing)
    assert limiter(redis_client, "10/second").acquire("Shop", 1).count == 0


def test_a_cool_down_stops_every_worker_of_the_account_and_only_that_account(redis_client, db):
    # Given a 429 with Retry-After: 2 seen by one worker
    in_force = limiter(redis_client).cool_down(2)

    # Then another worker of the account is refused for about that long, whatever its limits
    refused = limiter(redis_client, "400/second").acquire("Shop", 10)
    # (a loaded machine may let a millisecond pass between the set and the read)
    assert 1900 < in_force <= 2000
    assert (refused.count, refused.reason) == (0, "cool_down")
    assert 1900 < refused.wait_ms <= 2000
    # A shorter Retry-After later does not shorten it; a 429 without one is DEFAULT_COOL_DOWN_MS
    assert limiter(redis_client).cool_down(0.5) > 1900
    assert (
        DEFAULT_COOL_DOWN_MS - 100
        < limiter(redis_client, account="b").cool_down(None)
        <= DEFAULT_COOL_DOWN_MS
    )
    # And another provider account is not cooled down by the first
    assert limiter(redis_client, account="c").acquire("Shop", 10).count == 10


def test_without_redis_a_window_is_refused_not_sent_unlimited(db):
    # Given Redis out of reach
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)

    # Then the limiter refuses, for a short wait on the queue, rather than raising
    grant = SendLimiter(down, "acct", "100/second").acquire("Shop", 10)
    assert (grant.count, grant.wait_ms, grant.reason) == (0, REDIS_DOWN_WAIT_MS, "redis_down")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("200", "200/second"), ("200/second", "200/second"), ("50 per minute", "50 per minute")],
)
def test_provider_rate_limit_accepts_the_integer_and_the_rate_forms(value, expected):
    settings = config.load({"PROVIDER_RATE_LIMIT": value, "SENDER_RATE_LIMIT": "10/second"})
    assert settings.provider_rate_limit == expected
    assert settings.sender_rate_limit == "10/second"
    assert parse_rate(settings.provider_rate_limit).amount == int(expected.split("/")[0].split()[0])
    assert config.load({"PROVIDER_RATE_LIMIT": "0"}).provider_rate_limit is None
    assert config.load({}).sender_rate_limit is None


def test_a_malformed_rate_names_the_variable():
    with pytest.raises(config.ConfigError, match="SENDER_RATE_LIMIT"):
        config.load({"SENDER_RATE_LIMIT": "fast"})


def test_a_window_is_admitted_only_when_the_sends_of_a_second_ago_have_gone(redis_client, db):
    # Given a second's sends counted when they went out (another worker's dispatch)
    limits = limiter(redis_client, "10/second")
    assert limits.dispatch("Shop", 10).count == 10

    # Then no window is admitted until they leave the window, and a dispatch beyond the
    # limit is refused whole
    refused = limits.acquire("Shop", 5)
    assert (refused.count, refused.reason) == (0, "provider") and 0 < refused.wait_ms <= 1001
    assert limits.dispatch("Shop", 1).count == 0


def test_the_margin_keeps_each_send_counted_longer_than_the_period(redis_client, db):
    # Given a margin of 300 ms for the time calls take to reach the provider
    limits = SendLimiter(redis_client, "acct", "4/second", margin_ms=300)
    assert limits.dispatch("Shop", 4).count == 4

    # Then the budget comes back 1.3 s after the sends, not 1 s (and, these being a burst into
    # an idle account, counted from the margin later: 1.6 s)
    refused = limits.acquire("Shop", 1)
    assert refused.count == 0 and 1300 < refused.wait_ms <= 1601
    time.sleep(1.05)
    assert limits.acquire("Shop", 1).count == 0
    assert config.load({}).provider_rate_margin_ms == 30
    with pytest.raises(config.ConfigError, match="PROVIDER_RATE_MARGIN_MS"):
        config.load({"PROVIDER_RATE_MARGIN_MS": "5000"})


@pytest.mark.parametrize("fair_share", [False, True])
def test_a_window_is_admitted_ahead_of_the_budget_and_departs_when_it_frees(
    redis_client, db, fair_share
):
    # Given a budget of 4 a second used up by a dispatch, and an admission looking 300 ms
    # ahead (the margin 0, so the budget frees exactly a second after those sends)
    limits = SendLimiter(redis_client, "acct", "4/second", lookahead_ms=300, fair_share=fair_share)
    assert limits.dispatch("Shop", 4).count == 4
    sent_at = time.monotonic()

    # Then no window is admitted more than 300 ms before the budget frees...
    refused = limits.acquire("Shop", 1, shop=7)
    assert refused.count == 0 and 600 <= refused.wait_ms <= 701
    time.sleep(refused.wait_ms / 1000)
    # ...one is then, while the dispatch count is still full...
    admitted = limits.acquire("Shop", 1, shop=7)
    assert admitted.count == 1
    assert limits.dispatch("Shop", 1).count == 0

    # ...and its call, allowed to wait for its departure, goes when the budget frees
    assert windows.dispatch_refused(limits, "Shop", 1, depart_within_ms=600) is None
    departed = time.monotonic() - sent_at
    assert 0.99 <= departed < 1.2
    # Four in the dispatch count's second: the fifth waits for the next
    assert limits.dispatch("Shop", 4).count == 0


def test_a_call_that_cannot_depart_within_its_bound_is_not_made(redis_client, db):
    # Given a budget used up whose first send frees in about a second
    limits = SendLimiter(redis_client, "acct", "4/second", lookahead_ms=30)
    assert limits.dispatch("Shop", 4).count == 4

    # When a call may wait at most 60 ms for it
    began = time.monotonic()
    refused = windows.dispatch_refused(limits, "Shop", 1, depart_within_ms=60)

    # Then it is refused at once, with the wait for the batch's trip back through the queue
    assert time.monotonic() - began < 0.05
    assert refused is not None and refused.limited_by == "provider"
    assert 900 < (refused.limited_ms or 0) <= 1001
    # A cool-down is never waited for
    limits.cool_down(0.01)
    cooling = windows.dispatch_refused(limits, "Other", 1, depart_within_ms=60)
    assert cooling is not None and cooling.limited_by == "cool_down"


def test_the_lookahead_is_configured_and_bounded():
    settings = config.load({})
    assert settings.provider_rate_lookahead_ms == 60
    assert settings.provider_rate_departure_ms == 120
    assert config.load({"PROVIDER_RATE_LOOKAHEAD_MS": "0"}).provider_rate_departure_ms == 0
    with pytest.raises(config.ConfigError, match="PROVIDER_RATE_LOOKAHEAD_MS"):
        config.load({"PROVIDER_RATE_LOOKAHEAD_MS": "201"})


def test_a_departure_that_waits_leaves_no_phantom_entries_in_the_senders_count(redis_client, db):
    # Given the account's budget used up (4 a second) and a sender's limit of 100 a second
    limits = SendLimiter(redis_client, "acct", "4/second", "100/second", lookahead_ms=300)
    assert limits.dispatch("Other", 4).count == 4

    # When a call admitted ahead waits for its departure and goes
    time.sleep(0.75)
    assert windows.dispatch_refused(limits, "Shop", 1, depart_within_ms=600) is None

    # Then the sender's count holds that one send, not one more per refused try
    item = limits.sender
    assert item is not None
    _, used = limits.storage.get_moving_window(
        item.key_for("send", "sender", "acct", "Shop"), item.amount, item.get_expiry()
    )
    assert used == 1


def test_a_burst_into_an_idle_account_counts_from_a_margin_later_and_only_it(redis_client, db):
    # Given an idle account of 4 a second with a 100 ms margin
    limits = SendLimiter(redis_client, "acct", "4/second", margin_ms=100)
    item = limits.provider
    assert item is not None
    key = item.key_for("send", "provider", "acct")

    # When a burst starts (two calls at once) and another call follows 300 ms later
    assert limits.dispatch("Shop", 1).count == 1
    assert limits.dispatch("Shop", 1).count == 1
    time.sleep(0.3)
    assert limits.dispatch("Shop", 1).count == 1
    assert limits.dispatch("Shop", 1).count == 1

    # Then the burst's sends count from 100 ms later (its calls on cold connections may reach
    # the provider that late), the later ones from when they went, all in order
    stamps = [float(v) for v in redis_client.lrange(limits.storage.prefixed_key(key), 0, -1)]
    assert stamps == sorted(stamps, reverse=True)
    assert stamps[0] - stamps[-1] < 300 - 100 + 50  # the burst 100 ms on, the others on time
    wait = limits.storage.free_in_ms(key, item.amount, item.get_expiry(), 1)
    assert 1_000 + 100 + 100 - 300 - 50 <= wait <= 1_000 + 100 + 100 - 300 + 20
