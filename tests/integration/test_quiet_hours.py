"""Quiet hours and the frequency cap on real PostgreSQL and Redis (SPEC 11), with a fake
provider and a shifted clock (never a sleep): recipients in quiet hours stay pending with
their reservation, the batch goes back on the queue for their opening, the reconciler, the
finalisation and the stuck-campaign check leave the campaign alone meanwhile, and everything
is sent once the window opens; recipients over the frequency cap are skipped, not charged."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

from models import database
from models.database import connection, execute, fetchall
from service import (
    admission,
    audit,
    campaigns,
    contacts,
    credits,
    delivery,
    frequency,
    reconcile,
    scheduling,
    shops,
)
from service.creation import batch_key
from service.enqueue import enqueue
from service.infra.clock import ShiftedClock
from service.observability.health import HealthChecker
from service.quiet_hours import QuietHours
from tests.integration.test_windows import FakeProvider, batch_state, sender, statuses

NIGHT = QuietHours(21 * 60, 8 * 60)
GREEK = [f"+30690000{i:04d}" for i in range(4)]  # Europe/Athens, UTC+2 in December
CALIFORNIAN = ["+14155550100", "+14155550101"]  # America/Los_Angeles, UTC-8
# 20:00 UTC on 2 December: 22:00 in Athens (quiet), 12:00 in San Francisco (not).
# Fixed instants far in the future (December: Athens at UTC+2): the health check compares a
# waiting campaign's opening with the real time, so an opening in the past makes it "stuck"
# (these were 2026-12-02/03, and the test failed once the real time passed 06:00 on the 3rd).
EVENING = datetime(2099, 12, 2, 20, 0, tzinfo=UTC)
ATHENS_MORNING = datetime(2099, 12, 3, 6, 0, tzinfo=UTC)  # 08:00 in Athens


def make_campaign(settings, phones, text="Hi {first_name}", cap=None, quiet=NIGHT, domain="q"):
    shop, _ = shops.create_shop(
        f"{domain}.example",
        "Quiet",
        timezone="Europe/Athens",
        require_consent=False,
        quiet_hours=quiet,
        frequency_cap=cap,
    )
    credits.top_up(shop.id, 1000, "initial", audit.ADMIN)
    contacts.import_contacts(
        shop.id,
        [{"phone": p, "first_name": f"N{i}"} for i, p in enumerate(phones)],
        actor=audit.ADMIN,
    )
    return shop.id, launch(settings, shop.id, text)


def launch(settings, shop_id: int, text: str) -> tuple[int, list[int], str]:
    campaign = campaigns.create(shop_id, "c", text, append_unsubscribe=False)
    enqueue(shop_id, campaign.id, dataclasses.replace(settings, send_batch_size=100), audit.ADMIN)
    ids = [
        row[0]
        for row in fetchall(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s ORDER BY id", (campaign.id,)
        )
    ]
    return campaign.id, ids, batch_key(campaign.id, ids)


def waiting_of(key: str) -> tuple[int, datetime | None]:
    return fetchall("SELECT waiting, not_before FROM send_batch WHERE key = %s", (key,))[0]


def reservation(campaign_id: int) -> tuple[str, int, int, int]:
    return fetchall(
        "SELECT status, amount, consumed, released FROM credit_reservation WHERE campaign_id = %s",
        (campaign_id,),
    )[0]


def delayed_messages(redis_client) -> int:
    return int(redis_client.llen("dramatiq:sms-send.DQ"))


def test_recipients_in_quiet_hours_wait_and_go_when_the_window_opens(db, settings, redis_client):
    # Given a shop with quiet hours 21:00-08:00, recipients in Athens and California, and
    # the evening: 22:00 in Athens, noon in California
    shop_id, (campaign_id, ids, key) = make_campaign(settings, GREEK + CALIFORNIAN)
    reserved_before = reservation(campaign_id)
    clock = ShiftedClock()
    clock.set(EVENING)
    provider = FakeProvider()
    recheck = dataclasses.replace(settings, quiet_hours_recheck_ms=60_000)

    # When the batch is sent
    report = sender(recheck, provider, wall=clock).send(campaign_id, shop_id, ids, key)

    # Then only the Californians were sent; the Athenians are pending, their batch parked for
    # admission (no thread waits, no message queued), waiting until 08:00 in Athens
    assert sorted(provider.sent) == CALIFORNIAN
    assert statuses(campaign_id) == {"sent": 2, "pending": 4}
    assert report.republished
    assert delayed_messages(redis_client) == 0
    assert batch_state(key)[0] == "pending"
    assert waiting_of(key) == (4, ATHENS_MORNING)
    assert admission.admit_shop(shop_id, recheck, now=clock.now()) == 0
    # and the reservation still holds their part
    state, amount, consumed, released = reservation(campaign_id)
    assert (state, amount, released) == ("active", reserved_before[1], 0)
    assert consumed == 2
    # and progress shows who waits and until when
    progress = campaigns.progress(shop_id, campaign_id)
    assert progress["status"] == "sending"
    assert progress["quiet_hours"] == {
        "waiting": 4,
        "next_opening": ATHENS_MORNING,
        "until": ATHENS_MORNING,
    }

    # And while they wait, the campaign is neither finished nor republished by the reconciler
    assert delivery.refresh_campaign(campaign_id, settings, audit.WORKER) is None
    stale_now = dataclasses.replace(settings, batch_stale_after_ms=100)
    execute("UPDATE send_batch SET published_at = now() - interval '1 hour'")
    assert reconcile.republish_stale_batches(stale_now) == 0
    # nor called stuck, though it has not progressed for an hour
    execute("UPDATE campaign SET last_progress_at = now() - interval '1 hour'")
    checker = HealthChecker(
        dataclasses.replace(settings, stuck_campaign_after_ms=1000), redis_client
    )
    assert checker._campaigns()["stuck_count"] == 0

    # When the window opens and admission publishes the batch again
    clock.set(ATHENS_MORNING + timedelta(seconds=1))
    assert admission.admit_shop(shop_id, recheck, now=clock.now()) == 1
    assert batch_state(key)[0] == "published"
    sender(recheck, provider, wall=clock).send(campaign_id, shop_id, ids, key)

    # Then the rest is sent, the batch finished, and the campaign completes with exact credits
    assert sorted(provider.sent) == sorted(GREEK + CALIFORNIAN)
    assert statuses(campaign_id) == {"sent": 6}
    assert batch_state(key)[0] == "finished" and waiting_of(key) == (0, None)
    assert delivery.refresh_campaign(campaign_id, settings, audit.WORKER) == "completed"
    state, amount, consumed, released = reservation(campaign_id)
    assert (state, consumed, released) == ("released", 6, amount - 6)
    assert credits.summary(shop_id).balance == 1000 - 6


def test_batches_waiting_for_quiet_hours_hold_no_place_of_their_shop_in_the_queue(
    db, settings, redis_client
):
    # Given a shop that may have one batch in the queue, whose first campaign's batch went out
    # in the evening to Athenians only (all of them wait until 08:00)
    one = dataclasses.replace(settings, shop_batches_in_flight=1, quiet_hours_recheck_ms=60_000)
    shop_id, (first, ids, key) = make_campaign(one, GREEK)
    clock = ShiftedClock()
    clock.set(EVENING)
    provider = FakeProvider()
    sender(one, provider, wall=clock).send(first, shop_id, ids, key)
    assert provider.sent == [] and batch_state(key)[0] == "pending"
    # When the shop launches a campaign to its Californians (noon there)
    contacts.import_contacts(
        shop_id, [{"phone": p, "first_name": "C"} for p in CALIFORNIAN], actor=audit.ADMIN
    )
    second = campaigns.create(
        shop_id,
        "west",
        "West coast sale",
        contact_ids=[
            row[0]
            for row in fetchall(
                "SELECT id FROM contact WHERE shop_id = %s AND phone = ANY(%s)",
                (shop_id, CALIFORNIAN),
            )
        ],
        append_unsubscribe=False,
    )
    enqueue(shop_id, second.id, one, audit.ADMIN)
    # Then its batch is admitted at once: the parked batch holds no place (before: it was
    # counted in the queue, and the Californians waited for the Athenians' morning)
    (state,) = fetchall("SELECT state FROM send_batch WHERE campaign_id = %s", (second.id,))[0]
    assert state == "published"


def test_a_batch_is_parked_even_when_its_admission_committed_after_the_delivery_began(db, settings):
    # Given an evening batch to Athenians whose delivery began before the admission that
    # published it had committed its publish count (the delivery read the old count)
    shop_id, (campaign_id, ids, key) = make_campaign(settings, GREEK + CALIFORNIAN)
    clock = ShiftedClock()
    clock.set(EVENING)

    def admission_commits(sms) -> None:
        with connection():
            execute(
                "UPDATE send_batch SET publish_count = publish_count + 1 WHERE key = %s", (key,)
            )

    # When the delivery sends the Californians and finds the Athenians waiting
    provider = FakeProvider(during_call=admission_commits)
    sender(settings, provider, slots=1, wall=clock).send(campaign_id, shop_id, ids, key)
    # Then the batch is parked all the same (it stayed `published` with no message, holding
    # one of its shop's places until the morning)
    assert batch_state(key)[0] == "pending"
    assert waiting_of(key) == (4, ATHENS_MORNING)


def test_admission_prefers_batches_that_can_send_to_rechecks_of_waiting_ones(db, settings):
    # Given a shop with one place, an evening batch parked for the Athenians' morning whose
    # recheck is due, and a newer campaign's batch never published
    one = dataclasses.replace(settings, shop_batches_in_flight=1, quiet_hours_recheck_ms=1000)
    shop_id, (first, ids, key) = make_campaign(one, GREEK)
    clock = ShiftedClock()
    clock.set(EVENING)
    sender(one, FakeProvider(), wall=clock).send(first, shop_id, ids, key)
    execute("UPDATE send_batch SET published_at = now() - interval '1 hour' WHERE key = %s", (key,))
    second, _, second_key = launch(one, shop_id, "Another")
    # (the enqueue admitted it at once: the shop's only place was free; made to wait again)
    execute("UPDATE send_batch SET state = 'pending' WHERE key = %s", (second_key,))
    assert batch_state(second_key)[0] == "pending" and batch_state(key)[0] == "pending"
    # When the shop is admitted
    assert admission.admit_shop(shop_id, one, now=clock.now()) == 1
    # Then the place goes to the batch that can send, not to the recheck (older by id)
    assert (batch_state(second_key)[0], batch_state(key)[0]) == ("published", "pending")


def test_a_resume_admits_at_once_a_batch_that_stopped_short_with_recipients_waiting(db, settings):
    # Given a batch that stopped short for the rate limit after recording waiting recipients
    # (published, `waiting` and a future opening), then its campaign paused
    shop_id, (campaign_id, ids, key) = make_campaign(settings, GREEK + CALIFORNIAN)
    execute(
        "UPDATE send_batch SET waiting = 4, not_before = %s, published_at = now() WHERE key = %s",
        (ATHENS_MORNING, key),
    )
    campaigns.pause(shop_id, campaign_id, actor=audit.ADMIN)
    # When it is resumed
    campaigns.resume(shop_id, campaign_id, settings, actor=audit.ADMIN)
    # Then its batch is published again at once, to send what can be sent (it waited for the
    # recheck: 5 minutes), its waiting recipients decided again at that delivery
    assert batch_state(key)[0] == "published"
    assert waiting_of(key) == (0, None)


def test_progress_says_until_when_the_last_waiting_recipient_goes(db, settings):
    # Given one batch at 22:00 UTC to Athenians (their 08:00 is 06:00 UTC) and Londoners
    # (08:00 UTC), all in quiet hours
    londoners = ["+447911123456", "+447911123457"]
    shop_id, (campaign_id, ids, key) = make_campaign(settings, GREEK + londoners)
    clock = ShiftedClock()
    clock.set(datetime(2099, 12, 2, 22, 0, tzinfo=UTC))
    sender(settings, FakeProvider(), wall=clock).send(campaign_id, shop_id, ids, key)
    # Then progress says they start going at 06:00 and the last go at 08:00 (it said 06:00,
    # the batch's earliest opening, and London's were sent two hours after it)
    assert campaigns.progress(shop_id, campaign_id)["quiet_hours"] == {
        "waiting": 6,
        "next_opening": ATHENS_MORNING,
        "until": datetime(2099, 12, 3, 8, 0, tzinfo=UTC),
    }
    # and between the two, that the first go now, not at an opening already past
    seven = datetime(2099, 12, 3, 7, 0, tzinfo=UTC)
    assert campaigns.progress(shop_id, campaign_id, seven)["quiet_hours"]["next_opening"] == seven


def test_a_batch_crossing_the_start_of_quiet_hours_stops_at_its_next_window(db, settings):
    # Given six Athenians at 20:59 Athens time, sent two at a time
    shop_id, (campaign_id, ids, key) = make_campaign(
        settings, [f"+30691000{i:04d}" for i in range(6)]
    )
    clock = ShiftedClock()
    clock.set(datetime(2099, 12, 2, 18, 59, 30, tzinfo=UTC))

    # When 21:00 comes during the first window's calls
    def nine_pm(sms) -> None:
        clock.set(datetime(2099, 12, 2, 19, 0, 0, tzinfo=UTC))

    provider = FakeProvider(during_call=nine_pm)
    sender(settings, provider, slots=2, wall=clock).send(campaign_id, shop_id, ids, key)

    # Then that window's two messages went, and nothing after: four wait until 08:00
    assert len(provider.sent) == 2
    assert statuses(campaign_id) == {"sent": 2, "pending": 4}
    assert waiting_of(key) == (4, ATHENS_MORNING)


def test_quiet_hours_off_send_at_any_time(db, settings):
    shop_id, (campaign_id, ids, key) = make_campaign(settings, GREEK, quiet=None)
    clock = ShiftedClock()
    clock.set(EVENING)
    provider = FakeProvider()
    sender(settings, provider, wall=clock).send(campaign_id, shop_id, ids, key)
    assert statuses(campaign_id) == {"sent": 4}
    assert batch_state(key)[0] == "finished"


def test_a_paused_campaign_waiting_is_left_for_its_resume(db, settings, redis_client):
    # Given a campaign whose Athenians wait, then paused
    shop_id, (campaign_id, ids, key) = make_campaign(settings, GREEK)
    clock = ShiftedClock()
    clock.set(EVENING)
    campaigns.pause(shop_id, campaign_id, audit.ADMIN)
    queued = delayed_messages(redis_client)

    # When its batch is delivered meanwhile
    report = sender(settings, FakeProvider(), wall=clock).send(campaign_id, shop_id, ids, key)

    # Then it is not put back on the queue: the resume publishes it again
    assert not report.republished
    assert delayed_messages(redis_client) == queued
    assert statuses(campaign_id) == {"pending": 4}


def test_recipients_over_the_frequency_cap_are_skipped_and_not_charged(db, settings):
    # Given a shop capped at one message per contact per 24 h, and a first campaign that
    # reached two of three contacts, one of them 25 hours ago
    phones = ["+306920000001", "+306920000002", "+306920000003"]
    shop, _ = shops.create_shop(
        "cap.example", "Cap", require_consent=False, quiet_hours=None, frequency_cap=1
    )
    credits.top_up(shop.id, 100, "initial", audit.ADMIN)
    contacts.import_contacts(shop.id, [{"phone": p} for p in phones], actor=audit.ADMIN)
    first_id, first_ids, first_key = launch(settings, shop.id, "First {first_name}")
    execute("DELETE FROM campaign_recipient WHERE phone = %s", (phones[2],))
    sender(settings, FakeProvider()).send(first_id, shop.id, first_ids[:2], first_key)
    execute(
        "UPDATE campaign_recipient SET sent_at = now() - interval '25 hours' WHERE phone = %s",
        (phones[1],),
    )
    balance = credits.summary(shop.id).balance

    # When a second campaign is sent to all three
    second_id, second_ids, second_key = launch(settings, shop.id, "Second {first_name}")
    provider = FakeProvider()
    sender(settings, provider).send(second_id, shop.id, second_ids, second_key)

    # Then the contact messaged an hour ago is skipped (frequency_cap), the others are sent
    assert sorted(provider.sent) == phones[1:]
    skipped = fetchall(
        "SELECT phone, error FROM campaign_recipient WHERE campaign_id = %s AND status = 'skipped'",
        (second_id,),
    )
    assert skipped == [(phones[0], "frequency_cap")]
    # and only the two sent are charged; the skipped one's part is released at the end
    assert credits.summary(shop.id).balance == balance - 2
    assert delivery.refresh_campaign(second_id, settings, audit.WORKER) == "completed"
    state, amount, consumed, released = reservation(second_id)
    assert (state, consumed, released) == ("released", 2, amount - 2)


def capped_shop_with_two_campaigns(settings, phones):
    shop, _ = shops.create_shop(
        "twice.example", "Twice", require_consent=False, quiet_hours=None, frequency_cap=1
    )
    credits.top_up(shop.id, 100, "initial", audit.ADMIN)
    contacts.import_contacts(shop.id, [{"phone": p} for p in phones], actor=audit.ADMIN)
    first = launch(settings, shop.id, "First {first_name}")  # personalised: a call each
    return shop.id, first, launch(settings, shop.id, "Second {first_name}")


def test_a_contact_in_flight_for_one_campaign_is_over_the_cap_for_another(db, settings):
    # Given a shop capped at one message a day, and two campaigns to the same two contacts
    phones = ["+306920000011", "+306920000012"]
    shop_id, (first_id, first_ids, first_key), second = capped_shop_with_two_campaigns(
        settings, phones
    )
    second_id, second_ids, second_key = second
    second_provider = FakeProvider()

    def second_sends_meanwhile(sms) -> None:
        if not second_provider.sent and statuses(second_id) == {"pending": 2}:
            with connection():
                sender(settings, second_provider).send(second_id, shop_id, second_ids, second_key)

    # When the second is sent while the first's calls are under way (claimed, not persisted)
    first_provider = FakeProvider(during_call=second_sends_meanwhile)
    sender(settings, first_provider).send(first_id, shop_id, first_ids, first_key)

    # Then each contact got one message: the second campaign skipped both, as over the cap
    assert sorted(first_provider.sent) == phones and second_provider.sent == []
    assert statuses(first_id) == {"sent": 2}
    assert fetchall(
        "SELECT DISTINCT error FROM campaign_recipient WHERE campaign_id = %s", (second_id,)
    ) == [("frequency_cap",)]


def test_two_campaigns_claiming_the_same_contact_at_once_claim_it_once(db, settings):
    # Given a capped shop's two campaigns, and the first's claim of both contacts made under
    # the shop's lock but not yet committed
    phones = ["+306920000021", "+306920000022"]
    shop_id, first, second = capped_shop_with_two_campaigns(settings, phones)
    (first_id, first_ids, first_key), (second_id, second_ids, second_key) = first, second
    now = datetime.now(UTC)
    claimed_first, commit = threading.Event(), threading.Event()
    second_claim: list = []

    def first_claims() -> None:
        with connection(), database.db.atomic():
            frequency.claim_within_cap(shop_id, first_id, first_ids, first_key, 1, now)
            claimed_first.set()
            commit.wait(10)

    def second_claims() -> None:
        with connection():
            second_claim.extend(
                frequency.claim_within_cap(shop_id, second_id, second_ids, second_key, 1, now)
            )

    one = threading.Thread(target=first_claims, daemon=True)
    one.start()
    assert claimed_first.wait(10)

    # When the second campaign claims the same contacts meanwhile
    two = threading.Thread(target=second_claims, daemon=True)
    two.start()
    two.join(0.5)

    # Then it waits for the first to commit, and then claims nobody: both are over the cap
    assert two.is_alive()
    commit.set()
    one.join(10)
    two.join(10)
    assert second_claim == []
    assert statuses(first_id) == {"sending": 2}
    assert statuses(second_id) == {"skipped": 2}


def test_without_a_cap_nobody_is_skipped(db, settings):
    shop, _ = shops.create_shop("nocap.example", "NoCap", require_consent=False)
    credits.top_up(shop.id, 100, "initial", audit.ADMIN)
    contacts.import_contacts(shop.id, [{"phone": "+306930000001"}], actor=audit.ADMIN)
    for text in ("One {first_name}", "Two {first_name}", "Three {first_name}"):
        campaign_id, ids, key = launch(settings, shop.id, text)
        sender(settings, FakeProvider()).send(campaign_id, shop.id, ids, key)
        assert statuses(campaign_id) == {"sent": 1}


def test_a_scheduled_campaign_launched_in_quiet_hours_waits_too(db, settings):
    # Given a campaign scheduled for 22:00 in Athens
    shop, _ = shops.create_shop("scheduled.example", "S", require_consent=False, quiet_hours=NIGHT)
    credits.top_up(shop.id, 100, "initial", audit.ADMIN)
    contacts.import_contacts(shop.id, [{"phone": p} for p in GREEK], actor=audit.ADMIN)
    campaign = campaigns.create(shop.id, "c", "Hi {first_name}", append_unsubscribe=False)
    campaigns.schedule(shop.id, campaign.id, EVENING, EVENING - timedelta(hours=1), audit.ADMIN)

    # When the clock launches it at its time and its batch is delivered
    report = scheduling.launch_due_campaigns(settings, audit.ADMIN, now=EVENING)
    assert report.launched == [campaign.id]
    (key, ids) = fetchall(
        "SELECT key, recipient_ids FROM send_batch WHERE campaign_id = %s", (campaign.id,)
    )[0]
    clock = ShiftedClock()
    clock.set(EVENING)
    provider = FakeProvider()
    sender(settings, provider, wall=clock).send(campaign.id, shop.id, ids, key)

    # Then nothing is sent before 08:00 and everything after
    assert provider.sent == [] and waiting_of(key) == (4, ATHENS_MORNING)
    clock.set(ATHENS_MORNING)
    sender(settings, provider, wall=clock).send(campaign.id, shop.id, ids, key)
    assert statuses(campaign.id) == {"sent": 4}


def test_zones_never_outside_quiet_hours_together_are_skipped_not_charged(db, settings):
    # Given quiet hours of 14 hours a night and a Russian mobile (zones from UTC+2 to +12)
    shop_id, (campaign_id, ids, key) = make_campaign(
        settings, ["+79161234567", "+306940000001"], quiet=QuietHours(20 * 60, 10 * 60)
    )
    clock = ShiftedClock()
    clock.set(datetime(2099, 12, 2, 10, 0, tzinfo=UTC))  # 12:00 in Athens

    # When the batch is sent
    provider = FakeProvider()
    sender(settings, provider, wall=clock).send(campaign_id, shop_id, ids, key)

    # Then the Russian number is skipped (there is no time to send it), the Greek one sent
    assert provider.sent == ["+306940000001"]
    assert fetchall(
        "SELECT error FROM campaign_recipient WHERE campaign_id = %s AND status = 'skipped'",
        (campaign_id,),
    ) == [("quiet_hours",)]
    assert batch_state(key)[0] == "finished"
    assert delivery.refresh_campaign(campaign_id, settings, audit.WORKER) == "completed"
    assert reservation(campaign_id)[2] == 1  # one message consumed


def test_a_recheck_whose_message_was_lost_is_published_again_before_the_opening(
    db, settings, redis_client
):
    # Given an evening batch to Athenians, parked until 08:00 there, whose recheck admission
    # published it (its `not_before` still the morning)...
    recheck = dataclasses.replace(settings, quiet_hours_recheck_ms=1000)
    shop_id, (campaign_id, ids, key) = make_campaign(recheck, GREEK)
    clock = ShiftedClock()
    clock.set(EVENING)
    sender(recheck, FakeProvider(), wall=clock).send(campaign_id, shop_id, ids, key)
    assert batch_state(key)[0] == "pending"
    execute(
        "UPDATE send_batch SET published_at = now() - interval '1 minute' WHERE key = %s", (key,)
    )
    assert admission.admit_shop(shop_id, recheck, now=clock.now()) == 1
    assert batch_state(key)[0] == "published" and waiting_of(key) == (4, ATHENS_MORNING)

    # ...and whose message was lost (Redis flushed) long enough ago
    redis_client.flushdb()
    execute("UPDATE send_batch SET published_at = now() - interval '1 hour' WHERE key = %s", (key,))

    # When the reconciler looks for stale batches, in the night still
    stale = dataclasses.replace(recheck, batch_stale_after_ms=100)
    republished = reconcile.republish_stale_batches(stale)

    # Then the batch is published again (it stayed `published` with no message, one of its
    # shop's places held until the morning), and its delivery parks it again
    assert republished == 1
    assert batch_state(key)[0] == "published"
    sender(recheck, FakeProvider(), wall=clock).send(campaign_id, shop_id, ids, key)
    assert batch_state(key)[0] == "pending"


def test_progress_counts_no_one_waiting_once_the_last_opening_has_passed(db, settings):
    # Given Athenians parked at 22:00 UTC until their 08:00 (06:00 UTC)
    shop_id, (campaign_id, ids, key) = make_campaign(settings, GREEK)
    clock = ShiftedClock()
    clock.set(datetime(2099, 12, 2, 22, 0, tzinfo=UTC))
    sender(settings, FakeProvider(), wall=clock).send(campaign_id, shop_id, ids, key)
    assert campaigns.progress(shop_id, campaign_id, clock.now())["quiet_hours"]["waiting"] == 4

    # When the opening has passed but the batch has not looked again (its delivery due)
    after = ATHENS_MORNING + timedelta(minutes=1)

    # Then no one waits for quiet hours any more: not 4 waiting since an opening in the past
    assert campaigns.progress(shop_id, campaign_id, after)["quiet_hours"] == {
        "waiting": 0,
        "next_opening": None,
        "until": None,
    }
    # And what waits is never more than what is pending (the batch's count is from its look)
    execute("UPDATE campaign_recipient SET status = 'sent' WHERE id = ANY(%s)", (ids[:3],))
    assert campaigns.progress(shop_id, campaign_id, clock.now())["quiet_hours"]["waiting"] == 1
