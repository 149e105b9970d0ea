"""Reconcile on real PostgreSQL: late evidence, and one failing repair not holding up others."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import psycopg2
import pytest

from models.database import fetchall
from service import (
    audit,
    campaigns,
    contacts,
    credits,
    delivery,
    erasure,
    reconcile,
    report_inbox,
    sending,
    shops,
)
from service.creation import batch_key
from service.enqueue import enqueue
from service.sending import claim_recipients
from tests.integration.reports import receive


def campaign_in_flight(settings, domain: str, balance: int):
    """A shop whose one-recipient campaign's provider call had an unknown outcome."""
    # (about reconciling, not consent: a shop that does not require it)
    shop, _ = shops.create_shop(domain, domain, require_consent=False)
    credits.top_up(shop.id, balance, "initial", audit.ADMIN)
    contacts.import_contacts(shop.id, [{"phone": "+306900000001"}], actor=audit.ADMIN)
    campaign = campaigns.create(shop.id, "c", "Hello there", append_unsubscribe=False)
    enqueue(shop.id, campaign.id, settings, audit.ADMIN)
    ids = [
        row[0]
        for row in fetchall(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s", (campaign.id,)
        )
    ]
    claim_recipients(campaign.id, ids, batch_key(campaign.id, ids))
    return shop.id, campaign.id, ids[0]


def status_of(recipient_id: int) -> tuple:
    return fetchall("SELECT status, error FROM campaign_recipient WHERE id = %s", (recipient_id,))[
        0
    ]


def test_evidence_after_the_campaign_finished_still_makes_the_message_sent(db, settings):
    # Given an unknown outcome resolved as failed, and the campaign finished
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    shop_id, campaign_id, recipient_id = campaign_in_flight(settings, "late.example", 10)
    reconcile.reconcile(quick, audit.ADMIN)
    assert status_of(recipient_id) == ("failed", "unknown_outcome")
    assert campaigns.get(shop_id, campaign_id).status == "failed"

    # When the provider's report naming it by reference arrives later
    receive(
        [{"id": "late-1", "reference": str(recipient_id), "deliveryStatus": "Delivered"}], settings
    )

    # Then it is sent and debited once as the report is applied (not at the next reconcile),
    # and the campaign, which now sent a message, is completed
    assert status_of(recipient_id) == ("sent", None)
    assert credits.summary(shop_id).balance == 9
    assert campaigns.get(shop_id, campaign_id).status == "completed"
    report = reconcile.reconcile(quick, audit.ADMIN)
    assert report.upgraded_by_evidence == 0 and not report.errors
    assert credits.summary(shop_id).balance == 9


def test_the_reconciler_upgrades_what_a_report_could_not(db, settings):
    # Given two shops with late evidence whose at-once upgrade did not happen (reports stored
    # while the recipients' rows were being changed by another transaction)
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    first_shop, _, first = campaign_in_flight(settings, "first.example", 1)
    second_shop, _, second = campaign_in_flight(settings, "second.example", 5)
    reconcile.reconcile(quick, audit.ADMIN)
    db.execute_sql(
        "INSERT INTO delivery_report (provider_id, reference, status) VALUES"
        " ('a-1', %s, 'Sent'), ('b-1', %s, 'Sent')",
        (str(first), str(second)),
    )

    # When reconcile runs
    report = reconcile.reconcile(quick, audit.ADMIN)

    # Then both are sent, each debited from the credit its campaign held for it
    assert report.upgraded_by_evidence == 2 and not report.errors
    assert (status_of(first), status_of(second)) == (("sent", None), ("sent", None))
    assert credits.summary(first_shop) == credits.CreditSummary(0, 0, 0)
    assert credits.summary(second_shop) == credits.CreditSummary(4, 0, 4)


def test_the_reconciler_takes_a_bulk_report_whose_number_has_no_plus(db, settings):
    # Given an unknown outcome of a `/smsbulk` call, and a report stored naming the batch and
    # the number as providers may write it, without its "+" (not applied at once)
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    shop_id, campaign_id, recipient_id = campaign_in_flight(settings, "bulk.example", 3)
    reconcile.reconcile(quick, audit.ADMIN)
    db.execute_sql(
        'INSERT INTO delivery_report (provider_id, reference, "to", status) VALUES'
        " ('bulk-1', %s, '306900000001', 'Delivered')",
        (batch_key(campaign_id, [recipient_id]),),
    )

    # When reconcile runs, Then the message is sent and debited
    report = reconcile.reconcile(quick, audit.ADMIN)
    assert report.upgraded_by_evidence == 1 and not report.errors
    assert status_of(recipient_id) == ("sent", None)
    assert credits.summary(shop_id).balance == 2


def test_a_campaign_whose_late_debit_cannot_be_covered_does_not_hold_up_the_rest(db, settings):
    # Given two shops with late evidence, one of whose balance was zeroed behind the ledger's
    # back (through the API a shop cannot spend the credit held for a late debit)
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    broke_shop, _, broke = campaign_in_flight(settings, "broke.example", 1)
    fine_shop, _, fine = campaign_in_flight(settings, "fine.example", 5)
    reconcile.reconcile(quick, audit.ADMIN)
    db.execute_sql("UPDATE shop SET credit_balance = 0 WHERE id = %s", (broke_shop,))
    db.execute_sql(
        "INSERT INTO credit_transaction (shop_id, kind, amount, idempotency_key)"
        " VALUES (%s, 'adjustment', -1, 'spent')",
        (broke_shop,),
    )

    # When their reports arrive together
    receive(
        [
            {"id": "b-1", "reference": str(broke), "deliveryStatus": "Sent"},
            {"id": "f-1", "reference": str(fine), "deliveryStatus": "Sent"},
        ],
        settings,
    )

    # Then the covered one is upgraded, the other stays failed (balance never below zero)
    assert status_of(fine) == ("sent", None)
    assert status_of(broke) == ("failed", "unknown_outcome")
    assert credits.summary(broke_shop).balance == 0
    assert credits.summary(fine_shop).balance == 4


def test_reports_resolving_two_campaigns_of_a_shop_do_not_deadlock_with_a_persist(
    db, settings, service_urls
):
    # Given a shop with two campaigns, each with a message of unknown outcome
    shop_id, later, (first, second) = two_campaigns_reported(settings)

    # When a worker persisting a batch of the later campaign holds that campaign (its persist
    # locks campaign, then shop) while the reports are applied
    worker = psycopg2.connect(service_urls[0])
    cursor = worker.cursor()
    cursor.execute("UPDATE campaign SET last_progress_at = now() WHERE id = %s", (later,))
    applier = threading.Thread(target=report_inbox.apply_stored_reports, args=(settings,))
    applier.start()
    wait_for_lock_wait(service_urls[0], worker.get_backend_pid())
    # And the worker goes on to the shop
    cursor.execute("SET lock_timeout = '5s'")
    cursor.execute("UPDATE shop SET credit_balance = credit_balance WHERE id = %s", (shop_id,))
    worker.commit()
    worker.close()
    applier.join(30)

    # Then neither waited on the other for ever (PostgreSQL aborted one of them: the
    # applier's upgrade was lost to the reconcile), and both messages are sent
    assert [status_of(rid) for rid in (first, second)] == [("sent", None)] * 2
    assert credits.summary(shop_id).balance == 8


def wait_for_lock_wait(database_url: str, other_than: int) -> None:
    """Until a backend other than `other_than` waits for a lock (the applier, on the worker).
    On a connection of its own: a transaction reads pg_stat_activity once."""
    watcher = psycopg2.connect(database_url)
    watcher.autocommit = True
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with watcher.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND pid <> %s",
                    (other_than,),
                )
                if cursor.fetchone()[0]:
                    return
            time.sleep(0.05)
    finally:
        watcher.close()
    raise AssertionError("the applier never waited for the worker's lock")


def test_reports_resolving_two_campaigns_do_not_deadlock_with_a_test_send_request(
    db, settings, service_urls
):
    # Given two campaigns of a shop with a message of unknown outcome each, reports naming both
    shop_id, later, (first, second) = two_campaigns_reported(settings)
    # When a test send is requested meanwhile (`test_sends.request`: the shop locked, then a
    # row pointing at the later campaign inserted, which takes KEY SHARE on it)
    requester = psycopg2.connect(service_urls[0])
    cursor = requester.cursor()
    cursor.execute("SELECT 1 FROM shop WHERE id = %s FOR NO KEY UPDATE", (shop_id,))
    applier = threading.Thread(target=report_inbox.apply_stored_reports, args=(settings,))
    applier.start()
    wait_for_lock_wait(service_urls[0], requester.get_backend_pid())
    cursor.execute("SET lock_timeout = '5s'")
    cursor.execute(
        "INSERT INTO test_send (shop_id, campaign_id, phone, sender, text, segments)"
        " VALUES (%s, %s, '+306900000002', 'S', 'x', 1)",
        (shop_id, later),
    )
    requester.commit()
    requester.close()
    applier.join(30)
    # Then neither is aborted, and both messages are sent
    assert [status_of(rid) for rid in (first, second)] == [("sent", None)] * 2


def two_campaigns_reported(settings) -> tuple[int, int, tuple[int, int]]:
    """A shop's two campaigns, each with a message of unknown outcome, and a stored report
    naming each: (shop, the later campaign, the two recipients)."""
    shop, _ = shops.create_shop("two.example", "two.example", require_consent=False)
    credits.top_up(shop.id, 10, "initial", audit.ADMIN)
    contacts.import_contacts(shop.id, [{"phone": "+306900000001"}], actor=audit.ADMIN)
    in_flight = []
    for name in ("first", "second"):
        campaign = campaigns.create(shop.id, name, "Hello there", append_unsubscribe=False)
        enqueue(shop.id, campaign.id, settings, audit.ADMIN)
        [(recipient_id,)] = fetchall(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s", (campaign.id,)
        )
        claim_recipients(campaign.id, [recipient_id], batch_key(campaign.id, [recipient_id]))
        in_flight.append((campaign.id, recipient_id))
    (_, first), (later, second) = in_flight
    report_inbox.store_reports(
        [
            {"id": f"r-{rid}", "reference": str(rid), "deliveryStatus": "Delivered"}
            for rid in (first, second)
        ]
    )
    return shop.id, later, (first, second)


@pytest.mark.parametrize("answer", ["accepted", "rejected"])
def test_an_answer_persisted_after_its_claim_timed_out_ends_the_campaign_as_evidence_does(
    db, settings, answer
):
    # Given a call whose answer is on its way (a provider answering slower than the claim
    # timeout): the reconciler failed its claim as unknown_outcome and the campaign `failed`,
    # its credit held for the unknown outcome
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    shop_id, campaign_id, recipient_id = campaign_in_flight(settings, "slowanswer.example", 10)
    reconcile.reconcile(quick, audit.ADMIN)
    assert campaigns.get(shop_id, campaign_id).status == "failed"
    assert credits.summary(shop_id).reserved == 1

    # When the window's answer comes and is persisted by the window itself
    outcomes = sending.BatchOutcomes()
    if answer == "accepted":
        outcomes.accepted.append(sending.Accepted(recipient_id, "p-1", "Hello there", 1, "GR"))
    else:
        outcomes.rejected.append((recipient_id, "HTTP 400: invalid number"))
    key = fetchall("SELECT key FROM send_batch WHERE campaign_id = %s", (campaign_id,))[0][0]
    assert sending.persist_or_hand_over(shop_id, campaign_id, key, outcomes, settings)

    # Then, as a delivery report would: accepted, it is sent, debited once, and the campaign
    # completed; rejected, it fails with the provider's reason; either way nothing stays held
    summary = credits.summary(shop_id)
    if answer == "accepted":
        assert status_of(recipient_id) == ("sent", None)
        assert campaigns.get(shop_id, campaign_id).status == "completed"
        assert (summary.balance, summary.reserved) == (9, 0)
    else:
        assert status_of(recipient_id) == ("failed", "HTTP 400: invalid number")
        assert campaigns.get(shop_id, campaign_id).status == "failed"
        assert (summary.balance, summary.reserved) == (10, 0)


def test_a_campaign_finalised_while_a_late_persist_holds_it_is_completed(
    db, settings, service_urls
):
    # Given a campaign whose one message's claim timed out (unknown outcome), still `sending`
    shop_id, campaign_id, recipient_id = campaign_in_flight(settings, "latefinal.example", 10)
    db.execute_sql(
        "UPDATE campaign_recipient SET status = 'failed', error = 'unknown_outcome' WHERE id = %s",
        (recipient_id,),
    )
    # And a late persist under way: the message marked sent, the campaign row held
    worker = psycopg2.connect(service_urls[0])
    cursor = worker.cursor()
    cursor.execute(
        "UPDATE campaign_recipient SET status = 'sent', error = NULL, mitto_message_id = 'p-9'"
        " WHERE id = %s",
        (recipient_id,),
    )
    cursor.execute("UPDATE campaign SET last_progress_at = now() WHERE id = %s", (campaign_id,))

    # When the reconciler finalises the campaign meanwhile, and the persist then commits
    finished: list[str | None] = []

    def finalize() -> None:
        with db.connection_context():
            finished.append(delivery.finalize_campaign(campaign_id, settings, audit.ADMIN))

    finalizer = threading.Thread(target=finalize)
    finalizer.start()
    wait_for_lock_wait(service_urls[0], worker.get_backend_pid())
    worker.commit()
    worker.close()
    finalizer.join(30)

    # Then the campaign, which sent its message, is completed, not failed
    assert finished == ["completed"]
    assert campaigns.get(shop_id, campaign_id).status == "completed"


def test_a_batch_is_not_finished_while_a_delivery_gives_its_claims_back(db, settings):
    # Given a batch whose recipient a delivery claimed
    _, campaign_id, recipient_id = campaign_in_flight(settings, "giveback.example", 10)
    key = fetchall("SELECT key FROM send_batch WHERE campaign_id = %s", (campaign_id,))[0][0]
    given_back, release = threading.Event(), threading.Event()

    def give_back() -> None:
        # That delivery's call was refused (a 503): its claim is pending again, not yet
        # committed
        with db.connection_context(), db.atomic():
            sending.unclaim([recipient_id], key)
            given_back.set()
            release.wait(10)

    delivery_two = threading.Thread(target=give_back)
    delivery_two.start()
    assert given_back.wait(10)

    # When a duplicate delivery of the batch, with nothing pending it can see, finishes it
    def finish() -> None:
        with db.connection_context():
            sending.finish_batch(key)

    delivery_one = threading.Thread(target=finish)
    delivery_one.start()
    delivery_one.join(1)
    release.set()
    delivery_two.join(10)
    delivery_one.join(10)

    # Then the batch is not finished while its recipient is pending: the reconciler still
    # republishes it if the giving-back delivery's own republish is lost
    assert status_of(recipient_id) == ("pending", None)
    state = fetchall("SELECT state FROM send_batch WHERE key = %s", (key,))[0][0]
    assert state != "finished"


def test_a_report_naming_another_recipients_message_is_no_evidence_and_breaks_nothing(
    db, settings, caplog
):
    # Given a message sent for one shop, and another shop's message of unknown outcome
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    sent_shop, sent_campaign, sent_one = campaign_in_flight(settings, "holder.example", 10)
    sending.persist_results(
        sent_shop, sent_campaign, [sending.Accepted(sent_one, "p-dup", "Hello there", 1, "GR")], []
    )
    shop_id, campaign_id, unknown = campaign_in_flight(settings, "other.example", 10)
    reconcile.reconcile(quick, audit.ADMIN)
    assert status_of(unknown) == ("failed", "unknown_outcome")

    # When a report names the first message's id with the second's reference (a provider
    # reusing ids, or a report forged with the webhook's token)
    receive([{"id": "p-dup", "reference": str(unknown), "deliveryStatus": "Delivered"}], settings)
    report = reconcile.reconcile(quick, audit.ADMIN)

    # Then it is no evidence for the second, and the reconcile does not fail on it (it logged
    # "upgrading by evidence failed" at every run, the campaign's other upgrades rolled back)
    assert not report.errors, report.errors
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failed, failed
    assert status_of(unknown) == ("failed", "unknown_outcome")
    assert credits.summary(shop_id).balance == 10
    assert status_of(sent_one) == ("sent", None)


def test_an_answer_naming_an_id_another_recipient_holds_does_not_fail_the_persist(db, settings):
    # Given a recipient that got provider id p-7 (by a report, say) and another one in flight
    holder_shop, holder_campaign, holder = campaign_in_flight(settings, "first7.example", 10)
    sending.persist_results(
        holder_shop, holder_campaign, [sending.Accepted(holder, "p-7", "Hello there", 1, "GR")], []
    )
    shop_id, campaign_id, in_flight = campaign_in_flight(settings, "second7.example", 10)

    # When the provider's answer for the second names the same id
    debited = sending.persist_results(
        shop_id, campaign_id, [sending.Accepted(in_flight, "p-7", "Hello there", 1, "GR")], []
    )

    # Then the persist commits (no unique-index error at every retry), charging nothing for a
    # message it cannot tell apart; the second stays of unknown outcome for the reconciler
    assert debited == 0
    assert status_of(in_flight) == ("sending", None)
    assert credits.summary(shop_id).balance == 10


def test_two_recipients_named_by_one_provider_id_do_not_fail_the_persist(db, settings):
    # Given two recipients of one campaign in flight
    shop, _ = shops.create_shop("twice.example", "twice.example", require_consent=False)
    credits.top_up(shop.id, 10, "initial", audit.ADMIN)
    contacts.import_contacts(
        shop.id, [{"phone": "+306900000001"}, {"phone": "+306900000002"}], actor=audit.ADMIN
    )
    campaign = campaigns.create(shop.id, "c", "Hello there", append_unsubscribe=False)
    enqueue(shop.id, campaign.id, settings, audit.ADMIN)
    ids = [r[0] for r in fetchall("SELECT id FROM campaign_recipient ORDER BY id")]
    claim_recipients(campaign.id, ids, batch_key(campaign.id, ids))

    # When one persist names both by the same provider id (reports reusing an id as evidence)
    debited = sending.persist_results(
        shop.id,
        campaign.id,
        [sending.Accepted(rid, "p-same", "Hello there", 1, "GR") for rid in ids],
        [],
    )

    # Then it commits: the first is sent and charged, the other stays of unknown outcome
    assert debited == 1
    assert [status_of(rid) for rid in ids] == [("sent", None), ("sending", None)]


def test_a_batch_put_back_with_a_long_delay_is_not_stale_while_it_waits(db, settings):
    # Given a batch put back on the queue for 10 minutes (a rate limit's wait)
    shop_id, campaign_id, recipient_id = campaign_in_flight(settings, "waits.example", 10)
    sending.unclaim([recipient_id], fetchall("SELECT key FROM send_batch")[0][0])
    key = fetchall("SELECT key FROM send_batch WHERE campaign_id = %s", (campaign_id,))[0][0]
    sending.republish_batch(campaign_id, shop_id, [recipient_id], key, 600_000)

    # When the reconciler looks with batches stale after 100 ms
    stale = dataclasses.replace(settings, batch_stale_after_ms=100)
    time.sleep(0.3)

    # Then it is not published again while its message waits (each copy deferred itself
    # again, and they multiplied)
    assert reconcile.republish_stale_batches(stale) == 0


def unknown_outcome(settings, domain: str):
    """A shop with 3 credits whose one `/sms` recipient the reconciler failed as
    `unknown_outcome`: (settings with claims timing out at once, shop id, recipient id)."""
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    shop_id, _, recipient_id = campaign_in_flight(settings, domain, 3)
    reconcile.reconcile(quick, audit.ADMIN)
    assert status_of(recipient_id) == ("failed", "unknown_outcome")
    return quick, shop_id, recipient_id


def report_naming(settings, recipient_id: int, report_id: str, to: str | None = None) -> int:
    """The provider's Delivered report naming the recipient by reference (its id), with the
    number `to` when given, received by the webhook; returns how many were applied."""
    report = {"id": report_id, "reference": str(recipient_id), "deliveryStatus": "Delivered"}
    return receive([report if to is None else {**report, "to": to}], settings)


def test_a_report_naming_a_recipient_by_reference_with_another_number_is_no_evidence(db, settings):
    # Given an unknown outcome of a `/sms` call (its reference is the recipient's id)
    quick, shop_id, recipient_id = unknown_outcome(settings, "stranger.example")

    # When a report arrives with that reference but another number (a stranger's message,
    # whose reference happens to be the same small integer), applied at once and stored
    applied = report_naming(settings, recipient_id, "foreign-1", to="306999999999")
    report = reconcile.reconcile(quick, audit.ADMIN)

    # Then neither the applier nor the reconciler takes it as evidence: nothing is charged
    # (before: sent, with the stranger's message id, and debited)
    assert applied == 0 and report.upgraded_by_evidence == 0
    assert status_of(recipient_id) == ("failed", "unknown_outcome")
    assert credits.summary(shop_id).balance == 3

    # When a report with that reference and its number arrives, Then it is evidence
    report_naming(settings, recipient_id, "own-1", to="306900000001")
    assert status_of(recipient_id) == ("sent", None)
    assert credits.summary(shop_id).balance == 2


def test_the_reconciler_takes_no_report_with_another_number_as_evidence_by_reference(db, settings):
    # Given an unknown outcome, and reports stored (not applied at once) naming the recipient
    # by reference: one with another number, then one with none
    quick, shop_id, recipient_id = unknown_outcome(settings, "stored.example")
    db.execute_sql(
        'INSERT INTO delivery_report (provider_id, reference, "to", status) VALUES'
        " ('x-1', %s, '306999999999', 'Delivered')",
        (str(recipient_id),),
    )
    # When reconcile runs, Then the one with another number is no evidence
    assert reconcile.reconcile(quick, audit.ADMIN).upgraded_by_evidence == 0
    assert credits.summary(shop_id).balance == 3
    # And one without a number (the reference alone names it) is
    db.execute_sql(
        "INSERT INTO delivery_report (provider_id, reference, status) VALUES ('x-2', %s, 'Sent')",
        (str(recipient_id),),
    )
    assert reconcile.reconcile(quick, audit.ADMIN).upgraded_by_evidence == 1
    assert status_of(recipient_id) == ("sent", None)
    assert credits.summary(shop_id).balance == 2


@pytest.mark.parametrize(
    "spelling", ["+306900000001", "00306900000001", "+30 690 000 0001", "30-6900000001"]
)
def test_a_report_with_the_number_as_a_provider_may_write_it_is_evidence(db, settings, spelling):
    # Given an unknown outcome of a `/sms` call
    _, shop_id, recipient_id = unknown_outcome(settings, "spelling.example")
    # When its report writes the number with +, 00, spaces or dashes, Then it is evidence
    report_naming(settings, recipient_id, "own-2", to=spelling)
    assert status_of(recipient_id) == ("sent", None)
    assert credits.summary(shop_id).balance == 2


def test_a_recipient_erased_since_its_call_is_charged_only_on_a_report_without_a_number(
    db, settings
):
    # Given an unknown outcome whose number was then erased (Shopify's customers/redact)
    quick, shop_id, recipient_id = unknown_outcome(settings, "erased-late.example")
    erasure.erase_number(shop_id, "+306900000001", settings.secret_key, audit.ADMIN)

    # When a report names it by reference with a number: its own, or a stranger's (nothing
    # left to tell them apart)
    for number in ("306900000001", "447700900123"):
        report_naming(settings, recipient_id, f"r-{number}", to=number)
    reconcile.reconcile(quick, audit.ADMIN)
    # Then neither is evidence: unpaid rather than charged on a stranger's report (a review)
    assert status_of(recipient_id) == ("failed", "unknown_outcome")
    assert credits.summary(shop_id).balance == 3

    # When a report names it by reference alone, Then it is evidence
    report_naming(settings, recipient_id, "r-none")
    assert status_of(recipient_id) == ("sent", None)
    assert credits.summary(shop_id).balance == 2


def test_the_reconciler_reads_no_report_older_than_the_evidence_window(db, settings):
    # Given an unknown outcome and, stored unapplied, a report naming it received 8 days ago
    # (past the 7-day evidence window: the reconciler does not read it again at every run)
    quick, shop_id, recipient_id = unknown_outcome(settings, "old-report.example")
    db.execute_sql(
        "INSERT INTO delivery_report (provider_id, reference, status, received_at)"
        " VALUES ('old-1', %s, 'Sent', now() - interval '8 days')",
        (str(recipient_id),),
    )
    assert reconcile.reconcile(quick, audit.ADMIN).upgraded_by_evidence == 0
    # And one received within it is read
    db.execute_sql("UPDATE delivery_report SET received_at = now() - interval '6 days'")
    assert reconcile.reconcile(quick, audit.ADMIN).upgraded_by_evidence == 1
    assert credits.summary(shop_id).balance == 2
