"""Erasure (SPEC 11): a customer's number, name and message texts, or a whole shop's, removed
from every table, while the number stays suppressed and the ledger stays as it is.

What is erased, per shop: the contact (kept as a tombstone: opted out, `erased_at`, no phone or
name; its consent log keeps its events, without proofs, plus an `erasure` opt-out), its
campaign recipients' phone and name, the texts of its messages, the number in delivery reports
of those messages, its inbound messages' number and text, the shop's data exports of it, and
the stored answers of idempotent requests that carry the number (a replay answers 410).
Its suppression becomes a keyed digest (`service/suppressions.py`), so a later import of the
number suppresses it again. A recipient still `pending` becomes `skipped` (`erased`): it has
no number left, and the send-time claim only takes pending rows. Credit rows are not touched.

Everything runs in one transaction, holding the shop's erasure lock (`service/erasure_lock.py`):
what an import, an opt-out, a STOP, a creation chunk, an export or a test send writes is
committed before it, or written after it and seeing it. The second time it changes nothing, but
for what a message in flight at the first stored after it (a text, a report's number).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peewee import SQL, Case, fn

from models import (
    Campaign,
    CampaignRecipient,
    ConsentEvent,
    Contact,
    DataExport,
    DeliveryReport,
    InboundMessage,
    MessageLog,
    TestSend,
)
from models.database import db, retry_conflicts
from service import consent, contacts, erasure_lock, idempotency, suppressions
from service.audit import Actor

log = logging.getLogger("astronote.erasure")


@dataclass(frozen=True)
class Erased:
    """What one erasure changed (all zero when there was nothing left to erase)."""

    contacts: int = 0
    recipients: int = 0
    messages: int = 0
    reports: int = 0
    inbound: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "contacts": self.contacts,
            "recipients": self.recipients,
            "messages": self.messages,
            "reports": self.reports,
            "inbound": self.inbound,
        }


def erase_number(shop_id: int, phone: str, secret: str, actor: Actor) -> Erased:
    """Erase everything the shop holds about `phone` (E.164) and keep it suppressed
    (Shopify's customers/redact); the suppression's change is recorded for `actor`."""
    with db.atomic():
        erasure_lock.erasing(shop_id)
        contact_ids = _erase_contacts(shop_id, Contact.phone == phone)
        recipients = CampaignRecipient.contact_id.in_(contact_ids) if contact_ids else None
        erased = _erase_campaign_data(shop_id, recipients, [phone, phone.lstrip("+")])
        inbound = (
            InboundMessage.update(phone=None, text=None)
            .where((InboundMessage.shop == shop_id) & (InboundMessage.phone == phone))
            .execute()
        )
        _erase_test_sends(shop_id, TestSend.phone == phone)
        idempotency.forget_answers_naming(shop_id, phone)
        suppressions.hash_numbers(shop_id, [phone], secret, actor)
        # An export is one customer's document over every number of it (`phones`), hashed
        # under its first: erasing any of them erases the document (a review found a second
        # number's contacts, messages and consent still served by `GET /admin/exports`).
        (
            DataExport.delete()
            .where(
                (DataExport.shop == shop_id)
                & (
                    (DataExport.phone_hash == suppressions.phone_digest(secret, phone))
                    | SQL("(document -> 'data' -> 'phones') ? %s", (phone,))
                )
            )
            .execute()
        )
    return Erased(len(contact_ids), *erased, inbound)


@retry_conflicts
def erase_customer(
    shop_id: int, phones: Sequence[str], customer_id: str | None, secret: str, actor: Actor
) -> Erased:
    """Shopify's customers/redact: erase each of the customer's numbers as `erase_number`
    does (the customer's own `phone` and those of the contacts imported with its Shopify
    customer id), and the shop's exports of that customer id (whatever number they had)."""
    with db.atomic():
        erasure_lock.erasing(shop_id)
        # Looked up again under the lock: a number imported with the customer's id meanwhile
        # is the customer's too.
        found = contacts.phones_of_customer(shop_id, customer_id) if customer_id else []
        totals = [
            erase_number(shop_id, phone, secret, actor) for phone in sorted({*phones, *found})
        ]
        if customer_id is not None:
            (
                DataExport.delete()
                .where(
                    (DataExport.shop == shop_id) & (DataExport.shopify_customer_id == customer_id)
                )
                .execute()
            )
    return Erased(*(sum(getattr(one, name) for one in totals) for name in Erased.__annotations__))


@retry_conflicts
def erase_contact(shop_id: int, contact_id: int, secret: str, actor: Actor) -> Erased | None:
    """`DELETE /contacts/{id}`: erase the contact's number as `erase_number` does; None when
    the shop has no such contact (an erased one is erased already: nothing changes)."""
    if not contacts.exists(shop_id, contact_id):
        return None
    phone = contacts.phone_of(shop_id, contact_id)
    if phone:
        return erase_number(shop_id, phone, secret, actor)
    # Erased already. What was stored after the erasure is cleared again: a message whose
    # call was in flight at the erasure stores no text and its reports no number now
    # (`sending.persist_results`, `report_inbox`), but rows stored before that was so did.
    # (Reports of an `/smsbulk` call found only by its batch and the number are out of reach
    # without the number.)
    with db.atomic():
        erasure_lock.erasing(shop_id)
        erased = _erase_campaign_data(shop_id, CampaignRecipient.contact_id == contact_id, ())
    return Erased(0, *erased, 0)


@retry_conflicts
def erase_shop(shop_id: int, secret: str, actor: Actor) -> Erased:
    """Erase every contact, recipient, message text, inbound message and export of the shop
    (Shopify's shop/redact); its suppressions and its contacts' numbers become digested
    suppressions. The shop row, its campaigns'
    templates and its ledger stay."""
    with db.atomic():
        erasure_lock.erasing(shop_id)
        phones = list(
            Contact.select(Contact.phone)
            .where((Contact.shop == shop_id) & Contact.phone.is_null(False))
            .scalars()
        )
        contact_ids = _erase_contacts(shop_id, Contact.phone.is_null(False))
        erased = _erase_campaign_data(shop_id, CampaignRecipient.id.is_null(False), None)
        inbound = (
            InboundMessage.update(phone=None, text=None)
            .where((InboundMessage.shop == shop_id) & InboundMessage.phone.is_null(False))
            .execute()
        )
        _erase_test_sends(shop_id, TestSend.phone.is_null(False))
        idempotency.forget_answers_naming(shop_id, None)
        # Every contact's number stays suppressed, as `erase_number` keeps one's: a later
        # import of the number (the app installed again) suppresses and opts it out again.
        suppressions.hash_shop_numbers(shop_id, secret, actor, also=phones)
        (DataExport.delete().where(DataExport.shop == shop_id).execute())
    return Erased(len(contact_ids), *erased, inbound)


def _erase_test_sends(shop_id: int, which: Any) -> int:
    """The number and text of the shop's test sends matching `which`; one still queued will
    not be sent (failed, `erased`, its credits no longer held)."""
    queued = TestSend.status == "queued"
    return (
        TestSend.update(
            phone=None,
            text=None,
            status=Case(None, [(queued, "failed")], TestSend.status),
            error=Case(None, [(queued, "erased")], TestSend.error),
            finished_at=Case(None, [(queued, fn.now())], TestSend.finished_at),
        )
        .where((TestSend.shop == shop_id) & which)
        .execute()
    )


def _erase_contacts(shop_id: int, which: Any) -> list[int]:
    """Turn the shop's contacts matching `which` into tombstones; their consent log loses its
    proofs and gains an `erasure` opt-out. Returns their ids."""
    ids = [
        contact_id
        for (contact_id,) in (
            Contact.update(
                phone=None,
                first_name=None,
                shopify_customer_id=None,
                opted_out_at=fn.coalesce(Contact.opted_out_at, fn.now()),
                erased_at=fn.now(),
                updated_at=fn.now(),
            )
            .where((Contact.shop == shop_id) & Contact.erased_at.is_null() & which)
            .returning(Contact.id)
            .tuples()
            .execute()
        )
    ]
    if ids:
        (
            ConsentEvent.update(proof=None)
            .where(ConsentEvent.contact.in_(ids) & ConsentEvent.proof.is_null(False))
            .execute()
        )
        consent.record(shop_id, ids, "opt_out", "erasure")
    return ids


def _erase_campaign_data(
    shop_id: int, which: Any | None, phone_forms: Sequence[str] | None
) -> tuple[int, int, int]:
    """(recipients, message texts, delivery reports) erased among the shop's recipients
    matching `which` (None: none). `phone_forms` are the spellings of the number a report of
    a bulk call may carry; None: every report of the shop's bulk calls is the shop's."""
    if which is None:
        return 0, 0, 0
    # Every statement reaches recipients through (campaign, contact), the unique index.
    scope = (
        CampaignRecipient.campaign.in_(Campaign.select(Campaign.id).where(Campaign.shop == shop_id))
        & which
    )
    pending = CampaignRecipient.status == "pending"
    recipients = (
        CampaignRecipient.update(
            phone=None,
            first_name=None,
            status=Case(None, [(pending, "skipped")], CampaignRecipient.status),
            error=Case(None, [(pending, "erased")], CampaignRecipient.error),
            updated_at=fn.now(),
        )
        .where(scope & CampaignRecipient.phone.is_null(False))
        .execute()
    )
    ids = CampaignRecipient.select(CampaignRecipient.id).where(scope)
    messages = (
        MessageLog.update(text=None)
        .where(MessageLog.recipient_id.in_(ids) & MessageLog.text.is_null(False))
        .execute()
    )
    return recipients, messages, _erase_reports(scope, phone_forms)


def _erase_reports(scope: Any, phone_forms: Sequence[str] | None) -> int:
    """The number in delivery reports of the scope's messages: matched by provider id, by
    reference (a `/sms` call's is the recipient id) and, for `/smsbulk` calls (whose reference
    is the batch key, shared), by batch key and number. One statement per index."""
    has_number = DeliveryReport.to.is_null(False)
    by_id = CampaignRecipient.select(CampaignRecipient.mitto_message_id).where(
        scope & CampaignRecipient.mitto_message_id.is_null(False)
    )
    by_reference = CampaignRecipient.select(CampaignRecipient.id.cast("text")).where(scope)
    by_batch = CampaignRecipient.select(CampaignRecipient.batch_key).where(
        scope & CampaignRecipient.batch_key.is_null(False)
    )
    in_batch = DeliveryReport.reference.in_(by_batch)
    if phone_forms is not None:
        in_batch &= DeliveryReport.to.in_(list(phone_forms))
    return sum(
        (DeliveryReport.update(to=None).where(has_number & matched).execute())
        for matched in (
            DeliveryReport.provider_id.in_(by_id),
            DeliveryReport.reference.in_(by_reference),
            in_batch,
        )
    )
