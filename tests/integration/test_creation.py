"""Recipients created in bounded chunks after the enqueue answered (SPEC 12), and the progress
counters kept by triggers: on real PostgreSQL, with a chunk of a few recipients."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from models.database import execute, fetchall
from service import (
    audience,
    audit,
    campaigns,
    contacts,
    creation,
    delivery,
    erasure,
    recipient_counts,
    reconcile,
)
from service.enqueue import enqueue
from service.errors import InsufficientCredits, NoRecipients
from service.infra.call_slots import CallSlots
from service.provider import Outcome
from service.windows import BatchSender
from tests.integration.ledger import (
    FakeProvider,
    assert_books_balance,
    reservation,
    shop_with_contacts,
    statuses,
)
from tests.integration.reports import receive

CHUNK = 7


@pytest.fixture
def chunked(settings):
    """Chunks of 7 recipients, batches of 3: an audience of 20 takes three chunks."""
    return dataclasses.replace(settings, recipient_chunk_size=CHUNK, send_batch_size=3)


@pytest.fixture
def calls():
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown()


def cursor_of(campaign_id: int) -> tuple:
    return fetchall(
        "SELECT creation_cursor, recipients_created_at IS NOT NULL FROM campaign WHERE id = %s",
        (campaign_id,),
    )[0]


def create_rest(settings, campaign_id: int) -> int:
    """Run the creator's chunks as the actor would, until the audience is created."""
    chunks = 0
    while True:
        cursor, done = cursor_of(campaign_id)
        if done:
            return chunks
        assert creation.create_next(campaign_id, cursor, settings, audit.WORKER)
        chunks += 1


def launch(settings, shop_id: int, contact_ids=None, text: str = "Flash sale today"):
    campaign = campaigns.create(shop_id, "c", text, contact_ids, append_unsubscribe=False)
    return campaign.id, enqueue(shop_id, campaign.id, settings, audit.ADMIN)


def exact_counts(campaign_id: int) -> tuple[dict, dict]:
    by_status = dict.fromkeys(recipient_counts.RECIPIENT_STATUSES, 0)
    by_status.update(statuses(campaign_id))
    by_delivery = dict(
        fetchall(
            "SELECT delivery_status, count(*) FROM campaign_recipient"
            " WHERE campaign_id = %s AND delivery_status IS NOT NULL GROUP BY 1",
            (campaign_id,),
        )
    )
    return by_status, by_delivery


def test_a_small_audience_is_created_in_the_enqueue(db, chunked):
    shop_id, _ = shop_with_contacts("small.example", 100, CHUNK)
    campaign_id, result = launch(chunked, shop_id)
    assert (result.recipients, result.batches, result.creating) == (CHUNK, 3, False)
    assert cursor_of(campaign_id)[1] is True
    assert statuses(campaign_id) == {"pending": CHUNK}


@pytest.mark.parametrize("as_list", [False, True], ids=["all_subscribed", "contact_list"])
def test_a_large_audience_is_created_after_the_answer_in_chunks(db, chunked, as_list):
    # Given 20 contacts, and a contact imported after the enqueue
    shop_id, ids = shop_with_contacts("large.example", 100, 20)
    campaign_id, result = launch(chunked, shop_id, ids if as_list else None)

    # Then the answer counted the audience and reserved it whole, creating nothing yet
    assert (result.recipients, result.reserved_credits, result.batches, result.creating) == (
        20,
        20,
        0,
        True,
    )
    assert statuses(campaign_id) == {}
    assert reservation(campaign_id) == ("active", 20, 0, 0)
    contacts.import_contacts(shop_id, [{"phone": "+306999999999"}], actor=audit.ADMIN)

    # When the creator runs its chunks
    assert create_rest(chunked, campaign_id) == 3

    # Then every contact of the snapshot is a recipient exactly once, the later one is not,
    # and the batches hold every recipient once with the whole reservation between them
    assert fetchall(
        "SELECT count(*), count(DISTINCT contact_id), max(contact_id) FROM campaign_recipient"
        " WHERE campaign_id = %s",
        (campaign_id,),
    ) == [(20, 20, ids[-1])]
    assert fetchall(
        "SELECT sum(reserved), count(*) FROM send_batch WHERE campaign_id = %s", (campaign_id,)
    ) == [(20, 8)]  # chunks of 7, 7, 6: batches of 3, 3, 1, 3, 3, 1, 3, 3
    assert fetchall(
        "SELECT count(*), count(DISTINCT r) FROM send_batch, unnest(recipient_ids) r"
        " WHERE campaign_id = %s",
        (campaign_id,),
    ) == [(20, 20)]
    assert cursor_of(campaign_id)[1] is True
    # And a duplicate of any chunk's message does nothing
    assert not creation.create_next(campaign_id, 0, chunked, audit.WORKER)


def listed_shop(domain: str, balance: int, opted_out: int) -> tuple[int, list[int]]:
    """A shop with `balance` credits and 20 contacts (a list longer than a chunk), the first
    `opted_out` of them opted out: (shop id, every contact's id)."""
    shop_id, ids = shop_with_contacts(domain, balance, 20)
    execute("UPDATE contact SET opted_out_at = now() WHERE id = ANY(%s)", (ids[:opted_out],))
    return shop_id, ids


def reservations_of(shop_id: int) -> int:
    return fetchall("SELECT count(*) FROM credit_reservation WHERE shop_id = %s", (shop_id,))[0][0]


def test_a_long_list_is_bounded_by_its_length_and_what_no_batch_got_is_given_back(db, chunked):
    # Given a list of 20 contacts (longer than a chunk), 5 of them opted out, and credits for
    # all 20: the enqueue reserves the list's length without counting who is eligible
    shop_id, ids = listed_shop("long-list.example", 100, opted_out=5)
    campaign_id, result = launch(chunked, shop_id, ids)
    assert (result.recipients, result.reserved_credits, result.creating) == (20, 20, True)
    # When the creator runs, Then the 15 eligible are created and 5 credits given back
    create_rest(chunked, campaign_id)
    assert statuses(campaign_id) == {"pending": 15}
    assert reservation(campaign_id) == ("active", 20, 0, 5)
    assert assert_books_balance(shop_id)


@pytest.fixture(params=["ids_bound", "joined_in_sql"])
def counted_as(request, monkeypatch):
    """A list counted both ways: its ids read and bound, or (past `audience.LONG_LIST`, here
    lowered to 10) joined in PostgreSQL from the campaign's row."""
    if request.param == "joined_in_sql":
        monkeypatch.setattr(audience, "LONG_LIST", 10)
    return request.param


def test_a_long_list_the_shop_cannot_cover_by_its_length_is_counted(db, chunked, counted_as):
    # Given 20 listed contacts, 5 opted out, and credits for 15 only: the bound (20) is
    # refused, the count (15) decides, and the reservation is exact
    shop_id, ids = listed_shop("long-list-tight.example", 15, opted_out=5)
    campaign_id, result = launch(chunked, shop_id, ids)
    assert (result.recipients, result.reserved_credits) == (15, 15)
    # And with one credit less, the count refuses it: 402, nothing written
    other, ids2 = listed_shop("long-list-short.example", 14, opted_out=5)
    with pytest.raises(InsufficientCredits):
        launch(chunked, other, ids2)
    assert reservations_of(other) == 0


def test_a_long_personalised_list_is_counted(db, chunked, counted_as):
    # Given a personalised text to a list of 20, 5 opted out: each name costs what it costs
    # (its bound, every name at its widest, would hold 4 times that from the shop's other
    # campaigns), so the audience is counted and the reservation is exact
    shop_id, ids = listed_shop("long-list-names.example", 1000, opted_out=5)
    campaign_id, result = launch(chunked, shop_id, ids, text="Hi {first_name}, sale today")
    assert (result.recipients, result.reserved_credits) == (15, 15)


def test_a_long_list_with_no_one_eligible_left_is_refused(db, chunked):
    # Given a list of 20 whose contacts have all opted out, and credits for all: the bound
    # would cover it, but the list holds no eligible id: 422, nothing reserved
    shop_id, ids = listed_shop("long-list-empty.example", 100, opted_out=20)
    with pytest.raises(NoRecipients):
        launch(chunked, shop_id, ids)
    assert reservations_of(shop_id) == 0
    # And one eligible contact, the list's last, is enough
    execute("UPDATE contact SET opted_out_at = NULL WHERE id = %s", (ids[-1],))
    campaign_id, result = launch(chunked, shop_id, ids)
    assert (result.recipients, result.reserved_credits) == (20, 20)
    create_rest(chunked, campaign_id)
    assert statuses(campaign_id) == {"pending": 1}
    assert reservation(campaign_id) == ("active", 20, 0, 19)
    assert assert_books_balance(shop_id)


def test_two_creators_racing_for_a_chunk_insert_it_once(db, chunked):
    shop_id, _ = shop_with_contacts("race.example", 100, 20)
    campaign_id, _ = launch(chunked, shop_id)
    barrier = threading.Barrier(2)

    def create() -> bool:
        barrier.wait()
        return creation.write_chunk(campaign_id, 0, chunked, audit.WORKER) is not None

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: create(), range(2)))
    assert sorted(outcomes) == [False, True]
    assert statuses(campaign_id) == {"pending": CHUNK}
    create_rest(chunked, campaign_id)
    assert fetchall(
        "SELECT count(*), count(DISTINCT contact_id) FROM campaign_recipient"
        " WHERE campaign_id = %s",
        (campaign_id,),
    ) == [(20, 20)]


def test_a_cancel_mid_creation_stops_it_and_releases_the_reservation_exactly(db, chunked):
    shop_id, _ = shop_with_contacts("cancel.example", 50, 20)
    campaign_id, _ = launch(chunked, shop_id)
    assert creation.create_next(campaign_id, 0, chunked, audit.WORKER)

    campaigns.cancel(shop_id, campaign_id, chunked, audit.ADMIN)

    cursor, done = cursor_of(campaign_id)
    assert not creation.create_next(campaign_id, cursor, chunked, audit.WORKER)
    assert statuses(campaign_id) == {"skipped": CHUNK}
    assert reservation(campaign_id) == ("released", 20, 0, 20)
    assert assert_books_balance(shop_id)["balance"] == 50
    assert not done


def test_a_paused_campaign_keeps_creating_but_admits_nothing(db, chunked):
    shop_id, _ = shop_with_contacts("pause.example", 50, 20)
    campaign_id, _ = launch(chunked, shop_id)
    campaigns.pause(shop_id, campaign_id, audit.ADMIN)
    create_rest(chunked, campaign_id)
    assert statuses(campaign_id) == {"pending": 20}
    assert fetchall(
        "SELECT DISTINCT state FROM send_batch WHERE campaign_id = %s", (campaign_id,)
    ) == [("pending",)]


def test_a_creation_that_stopped_is_resumed_by_the_reconcile_and_nothing_finishes_before(
    db, chunked, calls
):
    # Given a creation whose next message was lost after its first chunk, and the recipients
    # of that chunk all sent
    shop_id, _ = shop_with_contacts("stalled.example", 50, 20)
    campaign_id, _ = launch(chunked, shop_id)
    assert creation.create_next(campaign_id, 0, chunked, audit.WORKER)
    sender = BatchSender(chunked, FakeProvider(), calls, CallSlots(4))
    for key, ids in fetchall(
        "SELECT key, recipient_ids FROM send_batch WHERE campaign_id = %s", (campaign_id,)
    ):
        sender.send(campaign_id, shop_id, ids, key)
    assert statuses(campaign_id) == {"sent": CHUNK}

    # Then the campaign is not finished: its audience is not wholly created
    assert delivery.refresh_campaign(campaign_id, chunked, audit.WORKER) is None
    assert reconcile.reconcile(chunked, audit.ADMIN).finalized == {}
    assert campaigns.get(shop_id, campaign_id).status == "sending"

    # When the creation made no progress for BATCH_STALE_AFTER_MS, the reconcile publishes it
    stale = dataclasses.replace(chunked, batch_stale_after_ms=0)
    assert reconcile.reconcile(chunked, audit.ADMIN).resumed_creations == 0
    execute(
        "UPDATE campaign SET creation_progress_at = now() - interval '1 hour' WHERE id = %s",
        (campaign_id,),
    )
    assert reconcile.reconcile(stale, audit.ADMIN).resumed_creations == 1
    # (the published message's work, run here)
    create_rest(chunked, campaign_id)
    for key, ids in fetchall(
        "SELECT key, recipient_ids FROM send_batch WHERE campaign_id = %s AND state <> 'finished'",
        (campaign_id,),
    ):
        sender.send(campaign_id, shop_id, ids, key)
    assert delivery.refresh_campaign(campaign_id, chunked, audit.WORKER) == "completed"
    assert statuses(campaign_id) == {"sent": 20}
    assert reservation(campaign_id) == ("released", 20, 20, 0)
    assert assert_books_balance(shop_id)["balance"] == 30


def test_the_part_of_an_audience_that_left_before_its_creation_is_released(db, chunked):
    # Given 20 contacts counted and reserved, 5 of which opt out before their chunk
    shop_id, ids = shop_with_contacts("shrank.example", 50, 20)
    campaign_id, _ = launch(chunked, shop_id)
    execute("UPDATE contact SET opted_out_at = now() WHERE id = ANY(%s)", (ids[-5:],))

    create_rest(chunked, campaign_id)

    # Then 15 are created, the batches hold 15 credits and 5 are released, recorded
    assert statuses(campaign_id) == {"pending": 15}
    assert reservation(campaign_id) == ("active", 20, 0, 5)
    assert fetchall(
        "SELECT sum(reserved) FROM send_batch WHERE campaign_id = %s", (campaign_id,)
    ) == [(15,)]
    assert fetchall(
        "SELECT action, amount FROM audit_event WHERE campaign_id = %s AND subject = 'reservation'"
        " ORDER BY id",
        (campaign_id,),
    ) == [("reserved", 20), ("released", 5)]
    assert assert_books_balance(shop_id)


def test_the_counters_equal_a_full_count_after_a_mixed_run(db, chunked, calls):
    # Given a chunked campaign sent with every kind of outcome, reported on, partly erased,
    # and a second campaign cancelled
    shop_id, ids = shop_with_contacts("counts.example", 100, 20)
    campaign_id, _ = launch(chunked, shop_id)
    create_rest(chunked, campaign_id)
    outcomes = [Outcome.ACCEPTED] * 12 + [Outcome.REJECTED] * 2 + [Outcome.UNKNOWN] * 2
    sender = BatchSender(chunked, FakeProvider(outcomes=outcomes), calls, CallSlots(4))
    for key, recipient_ids in fetchall(
        "SELECT key, recipient_ids FROM send_batch WHERE campaign_id = %s ORDER BY id",
        (campaign_id,),
    ):
        sender.send(campaign_id, shop_id, recipient_ids, key)
    sent = fetchall(
        "SELECT mitto_message_id FROM campaign_recipient WHERE campaign_id = %s"
        " AND status = 'sent' ORDER BY id",
        (campaign_id,),
    )
    receive(
        [{"id": pid, "deliveryStatus": "Delivered"} for (pid,) in sent[:6]]
        + [{"id": pid, "deliveryStatus": "Failed"} for (pid,) in sent[6:8]],
        chunked,
    )
    erasure.erase_contact(shop_id, ids[0], chunked.secret_key, audit.ADMIN)
    other_id, _ = launch(chunked, shop_id, ids[:10])
    create_rest(chunked, other_id)
    campaigns.cancel(shop_id, other_id, chunked, audit.ADMIN)
    # (more than a chunk pending: skipped by the worker's status update, run here)
    delivery.refresh_campaign(other_id, chunked, audit.WORKER)

    # Then the counters say what a count of the recipients says, before and after a fold
    for campaign in (campaign_id, other_id):
        assert recipient_counts.for_campaign(campaign) == exact_counts(campaign)
    assert recipient_counts.fold() == 2
    assert fetchall("SELECT count(*) FROM campaign_recipient_delta") == [(0,)]
    for campaign in (campaign_id, other_id):
        assert recipient_counts.for_campaign(campaign) == exact_counts(campaign)
    by_status, by_delivery = recipient_counts.for_campaign(campaign_id)
    assert by_status["sent"] >= 12 and by_delivery["Delivered"] == 6
    assert recipient_counts.for_campaign(other_id)[0]["skipped"] == 9  # ids[0] was erased
    progress = campaigns.progress(shop_id, campaign_id)
    assert (progress["total"], progress["recipients_created"]) == (20, True)


def test_a_campaign_an_older_process_enqueued_during_a_deploy_still_finishes(db, chunked, calls):
    # Given a campaign enqueued, during a rolling deploy, by a web process older than chunked
    # creation: every recipient created in its enqueue, neither creation column set
    shop_id, _ = shop_with_contacts("rolling.example", 100, CHUNK)
    campaign_id, _ = launch(chunked, shop_id)
    execute(
        "UPDATE campaign SET recipients_created_at = NULL, creation_until = NULL,"
        " creation_cursor = NULL WHERE id = %s",
        (campaign_id,),
    )

    # When its batches are all sent
    sender = BatchSender(chunked, FakeProvider(), calls, CallSlots(4))
    for key, ids in fetchall(
        "SELECT key, recipient_ids FROM send_batch WHERE campaign_id = %s", (campaign_id,)
    ):
        sender.send(campaign_id, shop_id, ids, key)

    # Then it completes (not left `sending` for ever) and its reservation is settled
    assert delivery.refresh_campaign(campaign_id, chunked, audit.WORKER) == "completed"
    assert statuses(campaign_id) == {"sent": CHUNK}
    assert reservation(campaign_id)[0] == "released"
