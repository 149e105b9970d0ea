"""Reconcile on real PostgreSQL: late evidence, and one failing repair not holding up others."""

from __future__ import annotations

import dataclasses

from models.database import fetchall
from service import audit, campaigns, contacts, credits, reconcile, shops
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
