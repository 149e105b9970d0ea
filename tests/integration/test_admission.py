"""Fair admission on real PostgreSQL and the test broker: a shop has at most
SHOP_BATCHES_IN_FLIGHT batches in the send queue, another shop's batches are admitted at once,
a finished batch makes room for the next, and the clock admits what a lost trigger left."""

from __future__ import annotations

import dataclasses

from models.database import fetchall
from service import admission, audit, campaigns, reconcile
from service.enqueue import enqueue
from service.infra import dispatch
from service.sending import finish_batch
from tests.e2e.stack import queued_messages
from tests.integration.ledger import enqueue_campaign, shop_with_contacts


def batch_states(campaign_id: int) -> dict[str, int]:
    return dict(
        fetchall(
            "SELECT state, count(*) FROM send_batch WHERE campaign_id = %s GROUP BY state",
            (campaign_id,),
        )
    )


def test_a_big_campaign_has_at_most_its_share_in_the_queue_and_another_shop_gets_in(db, settings):
    # Given batches of 10 and at most 3 batches of a shop in the queue
    fair = dataclasses.replace(settings, send_batch_size=10, shop_batches_in_flight=3)
    big_shop, big_contacts = shop_with_contacts("big.example", 1000, 100)
    small_shop, small_contacts = shop_with_contacts("small.example", 1000, 20)

    # When the first shop enqueues 10 batches, then the second shop 2
    big = enqueue_campaign(fair, big_shop, big_contacts)
    small = enqueue_campaign(fair, small_shop, small_contacts)

    # Then 3 of the first shop's are published and 7 wait; both of the second shop's are
    # published at once; the queue holds exactly those 5
    assert batch_states(big.campaign_id) == {"published": 3, "pending": 7}
    assert batch_states(small.campaign_id) == {"published": 2}
    assert queued_messages(dispatch.SEND_QUEUE) == 5

    # When one of the first shop's batches finishes, Then exactly one more is admitted
    (key,) = fetchall(
        "SELECT key FROM send_batch WHERE campaign_id = %s AND state = 'published' LIMIT 1",
        (big.campaign_id,),
    )[0]
    fetchall(
        "UPDATE campaign_recipient SET status = 'sent' WHERE id = ANY("
        "SELECT unnest(recipient_ids) FROM send_batch WHERE key = %s)",
        (key,),
    )
    assert finish_batch(key)
    assert admission.admit_shop(big_shop, fair) == 1
    assert admission.admit_shop(big_shop, fair) == 0
    assert batch_states(big.campaign_id) == {"finished": 1, "published": 3, "pending": 6}


def test_a_paused_campaign_holds_no_place_and_its_resume_waits_for_admission(db, settings):
    # Given a shop's campaign with 3 batches in the queue and 2 waiting
    fair = dataclasses.replace(settings, send_batch_size=10, shop_batches_in_flight=3)
    shop_id, contact_ids = shop_with_contacts("paused.example", 1000, 50)
    first = enqueue_campaign(fair, shop_id, contact_ids[:50])

    # When it is paused and the shop enqueues another campaign
    campaigns.pause(shop_id, first.campaign_id, audit.ADMIN)
    other = campaigns.create(shop_id, "c2", "Another sale", contact_ids[:20])
    enqueue(shop_id, other.id, fair, audit.ADMIN)

    # Then the paused campaign's batches do not count: the new one's are all admitted
    assert batch_states(other.id) == {"published": 2}

    # When the paused one is resumed, Then it gets only the place left (3 - 2 = 1)
    campaigns.resume(shop_id, first.campaign_id, fair, audit.ADMIN)
    assert batch_states(first.campaign_id) == {"published": 1, "pending": 4}


def test_the_clock_admits_batches_a_lost_trigger_left_waiting(db, settings):
    # Given a campaign whose batches were committed but never admitted (the web process died
    # between its commit and the publish)
    fair = dataclasses.replace(settings, send_batch_size=10, shop_batches_in_flight=2)
    shop_id, contact_ids = shop_with_contacts("lost.example", 1000, 30)
    enqueued = enqueue_campaign(fair, shop_id, contact_ids)
    fetchall(
        "UPDATE send_batch SET state = 'pending', published_at = NULL WHERE campaign_id = %s",
        (enqueued.campaign_id,),
    )

    # When the clock reconciles, Then it admits the shop's share, and only that
    report = reconcile.reconcile(fair, audit.ADMIN)
    assert report.admitted_batches == 2 and not report.errors
    assert batch_states(enqueued.campaign_id) == {"published": 2, "pending": 1}
