"""Delivery reports against real PostgreSQL: early, duplicated and out-of-order reports."""
from __future__ import annotations

from models.database import fetchall
from service import campaigns, contacts, credits, delivery, shops
from service.enqueue import batch_key, enqueue
from service.sending import Accepted, claim_recipients, persist_results


def sending_campaign(settings, size: int = 3):
    # (about delivery reports, not consent: a shop that does not require it)
    shop, _ = shops.create_shop("dlr.example", "DLR", require_consent=False)
    credits.top_up(shop.id, 100, "initial")
    contacts.import_contacts(shop.id, [{"phone": f"+30690000{i:04d}"} for i in range(size)])
    campaign = campaigns.create(shop.id, "c", "Hello there", append_unsubscribe=False)
    enqueue(shop.id, campaign.id, settings)
    ids = [row[0] for row in fetchall("SELECT id FROM campaign_recipient WHERE campaign_id = %s"
                                      " ORDER BY id", (campaign.id,))]
    key = batch_key(campaign.id, ids)
    claimed = claim_recipients(campaign.id, ids, key)
    return shop.id, campaign.id, claimed


def delivery_status(db, recipient_id: int) -> str | None:
    return db.execute_sql("SELECT delivery_status FROM campaign_recipient WHERE id = %s",
                          (recipient_id,)).fetchone()[0]


def accept(shop_id, campaign_id, recipient, provider_id):
    persist_results(shop_id, campaign_id,
                    [Accepted(recipient.id, provider_id, "Hello there", 1, recipient.country)], [])


def test_a_report_that_arrives_before_the_send_is_persisted_is_applied(db, settings):
    # Given a claimed recipient whose report arrives before its send is persisted
    shop_id, campaign_id, (first, *_) = sending_campaign(settings)
    assert delivery.record_reports([{"id": "p-1", "deliveryStatus": "Delivered"}]) == 0

    # When the send is persisted and the campaign's status refreshed
    accept(shop_id, campaign_id, first, "p-1")
    assert delivery_status(db, first.id) == "Queued"
    delivery.refresh_campaign(campaign_id)

    # Then the early report is applied
    assert delivery_status(db, first.id) == "Delivered"


def test_a_status_never_moves_backwards_and_duplicates_change_nothing(db, settings):
    shop_id, campaign_id, (first, second, _) = sending_campaign(settings)
    accept(shop_id, campaign_id, first, "p-1")
    accept(shop_id, campaign_id, second, "p-2")

    delivery.record_reports([{"id": "p-1", "deliveryStatus": "Delivered"}])
    delivery.record_reports([{"id": "p-1", "deliveryStatus": "Sent"},
                             {"id": "p-1", "deliveryStatus": "Queued"},
                             {"id": "p-1", "deliveryStatus": "Expired"}])
    delivery.record_reports([{"id": "p-2", "deliveryStatus": "Sent"}] * 2)

    assert delivery_status(db, first.id) == "Delivered"
    assert delivery_status(db, second.id) == "Sent"
    # A persist replayed after the report does not reset the status to Queued either.
    accept(shop_id, campaign_id, first, "p-1")
    assert delivery_status(db, first.id) == "Delivered"


def test_a_replayed_persist_debits_nothing(db, settings):
    shop_id, campaign_id, (first, *_) = sending_campaign(settings)
    accept(shop_id, campaign_id, first, "p-1")
    accept(shop_id, campaign_id, first, "p-1")
    assert credits.summary(shop_id).balance == 99
    assert db.execute_sql("SELECT count(*) FROM credit_transaction WHERE kind = 'debit'"
                          ).fetchone()[0] == 1
