"""Delivery reports against real PostgreSQL: early, duplicated and out-of-order reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.database import fetchall
from service import audit, campaigns, contacts, credits, delivery, erasure, shops
from service.creation import batch_key
from service.enqueue import enqueue
from service.sending import Accepted, claim_recipients, persist_results
from tests.integration.reports import receive


def sending_campaign(settings, size: int = 3):
    # (about delivery reports, not consent: a shop that does not require it)
    shop, _ = shops.create_shop("dlr.example", "DLR", require_consent=False)
    credits.top_up(shop.id, 100, "initial", audit.ADMIN)
    contacts.import_contacts(
        shop.id, [{"phone": f"+30690000{i:04d}"} for i in range(size)], actor=audit.ADMIN
    )
    campaign = campaigns.create(shop.id, "c", "Hello there", append_unsubscribe=False)
    enqueue(shop.id, campaign.id, settings, audit.ADMIN)
    ids = [
        row[0]
        for row in fetchall(
            "SELECT id FROM campaign_recipient WHERE campaign_id = %s ORDER BY id", (campaign.id,)
        )
    ]
    key = batch_key(campaign.id, ids)
    claimed = claim_recipients(campaign.id, ids, key)
    return shop.id, campaign.id, claimed


def delivery_status(db, recipient_id: int) -> str | None:
    return db.execute_sql(
        "SELECT delivery_status FROM campaign_recipient WHERE id = %s", (recipient_id,)
    ).fetchone()[0]


def accept(shop_id, campaign_id, recipient, provider_id):
    persist_results(
        shop_id,
        campaign_id,
        [Accepted(recipient.id, provider_id, "Hello there", 1, recipient.country)],
        [],
    )


def test_a_report_that_arrives_before_the_send_is_persisted_is_applied(db, settings):
    # Given a claimed recipient whose report arrives before its send is persisted
    shop_id, campaign_id, (first, *_) = sending_campaign(settings)
    assert receive([{"id": "p-1", "deliveryStatus": "Delivered"}], settings) == 0

    # When the send is persisted and the campaign's status refreshed
    accept(shop_id, campaign_id, first, "p-1")
    assert delivery_status(db, first.id) == "Queued"
    delivery.refresh_campaign(campaign_id, settings, audit.WORKER)

    # Then the early report is applied
    assert delivery_status(db, first.id) == "Delivered"


def test_a_status_never_moves_backwards_and_duplicates_change_nothing(db, settings):
    shop_id, campaign_id, (first, second, _) = sending_campaign(settings)
    accept(shop_id, campaign_id, first, "p-1")
    accept(shop_id, campaign_id, second, "p-2")

    receive([{"id": "p-1", "deliveryStatus": "Delivered"}], settings)
    receive(
        [
            {"id": "p-1", "deliveryStatus": "Sent"},
            {"id": "p-1", "deliveryStatus": "Queued"},
            {"id": "p-1", "deliveryStatus": "Expired"},
        ],
        settings,
    )
    receive([{"id": "p-2", "deliveryStatus": "Sent"}] * 2, settings)

    assert delivery_status(db, first.id) == "Delivered"
    assert delivery_status(db, second.id) == "Sent"
    # A persist replayed after the report does not reset the status to Queued either.
    accept(shop_id, campaign_id, first, "p-1")
    assert delivery_status(db, first.id) == "Delivered"


def test_of_two_final_statuses_the_first_received_stays_however_they_are_applied(db, settings):
    # Given two sent messages
    shop_id, campaign_id, (first, second, _) = sending_campaign(settings)
    accept(shop_id, campaign_id, first, "f-1")
    accept(shop_id, campaign_id, second, "f-2")

    # When each gets Delivered then Failed: the first's in one pass, the second's in two
    receive(
        [
            {"id": "f-1", "deliveryStatus": "Delivered"},
            {"id": "f-1", "deliveryStatus": "Failed"},
        ],
        settings,
    )
    receive([{"id": "f-2", "deliveryStatus": "Delivered"}], settings)
    receive([{"id": "f-2", "deliveryStatus": "Failed"}], settings)

    # Then both keep the first final status received
    assert (delivery_status(db, first.id), delivery_status(db, second.id)) == (
        "Delivered",
        "Delivered",
    )


def test_a_report_time_that_cannot_be_the_events_is_replaced_by_the_time_applied(db, settings):
    # Given three sent messages
    shop_id, campaign_id, claimed = sending_campaign(settings)
    for number, recipient in enumerate(claimed):
        accept(shop_id, campaign_id, recipient, f"t-{number}")
    # When their reports carry a time far in the future, far in the past, and a plausible one
    plausible = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    receive(
        [
            {"id": "t-0", "deliveryStatus": "Delivered", "timestamp": "2999-01-01T00:00:00Z"},
            {"id": "t-1", "deliveryStatus": "Delivered", "timestamp": "0001-01-01T00:00:00Z"},
            {"id": "t-2", "deliveryStatus": "Delivered", "timestamp": plausible.isoformat()},
        ],
        settings,
    )
    # Then the first two show when they were applied (about now), the last its own time
    shown = [
        at
        for (at,) in db.execute_sql(
            "SELECT delivery_at FROM campaign_recipient WHERE id = ANY(%s) ORDER BY id",
            ([r.id for r in claimed],),
        )
    ]
    assert all(abs((at - datetime.now(UTC)).total_seconds()) < 60 for at in shown[:2]), shown
    assert shown[2] == plausible


def test_a_replayed_persist_debits_nothing(db, settings):
    shop_id, campaign_id, (first, *_) = sending_campaign(settings)
    accept(shop_id, campaign_id, first, "p-1")
    accept(shop_id, campaign_id, first, "p-1")
    assert credits.summary(shop_id).balance == 99
    assert (
        db.execute_sql("SELECT count(*) FROM credit_transaction WHERE kind = 'debit'").fetchone()[0]
        == 1
    )


def recipient(db, recipient_id: int) -> tuple:
    return db.execute_sql(
        "SELECT status, mitto_message_id, delivery_status FROM campaign_recipient WHERE id = %s",
        (recipient_id,),
    ).fetchone()


def debits(db) -> int:
    return db.execute_sql(
        "SELECT count(*) FROM credit_transaction WHERE kind = 'debit'"
    ).fetchone()[0]


def test_a_report_naming_a_call_still_in_flight_makes_it_sent_at_once(db, settings):
    # Given a recipient whose `/sms` call is still in flight (its answer not yet persisted)
    shop_id, campaign_id, (first, second, _) = sending_campaign(settings)

    # When the provider's report naming it by reference (its id) arrives first
    applied = receive(
        [
            {
                "id": "p-1",
                "reference": str(first.id),
                "to": first.phone,
                "deliveryStatus": "Delivered",
            }
        ],
        settings,
    )

    # Then it is sent with the report's message id and its debit, and the report applied
    assert applied == 1
    assert recipient(db, first.id) == ("sent", "p-1", "Delivered")
    assert recipient(db, second.id)[0] == "sending"
    assert (debits(db), credits.summary(shop_id).balance) == (1, 99)
    assert db.execute_sql("SELECT consumed FROM credit_reservation").fetchone()[0] == 1

    # When the call's own answer is persisted afterwards, Then nothing is debited twice
    accept(shop_id, campaign_id, first, "p-1")
    assert recipient(db, first.id) == ("sent", "p-1", "Delivered")
    assert (debits(db), credits.summary(shop_id).balance) == (1, 99)


@pytest.mark.parametrize("spelling", ["+306900000001", "306900000001"])
def test_a_bulk_report_names_its_recipient_by_batch_reference_and_number(db, settings, spelling):
    # Given a `/smsbulk` call in flight for a batch of three
    shop_id, campaign_id, claimed = sending_campaign(settings)
    key = batch_key(campaign_id, [r.id for r in claimed])
    # (the number's spelling in the report: with its "+", or without as providers may write it)
    to = spelling.replace("306900000001", claimed[1].phone.lstrip("+"))

    # When a report names the batch and one number
    receive([{"id": "b-7", "reference": key, "to": to, "deliveryStatus": "Sent"}], settings)

    # Then that recipient alone is sent and debited
    assert [recipient(db, r.id)[0] for r in claimed] == ["sending", "sent", "sending"]
    assert recipient(db, claimed[1].id) == ("sent", "b-7", "Sent")
    assert credits.summary(shop_id).balance == 99


def test_a_contact_erased_while_its_call_is_in_flight_leaves_no_text_nor_number(db, settings):
    # Given three claimed recipients (their calls in flight), two of whose contacts are
    # erased before the provider's answer is persisted
    shop_id, campaign_id, (first, second, third) = sending_campaign(settings)
    for recipient in (first, second):
        assert erasure.erase_contact(shop_id, recipient.contact_id, "k" * 32, audit.ADMIN)

    # When the answers are persisted and the reports arrive, one before its persist
    early = [{"id": "p-2", "to": second.phone, "deliveryStatus": "Delivered"}]
    assert receive(early, settings) == 0
    persist_results(
        shop_id,
        campaign_id,
        [
            Accepted(r.id, f"p-{n}", f"Hello {r.phone}", 1, r.country)
            for n, r in enumerate((first, second, third), 1)
        ],
        [],
    )
    receive(
        [
            {"id": "p-1", "to": first.phone, "deliveryStatus": "Delivered"},
            {"id": "p-3", "to": third.phone, "deliveryStatus": "Delivered"},
        ],
        settings,
    )
    delivery.refresh_campaign(campaign_id, settings, audit.WORKER)

    # Then they are sent and charged, and nothing of the erased ones is stored: no message
    # text, no number in any report; the third's are kept
    texts = dict(fetchall("SELECT recipient_id, text FROM message_log"))
    assert texts == {first.id: None, second.id: None, third.id: f"Hello {third.phone}"}
    numbers = dict(fetchall('SELECT provider_id, "to" FROM delivery_report'))
    assert numbers == {"p-1": None, "p-2": None, "p-3": third.phone}
    assert debits(db) == 3


def test_erasing_an_erased_contact_again_clears_what_was_stored_after_the_first(db, settings):
    # Given a contact erased while its call was in flight, whose text and report number were
    # stored after the erasure (as before the persist and the applier cleared them)
    shop_id, campaign_id, (first, *_) = sending_campaign(settings)
    accept(shop_id, campaign_id, first, "p-1")
    receive([{"id": "p-1", "to": first.phone, "deliveryStatus": "Delivered"}], settings)
    assert erasure.erase_contact(shop_id, first.contact_id, "k" * 32, audit.ADMIN)
    db.execute_sql("UPDATE message_log SET text = 'Hello Ann' WHERE recipient_id = %s", (first.id,))
    db.execute_sql("UPDATE delivery_report SET \"to\" = '+306900000000'")

    # When it is erased again
    again = erasure.erase_contact(shop_id, first.contact_id, "k" * 32, audit.ADMIN)

    # Then those are cleared too, and nothing else of the first erasure changes
    assert again is not None and again.messages == 1 and again.reports == 1
    assert fetchall("SELECT text FROM message_log") == [(None,)]
    assert fetchall('SELECT "to" FROM delivery_report') == [(None,)]
