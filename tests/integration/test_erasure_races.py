"""An erasure racing the writes that could bring its data back (SPEC 11,
`service/erasure_lock.py`): each test runs the erasure on a second connection at a chosen
point inside the other transaction, where, before the lock, it committed around it and the
writer then stored the number, the name or the text again (a review reproduced each). Now the
erasure waits for the writer's commit and erases what it wrote; or, erased first, the writer
sees it. On real PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from models import Contact, DataExport, InboundMessage, Suppression, TestSend
from models.database import db as database
from models.database import fetchall
from service import (
    audit,
    campaigns,
    contacts,
    creation,
    erasure,
    erasure_lock,
    exports,
    idempotency,
    inbound,
    shops,
    suppressions,
    test_sends,
)
from service.audience import ELIGIBLE_CONTACTS, eligible_params
from service.enqueue import enqueue
from tests.api.conftest import FakeProvider
from tests.conftest import SECRET_KEY
from tests.integration.ledger import shop_with_contacts

P = "+306912345678"


def erase(shop_id: int) -> None:
    erasure.erase_number(shop_id, P, SECRET_KEY, audit.SHOPIFY_WEBHOOK)


def on_own_connection(run: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    """`run` started in a thread with a connection of its own; what it raises goes to
    `errors`, for the test's thread to report."""

    def target() -> None:
        try:
            with database.connection_context():
                run()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def in_another_connection(run: Callable[[], None]) -> None:
    errors: list[BaseException] = []
    thread = on_own_connection(run, errors)
    thread.join(20)
    assert not thread.is_alive() and not errors, errors


@contextmanager
def erasure_during(shop_id: int) -> Iterator[Callable[[], None]]:
    """`start()` begins the erasure on its own connection and checks that it waits (for the
    writer's transaction, which holds the shop's lock); on leaving, the erasure must finish."""
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []

    def start() -> None:
        thread = on_own_connection(lambda: erase(shop_id), errors)
        threads.append(thread)
        deadline = time.monotonic() + 10
        while not waiting_for_the_lock(shop_id):
            assert thread.is_alive(), "the erasure ran through the writer's transaction"
            assert time.monotonic() < deadline, "the erasure never waited for the lock"
            time.sleep(0.01)

    yield start
    assert threads, "the hook never ran"
    for thread in threads:
        thread.join(20)
        assert not thread.is_alive(), "the erasure never finished"
    assert not errors, errors


def waiting_for_the_lock(shop_id: int) -> bool:
    """Whether a session waits for the shop's erasure lock (`pg_locks`: a two-key advisory
    lock's keys are its classid and objid)."""
    return bool(
        fetchall(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = %s AND objid = %s AND objsubid = 2",
            (erasure_lock.ERASURE_LOCK, shop_id),
        )
    )


def hook(monkeypatch, owner, name: str, before=None, after=None) -> None:
    original = getattr(owner, name)

    def hooked(*args, **kwargs):
        if before:
            before()
        result = original(*args, **kwargs)
        if after:
            after()
        return result

    monkeypatch.setattr(owner, name, hooked)


def in_clear(shop_id: int) -> list:
    return list(
        Suppression.select(Suppression.source)
        .where((Suppression.shop == shop_id) & (Suppression.phone == P))
        .tuples()
    )


def test_an_import_during_an_erasure_is_erased_and_never_messaged(db, monkeypatch):
    shop, _ = shops.create_shop("race1.example", "R1", require_consent=False)
    with erasure_during(shop.id) as start:
        # The erasure starts after the import's upsert, before its commit
        hook(monkeypatch, contacts, "_opt_out_suppressed", before=start)
        contacts.import_contacts(shop.id, [{"phone": P, "first_name": "Ann"}], actor=audit.ADMIN)
    row = Contact.get(Contact.shop == shop.id)
    assert (row.phone, row.first_name, row.erased_at is not None) == (None, None, True)
    assert fetchall("SELECT c.id" + ELIGIBLE_CONTACTS, eligible_params(shop.id, None)) == []
    assert suppressions.is_suppressed(shop.id, P, SECRET_KEY)


def test_an_unsubscribe_during_an_erasure_leaves_no_number_in_clear(db, monkeypatch):
    shop, _ = shops.create_shop("race2.example", "R2", require_consent=False)
    contacts.import_contacts(shop.id, [{"phone": P}], actor=audit.ADMIN)
    contact_id = Contact.get(Contact.shop == shop.id).id
    with erasure_during(shop.id) as start:
        hook(monkeypatch, contacts, "phone_of", after=start)
        contacts.opt_out(shop.id, contact_id, SECRET_KEY, audit.UNSUBSCRIBE_PAGE)
    assert in_clear(shop.id) == []
    assert suppressions.is_suppressed(shop.id, P, SECRET_KEY)
    assert Contact.get_by_id(contact_id).opted_out_at is not None


def stop(settings, sender: str = "ALPHA") -> inbound.Received:
    message = inbound.Inbound(P, sender, "STOP", provider_id="m1")
    return inbound.receive(message, settings, FakeProvider(), audit.PROVIDER_WEBHOOK)


def test_a_stop_during_an_erasure_leaves_no_number_or_text(db, monkeypatch, settings):
    shop, _ = shops.create_shop("race3.example", "R3", sender="ALPHA", require_consent=False)
    contacts.import_contacts(shop.id, [{"phone": P}], actor=audit.ADMIN)
    with erasure_during(shop.id) as start:
        # After the STOP's inbound row and its suppression are written, before the commit
        hook(monkeypatch, suppressions, "suppress", after=start)
        assert stop(settings).shop_ids == (shop.id,)
    assert [(row.phone, row.text) for row in InboundMessage.select()] == [(None, None)]
    assert in_clear(shop.id) == []
    assert suppressions.is_suppressed(shop.id, P, SECRET_KEY)


def test_a_stop_found_for_a_shop_that_then_erased_the_number_stores_nothing(
    db, monkeypatch, settings
):
    # To the shared sender, where a shop is found by the number
    shop, _ = shops.create_shop("race4.example", "R4", require_consent=False)
    contacts.import_contacts(shop.id, [{"phone": P}], actor=audit.ADMIN)
    found = inbound.shops_for
    calls = []

    def shops_then_erasure(*args, **kwargs):
        targets = found(*args, **kwargs)
        # The erasure commits, on its own connection, after the targets were found
        in_another_connection(lambda: erase(shop.id))
        calls.append(targets)
        return targets

    monkeypatch.setattr(inbound, "shops_for", shops_then_erasure)
    received = stop(settings, settings.default_sender)
    assert [shop_.id for shop_ in calls[0]] == [shop.id]
    assert received.shop_ids == ()
    assert InboundMessage.select().count() == 0 and in_clear(shop.id) == []


def test_a_stop_to_its_own_sender_after_the_erasure_is_a_new_message(db, settings):
    # A shop's own sender takes every reply written to it: a STOP from a number the shop erased
    # earlier is stored and applied, as before (and the number stays suppressed)
    shop, _ = shops.create_shop("race4b.example", "R4b", sender="ALPHA", require_consent=False)
    contacts.import_contacts(shop.id, [{"phone": P}], actor=audit.ADMIN)
    erase(shop.id)
    assert stop(settings).shop_ids == (shop.id,)
    assert [row.phone for row in InboundMessage.select()] == [P]
    assert suppressions.is_suppressed(shop.id, P, SECRET_KEY)


def test_an_export_during_an_erasure_is_deleted_by_it(db, monkeypatch):
    shop, _ = shops.create_shop("race5.example", "R5", require_consent=False)
    contacts.import_contacts(shop.id, [{"phone": P, "first_name": "Ann"}], actor=audit.ADMIN)
    with erasure_during(shop.id) as start:
        hook(monkeypatch, exports, "customer_numbers_data", after=start)
        exports.export_customer(shop.id, "shopify:1", [P], {"id": 1, "phone": P}, SECRET_KEY)
    assert DataExport.select().count() == 0


def test_an_export_asked_with_a_number_erased_since_does_not_name_it(db, monkeypatch):
    shop, _ = shops.create_shop("race5b.example", "R5b", require_consent=False)
    second = "+306912345679"
    contacts.import_contacts(shop.id, [{"phone": P}, {"phone": second}], actor=audit.ADMIN)
    # The caller found both numbers; then one is erased (DELETE /contacts/{id}), then the export
    erase(shop.id)
    exports.export_customer(shop.id, "shopify:2", [P, second], {"id": 2}, SECRET_KEY)
    (document,) = [row.document for row in DataExport.select()]
    assert P not in str(document) and document["data"]["phones"] == [second]


def test_a_data_request_sent_again_after_the_redact_names_no_erased_number(db):
    # Given a customer's export, then the customer's redact (which deletes it)
    shop, _ = shops.create_shop("race5c.example", "R5c", require_consent=False)
    contacts.import_contacts(shop.id, [{"phone": P, "first_name": "Ann"}], actor=audit.ADMIN)
    customer = {"id": 7, "phone": "+30 691 234 5678"}
    exports.export_customer(shop.id, "shopify:9", [P], customer, SECRET_KEY, "7")
    erasure.erase_customer(shop.id, [P], "7", SECRET_KEY, audit.SHOPIFY_WEBHOOK)
    assert DataExport.select().count() == 0
    # When Shopify sends the same data request again
    exports.export_customer(shop.id, "shopify:9", [P], customer, SECRET_KEY, "7")
    # Then the new export holds neither the number nor Shopify's spelling of it
    (document,) = [row.document for row in DataExport.select()]
    assert document["customer"] == {"id": 7, "phone": None}
    assert "691" not in json.dumps(document) and document["data"]["phones"] == []


def test_an_answer_finished_after_an_erasure_of_its_number_replays_as_erased(db):
    shop, _ = shops.create_shop("race6.example", "R6", require_consent=False)
    assert idempotency.begin(shop.id, "k1", "fp") is None
    assert idempotency.begin(shop.id, "k2", "fp") is None
    erase(shop.id)  # while both requests are in flight: nothing of theirs is stored yet
    named = f'{{"id": 1, "phone": "{P}", "text": "Hi Ann"}}'.encode()
    idempotency.finish(shop.id, "k1", idempotency.StoredAnswer(202, named, "x"))
    idempotency.finish(shop.id, "k2", idempotency.StoredAnswer(201, b'{"id": 2}', "x"))
    assert idempotency.begin(shop.id, "k1", "fp") == idempotency.ERASED_ANSWER
    # An answer naming no number is kept as it was; a key claimed after the erasure too
    assert idempotency.begin(shop.id, "k2", "fp").body == b'{"id": 2}'
    assert idempotency.begin(shop.id, "k3", "fp") is None
    idempotency.finish(shop.id, "k3", idempotency.StoredAnswer(202, named, "x"))
    assert idempotency.begin(shop.id, "k3", "fp").body == named


def test_an_answer_naming_a_stranger_finished_after_a_shop_erasure_is_erased(db):
    # A test send to a number that is no contact: shop/redact digests only contacts' numbers
    shop, _ = shops.create_shop("race6b.example", "R6b", require_consent=False)
    assert idempotency.begin(shop.id, "k1", "fp") is None
    erasure.erase_shop(shop.id, SECRET_KEY, audit.SHOPIFY_WEBHOOK)
    named = f'{{"id": 1, "phone": "{P}", "text": "Hi"}}'.encode()
    idempotency.finish(shop.id, "k1", idempotency.StoredAnswer(202, named, "x"))
    assert idempotency.begin(shop.id, "k1", "fp") == idempotency.ERASED_ANSWER


def test_an_answer_stored_while_an_erasure_holds_its_key_waits_and_is_erased(db):
    # The erasure marks the key in flight and has not committed; the answer's UPDATE waits for
    # the row and then reads the mark
    shop, _ = shops.create_shop("race6c.example", "R6c", require_consent=False)
    assert idempotency.begin(shop.id, "k1", "fp") is None
    named = f'{{"id": 1, "phone": "{P}", "text": "Hi"}}'.encode()
    marked, release = threading.Event(), threading.Event()

    def erasure_holding_the_row() -> None:
        with database.atomic():
            idempotency.forget_answers_naming(shop.id, P)
            marked.set()
            release.wait(10)

    errors: list[BaseException] = []
    erasing = on_own_connection(erasure_holding_the_row, errors)
    assert marked.wait(10)
    answer = idempotency.StoredAnswer(202, named, "x")
    finisher = on_own_connection(lambda: idempotency.finish(shop.id, "k1", answer), errors)
    time.sleep(0.3)
    assert finisher.is_alive()  # waiting for the erasure's row
    release.set()
    finisher.join(10)
    erasing.join(10)
    assert not errors, errors
    assert idempotency.begin(shop.id, "k1", "fp") == idempotency.ERASED_ANSWER


def test_a_test_send_asked_during_an_erasure_keeps_no_number_or_text(db, monkeypatch, settings):
    shop_id, _ = shop_with_contacts("race7.example", 10, 0)
    contacts.import_contacts(shop_id, [{"phone": P, "first_name": "Ann"}], actor=audit.ADMIN)
    campaign = campaigns.create(shop_id, "c", "Hi {first_name}", None, False)
    monkeypatch.setattr(test_sends.dispatch, "publish_test_send", lambda test_send_id: None)
    with erasure_during(shop_id) as start:
        hook(monkeypatch, test_sends, "compose", after=start)
        test_sends.request(shop_id, campaign.id, P, settings, audit.Actor.key(1))
    row = TestSend.get()
    assert (row.phone, row.text, row.status, row.error) == (None, None, "failed", "erased")


def test_recipients_created_during_an_erasure_are_erased(db, monkeypatch, settings):
    shop_id, _ = shop_with_contacts("race8.example", 100, 3)
    contacts.import_contacts(shop_id, [{"phone": P, "first_name": "Ann"}], actor=audit.ADMIN)
    chunked = dataclasses.replace(settings, recipient_chunk_size=2, send_batch_size=2)
    campaign = campaigns.create(shop_id, "c", "Hi {first_name}", None, False)
    enqueue(shop_id, campaign.id, chunked, audit.ADMIN)  # 4 contacts: created in 2 chunks
    assert creation.write_chunk(campaign.id, 0, chunked, audit.WORKER)
    with erasure_during(shop_id) as start:
        # The last chunk (P's contact is the shop's last) is inserted, not yet committed
        hook(monkeypatch, creation, "_insert_recipients", after=start)
        cursor = fetchall("SELECT creation_cursor FROM campaign WHERE id = %s", (campaign.id,))
        assert creation.write_chunk(campaign.id, cursor[0][0], chunked, audit.WORKER).done
    rows = fetchall(
        "SELECT r.phone, r.first_name, r.status FROM campaign_recipient r"
        " JOIN contact c ON c.id = r.contact_id WHERE c.erased_at IS NOT NULL"
    )
    assert rows == [(None, None, "skipped")]


@pytest.mark.parametrize("writer", ["import", "unsubscribe"])
def test_writers_do_not_wait_for_one_another(db, writer):
    # Two writers of one shop hold the lock shared: neither waits for the other
    shop, _ = shops.create_shop("race9.example", "R9", require_consent=False)
    contacts.import_contacts(shop.id, [{"phone": P}], actor=audit.ADMIN)
    with database.atomic():
        erasure_lock.writing(shop.id)
        done = threading.Event()

        def other() -> None:
            if writer == "import":
                contacts.import_contacts(shop.id, [{"phone": "+306900000009"}], actor=audit.ADMIN)
            else:
                contact_id = Contact.get(Contact.phone == P).id
                contacts.opt_out(shop.id, contact_id, SECRET_KEY, audit.UNSUBSCRIBE_PAGE)
            done.set()

        errors: list[BaseException] = []
        thread = on_own_connection(other, errors)
        assert done.wait(10), f"the {writer} waited for another writer's shared lock"
        thread.join(5)
        assert not errors, errors


def test_a_writer_keeps_its_sessions_lock_timeout_after_taking_the_lock(db):
    shop, _ = shops.create_shop("race10.example", "R10", require_consent=False)
    with database.atomic():
        database.execute_sql("SET LOCAL lock_timeout = '7s'")
        erasure_lock.writing(shop.id)
        assert fetchall("SELECT current_setting('lock_timeout')") == [("7s",)]
