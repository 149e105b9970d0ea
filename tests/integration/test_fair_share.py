"""Fair shares of a capped provider account on real Redis: a shop that asks while another
saturates the account gets its share as the budget frees, whatever the number of the other's
windows; a shop alone gets the whole rate; a share nobody asks for flows to the others."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from service.infra import config
from service.infra.fair_share import ACTIVE_MS, OVER_SHARE_RECHECK_MS
from service.infra.ratelimit import SendLimiter

BIG, SMALL = 1, 2


def limiter(client, rate: str = "40/second", fair: bool = True) -> SendLimiter:
    return SendLimiter(client, "acct", rate, fair_share=fair)


def take(limits: SendLimiter, shop: int, times: int, wanted: int = 10) -> list[int]:
    return [limits.acquire(f"S{shop}", wanted, shop).count for _ in range(times)]


def test_a_shop_alone_gets_the_whole_rate(redis_client, db):
    # Given one shop asking for an account of 40 a second (windows of at most 10)
    limits = limiter(redis_client)

    # Then it gets all 40 and is then refused for the budget, not for a share
    assert take(limits, BIG, 5) == [10, 10, 10, 10, 0]
    assert limits.acquire("S1", 10, BIG).reason == "provider"


def test_a_shop_arriving_at_a_saturated_account_is_owed_its_share(redis_client, db):
    # Given the big shop took the whole budget over the last second, a window at a time
    limits = limiter(redis_client)
    for _ in range(4):
        assert take(limits, BIG, 1) == [10]
        time.sleep(0.2)

    # When the small shop asks (refused: nothing is free), and the budget frees
    refused = limits.acquire("S2", 10, SMALL)
    assert (refused.count, refused.reason) == (0, "provider")
    time.sleep(refused.wait_ms / 1000 + 0.05)
    # (the big shop's first window left the period: 10 free, 30 still counted for it)

    # Then the big shop, over its share (20 of 40), may not take what is owed to the small
    # one, and is told to ask again soon rather than after its whole backlog
    big = limits.acquire("S1", 10, BIG)
    assert (big.count, big.reason) == (0, "share")
    assert 0 < big.wait_ms <= OVER_SHARE_RECHECK_MS
    # And the small shop gets what freed
    assert limits.acquire("S2", 10, SMALL).count == 10


def test_the_small_shops_share_is_kept_for_it_however_many_windows_the_big_one_has(
    redis_client, db
):
    # Given two shops asking at once, the big one with many windows
    limits = limiter(redis_client)
    assert limits.acquire("S2", 1, SMALL).count == 1  # the small shop asks first, takes 1
    big = take(limits, BIG, 8)

    # Then the big shop gets only what the small one is not owed (40 / 2 - 1 = 19 owed)
    assert sum(big) == 40 - 1 - 19
    # And the small shop still gets its 19
    assert sum(take(limits, SMALL, 3)) == 19


def test_a_withdrawn_shops_share_flows_to_the_others_at_once(redis_client, db):
    # Given the small shop asked (and is owed half the budget) while the big one is held
    limits = limiter(redis_client)
    limits.precheck(SMALL)
    assert sum(take(limits, BIG, 4)) == 20

    # When the small shop's batch ends
    limits.withdraw(SMALL)

    # Then the big shop takes the rest
    assert sum(take(limits, BIG, 4)) == 20


def test_a_precheck_keeps_the_budget_for_a_shop_owed_its_share(redis_client, db):
    # Given the budget used up by the big shop over the last second
    limits = limiter(redis_client, "4/second")
    for _ in range(4):
        assert take(limits, BIG, 1, wanted=1) == [1]
        time.sleep(0.2)
    # And the small one refused at its precheck
    refused = limits.precheck(SMALL)
    assert refused.count == 0 and 0 < refused.wait_ms <= 1016

    # When the big shop's first send leaves the period
    time.sleep(refused.wait_ms / 1000 + 0.02)

    # Then the big shop (3 in the period, over its share of 2) may not take the freed one
    assert take(limits, BIG, 1, wanted=1) == [0]
    # And the small shop passes its precheck and gets it
    assert limits.precheck(SMALL).count == 1
    assert take(limits, SMALL, 1, wanted=1) == [1]


def test_a_shop_refused_for_the_budget_stays_owed_its_share_until_it_is_back(redis_client, db):
    # Given the big shop took the whole budget of an account of 40 per 2 seconds
    limits = limiter(redis_client, "40 per 2 seconds")  # windows of at most 5
    for _ in range(8):
        assert take(limits, BIG, 1) == [5]
        time.sleep(0.1)
    # And the small shop refused at its precheck, told to come back when the budget frees
    refused = limits.precheck(SMALL)
    assert (refused.count, refused.reason) == (0, "provider")
    assert refused.wait_ms >= 600  # until the big shop's first window leaves the period

    # When the small shop's batch takes longer than ACTIVE_MS to come back (a slow queue),
    # and meanwhile the whole budget freed: half its wait past the 2 s it was owed for
    # before, half its wait before its hold ends
    time.sleep((refused.wait_ms / 2 + ACTIVE_MS) / 1000)

    # Then the big shop still gets only its share: the rest is kept for the small shop
    assert sum(take(limits, BIG, 6)) == 20
    assert sum(take(limits, SMALL, 4)) == 20


def test_a_batch_ending_leaves_another_held_batch_of_its_shop_owed(redis_client, db):
    # Given the big shop took the whole budget, and a batch of the small shop was refused
    limits = limiter(redis_client, "40 per 2 seconds")
    for _ in range(8):
        assert take(limits, BIG, 1) == [5]
        time.sleep(0.05)
    refused = limits.precheck(SMALL)
    assert (refused.count, refused.reason) == (0, "provider")

    # When another batch of the small shop ends (its test send, say) meanwhile
    limits.withdraw(SMALL)
    time.sleep(refused.wait_ms / 1000 + 0.05)

    # Then what the budget freed is still kept for the held batch
    assert take(limits, BIG, 1) == [0]
    assert take(limits, SMALL, 1) == [5]


def test_without_the_share_the_budget_is_first_come_first_served(redis_client, db):
    # Given the share turned off (PROVIDER_FAIR_SHARE=false), and both shops asking
    limits = limiter(redis_client, fair=False)
    assert limits.acquire("S2", 1, SMALL).count == 1

    # Then the big shop takes everything left
    assert sum(take(limits, BIG, 5)) == 39
    assert config.load({}).provider_fair_share is True
    assert config.load({"PROVIDER_FAIR_SHARE": "false"}).provider_fair_share is False


def test_the_share_never_lets_the_account_exceed_its_limit(redis_client, db):
    # Given three shops asking in turn for more than they may have
    limits = limiter(redis_client, "30/second")
    granted = [limits.acquire(f"S{shop}", 10, shop).count for _ in range(6) for shop in (1, 2, 3)]

    # Then the account never gave more than its 30, each shop its 10
    assert sum(granted) == 30
    assert [sum(granted[i::3]) for i in range(3)] == [10, 10, 10]


def test_many_workers_asking_at_once_never_take_another_shops_share(redis_client, db):
    # Given the small shop owed its share (it asked while nothing was free for it)
    limits = limiter(redis_client)
    assert limits.precheck(SMALL).count == 1

    # When sixteen workers of the big shop ask for 10 each at the same moment
    start = threading.Barrier(16)

    def big_window() -> int:
        start.wait()
        return limiter(redis_client).acquire("S1", 10, BIG).count

    with ThreadPoolExecutor(16) as pool:
        taken = list(pool.map(lambda _: big_window(), range(16)))

    # Then they took only the half not owed to the small shop, which still gets its half
    assert sum(taken) == 20, taken
    assert sum(take(limits, SMALL, 3)) == 20
