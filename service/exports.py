"""Data exports (SPEC 11): what a shop holds about one customer, for Shopify's
customers/data_request. The export is written once per (shop, request) and kept for the
admin to fetch (`GET /admin/exports/{id}`) and hand over; erasing the customer deletes it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from peewee import JOIN

from models import (
    Campaign,
    CampaignRecipient,
    ConsentEvent,
    Contact,
    DataExport,
    InboundMessage,
    MessageLog,
    Shop,
    TestSend,
)
from models.database import db
from service import erasure_lock, suppressions


def _plain(value: Any) -> Any:
    """`value` as JSON holds it (times as RFC 3339 text)."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def customer_data(shop_id: int, phone: str | None, secret: str) -> dict[str, Any]:
    """Every record the shop holds about the number: contacts, consent log, messages sent,
    inbound messages, test sends, and whether it is suppressed."""
    if phone is None:
        return {
            "phone": None,
            "contacts": [],
            "consent_events": [],
            "messages": [],
            "inbound": [],
            "test_sends": [],
            "suppressed": False,
        }
    found = list(
        Contact.select(
            Contact.id,
            Contact.phone,
            Contact.first_name,
            Contact.country,
            Contact.opted_out_at,
            Contact.consent_source,
            Contact.consent_collected_at,
            Contact.created_at,
        )
        .where((Contact.shop == shop_id) & (Contact.phone == phone))
        .dicts()
    )
    ids = [contact["id"] for contact in found]
    events = (
        list(
            ConsentEvent.select(
                ConsentEvent.id,
                ConsentEvent.contact.alias("contact_id"),
                ConsentEvent.kind,
                ConsentEvent.source,
                ConsentEvent.consent_source,
                ConsentEvent.collected_at,
                ConsentEvent.proof,
                ConsentEvent.created_at,
            )
            .where(ConsentEvent.contact.in_(ids))
            .order_by(ConsentEvent.id)
            .dicts()
        )
        if ids
        else []
    )
    messages = (
        list(
            CampaignRecipient.select(
                CampaignRecipient.campaign.alias("campaign_id"),
                CampaignRecipient.status,
                CampaignRecipient.sent_at,
                CampaignRecipient.delivery_status,
                MessageLog.text,
            )
            .join(MessageLog, JOIN.LEFT_OUTER, on=(MessageLog.recipient_id == CampaignRecipient.id))
            .where(
                CampaignRecipient.campaign.in_(
                    Campaign.select(Campaign.id).where(Campaign.shop == shop_id)
                )
                & CampaignRecipient.contact_id.in_(ids)
            )
            .order_by(CampaignRecipient.id)
            .dicts()
        )
        if ids
        else []
    )
    inbound = list(
        InboundMessage.select(
            InboundMessage.sender.alias("to"),
            InboundMessage.text,
            InboundMessage.keyword,
            InboundMessage.received_at,
        )
        .where((InboundMessage.shop == shop_id) & (InboundMessage.phone == phone))
        .order_by(InboundMessage.id)
        .dicts()
    )
    # The merchant's test sends to the number (its text may name the customer).
    tests = list(
        TestSend.select(
            TestSend.campaign.alias("campaign_id"),
            TestSend.sender,
            TestSend.text,
            TestSend.status,
            TestSend.created_at,
            TestSend.finished_at,
        )
        .where((TestSend.shop == shop_id) & (TestSend.phone == phone))
        .order_by(TestSend.id)
        .dicts()
    )
    return _plain(
        {
            "phone": phone,
            "contacts": found,
            "consent_events": events,
            "messages": messages,
            "inbound": inbound,
            "test_sends": tests,
            "suppressed": suppressions.is_suppressed(shop_id, phone, secret),
        }
    )


def customer_numbers_data(shop_id: int, phones: list[str], secret: str) -> dict[str, Any]:
    """`customer_data` of every number of one customer (its own and those the shop imported
    with its Shopify id), as one document: the first number is `phone`, all are `phones`,
    the records of each are listed together, `suppressed` if any is."""
    if len(phones) <= 1:
        return {**customer_data(shop_id, phones[0] if phones else None, secret), "phones": phones}
    parts = [customer_data(shop_id, phone, secret) for phone in phones]
    merged: dict[str, Any] = {"phone": phones[0], "phones": phones}
    for name in ("contacts", "consent_events", "messages", "inbound", "test_sends"):
        merged[name] = [record for part in parts for record in part[name]]
    merged["suppressed"] = any(part["suppressed"] for part in parts)
    return merged


def _digits(phone: object) -> str | None:
    return "".join(char for char in phone if char.isdigit()) if isinstance(phone, str) else None


def export_customer(
    shop_id: int,
    request_key: str,
    phones: list[str],
    customer: dict[str, Any],
    secret: str,
    customer_id: str | None = None,
) -> int:
    """Write the export for one data request once (a retry of it returns the same export);
    returns its id."""
    with db.atomic():
        # Read and written under the shop's erasure lock: an erasure either sees this export
        # and deletes it, or is seen by its reads; and a number it erased since the caller
        # found `phones` is not written back into the document.
        erasure_lock.writing(shop_id)
        gone = {phone for _, phone in suppressions.erased([shop_id], phones, secret)}
        phones = [phone for phone in phones if phone not in gone]
        if _digits(customer.get("phone")) in {_digits(phone) for phone in gone}:
            # Shopify's own copy of an erased number (a data request sent again after the
            # customer's redact, as Shopify retries): not written back either (a probe).
            customer = {**customer, "phone": None}
        phone = phones[0] if phones else None
        digest = suppressions.phone_digest(secret, phone) if phone else None
        document = {
            "shop": Shop.get_by_id(shop_id).domain,
            "customer": customer,
            "data": customer_numbers_data(shop_id, phones, secret),
        }
        created = list(
            DataExport.insert(
                shop=shop_id,
                request_key=request_key,
                phone_hash=digest,
                shopify_customer_id=customer_id,
                document=document,
            )
            .on_conflict_ignore()
            .returning(DataExport.id)
            .tuples()
            .execute()
        )
        if created:
            return created[0][0]
        return (
            DataExport.select(DataExport.id)
            .where((DataExport.shop == shop_id) & (DataExport.request_key == request_key))
            .scalar()
        )


def get_export(export_id: int) -> dict[str, Any] | None:
    """An export as the admin fetches it, or None."""
    row = (
        DataExport.select(
            DataExport.id,
            DataExport.shop.alias("shop_id"),
            DataExport.request_key,
            DataExport.document,
            DataExport.created_at,
        )
        .where(DataExport.id == export_id)
        .dicts()
        .first()
    )
    return row
