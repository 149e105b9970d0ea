"""The clock's launch of scheduled campaigns on real PostgreSQL, one shop's campaign against
the others': a campaign over the audience cap fails with its reason and the others launch, an
unexpected error in one leaves it scheduled and the others launch, and a campaign moved to
later after the clock found it due is not launched at its old time."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import psycopg2

from models import Campaign
from models.database import execute
from service import audit, campaigns, enqueue, scheduling
from tests.integration.ledger import shop_with_contacts

CLOCK = audit.Actor.clock("launch_scheduled", 7)
MERCHANT = audit.Actor.key(1)


def scheduled(shop_id: int, when) -> int:
    campaign = campaigns.create(shop_id, "c", "Sale today", append_unsubscribe=False)
    campaigns.schedule(shop_id, campaign.id, when, when - timedelta(days=1), MERCHANT)
    return campaign.id


def status(campaign_id: int) -> tuple[str, str | None]:
    row = Campaign.get_by_id(campaign_id)
    return row.status, row.status_reason


def test_a_campaign_over_the_audience_cap_fails_and_another_shops_launches(db, settings):
    # Given a cap of 25 recipients, shop X's campaign of 30 due first and shop Y's of 10 after
    now = scheduling.database_now()
    x, _ = shop_with_contacts("x.example", 100, 30)
    y, _ = shop_with_contacts("y.example", 100, 10)
    big = scheduled(x, now - timedelta(seconds=2))
    small = scheduled(y, now - timedelta(seconds=1))
    capped = dataclasses.replace(settings, max_campaign_recipients=25)

    # When the clock's launch job runs
    report = scheduling.launch_due_campaigns(capped, CLOCK, now=now)

    # Then X's fails naming the cap, and Y's is sending (the job used to stop at X's, tick
    # after tick, until both expired)
    assert report.launched == [small] and list(report.failed) == [big]
    assert status(small)[0] == "sending"
    state, reason = status(big)
    assert state == "failed" and "at most 25" in reason


def test_an_unexpected_error_in_one_launch_leaves_it_scheduled_and_launches_the_rest(
    db, settings, monkeypatch
):
    # Given two due campaigns, the first of which fails in an unexpected way
    now = scheduling.database_now()
    x, _ = shop_with_contacts("x.example", 100, 3)
    y, _ = shop_with_contacts("y.example", 100, 3)
    broken = scheduled(x, now - timedelta(seconds=2))
    fine = scheduled(y, now - timedelta(seconds=1))
    real = enqueue.enqueue

    def enqueue_breaking_one(shop_id, campaign_id, *args, **kwargs):
        if campaign_id == broken:
            raise RuntimeError("something nobody expected")
        return real(shop_id, campaign_id, *args, **kwargs)

    monkeypatch.setattr(enqueue, "enqueue", enqueue_breaking_one)

    # When the clock's launch job runs
    report = scheduling.launch_due_campaigns(settings, CLOCK, now=now)

    # Then the other is launched, and the broken one waits for the next tick, scheduled
    assert report.launched == [fine]
    assert list(report.errors) == [broken] and "something nobody expected" in report.errors[broken]
    assert status(broken) == ("scheduled", None)


def test_a_campaign_rescheduled_to_later_after_the_clock_found_it_due_is_not_launched(db, settings):
    # Given a campaign the clock found due at `now`
    now = scheduling.database_now()
    shop_id, _ = shop_with_contacts("x.example", 100, 3)
    campaign_id = scheduled(shop_id, now - timedelta(seconds=1))
    assert scheduling.due_campaigns(settings.schedule_grace_ms, now, 10) == [(campaign_id, shop_id)]

    # When the merchant moves it an hour later before the clock reaches it
    later = now + timedelta(hours=1)
    campaigns.schedule(shop_id, campaign_id, later, now, MERCHANT)
    report = scheduling.LaunchReport()
    scheduling.launch(shop_id, campaign_id, settings, report, CLOCK, now)

    # Then it is not launched: still scheduled, at the new time
    assert report.launched == [] and report.skipped == [campaign_id]
    row = Campaign.get_by_id(campaign_id)
    assert (row.status, row.scheduled_at) == ("scheduled", later)


def launch_with_a_row_held(settings, table: str, row_id: int, now) -> scheduling.LaunchReport:
    """The clock's launch job (its lock_timeout, 300 ms here) while another session (a
    process frozen mid-persist) holds row `row_id` of `table`."""
    holder = psycopg2.connect(settings.database_url)
    try:
        with holder.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", (row_id,))
        execute("SET lock_timeout = 300")
        try:
            return scheduling.launch_due_campaigns(settings, CLOCK, now=now)
        finally:
            execute("RESET lock_timeout")
    finally:
        holder.close()


def test_a_shop_whose_rows_are_held_elsewhere_does_not_stop_another_shops_launch(db, settings):
    # Given shop X's campaign due first and shop Y's after, X's shop row held by another
    # session
    now = scheduling.database_now()
    x, _ = shop_with_contacts("x.example", 100, 3)
    y, _ = shop_with_contacts("y.example", 100, 3)
    held = scheduled(x, now - timedelta(seconds=2))
    free = scheduled(y, now - timedelta(seconds=1))

    # When the clock's launch job runs
    report = launch_with_a_row_held(settings, "shop", x, now)

    # Then Y's is launched, and X's waits for the next tick, still scheduled (before: the
    # job stopped at X's, tick after tick, Y's with it)
    assert report.launched == [free] and list(report.errors) == [held]
    assert status(free)[0] == "sending"
    assert status(held) == ("scheduled", None)

    # And the next tick, the row free again, launches it
    again = scheduling.launch_due_campaigns(settings, CLOCK, now=now)
    assert again.launched == [held]


def test_an_overdue_campaign_held_elsewhere_does_not_stop_the_due_ones(db, settings):
    # Given shop X's campaign overdue past the grace, its row held by another session, and
    # shop Y's campaign due
    now = scheduling.database_now()
    x, _ = shop_with_contacts("x.example", 100, 3)
    y, _ = shop_with_contacts("y.example", 100, 3)
    overdue = scheduled(x, now - timedelta(milliseconds=settings.schedule_grace_ms + 1000))
    due = scheduled(y, now - timedelta(seconds=1))

    # When the clock's launch job runs
    report = launch_with_a_row_held(settings, "campaign", overdue, now)

    # Then Y's is launched; X's is failed as overdue at a later tick
    assert report.launched == [due] and report.expired == []
    assert status(overdue)[0] == "scheduled"
    assert scheduling.launch_due_campaigns(settings, CLOCK, now=now).expired == [overdue]
