"""Reservations follow the money (SPEC 3, 4): a cancel releases at once only what will never be
sent, calls in flight keep their credits until they resolve, a campaign accepted for exactly the
available credits never fails for lack of them, and cancel and pause mean the same in the send
path. On real PostgreSQL, with the real `BatchSender` and a fake provider."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from models.database import connection, fetchall
from service import audit, campaigns, credits, delivery, reconcile, reservations
from service import sending as sending_module
from service.credits import CreditSummary
from service.infra import dispatch
from service.infra.call_slots import CallSlots
from service.provider import Outcome
from service.sending import (
    Accepted,
    claim_recipients,
    persist_results,
    repair_persist,
    unclaim,
)
from service.windows import BatchSender
from tests.integration.ledger import (
    FakeProvider,
    assert_books_balance,
    enqueue_campaign,
    reservation,
    shop_with_contacts,
    statuses,
)
from tests.integration.reports import receive


@pytest.fixture
def calls():
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown()


def accept(shop_id: int, campaign_id: int, recipient_ids) -> None:
    """The provider's answers to calls in flight arrive: accepted, one segment each."""
    persist_results(
        shop_id,
        campaign_id,
        [Accepted(rid, f"p-{rid}", "Flash sale today", 1, None) for rid in recipient_ids],
        [],
    )


def send_all(sender: BatchSender, campaign_id: int, shop_id: int):
    """Deliver every unfinished batch of the campaign to the sender once, as the worker would."""
    batches = fetchall(
        "SELECT key, recipient_ids FROM send_batch WHERE campaign_id = %s"
        " AND state <> 'finished' ORDER BY id",
        (campaign_id,),
    )
    return [sender.send(campaign_id, shop_id, ids, key) for key, ids in batches]


def test_cancel_releases_at_once_only_what_will_never_be_sent(db, settings):
    # Given 20 credits and a campaign of 10 one-segment messages, 4 of them in flight
    shop_id, contact_ids = shop_with_contacts("cancel.example", 20, 10)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    in_flight = sending.recipients[:4]
    claim_recipients(sending.campaign_id, in_flight, sending.key)
    assert credits.summary(shop_id) == CreditSummary(20, 10, 10)

    # When the merchant cancels it
    campaigns.cancel(shop_id, sending.campaign_id, settings, audit.ADMIN)

    # Then the 6 never sent are skipped and their credits available; the 4 in flight stay held
    assert statuses(sending.campaign_id) == {"sending": 4, "skipped": 6}
    assert credits.summary(shop_id) == CreditSummary(20, 4, 16)
    assert reservation(sending.campaign_id) == ("active", 10, 0, 6)

    # When 3 calls are answered accepted and the 4th was throttled after the cancel
    accept(shop_id, sending.campaign_id, in_flight[:3])
    assert credits.summary(shop_id) == CreditSummary(17, 1, 16)
    unclaim(in_flight[3:], sending.key)

    # Then the throttled one is skipped, not pending, and the reservation is released once
    # nothing is in flight; the credits it held for the throttled call are available again
    assert statuses(sending.campaign_id) == {"sent": 3, "skipped": 7}
    assert delivery.refresh_campaign(sending.campaign_id, settings, audit.WORKER) == "cancelled"
    assert reservation(sending.campaign_id) == ("released", 10, 3, 7)
    assert credits.summary(shop_id) == CreditSummary(17, 0, 17)
    assert_books_balance(shop_id)


def test_a_campaign_for_exactly_what_a_cancel_left_available_sends_everyone(db, settings, calls):
    # Given a cancelled campaign with 4 calls still in flight
    shop_id, contact_ids = shop_with_contacts("exact.example", 20, 40)
    cancelled = enqueue_campaign(settings, shop_id, contact_ids[:10])
    claim_recipients(cancelled.campaign_id, cancelled.recipients[:4], cancelled.key)
    campaigns.cancel(shop_id, cancelled.campaign_id, settings, audit.ADMIN)
    available = credits.summary(shop_id).available

    # When a second campaign is enqueued for exactly the available credits
    second = enqueue_campaign(settings, shop_id, contact_ids[10 : 10 + available])
    assert credits.summary(shop_id).available == 0
    # ...and the calls in flight of the first are then answered accepted, and debited
    accept(shop_id, cancelled.campaign_id, cancelled.recipients[:4])
    provider = FakeProvider()
    send_all(BatchSender(settings, provider, calls, CallSlots(8)), second.campaign_id, shop_id)

    # Then every recipient of the second campaign was sent, none failed for lack of credits
    assert available == 16
    assert statuses(second.campaign_id) == {"sent": 16}
    assert len(provider.sent) == 16
    assert delivery.refresh_campaign(second.campaign_id, settings, audit.WORKER) == "completed"
    assert delivery.refresh_campaign(cancelled.campaign_id, settings, audit.WORKER) == "cancelled"
    assert assert_books_balance(shop_id)["balance"] == 0


def test_a_cancel_while_the_call_is_in_flight_skips_what_the_provider_throttled(
    db, settings, calls
):
    # Given a campaign of 5 whose provider call is answered after the merchant cancelled it:
    # 3 accepted, 2 throttled
    shop_id, contact_ids = shop_with_contacts("inflight.example", 10, 5)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    provider = FakeProvider(
        during_call=lambda: campaigns.cancel(shop_id, sending.campaign_id, settings, audit.ADMIN),
        outcomes=[Outcome.ACCEPTED] * 3 + [Outcome.NOT_SENT] * 2,
    )
    sender = BatchSender(settings, provider, calls, CallSlots(8))

    # When the batch is sent, and delivered again as the actor retries the throttled part
    first = send_all(sender, sending.campaign_id, shop_id)
    retry = sender.send(sending.campaign_id, shop_id, sending.recipients, sending.key)

    # Then the accepted ones are sent and debited, the throttled ones skipped (never pending
    # again, never sent), the batch stays finished and the reservation is released
    assert (first[0].accepted, first[0].not_sent, retry.claimed) == (3, 2, 0)
    assert statuses(sending.campaign_id) == {"sent": 3, "skipped": 2}
    assert fetchall("SELECT DISTINCT error FROM campaign_recipient WHERE status = 'skipped'") == [
        ("cancelled",)
    ]
    assert fetchall("SELECT state FROM send_batch") == [("finished",)]
    assert delivery.refresh_campaign(sending.campaign_id, settings, audit.WORKER) == "cancelled"
    assert reservation(sending.campaign_id)[0] == "released"
    assert credits.summary(shop_id) == CreditSummary(7, 0, 7)
    assert_books_balance(shop_id)


def test_answers_after_a_pause_are_kept_and_resume_sends_the_rest_once(db, settings, calls):
    # Given a campaign of 5 paused while its call is in flight: 3 accepted, 2 throttled
    shop_id, contact_ids = shop_with_contacts("pause.example", 10, 5)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    pauses = [lambda: campaigns.pause(shop_id, sending.campaign_id, audit.ADMIN)]
    provider = FakeProvider(
        during_call=lambda: pauses and pauses.pop()(),
        outcomes=[Outcome.ACCEPTED] * 3 + [Outcome.NOT_SENT] * 2,
    )
    sender = BatchSender(settings, provider, calls, CallSlots(8))
    send_all(sender, sending.campaign_id, shop_id)

    # Then the answers that arrived after the pause are persisted and debited
    assert statuses(sending.campaign_id) == {"sent": 3, "pending": 2}
    assert credits.summary(shop_id).balance == 7
    # ...a redelivery while it is paused sends nothing, and it is not finalised
    assert sender.send(sending.campaign_id, shop_id, sending.recipients, sending.key).claimed == 0
    assert delivery.refresh_campaign(sending.campaign_id, settings, audit.WORKER) is None

    # When it is resumed and its unfinished batch delivered
    campaigns.resume(shop_id, sending.campaign_id, settings, audit.ADMIN)
    send_all(sender, sending.campaign_id, shop_id)

    # Then each remaining recipient was sent exactly once
    assert statuses(sending.campaign_id) == {"sent": 5}
    assert sorted(provider.sent) == sorted(set(provider.sent)) and len(provider.sent) == 5
    assert delivery.refresh_campaign(sending.campaign_id, settings, audit.WORKER) == "completed"
    assert reservation(sending.campaign_id) == ("released", 5, 5, 0)
    assert_books_balance(shop_id)


def test_late_evidence_is_charged_against_credits_held_for_it(db, settings):
    # Given a campaign whose one message had an unknown outcome: failed, campaign failed
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    shop_id, contact_ids = shop_with_contacts("late.example", 5, 1)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    claim_recipients(sending.campaign_id, sending.recipients, sending.key)
    reconcile.reconcile(quick, audit.ADMIN)
    failed = campaigns.get(shop_id, sending.campaign_id)
    assert (failed.status, failed.status_reason) == (
        "failed",
        "no message is known to have been sent",
    )

    # Then its credit stays held for the evidence that may still come
    assert reservation(sending.campaign_id) == ("held", 1, 0, 0)
    assert credits.summary(shop_id) == CreditSummary(5, 1, 4)

    # When the shop's other credits are taken away meanwhile (all but the held one can be)
    with pytest.raises(credits.InsufficientCredits):
        credits.adjust(shop_id, -5, "chargeback", "cb-1", audit.ADMIN)
    credits.adjust(shop_id, -4, "chargeback", "cb-2", audit.ADMIN)
    # ...and the provider's report naming the message arrives
    receive(
        [{"id": "late-1", "reference": str(sending.recipients[0]), "deliveryStatus": "Delivered"}],
        settings,
    )

    # Then the message is sent with its debit, drawn from the hold: the balance is 0, never
    # below; the campaign is completed, its finish time kept, and nothing is held any more
    assert statuses(sending.campaign_id) == {"sent": 1}
    completed = campaigns.get(shop_id, sending.campaign_id)
    assert (completed.status, completed.status_reason) == ("completed", None)
    assert completed.finished_at == failed.finished_at
    assert reservation(sending.campaign_id) == ("released", 1, 1, 0)
    assert assert_books_balance(shop_id) == {
        "top-up": 5,
        "debit": -1,
        "refund": 0,
        "adjustment": -4,
        "balance": 0,
    }
    assert not reconcile.reconcile(quick, audit.ADMIN).errors


def test_a_repair_after_the_campaign_finished_completes_it_and_settles_its_hold(db, settings):
    # Given a window whose persist failed after the provider accepted its one message (the
    # results wait for persistSmsResults), while the reconciler failed the claim as unknown
    # and finalised the campaign: failed, its credit held
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    shop_id, contact_ids = shop_with_contacts("repair.example", 5, 1)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    claim_recipients(sending.campaign_id, sending.recipients, sending.key)
    reconcile.reconcile(quick, audit.ADMIN)
    failed = campaigns.get(shop_id, sending.campaign_id)
    assert failed.status == "failed" and reservation(sending.campaign_id) == ("held", 1, 0, 0)

    # When the repair runs at last
    repair_persist(
        {
            "campaign_id": sending.campaign_id,
            "shop_id": shop_id,
            "batch_key": sending.key,
            "accepted": [[sending.recipients[0], "p-1", "Flash sale today", 1, None]],
            "rejected": [],
        },
        settings,
    )

    # Then it ends as late evidence does: sent and debited from the hold, the campaign
    # completed (finish time kept), nothing held any more
    assert statuses(sending.campaign_id) == {"sent": 1}
    completed = campaigns.get(shop_id, sending.campaign_id)
    assert (completed.status, completed.status_reason) == ("completed", None)
    assert completed.finished_at == failed.finished_at
    assert reservation(sending.campaign_id) == ("released", 1, 1, 0)
    assert credits.summary(shop_id) == CreditSummary(4, 0, 4)
    assert_books_balance(shop_id)


def test_a_hold_ends_with_the_evidence_window(db, settings):
    # Given a failed campaign holding a credit for its message of unknown outcome
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    shop_id, contact_ids = shop_with_contacts("window.example", 5, 1)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    claim_recipients(sending.campaign_id, sending.recipients, sending.key)
    reconcile.reconcile(quick, audit.ADMIN)
    assert reservation(sending.campaign_id)[0] == "held"

    # When the evidence window has passed
    past = dataclasses.replace(quick, evidence_window_ms=0)
    report = reconcile.reconcile(past, audit.ADMIN)

    # Then the hold is released, and a report arriving later charges nothing
    assert report.released_reservations == 1 and not report.errors
    assert credits.summary(shop_id) == CreditSummary(5, 0, 5)
    receive(
        [
            {
                "id": "too-late",
                "reference": str(sending.recipients[0]),
                "deliveryStatus": "Delivered",
            }
        ],
        past,
    )
    assert not reconcile.reconcile(past, audit.ADMIN).errors
    assert statuses(sending.campaign_id) == {"failed": 1}
    assert_books_balance(shop_id)


@pytest.mark.parametrize("balance_left", [0, 4])
def test_a_repair_after_the_evidence_window_charges_nothing_and_ends(db, settings, balance_left):
    # Given a window whose persist failed after the provider accepted its one message, the
    # claim failed as unknown and the campaign finalised, and then the evidence window passed:
    # the hold is released and the merchant spent what was left (or all but 4)
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    shop_id, contact_ids = shop_with_contacts("too-late.example", 5, 1)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    claim_recipients(sending.campaign_id, sending.recipients, sending.key)
    reconcile.reconcile(quick, audit.ADMIN)
    past = dataclasses.replace(quick, evidence_window_ms=0)
    assert reconcile.reconcile(past, audit.ADMIN).released_reservations == 1
    credits.adjust(shop_id, balance_left - 5, "chargeback", "spent", audit.ADMIN)

    # When the repair runs at last (a worker's PostgreSQL came back after the window)
    debited = repair_persist(
        {
            "campaign_id": sending.campaign_id,
            "shop_id": shop_id,
            "batch_key": sending.key,
            "accepted": [[sending.recipients[0], "p-1", "Flash sale today", 1, None]],
            "rejected": [],
        },
        past,
    )

    # Then it ends as a report after the window does: nothing charged, the outcome stays
    # unknown, and the repair is done (before: the balance check refused it, with the
    # balance at 0, on every retry until the message was dropped; or it drew on the
    # balance directly)
    assert debited == 0
    assert statuses(sending.campaign_id) == {"failed": 1}
    assert credits.summary(shop_id) == CreditSummary(balance_left, 0, balance_left)
    assert campaigns.get(shop_id, sending.campaign_id).status == "failed"
    assert_books_balance(shop_id)


def test_a_hold_released_during_a_late_persist_charges_nothing(db, settings, monkeypatch):
    # Given a campaign whose one message's claim timed out (its credit held), and a shop
    # with just that credit
    quick = dataclasses.replace(settings, claim_timeout_ms=0)
    shop_id, contact_ids = shop_with_contacts("race.example", 1, 2)
    late = enqueue_campaign(settings, shop_id, contact_ids[:1])
    claim_recipients(late.campaign_id, late.recipients, late.key)
    reconcile.reconcile(quick, audit.ADMIN)
    assert reservation(late.campaign_id)[0] == "held"
    payload = {
        "campaign_id": late.campaign_id,
        "shop_id": shop_id,
        "batch_key": late.key,
        "accepted": [[late.recipients[0], "p-1", "Flash sale today", 1, None]],
        "rejected": [],
    }

    # When its repair runs just as the evidence window ends: after the repair read the hold,
    # the reconcile releases it and the merchant reserves the credit for another campaign
    def meanwhile(name: str) -> None:
        if name == "inside_repair":
            with ThreadPoolExecutor(1) as other:
                other.submit(
                    lambda: (
                        credits.release(late.campaign_id, audit.ADMIN, "evidence window over"),
                        enqueue_campaign(settings, shop_id, contact_ids[1:]),
                    )
                ).result(10)

    monkeypatch.setattr(sending_module, "fault_point", meanwhile)
    with pytest.raises(credits.HoldReleased):
        repair_persist(payload, settings)
    monkeypatch.undo()

    # Then that try changed nothing, and the repair's retry charges nothing: the credit
    # stays the other campaign's (before: debited from the balance, available -1)
    assert repair_persist(payload, settings) == 0
    assert statuses(late.campaign_id) == {"failed": 1}
    assert credits.summary(shop_id) == CreditSummary(1, 1, 0)
    assert_books_balance(shop_id)


def test_the_reconciler_finalises_a_cancelled_campaign_once_nothing_is_in_flight(db, settings):
    # Given a cancelled campaign with two calls in flight, one of which never answers
    shop_id, contact_ids = shop_with_contacts("settle.example", 10, 5)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    claim_recipients(sending.campaign_id, sending.recipients[:2], sending.key)
    campaigns.cancel(shop_id, sending.campaign_id, settings, audit.ADMIN)

    # When the reconciler runs while they are in flight
    report = reconcile.reconcile(settings, audit.ADMIN)
    # Then the campaign is not finalised and their credits stay reserved
    assert report.finalized == {} and reservation(sending.campaign_id)[0] == "active"
    assert credits.summary(shop_id) == CreditSummary(10, 2, 8)

    # When one is answered and the other's claim times out
    accept(shop_id, sending.campaign_id, sending.recipients[:1])
    report = reconcile.reconcile(dataclasses.replace(settings, claim_timeout_ms=0), audit.ADMIN)

    # Then it is finalised: no recipient pending, the sent one debited, the unknown one's
    # credit held for evidence (not active: the campaign is over)
    assert report.finalized == {sending.campaign_id: "cancelled"}
    assert statuses(sending.campaign_id) == {"sent": 1, "failed": 1, "skipped": 3}
    assert reservation(sending.campaign_id) == ("held", 5, 1, 3)
    assert credits.summary(shop_id) == CreditSummary(9, 1, 8)
    assert_books_balance(shop_id)


def skip_and_close(campaign_id: int, settings) -> None:
    """The worker's `updateCampaignStatus` after a large cancel, on a thread of its own that
    gives its connection back."""
    with connection():
        delivery.refresh_campaign(campaign_id, settings, audit.WORKER)


def observe_cancel(observer, campaign_id: int) -> tuple[str, dict[str, int]]:
    """Once a session waits for a lock: the campaign's status and its recipients by status,
    as another session sees them."""
    with observer.cursor() as cursor:
        for _ in range(100):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                break
            time.sleep(0.05)
        cursor.execute("SELECT status FROM campaign WHERE id = %s", (campaign_id,))
        status = cursor.fetchone()[0]
        cursor.execute(
            "SELECT status, count(*) FROM campaign_recipient WHERE campaign_id = %s"
            " GROUP BY status",
            (campaign_id,),
        )
        return status, dict(cursor.fetchall())


def test_a_large_cancel_answers_at_once_and_the_worker_skips_it_in_chunks(
    db, settings, monkeypatch
):
    # Given a sending campaign of 10, more than one chunk of 3
    shop_id, contact_ids = shop_with_contacts("cancel-chunks.example", 20, 10)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    chunked = dataclasses.replace(settings, recipient_chunk_size=3)
    published: list[int] = []
    monkeypatch.setattr(dispatch, "publish_status_update", published.append)

    # When the merchant cancels it
    campaign = campaigns.cancel(shop_id, sending.campaign_id, chunked, audit.ADMIN)

    # Then the answer comes at once, the campaign cancelled (no batch claims anything from
    # now on), and the skipping is the worker's: its status update is published
    assert campaign.status == "cancelled" and published == [sending.campaign_id]
    assert statuses(sending.campaign_id) == {"pending": 10}

    # When the worker runs it while a claim under way (begun before the cancel) holds the
    # row of the last recipient (by contact)
    claim = psycopg2.connect(settings.database_url)
    observer = psycopg2.connect(settings.database_url)
    observer.autocommit = True
    try:
        with claim.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM campaign_recipient WHERE campaign_id = %s"
                " ORDER BY contact_id DESC LIMIT 1 FOR UPDATE",
                (sending.campaign_id,),
            )
        with ThreadPoolExecutor(1) as pool:
            skipping = pool.submit(skip_and_close, sending.campaign_id, chunked)
            try:
                seen = observe_cancel(observer, sending.campaign_id)
            finally:
                claim.rollback()  # the claim ends either way, so the skipping can finish
            skipping.result(timeout=10)
    finally:
        claim.close()
        observer.close()

    # Then it skipped chunk after chunk, each committed, until the one waiting for that row
    assert seen == ("cancelled", {"skipped": 9, "pending": 1})

    # And once the claim is gone, every recipient is skipped and the reservation released
    assert statuses(sending.campaign_id) == {"skipped": 10}
    assert reservation(sending.campaign_id) == ("released", 10, 0, 10)
    assert_books_balance(shop_id)


@pytest.mark.parametrize("repair", ["worker", "reconcile"])
def test_a_batch_settling_before_a_large_cancel_s_skip_leaves_nothing_pending(
    db, settings, monkeypatch, repair
):
    # Given a sending campaign of 10, more than one chunk of 3, cancelled: its skip is the
    # worker's status update, published
    shop_id, contact_ids = shop_with_contacts(f"cancel-settle-{repair}.example", 20, 10)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    chunked = dataclasses.replace(settings, recipient_chunk_size=3)
    published: list[int] = []
    monkeypatch.setattr(dispatch, "publish_status_update", published.append)
    campaigns.cancel(shop_id, sending.campaign_id, chunked, audit.ADMIN)
    assert published == [sending.campaign_id]

    # When a batch whose call was in flight persists first, and settles (a probe: the
    # reservation was released there, and the skip, which looked only at campaigns with an
    # active reservation, never came)
    assert reservations.settle(sending.campaign_id, chunked, audit.WORKER) is None
    assert reservation(sending.campaign_id)[0] == "active"

    # Then the worker's status update, or the reconcile when that message is lost, skips
    # every pending recipient and releases the reservation
    if repair == "worker":
        delivery.refresh_campaign(sending.campaign_id, chunked, audit.WORKER)
    else:
        assert reconcile.reconcile(chunked, audit.ADMIN).finalized == {
            sending.campaign_id: "cancelled"
        }
    assert statuses(sending.campaign_id) == {"skipped": 10}
    assert reservation(sending.campaign_id) == ("released", 10, 0, 10)
    assert_books_balance(shop_id)


def test_the_reconcile_skips_a_cancelled_campaign_s_pending_left_after_its_settle(
    db, settings, monkeypatch
):
    # Given a cancelled campaign whose reservation was released while 10 recipients were
    # left pending (as the settle before this fix left them; or a claim given back after it)
    shop_id, contact_ids = shop_with_contacts("cancel-left.example", 20, 10)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    monkeypatch.setattr(dispatch, "publish_status_update", lambda campaign_id: None)
    campaigns.cancel(
        shop_id,
        sending.campaign_id,
        dataclasses.replace(settings, recipient_chunk_size=3),
        audit.ADMIN,
    )
    db.execute_sql(
        "UPDATE credit_reservation SET status = 'released', released = amount,"
        " released_at = now() WHERE campaign_id = %s",
        (sending.campaign_id,),
    )

    # When the clock reconciles
    report = reconcile.reconcile(settings, audit.ADMIN)

    # Then nothing is left pending, and the credits stay as released
    assert report.finalized == {sending.campaign_id: "cancelled"}
    assert statuses(sending.campaign_id) == {"skipped": 10}
    assert reservation(sending.campaign_id) == ("released", 10, 0, 10)
    assert_books_balance(shop_id)


def test_a_cancel_of_one_chunk_skips_and_releases_before_it_answers(db, settings, monkeypatch):
    # Given a sending campaign of 10, one chunk
    shop_id, contact_ids = shop_with_contacts("cancel-inline.example", 20, 10)
    sending = enqueue_campaign(settings, shop_id, contact_ids)
    published: list[int] = []
    monkeypatch.setattr(dispatch, "publish_status_update", published.append)
    # When the merchant cancels it, Then it is all done when the cancel answers
    campaigns.cancel(shop_id, sending.campaign_id, settings, audit.ADMIN)
    assert published == []
    assert statuses(sending.campaign_id) == {"skipped": 10}
    assert reservation(sending.campaign_id) == ("released", 10, 0, 10)
